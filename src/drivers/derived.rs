//! `driver = "derived"` (SPEC §13 "Derived tokens"): this site's token is obtained by
//! exchanging a token of the same account on `from_site`. The broker gets the parent's token
//! (cached, or by one login of the parent) and hands it in `Credentials::password`; one
//! attempt sends it in `exchange_header` (`{token}` stands for it) with `exchange_method` to
//! `exchange_url`, and reads the new token at `token_pointer`, its life at
//! `expires_in_pointer` (else the JWT `exp`, else `default_token_ttl`; the broker caps it at
//! the parent's). Transport errors, 429 and 5xx are network errors; any other answer without
//! a token is `failed` (the parent's password is not at fault).

use std::time::Duration;

use serde_json::Value;

use super::court::portal::{login_client, Step};
use super::login::{expiry_in, expiry_of, Credentials, FailureKind, LoginFailure, LoginToken};
use crate::config::SiteConfig;
use crate::vault::secret::Secret;

pub struct DerivedDriver {
    site: SiteConfig,
    header_name: String,
    default_ttl: Duration,
}

impl DerivedDriver {
    pub fn new(site: &SiteConfig, default_ttl: Duration) -> DerivedDriver {
        let header_name = site
            .exchange_header
            .split_once(':')
            .map_or("Authorization", |(name, _)| name.trim())
            .to_string();
        DerivedDriver {
            site: site.clone(),
            header_name,
            default_ttl,
        }
    }

    /// `creds.password` is the parent's token.
    pub async fn login(
        &self,
        creds: &Credentials<'_>,
        remaining: Duration,
    ) -> Result<LoginToken, LoginFailure> {
        let parent_token = creds.password.expose();
        let secrets = [parent_token];
        let step = Step {
            site: &self.site.name,
            account: creds.account,
            name: "exchange",
            secrets: &secrets,
            proxy: creds.proxy.map(|p| (p, creds.own_proxy)),
        };
        let value = self
            .site
            .exchange_header
            .split_once(':')
            .map_or("", |(_, value)| value.trim())
            .replace("{token}", parent_token);
        let client = login_client(creds.proxy)?;
        let request = match self.site.exchange_method.as_str() {
            "GET" => client.get(&self.site.exchange_url),
            _ => client.post(&self.site.exchange_url),
        };
        let answer = step
            .send(
                request
                    .header(self.header_name.as_str(), value)
                    .timeout(remaining),
            )
            .await?;
        let token = (answer.status.is_success())
            .then(|| {
                answer
                    .json
                    .pointer(&self.site.token_pointer)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .flatten()
            .filter(|t| !t.trim().is_empty());
        let Some(token) = token else {
            let why = if answer.status.is_success() {
                format!(
                    "HTTP {}: no token at {} in the answer",
                    answer.status.as_u16(),
                    self.site.token_pointer
                )
            } else {
                format!(
                    "HTTP {}: the parent's token was not exchanged: {}",
                    answer.status.as_u16(),
                    answer.message
                )
            };
            return Err(step
                .failure(FailureKind::Failed, &why)
                .refusing_parent(answer.unauthorized()));
        };
        let from_answer = answer
            .json
            .pointer(&self.site.expires_in_pointer)
            .and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .and_then(expiry_in);
        Ok(LoginToken {
            expires_at: from_answer.unwrap_or_else(|| expiry_of(&token, self.default_ttl)),
            token: Secret::new(token),
            token_type: None,
        })
    }
}

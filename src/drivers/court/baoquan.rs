//! `driver = "court_baoquan"` (保全系统, SPEC §15): a token derived from the `court_zxfw`
//! token of the same account. The broker hands the parent's token in `Credentials::password`;
//! one attempt is `POST {zxfw base}/api/v1/oauth/code` (`Authorization: <zxfw token>`, no
//! body) → a code → `GET {base}/api/account/getauthorization?code=…&type=yzw&state=200` →
//! a JWT (HS512) whose `exp` is its life (else 3600 s; the broker caps it at the parent's).
//! Consumers send it as `Authorization: Bearer <token>`.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::portal::{base, login_client, Patterns, PortalAnswer, Step, ZXFW_BASE_URL};
use crate::config::SiteConfig;
use crate::drivers::login::{Credentials, FailureKind, LoginFailure, LoginToken};
use crate::error::Result;

/// The portal's API root unless `base_url` says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://baoquan.court.gov.cn/wsbq/account";
/// A refusal here is never the password's fault (no password is sent): at worst the zxfw
/// token was refused, and is then dropped by the broker.
fn parent_failure(mut failure: LoginFailure, answer: &PortalAnswer) -> LoginFailure {
    if failure.kind == FailureKind::Credential {
        failure.kind = FailureKind::Failed;
    }
    failure.refusing_parent(answer.unauthorized())
}

pub struct BaoquanDriver {
    site: String,
    base: String,
    /// The API root of the parent `court_zxfw` site, where the OAuth code is asked for.
    parent_base: String,
    patterns: Patterns,
}

impl BaoquanDriver {
    /// `parent`: the `from_site` configuration (checked at start to be `court_zxfw`).
    pub fn new(site: &SiteConfig, parent: Option<&SiteConfig>) -> Result<BaoquanDriver> {
        Ok(BaoquanDriver {
            site: site.name.clone(),
            base: base(&site.base_url, DEFAULT_BASE_URL),
            parent_base: base(parent.map_or("", |p| p.base_url.as_str()), ZXFW_BASE_URL),
            patterns: Patterns::of(site)?,
        })
    }

    /// `creds.password` is the parent's (zxfw) token.
    pub async fn login(
        &self,
        creds: &Credentials<'_>,
        remaining: Duration,
    ) -> Result<LoginToken, LoginFailure> {
        let started = Instant::now();
        let left = || remaining.saturating_sub(started.elapsed());
        let client = login_client(creds.proxy)?;
        let parent_token = creds.password.expose();
        let secrets = [parent_token];
        let step = |name| Step {
            site: &self.site,
            account: creds.account,
            name,
            secrets: &secrets,
            proxy: creds.proxy.map(|p| (p, creds.own_proxy)),
        };

        let code_step = step("oauth/code");
        let answer = code_step
            .send(
                client
                    .post(format!("{}/api/v1/oauth/code", self.parent_base))
                    .header(reqwest::header::AUTHORIZATION, parent_token)
                    .timeout(left()),
            )
            .await?;
        if !answer.ok() {
            return Err(parent_failure(
                code_step.refused(&answer, &self.patterns),
                &answer,
            ));
        }
        let code = match &answer.data {
            Value::String(code) if !code.trim().is_empty() => code.clone(),
            _ => return Err(code_step.failure(FailureKind::Failed, "no OAuth code in `data`")),
        };

        let token_step = Step {
            secrets: &[parent_token, code.as_str()],
            ..step("getauthorization")
        };
        let answer = token_step
            .send(
                client
                    .get(format!("{}/api/account/getauthorization", self.base))
                    .query(&[("code", code.as_str()), ("type", "yzw"), ("state", "200")])
                    .timeout(left()),
            )
            .await?;
        if !answer.ok() {
            return Err(parent_failure(
                token_step.refused(&answer, &self.patterns),
                &answer,
            ));
        }
        token_step.token(&answer)
    }
}

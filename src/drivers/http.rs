//! The `http` driver: POST the credentials (JSON or form) to `login_url`, take the token at
//! `token_pointer` and its life at `expires_in_pointer` (else the JWT `exp`, else
//! `default_token_ttl`), and classify failures: transport errors, 429 and 5xx are network
//! errors; a body matching `captcha_error_pattern` is a captcha error; 401/403 or a body
//! matching `credential_error_pattern` is a credential error; anything else failed.
//!
//! Redirects are never followed: the request carries the password, and a portal (or whoever
//! answers in its name) that says "post it elsewhere" must not get it sent there. A 3xx is a
//! `failed` login naming the `Location`. A 2xx answer is never echoed into a message, whatever
//! the error patterns match: it may hold a token where the configuration does not look.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use regex::Regex;
use serde_json::{Map, Value};

use super::{
    clean_message, expiry_in, expiry_of, Credentials, FailureKind, LoginFailure, LoginToken,
};
use crate::config::{RequestFormat, SiteConfig};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Largest login answer read; a portal's login answer is small.
const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct HttpDriver {
    /// The client of logins that use no proxy.
    client: reqwest::Client,
    /// One client per proxy URL (an account's own, or the site's), built on first use.
    proxied: Mutex<HashMap<String, reqwest::Client>>,
    site: SiteConfig,
    captcha: Regex,
    credential: Regex,
    /// "Too many requests" in words (`rate_limit_pattern`), if the site has one.
    rate_limited: Option<Regex>,
    default_ttl: Duration,
}

/// A client that follows no redirects (credentials never go elsewhere), through `proxy`.
fn client(proxy: Option<&str>) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    builder = match proxy {
        Some(url) => builder.proxy(reqwest::Proxy::all(url)?),
        // Logins without a proxy go direct, whatever the environment's proxy variables say.
        None => builder.no_proxy(),
    };
    builder.build()
}

impl HttpDriver {
    /// The client for a login through `proxy` (none: direct).
    fn client_for(&self, proxy: Option<&Secret>) -> Result<reqwest::Client, LoginFailure> {
        let Some(proxy) = proxy else {
            return Ok(self.client.clone());
        };
        let mut proxied = self.proxied.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = proxied.get(proxy.expose()) {
            return Ok(client.clone());
        }
        let built = client(Some(proxy.expose())).map_err(|e| {
            LoginFailure::new(
                FailureKind::Failed,
                format!(
                    "proxy {}: {}",
                    crate::secret::redact_url(proxy.expose()),
                    clean_message(&e.to_string(), &[proxy.expose()])
                ),
            )
        })?;
        proxied.insert(proxy.expose().to_string(), built.clone());
        Ok(built)
    }

    pub fn new(site: &SiteConfig, default_ttl: Duration) -> Result<HttpDriver> {
        let regex = |field: &str, pattern: &str| {
            Regex::new(pattern)
                .map_err(|e| Error::config(format!("sites.{}.{field}", site.name), e.to_string()))
        };
        let client = client(None).map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
        Ok(HttpDriver {
            client,
            proxied: Mutex::default(),
            captcha: regex("captcha_error_pattern", &site.captcha_error_pattern)?,
            credential: regex("credential_error_pattern", &site.credential_error_pattern)?,
            rate_limited: match site.rate_limit_pattern.as_str() {
                "" => None,
                pattern => Some(regex("rate_limit_pattern", pattern)?),
            },
            site: site.clone(),
            default_ttl,
        })
    }

    fn body(&self, creds: &Credentials<'_>) -> Map<String, Value> {
        let mut body: Map<String, Value> = self
            .site
            .extra_fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        body.insert(
            self.site.username_field.clone(),
            Value::String(creds.account.to_string()),
        );
        body.insert(
            self.site.password_field.clone(),
            Value::String(creds.password.expose().to_string()),
        );
        body
    }

    pub async fn login(
        &self,
        creds: &Credentials<'_>,
        remaining: Duration,
    ) -> Result<LoginToken, LoginFailure> {
        let body = self.body(creds);
        let request = self
            .client_for(creds.proxy)?
            .post(&self.site.login_url)
            .timeout(remaining);
        let request = match self.site.request_format {
            RequestFormat::Json => request.json(&body),
            RequestFormat::Form => {
                let pairs: Vec<(String, String)> = body
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect();
                request.form(&pairs)
            }
        };
        let secrets = [creds.password.expose()];
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                FailureKind::Timeout
            } else {
                FailureKind::Network
            };
            LoginFailure::new(
                kind,
                clean_message(&format!("request to login_url failed: {e}"), &secrets),
            )
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(super::parse_retry_after);
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map_or_else(
                    || "(none)".into(),
                    |l| String::from_utf8_lossy(l.as_bytes()).into_owned(),
                );
            return Err(LoginFailure::new(
                FailureKind::Failed,
                clean_message(
                    &format!("HTTP {status}: login_url redirects to {location}; redirects are not followed with credentials"),
                    &secrets,
                ),
            ));
        }
        let bytes = read_limited(response).await.map_err(|e| {
            LoginFailure::new(
                FailureKind::Network,
                clean_message(&format!("reading the login answer: {e}"), &secrets),
            )
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();

        if status.is_success() {
            if let Some(token) = json
                .as_ref()
                .and_then(|j| j.pointer(&self.site.token_pointer))
                .and_then(Value::as_str)
            {
                if !token.is_empty() {
                    return Ok(self.token(token, json.as_ref()));
                }
            }
        }
        let congestion = status.as_u16() == 429
            || self
                .rate_limited
                .as_ref()
                .is_some_and(|r| r.is_match(&text));
        let kind = if congestion || status.is_server_error() {
            FailureKind::Network
        } else if self.captcha.is_match(&text) {
            FailureKind::Captcha
        } else if matches!(status.as_u16(), 401 | 403) || self.credential.is_match(&text) {
            FailureKind::Credential
        } else {
            FailureKind::Failed
        };
        let detail = if status.is_success() {
            // A 2xx answer without a token where expected may still hold one elsewhere: it
            // is never echoed, whichever pattern it matched.
            format!(
                "HTTP {status}: no token at {} in a {}-byte answer ({})",
                self.site.token_pointer,
                bytes.len(),
                kind.status().as_str()
            )
        } else {
            format!("HTTP {status}: {text}")
        };
        Err(LoginFailure::new(kind, clean_message(&detail, &secrets))
            .with_retry_after(retry_after)
            .congested(congestion))
    }

    fn token(&self, token: &str, json: Option<&Value>) -> LoginToken {
        let from_answer = json
            .and_then(|j| j.pointer(&self.site.expires_in_pointer))
            .and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .and_then(expiry_in);
        LoginToken {
            expires_at: from_answer.unwrap_or_else(|| expiry_of(token, self.default_ttl)),
            token: Secret::new(token),
            token_type: None,
        }
    }
}

async fn read_limited(mut response: reqwest::Response) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(body)
}

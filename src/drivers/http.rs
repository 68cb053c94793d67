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
use reqwest::StatusCode;
use serde_json::{Map, Value};

use super::cookies::{self, SetCookie};
use super::login::{
    clean_message, expiry_in, expiry_of, network_cause, parse_retry_after, proxy_failure,
    read_answer, Credentials, FailureKind, LoginFailure, LoginToken,
};
use crate::config::{RequestFormat, SiteConfig, TokenFrom};
use crate::error::{Error, Result};
use crate::vault::secret::Secret;

/// Largest login answer read; a portal's login answer is small.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long connecting (to the portal, or to the proxy) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
        .connect_timeout(CONNECT_TIMEOUT)
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
                    crate::vault::secret::redact_url(proxy.expose()),
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

    /// One attempt: the request, the portal's answer, and the token in it or why there is
    /// none.
    pub async fn login(
        &self,
        creds: &Credentials<'_>,
        remaining: Duration,
    ) -> Result<LoginToken, LoginFailure> {
        let secrets = [creds.password.expose()];
        let response = self
            .request(creds, remaining)?
            .send()
            .await
            .map_err(|e| unanswered(&e, creds, remaining, &secrets))?;
        if let Some(failure) = proxy_refused(&response, creds) {
            return Err(failure);
        }
        let cookies = match self.site.token_from {
            TokenFrom::Json => Vec::new(),
            _ => cookies::set_cookies(response.headers()),
        };
        // A cookie login often answers with a redirect that sets the session: the cookies are
        // taken, the redirect is not followed.
        if response.status().is_redirection() {
            return self
                .cookie_token(&cookies, None)
                .ok_or_else(|| redirected(&response, &secrets));
        }
        let answer = LoginAnswer::read(response, cookies).await.map_err(|e| {
            LoginFailure::new(
                FailureKind::Network,
                clean_message(&format!("reading the login answer: {e}"), &secrets),
            )
        })?;
        match self.token_in(&answer) {
            Some(token) => Ok(token),
            None => Err(self.failure(&answer, &secrets)),
        }
    }

    /// The login request: the credentials posted as JSON or as a form.
    fn request(
        &self,
        creds: &Credentials<'_>,
        remaining: Duration,
    ) -> Result<reqwest::RequestBuilder, LoginFailure> {
        let body = self.body(creds);
        let request = self
            .client_for(creds.proxy)?
            .post(&self.site.login_url)
            .timeout(remaining);
        Ok(match self.site.request_format {
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
        })
    }

    /// The token of a successful answer, where `token_from` says it is.
    fn token_in(&self, answer: &LoginAnswer) -> Option<LoginToken> {
        if !answer.status.is_success() {
            return None;
        }
        if self.site.token_from == TokenFrom::Json {
            let token = answer
                .json
                .as_ref()
                .and_then(|j| j.pointer(&self.site.token_pointer))
                .and_then(Value::as_str)
                .filter(|token| !token.is_empty())?;
            return Some(self.token(token, answer.json.as_ref()));
        }
        // A cookie login that says the captcha or the password was wrong is no session,
        // whatever cookies came with it.
        if self.captcha.is_match(&answer.text) || self.credential.is_match(&answer.text) {
            return None;
        }
        self.cookie_token(&answer.cookies, answer.json.as_ref())
    }

    /// Why an answer holds no token: transport-like answers (429, 5xx, `rate_limit_pattern`)
    /// are network errors, then `captcha_error_pattern`, then 401/403 or
    /// `credential_error_pattern`, else `failed`.
    fn failure(&self, answer: &LoginAnswer, secrets: &[&str]) -> LoginFailure {
        let (status, text) = (answer.status, &answer.text);
        let congestion =
            status.as_u16() == 429 || self.rate_limited.as_ref().is_some_and(|r| r.is_match(text));
        let kind = if congestion || status.is_server_error() {
            FailureKind::Network
        } else if self.captcha.is_match(text) {
            FailureKind::Captcha
        } else if matches!(status.as_u16(), 401 | 403) || self.credential.is_match(text) {
            FailureKind::Credential
        } else {
            FailureKind::Failed
        };
        let detail = if status.is_success() {
            // A 2xx answer without a token where expected may still hold one elsewhere: it
            // is never echoed, whichever pattern it matched.
            let place = match &self.site.token_from {
                TokenFrom::Json => format!("at {}", self.site.token_pointer),
                TokenFrom::Cookie(name) => format!("in cookie `{name}`"),
                TokenFrom::Cookies => "in cookies".to_string(),
            };
            format!(
                "HTTP {status}: no token {place} in a {}-byte answer ({}){}",
                answer.bytes,
                kind.status().as_str(),
                shape_of(answer.json.as_ref())
            )
        } else {
            format!("HTTP {status}: {text}")
        };
        // Masked first (the password in any form), then any token-like run hidden.
        let detail = crate::vault::secret::hide_tokens(&clean_message(&detail, secrets));
        LoginFailure::new(kind, detail)
            .with_retry_after(answer.retry_after)
            .congested(congestion)
    }

    /// The life the JSON answer states at `expires_in_pointer`, if it does.
    fn stated_expiry(&self, json: Option<&Value>) -> Option<chrono::DateTime<chrono::Utc>> {
        json.and_then(|j| j.pointer(&self.site.expires_in_pointer))
            .and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .and_then(expiry_in)
    }

    fn token(&self, token: &str, json: Option<&Value>) -> LoginToken {
        LoginToken {
            expires_at: self
                .stated_expiry(json)
                .unwrap_or_else(|| expiry_of(token, self.default_ttl)),
            token: Secret::new(token),
            token_type: None,
        }
    }

    /// The session of a cookie login (`token_from` `cookie:NAME` or `cookies`): its life is
    /// the cookie's (the shortest of them), else the JSON answer's, else `default_token_ttl`.
    fn cookie_token(&self, set: &[SetCookie], json: Option<&Value>) -> Option<LoginToken> {
        match &self.site.token_from {
            TokenFrom::Json => None,
            TokenFrom::Cookie(name) => {
                let cookie = set.iter().find(|c| &c.name == name)?;
                Some(LoginToken {
                    expires_at: cookie
                        .expires_at
                        .or_else(|| self.stated_expiry(json))
                        .unwrap_or_else(|| expiry_of(&cookie.value, self.default_ttl)),
                    token: Secret::new(cookie.value.clone()),
                    token_type: None,
                })
            }
            TokenFrom::Cookies if set.is_empty() => None,
            TokenFrom::Cookies => Some(LoginToken {
                expires_at: cookies::shortest_life(set)
                    .or_else(|| self.stated_expiry(json))
                    .unwrap_or_else(|| chrono::Utc::now() + self.default_ttl),
                token: Secret::new(cookies::header_value(set)),
                token_type: Some(crate::config::COOKIE_SESSION.to_string()),
            }),
        }
    }
}

/// The shape of a JSON answer, never its values (a 2xx answer may hold a token):
/// ` shaped {"code": number, "data": object}`; empty for an answer that is not JSON.
fn shape_of(json: Option<&Value>) -> String {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    match json {
        Some(Value::Object(map)) => {
            let fields: Vec<String> = map
                .iter()
                .take(12)
                .map(|(k, v)| format!("{k:?}: {}", kind(v)))
                .collect();
            format!(" shaped {{{}}}", fields.join(", "))
        }
        Some(other) => format!(" shaped {}", kind(other)),
        None => String::new(),
    }
}

/// What the portal answered to a login request that it did not redirect.
struct LoginAnswer {
    status: StatusCode,
    /// The cookies it set (only read for a cookie login).
    cookies: Vec<SetCookie>,
    /// How long it asked us to stay away, if it did.
    retry_after: Option<Duration>,
    /// The body's length in bytes (up to [`MAX_BODY_BYTES`]).
    bytes: usize,
    /// The body as text, for the error patterns and messages.
    text: String,
    /// The body as JSON, if it is.
    json: Option<Value>,
}

impl LoginAnswer {
    async fn read(
        response: reqwest::Response,
        cookies: Vec<SetCookie>,
    ) -> reqwest::Result<LoginAnswer> {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_answer(response, MAX_BODY_BYTES).await?;
        Ok(LoginAnswer {
            status,
            cookies,
            retry_after,
            bytes: body.len(),
            text: String::from_utf8_lossy(&body).into_owned(),
            json: serde_json::from_slice(&body).ok(),
        })
    }
}

/// A login request that got no answer: a timeout, else a network error, named by its cause
/// (issue 21). Through a proxy, failing to connect (refused, timed out, tunnel refused) is
/// the proxy's failure: the account's own proxy is the account's fault (`proxy_error`), the
/// site's is the site's.
fn unanswered(
    error: &reqwest::Error,
    creds: &Credentials<'_>,
    remaining: Duration,
    secrets: &[&str],
) -> LoginFailure {
    let cause = network_cause(error, Some(remaining), CONNECT_TIMEOUT);
    if let Some(proxy) = creds.proxy.filter(|_| error.is_connect()) {
        return proxy_failure(proxy, creds.own_proxy, &cause, secrets);
    }
    let kind = if error.is_timeout() {
        FailureKind::Timeout
    } else {
        FailureKind::Network
    };
    LoginFailure::new(
        kind,
        clean_message(&format!("request to login_url failed: {cause}"), secrets),
    )
}

/// A proxy that refused the login itself (407 Proxy Authentication Required).
fn proxy_refused(response: &reqwest::Response, creds: &Credentials<'_>) -> Option<LoginFailure> {
    let proxy = creds.proxy?;
    if response.status() != StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        return None;
    }
    let cause = "proxy authentication refused (HTTP 407)";
    Some(proxy_failure(
        proxy,
        creds.own_proxy,
        cause,
        &[creds.password.expose()],
    ))
}

/// A redirect that set no session: `failed`, naming where it pointed (never followed).
fn redirected(response: &reqwest::Response, secrets: &[&str]) -> LoginFailure {
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map_or_else(
            || "(none)".into(),
            // Its query may carry a code or a ticket: never shown.
            |l| {
                crate::vault::secret::redact_url_credentials(&String::from_utf8_lossy(l.as_bytes()))
            },
        );
    LoginFailure::new(
        FailureKind::Failed,
        clean_message(
            &format!(
                "HTTP {}: login_url redirects to {location}; redirects are not followed with credentials",
                response.status()
            ),
            secrets,
        ),
    )
}

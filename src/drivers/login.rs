//! What one login attempt takes and gives, shared by every driver and the retry policy of
//! [`crate::drivers`]: the [`Credentials`] handed in, the [`LoginToken`] won or the
//! [`LoginFailure`] met (of a [`FailureKind`]), and what turns a portal's answer into them:
//! scrubbed messages ([`clean_message`]), a token's expiry ([`expiry_of`], [`expiry_in`]) and
//! the portal's `Retry-After` ([`parse_retry_after`]).
//!
//! A leaf: it uses no other file of the drivers, so that every driver can use it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::policy::outcome::AcquisitionStatus;
use crate::vault::secret::{mask_echoes, Secret};

/// Longest error message kept from a driver (stderr, portal error body).
pub const MAX_ERROR_BYTES: usize = 2048;

/// The credentials handed to a driver.
pub struct Credentials<'a> {
    pub site: &'a str,
    pub account: &'a str,
    pub password: &'a Secret,
    /// The proxy this login goes through: the account's own, else the site's.
    pub proxy: Option<&'a Secret>,
    /// Whether `proxy` is the account's own: its failure is then the account's fault.
    pub own_proxy: bool,
}

/// A token a driver obtained.
#[derive(Debug, Clone)]
pub struct LoginToken {
    pub token: Secret,
    pub expires_at: DateTime<Utc>,
    /// The `Authorization` scheme this token goes with, when the driver knows better than
    /// the site's `token_type` (a cookie session: `Cookie`); `None`: the site's.
    pub token_type: Option<String>,
}

/// Why one login attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Network,
    Captcha,
    Credential,
    Timeout,
    Failed,
    /// The account's own proxy could not be reached or refused the login (SPEC §11 as
    /// amended by issue 21): the account's fault, `proxy_error`.
    Proxy,
    /// The site's login or captcha-solver program cannot run (missing, not executable,
    /// exit 127, "can't open file"): a configuration error of the site.
    Misconfigured,
}

impl FailureKind {
    pub fn status(self) -> AcquisitionStatus {
        match self {
            FailureKind::Network => AcquisitionStatus::NetworkError,
            FailureKind::Captcha => AcquisitionStatus::CaptchaError,
            FailureKind::Credential => AcquisitionStatus::CredentialError,
            FailureKind::Timeout => AcquisitionStatus::Timeout,
            FailureKind::Failed | FailureKind::Misconfigured => AcquisitionStatus::Failed,
            FailureKind::Proxy => AcquisitionStatus::NetworkError,
        }
    }
}

/// A failed attempt; the message is already scrubbed of the password and any token.
#[derive(Debug, Clone)]
pub struct LoginFailure {
    pub kind: FailureKind,
    pub message: String,
    /// How long the portal asked us to stay away (`Retry-After`), if it did.
    pub retry_after: Option<Duration>,
    /// The portal said it is overloaded (a 429, or an answer matching `rate_limit_pattern`):
    /// a congestion signal for adaptive concurrency.
    pub congestion: bool,
    /// Another attempt would meet the same end (nobody answered a captcha handed to a
    /// person): the login ends here, whatever the retry policy allows.
    pub last_attempt: bool,
    /// A derived site's exchange refused the parent's token (401/403): that token is
    /// dropped, so that the next acquisition gets a fresh one (SPEC §13).
    pub parent_refused: bool,
}

impl LoginFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        LoginFailure {
            kind,
            message: message.into(),
            retry_after: None,
            congestion: false,
            last_attempt: false,
            parent_refused: false,
        }
    }

    /// Marks the failure as one that is not retried.
    pub fn last_attempt(mut self) -> Self {
        self.last_attempt = true;
        self
    }

    pub fn refusing_parent(mut self, refused: bool) -> Self {
        self.parent_refused = refused;
        self
    }

    pub fn congested(mut self, congestion: bool) -> Self {
        self.congestion = congestion;
        self
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Whether the site, not the account, is at fault (SPEC §11): a network error or a
    /// timeout counts towards the site's circuit and never penalises the account; a site
    /// whose program cannot run is paused. Either way another account would fare no better.
    pub fn is_site_fault(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Network | FailureKind::Timeout | FailureKind::Misconfigured
        )
    }

    /// The `error_type` of logs and of the history's per-account details: `rate_limited`
    /// for a congestion answer (429, `rate_limit_pattern`), `proxy_error` for the account's
    /// own proxy, else the status of the kind.
    pub fn error_type(&self) -> &'static str {
        match self.kind {
            FailureKind::Network if self.congestion => "rate_limited",
            FailureKind::Proxy => "proxy_error",
            FailureKind::Misconfigured => "site_misconfigured",
            kind => kind.status().as_str(),
        }
    }
}

/// Why a request got no answer, from the whole error chain (reqwest → hyper → io): `dns
/// error: …`, `connection refused`, `timed out after N s`, `TLS: …`, else the innermost
/// message. `timeout` is the request's own limit (if known), `connect_timeout` the client's.
pub fn network_cause(
    error: &reqwest::Error,
    timeout: Option<Duration>,
    connect_timeout: Duration,
) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut refused = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        messages.push(e.to_string());
        source = e.source();
    }
    let innermost = messages.last().cloned().unwrap_or_default();
    let all = messages.join(": ").to_lowercase();
    if error.is_timeout() {
        let limit = if error.is_connect() {
            Some(connect_timeout)
        } else {
            timeout
        };
        return match limit {
            Some(limit) => format!("timed out after {:.0} s", limit.as_secs_f64()),
            None => "timed out".to_string(),
        };
    }
    if refused || all.contains("connection refused") {
        return "connection refused".to_string();
    }
    if let Some(dns) = messages.iter().find(|m| m.starts_with("dns error")) {
        return match dns.as_str() {
            "dns error" => format!("dns error: {innermost}"),
            _ => dns.clone(),
        };
    }
    if ["tls", "certificate", "handshake"]
        .iter()
        .any(|word| all.contains(word))
    {
        return format!("TLS: {innermost}");
    }
    innermost
}

/// Whether a program's exit says that it could not run at all: the shell's 126/127 (not
/// executable, not found), or an interpreter that cannot open its script (python's "can't
/// open file", node's "Cannot find module", sh's "No such file"). A configuration error of
/// the site, not the account's (issue 21).
pub fn could_not_run(code: Option<i32>, stderr: &str) -> bool {
    if matches!(code, Some(126 | 127)) {
        return true;
    }
    let lower = stderr.to_lowercase();
    code.is_some_and(|c| c != 0)
        && ["can't open file", "cannot find module", "no such file"]
            .iter()
            .any(|sign| lower.contains(sign))
}

/// The proxy of a login failed (refused, timed out, refused the tunnel or asked for
/// credentials): the account's own proxy is the account's fault (`proxy_error`), the site's
/// is the site's (a network error). The message names the proxy by host, never its
/// credentials.
pub fn proxy_failure(proxy: &Secret, own: bool, cause: &str, secrets: &[&str]) -> LoginFailure {
    let (whose, kind) = if own {
        ("the account's proxy", FailureKind::Proxy)
    } else {
        ("the site's proxy", FailureKind::Network)
    };
    let mut hidden = secrets.to_vec();
    hidden.push(proxy.expose());
    LoginFailure::new(
        kind,
        clean_message(
            &format!("{whose} {} failed: {cause}", proxy_host(proxy.expose())),
            &hidden,
        ),
    )
}

/// The host (and port) of a proxy URL: what a message may name, never its credentials.
pub fn proxy_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    host.to_string()
}

/// `Retry-After` as seconds or an HTTP date; `None` when absent or unreadable.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(86_400)));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    let left = (at.with_timezone(&Utc) - Utc::now()).to_std().ok()?;
    Some(left.min(Duration::from_secs(86_400)))
}

/// Cuts `text` to [`MAX_ERROR_BYTES`] (on a character boundary) and masks the secrets in it,
/// in every form a portal or script may echo them ([`crate::vault::secret::echoed_forms`]). The secrets are masked
/// first, on the text as it came: removing characters before would let a password that the
/// portal echoed with a control character in it through.
pub fn clean_message(text: &str, secrets: &[&str]) -> String {
    let masked = mask_echoes(text, secrets);
    // Control characters (NUL above all) are dropped: PostgreSQL refuses them in text.
    let printable: String = masked
        .trim()
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    // Dropping them may have joined the pieces of one.
    let scrubbed = mask_echoes(&printable, secrets);
    if scrubbed.len() <= MAX_ERROR_BYTES {
        return scrubbed;
    }
    let mut end = MAX_ERROR_BYTES;
    while !scrubbed.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &scrubbed[..end])
}

/// When a token expires: the `exp` claim if it is a JWT, else `default_ttl` from now.
pub fn expiry_of(token: &str, default_ttl: Duration) -> DateTime<Utc> {
    jwt_expiry(token).unwrap_or_else(|| Utc::now() + default_ttl)
}

/// The `exp` claim of a JWT (not verified: tokend only needs to know when to renew).
pub fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    DateTime::from_timestamp(exp as i64, 0)
}

/// `now + seconds`, for a lifetime given by a portal; `None` when it is not a sane number.
pub fn expiry_in(seconds_left: f64) -> Option<DateTime<Utc>> {
    if !(seconds_left.is_finite() && seconds_left > 0.0 && seconds_left < 10.0 * 365.0 * 86400.0) {
        return None;
    }
    Some(Utc::now() + chrono::Duration::milliseconds((seconds_left * 1000.0) as i64))
}

/// The body of a portal's answer, read up to `max` bytes (the rest is left unread): a portal
/// cannot make tokend hold an answer of any size.
pub async fn read_answer(mut response: reqwest::Response, max: usize) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn retry_after_as_seconds_or_date() {
        assert_eq!(parse_retry_after(" 60 "), Some(Duration::from_secs(60)));
        let later = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let later = later.replace("+0000", "GMT");
        let left = parse_retry_after(&later).unwrap().as_secs();
        assert!((115..=120).contains(&left), "{later}: {left}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn programs_that_could_not_run_and_proxy_hosts() {
        assert!(could_not_run(Some(127), ""));
        assert!(could_not_run(
            Some(2),
            "python3: can't open file '/x/solve.py': [Errno 2] No such file or directory"
        ));
        assert!(!could_not_run(Some(1), "wrong password"));
        assert!(!could_not_run(Some(0), "no such file"));
        assert_eq!(proxy_host("http://u:p@w@10.0.0.5:3128/x"), "10.0.0.5:3128");
        assert_eq!(proxy_host("socks5://10.0.0.5:1080"), "10.0.0.5:1080");
        let failure = proxy_failure(&Secret::new("http://u:pw@h:1"), true, "refused", &[]);
        assert_eq!(failure.kind, FailureKind::Proxy);
        assert_eq!(failure.error_type(), "proxy_error");
        assert!(!failure.message.contains("pw"), "{}", failure.message);
    }

    #[test]
    fn jwt_exp_is_read() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"a","exp":4102444800}"#);
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig");
        assert_eq!(jwt_expiry(&token).unwrap().timestamp(), 4102444800);
        assert!(jwt_expiry("opaque-token").is_none());
    }

    #[test]
    fn echoed_forms_and_control_characters_are_removed() {
        let cleaned = clean_message("bad \0pw \"p\\\"w d\" p%22w+d", &["p\"w d"]);
        assert!(!cleaned.contains('\0'));
        assert!(
            !cleaned.contains("p%22w+d") && !cleaned.contains("p\\\"w d"),
            "{cleaned}"
        );
    }

    #[test]
    fn messages_are_cut_and_scrubbed() {
        let long = format!("bad password hunter22 {}", "x".repeat(5000));
        let cleaned = clean_message(&long, &["hunter22"]);
        assert!(cleaned.len() <= MAX_ERROR_BYTES + 3);
        assert!(!cleaned.contains("hunter22"));
        assert!(cleaned.starts_with("bad password ***"));
    }
}

//! Login drivers (SPEC §6): how tokend logs in to a site, and the retry policy around it.
//!
//! [`LoginDriver::login_with_retries`] runs one driver attempt after another inside
//! `login_timeout`: network errors are retried with exponential backoff up to
//! `max_network_retries`, captcha errors after `captcha_retry_delay` up to
//! `max_captcha_retries`, and a credential error is never retried.

pub mod command;
pub mod cookies;
pub mod court;
pub mod derived;
pub mod http;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::{seconds, DriverKind, RetryConfig, SiteConfig};
use crate::error::Result;
use crate::outcome::AcquisitionStatus;
use crate::secret::{scrub, Secret};

/// Longest error message kept from a driver (stderr, portal error body).
pub const MAX_ERROR_BYTES: usize = 2048;

/// Extra time a driver gets beyond `login_timeout` to report its own timeout.
const DRIVER_GRACE: Duration = Duration::from_secs(2);

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
}

impl FailureKind {
    pub fn status(self) -> AcquisitionStatus {
        match self {
            FailureKind::Network => AcquisitionStatus::NetworkError,
            FailureKind::Captcha => AcquisitionStatus::CaptchaError,
            FailureKind::Credential => AcquisitionStatus::CredentialError,
            FailureKind::Timeout => AcquisitionStatus::Timeout,
            FailureKind::Failed => AcquisitionStatus::Failed,
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
    /// timeout counts towards the site's circuit and never penalises the account.
    pub fn is_site_fault(&self) -> bool {
        matches!(self.kind, FailureKind::Network | FailureKind::Timeout)
    }
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

/// What happened over all attempts of one login.
#[derive(Debug, Clone, Default)]
pub struct LoginStats {
    pub attempts: u32,
    pub captcha_attempts: u32,
    pub network_retries: u32,
    /// Seconds spent in the driver, retries and their waits included.
    pub duration: f64,
}

/// The credentials handed to a driver.
pub struct Credentials<'a> {
    pub site: &'a str,
    pub account: &'a str,
    pub password: &'a Secret,
    /// The proxy this login goes through: the account's own, else the site's.
    pub proxy: Option<&'a Secret>,
}

/// The deadline of one login (`login_timeout`), which stands still while a person solves a
/// captcha: their time is not the login's. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Deadline(Arc<Mutex<Clock>>);

#[derive(Debug)]
struct Clock {
    at: Instant,
    paused_since: Option<Instant>,
}

impl Deadline {
    pub fn new(at: Instant) -> Deadline {
        Deadline(Arc::new(Mutex::new(Clock {
            at,
            paused_since: None,
        })))
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, Clock> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the login must end, as of now.
    pub fn at(&self) -> Instant {
        let clock = self.clock();
        clock.at + clock.paused_since.map_or(Duration::ZERO, |p| p.elapsed())
    }

    pub fn remaining(&self) -> Duration {
        self.at().saturating_duration_since(Instant::now())
    }

    /// Stops the clock (a person is solving a captcha).
    pub fn pause(&self) {
        let mut clock = self.clock();
        if clock.paused_since.is_none() {
            clock.paused_since = Some(Instant::now());
        }
    }

    /// Starts it again: the deadline moved by the time it stood still.
    pub fn resume(&self) {
        let mut clock = self.clock();
        if let Some(since) = clock.paused_since.take() {
            clock.at += since.elapsed();
        }
    }

    /// Runs `work` to its end, or `None` once the deadline (plus `grace`) has passed; a
    /// deadline that moved meanwhile is honoured.
    pub async fn run<F: std::future::Future>(&self, grace: Duration, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            let until = self.at() + grace;
            tokio::select! {
                out = &mut work => return Some(out),
                _ = tokio::time::sleep_until(until.into()) => {
                    if self.at() + grace <= Instant::now() {
                        return None;
                    }
                }
            }
        }
    }
}

/// A site's driver, built once from its configuration.
pub enum LoginDriver {
    Http(Box<http::HttpDriver>),
    Command(command::CommandDriver),
    /// SPEC §15: 人民法院在线服务.
    CourtZxfw(Box<court::zxfw::ZxfwDriver>),
    /// SPEC §15: 保全系统, from a `court_zxfw` token (handed in as the password).
    CourtBaoquan(Box<court::baoquan::BaoquanDriver>),
    /// SPEC §13: a token exchanged for the parent's (handed in as the password).
    Derived(Box<derived::DerivedDriver>),
}

impl LoginDriver {
    pub fn new(site: &SiteConfig, default_ttl: Duration) -> Result<LoginDriver> {
        LoginDriver::with_context(site, default_ttl, &[], None)
    }

    /// The driver of `site`, knowing the other `sites` (a derived site's parent) and where
    /// to count captcha solves.
    pub fn with_context(
        site: &SiteConfig,
        default_ttl: Duration,
        sites: &[SiteConfig],
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> Result<LoginDriver> {
        Ok(match site.driver {
            DriverKind::CourtZxfw => {
                LoginDriver::CourtZxfw(Box::new(court::zxfw::ZxfwDriver::new(site, metrics)?))
            }
            DriverKind::CourtBaoquan => {
                let parent = sites.iter().find(|s| s.name == site.from_site);
                LoginDriver::CourtBaoquan(Box::new(court::baoquan::BaoquanDriver::new(
                    site, parent,
                )?))
            }
            DriverKind::Derived => {
                LoginDriver::Derived(Box::new(derived::DerivedDriver::new(site, default_ttl)))
            }
            DriverKind::Http => {
                LoginDriver::Http(Box::new(http::HttpDriver::new(site, default_ttl)?))
            }
            DriverKind::Command => {
                LoginDriver::Command(command::CommandDriver::new(site, default_ttl))
            }
        })
    }

    /// Lets a `command` site hand captchas to a person (SPEC §13).
    pub fn with_captchas(self, captchas: crate::captcha::Captchas) -> LoginDriver {
        match self {
            LoginDriver::Command(d) => LoginDriver::Command(d.with_captchas(captchas)),
            LoginDriver::CourtZxfw(d) => {
                LoginDriver::CourtZxfw(Box::new(d.with_captchas(captchas)))
            }
            other => other,
        }
    }

    async fn attempt(
        &self,
        creds: &Credentials<'_>,
        deadline: &Deadline,
    ) -> Result<LoginToken, LoginFailure> {
        match self {
            LoginDriver::Http(d) => d.login(creds, deadline.remaining()).await,
            LoginDriver::Command(d) => d.login(creds, deadline).await,
            LoginDriver::CourtZxfw(d) => d.login(creds, deadline).await,
            LoginDriver::CourtBaoquan(d) => d.login(creds, deadline.remaining()).await,
            LoginDriver::Derived(d) => d.login(creds, deadline.remaining()).await,
        }
    }

    /// Logs in, retrying as the policy allows, all inside `login_timeout`.
    pub async fn login_with_retries(
        &self,
        creds: &Credentials<'_>,
        retry: &RetryConfig,
    ) -> (Result<LoginToken, LoginFailure>, LoginStats) {
        let started = Instant::now();
        let deadline = Deadline::new(started + seconds(retry.login_timeout));
        let mut stats = LoginStats::default();
        let result = loop {
            if deadline.remaining().is_zero() {
                break Err(LoginFailure::new(
                    FailureKind::Timeout,
                    "login_timeout elapsed",
                ));
            }
            stats.attempts += 1;
            // Drivers honour `remaining` themselves; the grace is a safety net that lets them
            // report (and clean up after) their own timeout first.
            let outcome = match deadline
                .run(DRIVER_GRACE, self.attempt(creds, &deadline))
                .await
            {
                Some(outcome) => outcome,
                None => Err(LoginFailure::new(
                    FailureKind::Timeout,
                    "login_timeout elapsed",
                )),
            };
            let wait = match &outcome {
                Err(f) if f.last_attempt => {
                    if f.kind == FailureKind::Captcha {
                        stats.captcha_attempts += 1;
                    }
                    break outcome;
                }
                Err(f)
                    if f.kind == FailureKind::Network
                        && stats.network_retries < retry.max_network_retries =>
                {
                    let wait =
                        retry.network_retry_delay_base * 2f64.powi(stats.network_retries as i32);
                    stats.network_retries += 1;
                    wait
                }
                Err(f) if f.kind == FailureKind::Captcha => {
                    stats.captcha_attempts += 1;
                    if stats.captcha_attempts > retry.max_captcha_retries {
                        break outcome;
                    }
                    retry.captcha_retry_delay
                }
                _ => break outcome,
            };
            if let Err(failure) = &outcome {
                log::info!(
                    "event=login_retry site={} account={} error_type={} attempt={} wait={wait:.2}s",
                    creds.site,
                    creds.account,
                    failure.kind.status().as_str(),
                    stats.attempts
                );
            }
            // A portal that asked for a longer pause than the retry would keep is not
            // knocked on again within this login: the site's circuit honours its wish.
            let asked = outcome.as_ref().err().and_then(|f| f.retry_after);
            let wait = seconds(wait).max(asked.unwrap_or_default());
            if Instant::now() + wait >= deadline.at() {
                break outcome;
            }
            tokio::time::sleep(wait).await;
        };
        stats.duration = started.elapsed().as_secs_f64();
        (result, stats)
    }
}

/// Cuts `text` to [`MAX_ERROR_BYTES`] (on a character boundary) and masks the secrets in it.
pub fn clean_message(text: &str, secrets: &[&str]) -> String {
    // Also the forms a portal or script may echo: JSON-escaped and URL-encoded.
    let mut forms: Vec<String> = Vec::new();
    for secret in secrets {
        forms.push((*secret).to_string());
        if let Ok(json) = serde_json::to_string(secret) {
            forms.push(json.trim_matches('"').to_string());
        }
        forms.push(url_encode(secret));
    }
    let forms: Vec<&str> = forms.iter().map(String::as_str).collect();
    // Control characters (NUL above all) are dropped: PostgreSQL refuses them in text.
    let printable: String = text
        .trim()
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    let scrubbed = scrub(&printable, &forms);
    if scrubbed.len() <= MAX_ERROR_BYTES {
        return scrubbed;
    }
    let mut end = MAX_ERROR_BYTES;
    while !scrubbed.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &scrubbed[..end])
}

/// `application/x-www-form-urlencoded` form of a string.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
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

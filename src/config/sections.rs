//! The sections of the configuration file other than `[[sites]]`, each with its defaults
//! (SPEC §3) and the checks of its values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::vault::secret::Secret;

/// Longest duration accepted anywhere (a year): longer ones would overflow clock arithmetic.
const MAX_SECONDS: f64 = 365.0 * 86400.0;

/// A duration in seconds that must be a positive, finite number, at most a year.
fn positive(key: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 && value <= MAX_SECONDS {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be a positive number of seconds up to a year, not {value}"),
        ))
    }
}

fn at_least(key: &str, value: u64, min: u64) -> Result<()> {
    if value >= min {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be at least {min}, not {value}"),
        ))
    }
}

fn percentage(key: &str, value: f64) -> Result<()> {
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be a percentage from 0 to 100, not {value}"),
        ))
    }
}

/// Seconds as a `Duration`, for values already checked by [`positive`].
pub fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Bearer token for every path but `/healthz`; required when `listen` is not loopback.
    pub admin_token: Secret,
    /// Bearer tokens that may only acquire and invalidate tokens.
    pub client_tokens: Vec<Secret>,
    /// Bearer tokens for scrapers and dashboards: `/metrics`, health and every other GET;
    /// 403 on anything that changes state. `TOKEND_METRICS_TOKEN` adds one.
    pub metrics_tokens: Vec<Secret>,
    /// Seconds that running requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace: f64,
    /// Where people reach the dashboard (`https://tokend.firm.example`), for the links chat
    /// robots send; empty: no link.
    pub public_url: String,
    /// Host names (besides loopback names and IP addresses) that requests may name in
    /// `Host`; any other name is answered 421, so a DNS-rebinding page cannot reach the API.
    pub allowed_hosts: Vec<String>,
    /// Seconds a client gets to send a request's head and body; a slower one is cut off, so
    /// slow senders cannot hold every connection.
    pub client_request_timeout: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8000".into(),
            admin_token: Secret::default(),
            client_tokens: Vec::new(),
            metrics_tokens: Vec::new(),
            shutdown_grace: 30.0,
            public_url: String::new(),
            allowed_hosts: Vec::new(),
            client_request_timeout: 5.0,
        }
    }
}

/// Shortest bearer token accepted: a shorter one could be guessed.
const MIN_BEARER_LEN: usize = 16;

impl ServerConfig {
    /// Client or metrics tokens without an admin token would leave everything else open:
    /// refused rather than silently open.
    fn validate_roles_need_admin(&self) -> Result<()> {
        if !self.admin_token.is_empty() {
            return Ok(());
        }
        let key = if !self.client_tokens.is_empty() {
            "server.client_tokens"
        } else if !self.metrics_tokens.is_empty() {
            "server.metrics_tokens"
        } else {
            return Ok(());
        };
        Err(Error::config(
            key,
            "is set but server.admin_token (TOKEND_ADMIN_TOKEN) is not: without it every path \
             would be open to anybody; set an admin token too (TOKEND_METRICS_TOKEN adds a \
             metrics token)",
        ))
    }

    /// Entries are bare host names or addresses (`tokend.internal`, `10.0.0.5`), no scheme,
    /// port or path.
    fn validate_allowed_hosts(&self) -> Result<()> {
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            let bad = host.is_empty()
                || host
                    .chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
            if bad {
                return Err(Error::config(
                    format!("server.allowed_hosts[{i}]"),
                    format!("`{host}` is not a host name such as tokend.internal (no scheme, port or path)"),
                ));
            }
        }
        Ok(())
    }

    /// The address to listen on; a host name (`localhost:8000`) is resolved, IPv4 first.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        if let Ok(addr) = self.listen.parse() {
            return Ok(addr);
        }
        let not_an_address = |why: String| {
            Error::config(
                "server.listen",
                format!(
                    "`{}` is not an address:port such as 127.0.0.1:8000 or localhost:8000{why}",
                    self.listen
                ),
            )
        };
        let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&self.listen)
            .map_err(|e| not_an_address(format!(" ({e})")))?
            .collect();
        resolved
            .iter()
            .find(|a| a.is_ipv4())
            .or(resolved.first())
            .copied()
            .ok_or_else(|| not_an_address(String::new()))
    }

    pub(super) fn validate(&self) -> Result<()> {
        let addr = self.listen_addr()?;
        positive("server.shutdown_grace", self.shutdown_grace)?;
        let web_url = |u: &reqwest::Url| matches!(u.scheme(), "http" | "https") && u.has_host();
        if !self.public_url.is_empty()
            && !reqwest::Url::parse(&self.public_url).is_ok_and(|u| web_url(&u))
        {
            return Err(Error::config(
                "server.public_url",
                format!(
                    "`{}` is not an http:// or https:// address",
                    self.public_url
                ),
            ));
        }
        positive("server.client_request_timeout", self.client_request_timeout)?;
        self.validate_allowed_hosts()?;
        self.validate_roles_need_admin()?;
        if !addr.ip().is_loopback() && self.admin_token.is_empty() {
            return Err(Error::config(
                "server.admin_token",
                format!(
                    "listening on {addr}, which is not a loopback address, needs an admin token \
                     (TOKEND_ADMIN_TOKEN)"
                ),
            ));
        }
        if !self.admin_token.is_empty() && self.admin_token.expose().len() < MIN_BEARER_LEN {
            return Err(Error::config(
                "server.admin_token",
                format!("must be at least {MIN_BEARER_LEN} characters"),
            ));
        }
        for (i, token) in self.client_tokens.iter().enumerate() {
            if token.expose().len() < MIN_BEARER_LEN {
                return Err(Error::config(
                    format!("server.client_tokens[{i}]"),
                    format!("must be at least {MIN_BEARER_LEN} characters"),
                ));
            }
            if token == &self.admin_token {
                return Err(Error::config(
                    format!("server.client_tokens[{i}]"),
                    "must differ from the admin token",
                ));
            }
        }
        for (i, token) in self.metrics_tokens.iter().enumerate() {
            let key = format!("server.metrics_tokens[{i}]");
            if token.expose().len() < MIN_BEARER_LEN {
                return Err(Error::config(
                    key,
                    format!("must be at least {MIN_BEARER_LEN} characters"),
                ));
            }
            if token == &self.admin_token || self.client_tokens.contains(token) {
                return Err(Error::config(
                    key,
                    "must differ from the admin token and the client tokens",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://user@host/db`; may hold a password, hence secret.
    pub url: Secret,
    pub pool_size: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: Secret::new("sqlite://tokend.db"),
            pool_size: 8,
        }
    }
}

impl DatabaseConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let url = self.url.expose();
        let known = ["sqlite://", "postgres://", "postgresql://"];
        if !known.iter().any(|scheme| url.starts_with(scheme)) {
            return Err(Error::config(
                "database.url",
                "must start with sqlite:// or postgres:// (DATABASE_URL)",
            ));
        }
        if url == "sqlite://" {
            return Err(Error::config("database.url", "sqlite:// needs a file path"));
        }
        if !(1..=128).contains(&self.pool_size) {
            return Err(Error::config("database.pool_size", "must be from 1 to 128"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// One Redis server (`redis://`, `rediss://`). With `sentinels`, only its credentials,
    /// database and TLS apply (to the master the sentinels name); with `cluster`, its
    /// credentials and TLS apply to every node. Empty with neither: in-process cache and
    /// slots. May hold a password, hence secret.
    pub url: Secret,
    /// Every key tokend writes starts with `{key_prefix}:` (the token cache) or
    /// `{{key_prefix}}:` (the shared state, one Redis Cluster hash tag): `crate::redis::keys`.
    pub key_prefix: String,
    /// Redis Sentinel: `host:port` of each sentinel; tokend asks them for the master and
    /// follows a failover (`crate::redis::sentinel`).
    pub sentinels: Vec<String>,
    /// The master's name the sentinels monitor (`sentinel monitor NAME …`).
    pub sentinel_master: String,
    /// The sentinels' own ACL user and password, when they require one.
    pub sentinel_username: String,
    pub sentinel_password: Secret,
    /// Redis Cluster: `host:port` of some of its nodes (the rest are discovered).
    pub cluster: Vec<String>,
    /// With `sentinels` or `cluster`: how long (seconds) a Redis out of reach is taken for a
    /// failover under way before logins start on in-process locks (a login that cannot
    /// ask Redis whether another instance logs the account in waits this long first).
    pub failover_wait: f64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: Secret::default(),
            key_prefix: "tokend".into(),
            sentinels: Vec::new(),
            sentinel_master: String::new(),
            sentinel_username: String::new(),
            sentinel_password: Secret::default(),
            cluster: Vec::new(),
            failover_wait: 10.0,
        }
    }
}

impl RedisConfig {
    pub fn enabled(&self) -> bool {
        !(self.url.is_empty() && self.sentinels.is_empty() && self.cluster.is_empty())
    }

    pub(super) fn validate(&self) -> Result<()> {
        let url = self.url.expose();
        if !(url.is_empty() || url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(Error::config(
                "redis.url",
                "must start with redis:// or rediss:// (REDIS_URL)",
            ));
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && self.key_prefix.len() <= 64
            && !self
                .key_prefix
                .contains(|c: char| c.is_whitespace() || "*?[]{}".contains(c));
        if !prefix_ok {
            return Err(Error::config(
                "redis.key_prefix",
                "must be 1 to 64 characters, without spaces, glob characters or braces",
            ));
        }
        if !self.sentinels.is_empty() && !self.cluster.is_empty() {
            return Err(Error::config(
                "redis.sentinels",
                "set either `sentinels` (Redis Sentinel) or `cluster` (Redis Cluster), not both",
            ));
        }
        if !(self.failover_wait.is_finite() && (0.0..=300.0).contains(&self.failover_wait)) {
            return Err(Error::config(
                "redis.failover_wait",
                "must be from 0 to 300 seconds",
            ));
        }
        check_addresses("redis.sentinels", &self.sentinels)?;
        check_addresses("redis.cluster", &self.cluster)?;
        if !self.sentinels.is_empty() && self.sentinel_master.trim().is_empty() {
            return Err(Error::config(
                "redis.sentinel_master",
                "names the master the sentinels monitor; required with `sentinels` \
                 (REDIS_SENTINEL_MASTER)",
            ));
        }
        if self.sentinels.is_empty()
            && (!self.sentinel_master.is_empty() || !self.sentinel_password.is_empty())
        {
            return Err(Error::config(
                "redis.sentinel_master",
                "is set but `sentinels` is empty: list the sentinels (REDIS_SENTINELS)",
            ));
        }
        Ok(())
    }
}

/// Each entry is `host:port` (a name or an address, and a port number).
fn check_addresses(key: &str, addresses: &[String]) -> Result<()> {
    for address in addresses {
        let parsed = address.rsplit_once(':').filter(|(host, port)| {
            !host.trim().is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if parsed.is_none() {
            return Err(Error::config(
                key,
                format!("`{address}` is not host:port (for example \"10.0.0.5:26379\")"),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Where the 32-byte key lives (base64) when `TOKEND_SECRET_KEY` is not set.
    pub key_file: PathBuf,
    /// From `TOKEND_SECRET_KEY` only; never read from the file.
    #[serde(skip)]
    pub secret_key: Option<Secret>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            key_file: PathBuf::from("tokend.key"),
            secret_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConcurrencyConfig {
    pub max_concurrent_acquisitions: u32,
    pub max_concurrent_per_site: u32,
    pub max_concurrent_per_account: u32,
    /// Seconds; also the lease of a slot.
    pub acquisition_timeout: f64,
    pub lock_timeout: f64,
    pub queue_timeout: f64,
    pub max_queue_len: u32,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        ConcurrencyConfig {
            max_concurrent_acquisitions: 3,
            max_concurrent_per_site: 2,
            max_concurrent_per_account: 1,
            acquisition_timeout: 300.0,
            lock_timeout: 10.0,
            queue_timeout: 60.0,
            max_queue_len: 1000,
        }
    }
}

impl ConcurrencyConfig {
    pub(super) fn validate(&self) -> Result<()> {
        at_least(
            "concurrency.max_concurrent_acquisitions",
            self.max_concurrent_acquisitions.into(),
            1,
        )?;
        at_least(
            "concurrency.max_concurrent_per_site",
            self.max_concurrent_per_site.into(),
            1,
        )?;
        at_least(
            "concurrency.max_concurrent_per_account",
            self.max_concurrent_per_account.into(),
            1,
        )?;
        positive("concurrency.acquisition_timeout", self.acquisition_timeout)?;
        positive("concurrency.lock_timeout", self.lock_timeout)?;
        positive("concurrency.queue_timeout", self.queue_timeout)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub max_network_retries: u32,
    pub max_captcha_retries: u32,
    /// Exponential backoff base, seconds: waits are base, 2×base, 4×base…
    pub network_retry_delay_base: f64,
    pub captcha_retry_delay: f64,
    pub login_timeout: f64,
    /// Seconds a captcha handed to a person (SPEC §13) waits for an answer; then the login
    /// is a `captcha_error`. The time spent waiting does not count against `login_timeout`.
    pub captcha_answer_timeout: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_network_retries: 3,
            max_captcha_retries: 3,
            network_retry_delay_base: 1.0,
            captcha_retry_delay: 2.0,
            login_timeout: 60.0,
            captcha_answer_timeout: 300.0,
        }
    }
}

impl RetryConfig {
    pub(super) fn validate(&self) -> Result<()> {
        for (key, value) in [
            (
                "retry.network_retry_delay_base",
                self.network_retry_delay_base,
            ),
            ("retry.captcha_retry_delay", self.captcha_retry_delay),
        ] {
            if !(value.is_finite() && (0.0..=MAX_SECONDS).contains(&value)) {
                return Err(Error::config(
                    key,
                    format!("must be 0 or more seconds, not {value}"),
                ));
            }
        }
        positive("retry.login_timeout", self.login_timeout)?;
        positive("retry.captcha_answer_timeout", self.captcha_answer_timeout)?;
        if self.max_network_retries > 20 || self.max_captcha_retries > 20 {
            return Err(Error::config(
                if self.max_network_retries > 20 {
                    "retry.max_network_retries"
                } else {
                    "retry.max_captcha_retries"
                },
                "must be at most 20",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Seconds: a token with less life left than this is not handed out.
    pub refresh_ahead: f64,
    pub background_refresh: bool,
    /// Fraction of a token's lifetime by which its background refresh point is moved at random.
    pub refresh_jitter: f64,
    /// Seconds, when neither the portal nor the token says when it expires.
    pub default_token_ttl: f64,
    pub credentials_ttl: f64,
    pub account_stats_ttl: f64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            refresh_ahead: 300.0,
            background_refresh: true,
            refresh_jitter: 0.1,
            default_token_ttl: 3600.0,
            credentials_ttl: 300.0,
            account_stats_ttl: 300.0,
        }
    }
}

impl CacheConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if !(self.refresh_ahead.is_finite() && (0.0..=MAX_SECONDS).contains(&self.refresh_ahead)) {
            return Err(Error::config(
                "cache.refresh_ahead",
                "must be 0 or more seconds",
            ));
        }
        if !(0.0..=0.5).contains(&self.refresh_jitter) {
            return Err(Error::config(
                "cache.refresh_jitter",
                "must be a fraction from 0 to 0.5",
            ));
        }
        positive("cache.default_token_ttl", self.default_token_ttl)?;
        positive("cache.credentials_ttl", self.credentials_ttl)?;
        positive("cache.account_stats_ttl", self.account_stats_ttl)?;
        if self.default_token_ttl <= self.refresh_ahead {
            return Err(Error::config(
                "cache.default_token_ttl",
                format!(
                    "{} is not more than cache.refresh_ahead ({}): such tokens could never be handed out",
                    self.default_token_ttl, self.refresh_ahead
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// How long an account whose password was refused is left out of selection; fractions
    /// allowed.
    pub blacklist_duration_hours: f64,
    /// Seconds an account rests after its captcha could not be solved.
    pub captcha_cooldown: f64,
    /// Seconds an account rests after a login failed for an unknown reason.
    pub failure_cooldown: f64,
    /// Seconds an account rests after its own proxy could not be reached or refused the
    /// login (`proxy_error`).
    pub proxy_cooldown: f64,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            blacklist_duration_hours: 1.0,
            captcha_cooldown: 120.0,
            failure_cooldown: 60.0,
            proxy_cooldown: 60.0,
        }
    }
}

impl AccountsConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let hours = self.blacklist_duration_hours;
        if !(hours.is_finite() && (0.0..=24.0 * 365.0).contains(&hours)) {
            return Err(Error::config(
                "accounts.blacklist_duration_hours",
                format!("must be from 0 to 8760 hours, not {hours}"),
            ));
        }
        for (key, value) in [
            ("accounts.captcha_cooldown", self.captcha_cooldown),
            ("accounts.failure_cooldown", self.failure_cooldown),
            ("accounts.proxy_cooldown", self.proxy_cooldown),
        ] {
            if !(value.is_finite() && (0.0..=MAX_SECONDS).contains(&value)) {
                return Err(Error::config(
                    key,
                    format!("must be from 0 seconds to a year, not {value}"),
                ));
            }
        }
        Ok(())
    }
}

/// Longest pause of an open site circuit, in seconds (SPEC §11).
pub const MAX_CIRCUIT_OPEN_SECONDS: f64 = 600.0;

/// `[circuit]`: when a site counts as down (SPEC §11). A `[[sites]]` table may override both.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    /// Consecutive network errors or timeouts of logins that open the circuit.
    pub failure_threshold: u32,
    /// Seconds the circuit stays open before one probe login; doubled after each failed
    /// probe, up to 600.
    pub open_seconds: f64,
    /// `failed` answers (unrecognised) from this many different accounts in a row pause the
    /// site as `site_protocol_changed` (0: never).
    pub site_changed_threshold: u32,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failure_threshold: 3,
            open_seconds: 30.0,
            site_changed_threshold: 3,
        }
    }
}

/// Checks a `site_changed_threshold`; `key` names where it came from.
pub fn validate_site_changed(key: &str, threshold: u32) -> Result<()> {
    if threshold > 1000 {
        return Err(Error::config(
            key,
            format!("must be from 0 (never) to 1000, not {threshold}"),
        ));
    }
    Ok(())
}

/// Checks a circuit threshold and pause; `prefix` names where they came from.
pub fn validate_circuit(prefix: &str, threshold: u32, open_seconds: f64) -> Result<()> {
    if !(1..=1000).contains(&threshold) {
        return Err(Error::config(
            format!("{prefix}failure_threshold"),
            format!("must be from 1 to 1000, not {threshold}"),
        ));
    }
    if !(open_seconds.is_finite() && open_seconds > 0.0 && open_seconds <= MAX_CIRCUIT_OPEN_SECONDS)
    {
        return Err(Error::config(
            format!("{prefix}open_seconds"),
            format!("must be more than 0 and at most 600 seconds, not {open_seconds}"),
        ));
    }
    Ok(())
}

impl CircuitConfig {
    pub(super) fn validate(&self) -> Result<()> {
        validate_circuit("circuit.", self.failure_threshold, self.open_seconds)?;
        validate_site_changed(
            "circuit.site_changed_threshold",
            self.site_changed_threshold,
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub min_success_rate: f64,
    pub max_avg_duration: f64,
    pub max_timeout_rate: f64,
    pub max_concurrent_acquisitions: u32,
    pub min_cache_hit_rate: f64,
    /// Percent of the requests of one evaluation window that may be refused.
    pub max_rejection_rate: f64,
    /// Seconds between threshold checks.
    pub evaluate_interval: f64,
    /// Seconds after which a still-firing alert is logged again.
    pub repeat_interval: f64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            min_success_rate: 80.0,
            max_avg_duration: 120.0,
            max_timeout_rate: 10.0,
            max_concurrent_acquisitions: 5,
            min_cache_hit_rate: 70.0,
            max_rejection_rate: 20.0,
            evaluate_interval: 30.0,
            repeat_interval: 3600.0,
        }
    }
}

impl AlertsConfig {
    pub(super) fn validate(&self) -> Result<()> {
        percentage("alerts.min_success_rate", self.min_success_rate)?;
        percentage("alerts.max_timeout_rate", self.max_timeout_rate)?;
        percentage("alerts.min_cache_hit_rate", self.min_cache_hit_rate)?;
        percentage("alerts.max_rejection_rate", self.max_rejection_rate)?;
        positive("alerts.max_avg_duration", self.max_avg_duration)?;
        positive("alerts.evaluate_interval", self.evaluate_interval)?;
        positive("alerts.repeat_interval", self.repeat_interval)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Rows older than this many days are deleted by the daily retention job.
    pub retention_days: u32,
    /// Where history rows wait, fsynced, while the database cannot take them; replayed
    /// (each row once) when it can, and at start after a crash.
    pub spool_file: PathBuf,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention_days: 30,
            spool_file: PathBuf::from("tokend-history.spool"),
        }
    }
}

impl HistoryConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let max = crate::db::history::MAX_DAYS;
        if !(1..=max).contains(&self.retention_days) {
            return Err(Error::config(
                "history.retention_days",
                format!("must be from 1 to {max}, not {}", self.retention_days),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefix goes inside a Redis Cluster hash tag (`{P}:slots:…`): a brace would end the
    /// tag early, and glob characters would break the SCANs by prefix.
    #[test]
    fn a_key_prefix_with_braces_or_glob_characters_is_refused() {
        for bad in ["", "a b", "a*", "a{b", "b}"] {
            let config = RedisConfig {
                key_prefix: bad.into(),
                ..RedisConfig::default()
            };
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("redis.key_prefix"), "{bad:?}: {error}");
        }
        assert!(RedisConfig::default().validate().is_ok());
    }
}

//! Validity probes (SPEC §13): tokens in use are checked in the background at `probe_url`,
//! each once per `probe_interval`, the probes of a site spread evenly over the interval.
//!
//! - A token is in use once it has been handed out; it stops being probed when it leaves the
//!   cache (expired, invalidated, replaced by one that is handed out in turn).
//! - Never more than one probe per token at a time, and never more at once than the site's
//!   login slots (`max_concurrent_per_site`).
//! - 401, 403 or an answer matching `probe_invalid_pattern` invalidates the token (through
//!   [`Broker::invalidate`]: cache, store and tombstones stay consistent) and a replacement is
//!   acquired in the background (trigger `refresh_ahead`), so the next consumer gets a working
//!   token. Network errors and 5xx never invalidate: a blocked IP must not throw away valid
//!   tokens.
//! - Counted as `tokend_probes_total{site,result}`, result `valid`, `invalid` or `error`.
//! - A probe goes out the way the account logs in: through the account's own proxy, else the
//!   site's, else direct (never the environment's proxy). An account whose proxy cannot be
//!   read is not probed at all rather than probed from the host's address.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use reqwest::header::{HeaderName, HeaderValue};

use super::pipeline::Broker;
use super::request::AcquireRequest;
use crate::config::{seconds, SiteConfig};
use crate::drivers::read_answer;
use crate::error::{Error, Result};
use crate::policy::outcome::TriggerReason;
use crate::vault::crypto::SealContext;
use crate::vault::secret::Secret;

/// Longest a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest probe answer read (for `probe_invalid_pattern`).
const MAX_PROBE_BODY: usize = 64 * 1024;

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// The portal accepted the token.
    Valid,
    /// The portal refused it: 401, 403 or the invalid pattern.
    Invalid,
    /// No verdict: a network error, a 5xx or another answer. The token is kept.
    Error,
}

impl ProbeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeResult::Valid => "valid",
            ProbeResult::Invalid => "invalid",
            ProbeResult::Error => "error",
        }
    }
}

/// Whether the site's tokens are probed.
fn probed(site: &SiteConfig) -> bool {
    site.probe_interval > 0.0 && !site.probe_url.is_empty()
}

impl Broker {
    /// Notes a token handed out, so that it is probed (on sites with probes).
    pub(super) fn mark_in_use(&self, site: &SiteConfig, credential_id: i64, account: &str) {
        if probed(site) {
            self.inner.in_use.mark(&site.name, credential_id, account);
        }
    }

    /// The proxy the account's logins go through: its own (sealed in the database), else
    /// `None` (the prober then uses the site's).
    async fn own_proxy(&self, site: &SiteConfig, credential_id: i64) -> Result<Option<Secret>> {
        let list = self.credential_list(site).await?;
        let Some(entry) = list.iter().find(|c| c.id == credential_id) else {
            return Ok(None);
        };
        let Some(sealed) = &entry.proxy_encrypted else {
            return Ok(None);
        };
        let context = SealContext::Proxy {
            site: &self.account_owner(site).name,
            account: &entry.account,
        };
        Ok(Some(self.inner.key.open(sealed, context)?))
    }

    /// Starts the probe loop of every site with `probe_url` and `probe_interval`.
    pub fn start_probes(&self) -> Result<()> {
        for site in self.inner.config.sites.iter().filter(|s| probed(s)) {
            let prober = Arc::new(Prober::new(self.clone(), site)?);
            log::info!(
                "event=probes_started site={} interval={}s",
                site.name,
                site.probe_interval
            );
            actix_web::rt::spawn(prober.run());
        }
        Ok(())
    }
}

/// A probe client through `proxy` (none: direct, whatever the environment says), following
/// no redirects.
fn probe_client(proxy: Option<&str>) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")));
    match proxy {
        Some(url) => builder.proxy(reqwest::Proxy::all(url)?),
        None => builder.no_proxy(),
    }
    .build()
}

/// The probe loop of one site.
struct Prober {
    broker: Broker,
    site: String,
    url: String,
    header: HeaderName,
    /// The header's value with `{token}` still in it.
    template: String,
    invalid: Option<Regex>,
    interval: Duration,
    /// The client of accounts without a proxy of their own: through the site's proxy, if any.
    client: reqwest::Client,
    /// One client per account proxy URL, built on first use.
    proxied: Mutex<HashMap<String, reqwest::Client>>,
    /// At most the site's login slots of probes at once.
    permits: Arc<tokio::sync::Semaphore>,
    /// Credential ids being probed now: one probe per token at a time.
    probing: Mutex<HashSet<i64>>,
}

impl Prober {
    fn new(broker: Broker, site: &SiteConfig) -> Result<Prober> {
        let key = |field: &str| format!("sites.{}.{field}", site.name);
        let (name, template) = site
            .probe_header_template()
            .split_once(':')
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .ok_or_else(|| Error::config(key("probe_header"), "must be `Name: value`"))?;
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| Error::config(key("probe_header"), e.to_string()))?;
        let invalid = match site.probe_invalid_pattern.as_str() {
            "" => None,
            pattern => Some(
                Regex::new(pattern)
                    .map_err(|e| Error::config(key("probe_invalid_pattern"), e.to_string()))?,
            ),
        };
        // From where the site logs in: a portal may bind its sessions to the address.
        let proxy = (!site.proxy.is_empty()).then_some(site.proxy.expose());
        let client = probe_client(proxy).map_err(|e| Error::config(key("proxy"), e.to_string()))?;
        let slots = broker
            .inner
            .config
            .concurrency
            .max_concurrent_per_site
            .max(1);
        Ok(Prober {
            broker,
            site: site.name.clone(),
            url: site.probe_url.clone(),
            header,
            template,
            invalid,
            interval: seconds(site.probe_interval),
            client,
            proxied: Mutex::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(slots as usize)),
            probing: Mutex::default(),
        })
    }

    /// The client of the account's logins: its own proxy, else the site's client.
    async fn client_for(&self, credential_id: i64) -> Result<reqwest::Client> {
        let site = self.broker.site(&self.site)?;
        let Some(proxy) = self.broker.own_proxy(site, credential_id).await? else {
            return Ok(self.client.clone());
        };
        let mut proxied = self.proxied.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = proxied.get(proxy.expose()) {
            return Ok(client.clone());
        }
        let built = probe_client(Some(proxy.expose())).map_err(|_| {
            Error::Internal(format!(
                "proxy {} is not usable",
                crate::vault::secret::redact_url(proxy.expose())
            ))
        })?;
        proxied.insert(proxy.expose().to_string(), built.clone());
        Ok(built)
    }

    fn probing(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.probing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every token in use once per interval, one after the other at even gaps.
    async fn run(self: Arc<Self>) {
        loop {
            let tokens = self.broker.inner.in_use.of(&self.site);
            if tokens.is_empty() {
                tokio::time::sleep(self.interval).await;
                continue;
            }
            let gap = self.interval / tokens.len() as u32;
            for (credential_id, account) in tokens {
                tokio::time::sleep(gap).await;
                if !self.probing().insert(credential_id) {
                    continue;
                }
                let Ok(permit) = self.permits.clone().acquire_owned().await else {
                    return;
                };
                let prober = self.clone();
                actix_web::rt::spawn(async move {
                    prober.probe(credential_id, &account).await;
                    prober.probing().remove(&credential_id);
                    drop(permit);
                });
            }
        }
    }

    /// Probes the account's current token and acts on the verdict.
    async fn probe(&self, credential_id: i64, account: &str) {
        let inner = &self.broker.inner;
        let Some(hit) = inner.cache.token(&self.site, Some(credential_id)).await else {
            // Gone from the cache (expired, invalidated): nothing in use to probe.
            inner.in_use.forget(&self.site, credential_id);
            return;
        };
        let (entry, token) = (&hit.entry, &hit.token);
        if entry.expires_at <= chrono::Utc::now() {
            inner.in_use.forget(&self.site, credential_id);
            return;
        }
        let result = match self.client_for(credential_id).await {
            Ok(client) => self.verdict(&client, token.expose()).await,
            Err(e) => {
                log::warn!(
                    "event=probe_failed site={} account={account} error=\"{e}\"",
                    self.site
                );
                ProbeResult::Error
            }
        };
        inner.metrics.probe(&self.site, result.as_str());
        if result != ProbeResult::Invalid {
            return;
        }
        // A token renewed while the probe ran is not the one refused.
        let current = inner.cache.token_entry(&self.site, credential_id).await;
        if current.is_none_or(|c| c.acquisition_id != entry.acquisition_id) {
            return;
        }
        log::warn!(
            "event=probe_token_invalid site={} account={account} acquisition_id={}",
            self.site,
            entry.acquisition_id
        );
        if let Err(e) = self.broker.invalidate(&self.site, account).await {
            log::warn!(
                "event=probe_invalidate_failed site={} account={account} error=\"{e}\"",
                self.site
            );
            return;
        }
        inner.in_use.forget(&self.site, credential_id);
        self.replace(credential_id, account).await;
    }

    /// Acquires a new token for the account in the background.
    async fn replace(&self, credential_id: i64, account: &str) {
        let held = self
            .broker
            .site(&self.site)
            .ok()
            .and_then(|site| self.broker.held(site, credential_id));
        if held.is_some() {
            log::info!(
                "event=probe_replacement_skipped site={} account={account} reason=checked_out",
                self.site
            );
            return;
        }
        let request = AcquireRequest {
            site_name: self.site.clone(),
            credential_id: Some(credential_id),
            account: None,
            force_refresh: false,
        };
        match self
            .broker
            .acquire_as(request, TriggerReason::RefreshAhead)
            .await
        {
            Ok(_) => log::info!(
                "event=probe_token_replaced site={} account={account}",
                self.site
            ),
            Err(e) => log::warn!(
                "event=probe_replacement_failed site={} account={account} error=\"{e}\"",
                self.site
            ),
        }
    }

    async fn verdict(&self, client: &reqwest::Client, token: &str) -> ProbeResult {
        let Ok(value) = HeaderValue::from_str(&self.template.replace("{token}", token)) else {
            return ProbeResult::Error;
        };
        let response = match client
            .get(&self.url)
            .header(self.header.clone(), value)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                log::info!(
                    "event=probe_failed site={} error=\"{}\"",
                    self.site,
                    crate::drivers::clean_message(&e.to_string(), &[token])
                );
                return ProbeResult::Error;
            }
        };
        let status = response.status();
        if matches!(status.as_u16(), 401 | 403) {
            return ProbeResult::Invalid;
        }
        if status.is_server_error() {
            log::info!("event=probe_failed site={} status={status}", self.site);
            return ProbeResult::Error;
        }
        if let Some(pattern) = &self.invalid {
            // An answer that breaks off is judged by its status alone.
            let body = read_answer(response, MAX_PROBE_BODY)
                .await
                .unwrap_or_default();
            if pattern.is_match(&String::from_utf8_lossy(&body)) {
                return ProbeResult::Invalid;
            }
        }
        if status.is_success() {
            ProbeResult::Valid
        } else {
            ProbeResult::Error
        }
    }
}

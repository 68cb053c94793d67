//! What the pipeline keeps in the cache store, under which keys, and the hit/miss counters.
//!
//! | kind | key | value | expires |
//! |---|---|---|---|
//! | `token` | `P:token:SITE:ID` | [`CachedToken`], the token sealed | with the token |
//! | `token` | `P:site-token:SITE` | the site's newest [`CachedToken`] | with the token |
//! | `credentials` | `P:credentials:SITE` | [`CredentialEntry`] list, passwords sealed | `credentials_ttl` |
//! | `account_stats` | `P:account-stats:SITE` | [`AccountStats`] list | `account_stats_ttl` |
//! | `blacklist` | `P:blacklist:SITE:ID` | `REASON\nUNTIL_MS`: a blacklist or cooldown, mirrored from the database | with the block |
//!
//! With the Redis backend, token entries are also kept in an in-process near cache: an entry
//! read from Redis less than [`NEAR_WINDOW`] ago is served without a Redis round trip (so an
//! invalidation made on another instance is seen here within that window at the latest), and
//! while Redis is unreachable the near cache serves the tokens it holds until they expire.
//! After a Redis failure, Redis is left alone for [`BREAKER_PAUSE`] so that no request waits on
//! a dead connection; the outage and the recovery are each logged once.
//!
//! Every cache failure is non-fatal: it is logged, counted as an error of its kind, and the
//! caller goes on as on a miss (the database is the source of truth).

use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::CacheStore;
use crate::crypto::{SealContext, SecretKey};
use crate::error::{Error, Result};
use crate::outcome::BlockReason;
use crate::secret::Secret;

/// How long a token entry read from Redis is served from the in-process near cache.
pub const NEAR_WINDOW: Duration = Duration::from_secs(1);
/// After a Redis failure, how long the cache answers without trying Redis.
pub const BREAKER_PAUSE: Duration = Duration::from_secs(1);

/// The cache kinds, in the order reports list them.
pub const KINDS: [&str; 4] = ["token", "credentials", "account_stats", "blacklist"];

/// A cached token: enough to answer an acquire without the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedToken {
    pub credential_id: i64,
    pub account: String,
    /// Sealed with the secret key (Redis is shared; the key must be too).
    pub token: String,
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
    /// When a background refresh becomes due (two thirds of the life, with jitter).
    pub refresh_at: DateTime<Utc>,
    pub acquisition_id: String,
    /// The fencing number of the slot the login ran under (0: unfenced).
    #[serde(default)]
    pub fence: u64,
}

impl CachedToken {
    pub fn seconds_left(&self, now: DateTime<Utc>) -> f64 {
        (self.expires_at - now).num_milliseconds() as f64 / 1000.0
    }

    /// Whether the token may still be handed out: more than its margin of life left.
    pub fn is_fresh(&self, now: DateTime<Utc>, refresh_ahead: f64) -> bool {
        self.seconds_left(now) > margin(self.issued_at, self.expires_at, refresh_ahead)
    }
}

/// Seconds of life under which a token is not handed out (SPEC §1): `refresh_ahead`, but at
/// most a quarter of the lifetime the token was issued with, so that a portal's short-lived
/// tokens are still served for most of their life instead of causing a login per caller.
pub fn margin(issued_at: DateTime<Utc>, expires_at: DateTime<Utc>, refresh_ahead: f64) -> f64 {
    let life = (expires_at - issued_at).num_milliseconds() as f64 / 1000.0;
    refresh_ahead.min(life.max(0.0) / 4.0)
}

/// One account of a site as cached for selection and login (password sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialEntry {
    pub id: i64,
    pub account: String,
    pub password_encrypted: String,
    pub is_preferred: bool,
    pub is_active: bool,
    /// A blacklist or cooldown kept in the database (SPEC §11).
    #[serde(default)]
    pub blocked_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub block_reason: Option<crate::outcome::BlockReason>,
}

impl CredentialEntry {
    /// The block in force at `now`, as the database had it when the list was loaded.
    pub fn stored_block(
        &self,
        now: DateTime<Utc>,
    ) -> Option<(crate::outcome::BlockReason, DateTime<Utc>)> {
        match (self.block_reason, self.blocked_until) {
            (Some(reason), Some(until)) if until > now => Some((reason, until)),
            _ => None,
        }
    }
}

/// Hits, misses and errors per cache kind; shared, lock-free, read by `MonitorActor`.
#[derive(Debug, Default)]
pub struct CacheCounters {
    counts: [[AtomicU64; 3]; 4],
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KindCounts {
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
}

impl KindCounts {
    /// Percent of lookups that hit; `None` before the first lookup.
    pub fn hit_rate(&self) -> Option<f64> {
        let total = self.hits + self.misses;
        (total > 0).then(|| self.hits as f64 * 100.0 / total as f64)
    }
}

impl CacheCounters {
    fn index(kind: &str) -> usize {
        KINDS.iter().position(|k| *k == kind).unwrap_or(0)
    }

    fn bump(&self, kind: &str, which: usize) {
        self.counts[Self::index(kind)][which].fetch_add(1, Ordering::Relaxed);
    }

    pub fn hit(&self, kind: &str) {
        self.bump(kind, 0);
    }

    pub fn miss(&self, kind: &str) {
        self.bump(kind, 1);
    }

    pub fn error(&self, kind: &str) {
        self.bump(kind, 2);
    }

    pub fn get(&self, kind: &str) -> KindCounts {
        let c = &self.counts[Self::index(kind)];
        KindCounts {
            hits: c[0].load(Ordering::Relaxed),
            misses: c[1].load(Ordering::Relaxed),
            errors: c[2].load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        for kind in &self.counts {
            for count in kind {
                count.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// The pipeline's view of the cache: typed entries, keys, counters, sealing.
#[derive(Clone)]
pub struct TokenCache {
    store: CacheStore,
    /// In-process copies of token entries read from Redis (none for the memory backend).
    near: Option<Arc<super::MemoryStore>>,
    /// When Redis last failed (ms since the epoch), 0 while it answers.
    failed_at: Arc<std::sync::atomic::AtomicI64>,
    prefix: Arc<str>,
    key: SecretKey,
    pub counters: Arc<CacheCounters>,
}

impl TokenCache {
    pub fn new(store: CacheStore, key_prefix: &str, key: SecretKey) -> TokenCache {
        let near = matches!(store, CacheStore::Redis(_)).then(Arc::default);
        TokenCache {
            store,
            near,
            failed_at: Arc::default(),
            prefix: Arc::from(key_prefix),
            key,
            counters: Arc::default(),
        }
    }

    pub fn store(&self) -> &CacheStore {
        &self.store
    }

    /// `{key_prefix}:`, the start of every key tokend owns.
    pub fn root(&self) -> String {
        format!("{}:", self.prefix)
    }

    fn token_key(&self, site: &str, id: i64) -> String {
        format!("{}:token:{site}:{id}", self.prefix)
    }

    fn site_token_key(&self, site: &str) -> String {
        format!("{}:site-token:{site}", self.prefix)
    }

    fn credentials_key(&self, site: &str) -> String {
        format!("{}:credentials:{site}", self.prefix)
    }

    fn stats_key(&self, site: &str) -> String {
        format!("{}:account-stats:{site}", self.prefix)
    }

    fn blacklist_key(&self, site: &str, id: i64) -> String {
        format!("{}:blacklist:{site}:{id}", self.prefix)
    }

    /// Whether the backend is reachable as far as the cache knows (always, in process).
    pub fn backend_up(&self) -> bool {
        self.failed_at.load(Ordering::Relaxed) == 0
    }

    fn paused(&self) -> bool {
        let failed = self.failed_at.load(Ordering::Relaxed);
        failed != 0 && Utc::now().timestamp_millis() - failed < BREAKER_PAUSE.as_millis() as i64
    }

    fn note<T>(&self, kind: &str, op: &str, result: Result<T>) -> Result<T> {
        match &result {
            Ok(_) => {
                if self.failed_at.swap(0, Ordering::Relaxed) != 0 {
                    log::info!(
                        "event=cache_backend_restored backend={}",
                        self.store.backend()
                    );
                }
            }
            Err(e) => {
                self.counters.error(kind);
                if self
                    .failed_at
                    .swap(Utc::now().timestamp_millis(), Ordering::Relaxed)
                    == 0
                {
                    log::warn!("event=cache_backend_unreachable backend={} op={op} error=\"{e}\" fallback=in_process", self.store.backend());
                }
            }
        }
        result
    }

    async fn store_get(&self, kind: &str, key: &str) -> Result<Option<String>> {
        if self.paused() {
            self.counters.error(kind);
            return Err(Error::CacheUnavailable("paused after a failure".into()));
        }
        let result = self.store.get(key).await;
        self.note(kind, "get", result)
    }

    /// Deletes are always sent, whatever the breaker says: an invalidation must not be lost.
    /// Deletes are always sent, whatever the breaker says: an invalidation must not be lost.
    async fn store_delete(&self, kind: &str, key: &str) {
        let result = self.store.delete(key).await;
        let _ = self.note(kind, "delete", result);
    }

    /// Reads and decodes an entry; counts hit or miss when `count` (token lookups are
    /// counted by the caller, which also judges freshness).
    async fn get_json<T: DeserializeOwned>(&self, kind: &str, key: &str, count: bool) -> Option<T> {
        let text = self.store_get(kind, key).await.ok()?;
        if count {
            match text {
                Some(_) => self.counters.hit(kind),
                None => self.counters.miss(kind),
            }
        }
        self.decode(kind, key, &text?).await
    }

    async fn decode<T: DeserializeOwned>(&self, kind: &str, key: &str, text: &str) -> Option<T> {
        match serde_json::from_str(text) {
            Ok(value) => Some(value),
            Err(e) => {
                log::warn!("event=cache_entry_unreadable kind={kind} error=\"{e}\"");
                self.counters.error(kind);
                self.delete(kind, key).await;
                None
            }
        }
    }

    async fn put_json<T: Serialize>(&self, kind: &str, key: &str, value: &T, ttl: Duration) {
        let Ok(text) = serde_json::to_string(value) else {
            return;
        };
        if kind == "token" {
            self.near_put(key, &text, ttl);
        }
        if self.paused() {
            self.counters.error(kind);
            return;
        }
        let written = match (kind, &self.store) {
            ("token", CacheStore::Redis(redis)) => {
                let fence = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["fence"].as_u64())
                    .unwrap_or(0);
                let stored = redis.set_fenced(key, &text, ttl, fence).await;
                if let Ok(false) = stored {
                    log::warn!("event=stale_token_discarded store=redis fence={fence}");
                    if let Some(near) = &self.near {
                        near.delete(key);
                    }
                }
                stored.map(|_| ())
            }
            _ => self.store.set(key, &text, ttl).await,
        };
        let _ = self.note(kind, "set", written);
    }

    async fn delete(&self, kind: &str, key: &str) {
        if let Some(near) = &self.near {
            near.delete(key);
        }
        self.store_delete(kind, key).await;
    }

    /// Keeps a copy in the near cache, stamped with the time it was known to be current.
    fn near_put(&self, key: &str, text: &str, ttl: Duration) {
        if let Some(near) = &self.near {
            near.set(
                key,
                format!("{}\n{text}", Utc::now().timestamp_millis()),
                ttl,
            );
        }
    }

    /// A near-cache copy and its age.
    fn near_get(&self, key: &str) -> Option<(Duration, String)> {
        let stamped = self.near.as_ref()?.get(key)?;
        let (at, text) = stamped.split_once('\n')?;
        let age = Utc::now().timestamp_millis() - at.parse::<i64>().ok()?;
        Some((Duration::from_millis(age.max(0) as u64), text.to_string()))
    }

    /// The entry under `key`: from the near cache when recent, else from the store; while the
    /// store is unreachable, from the near cache whatever its age.
    async fn token_text(&self, key: &str) -> Option<String> {
        let near = self.near_get(key);
        if let Some((age, text)) = &near {
            if *age < NEAR_WINDOW {
                return Some(text.clone());
            }
        }
        match self.store_get("token", key).await {
            Ok(Some(text)) => {
                if self.near.is_some() {
                    let left = serde_json::from_str::<CachedToken>(&text)
                        .ok()
                        .and_then(|e| (e.expires_at - Utc::now()).to_std().ok());
                    if let Some(left) = left {
                        self.near_put(key, &text, left);
                    }
                }
                Some(text)
            }
            Ok(None) => {
                if let Some(n) = &self.near {
                    n.delete(key);
                }
                None
            }
            Err(_) => near.map(|(_, text)| text),
        }
    }

    /// The cached token of one account, or of the site's newest login; with the token opened.
    pub async fn token(
        &self,
        site: &str,
        credential_id: Option<i64>,
    ) -> Option<(CachedToken, Secret)> {
        let key = match credential_id {
            Some(id) => self.token_key(site, id),
            None => self.site_token_key(site),
        };
        let text = self.token_text(&key).await?;
        let entry: CachedToken = self.decode("token", &key, &text).await?;
        match self.key.open(
            &entry.token,
            SealContext::Token {
                site,
                account: &entry.account,
            },
        ) {
            Ok(token) => Some((entry, token)),
            Err(e) => {
                log::warn!("event=cache_entry_unreadable kind=token site={site} error=\"{e}\"");
                self.counters.error("token");
                None
            }
        }
    }

    /// The cached entry of one account's token, left sealed: what the dashboard shows
    /// (expiry, issue time, the acquisition behind it) needs no token material. Not counted
    /// as a hit or a miss: no caller asked for the token.
    pub async fn token_entry(&self, site: &str, credential_id: i64) -> Option<CachedToken> {
        let key = self.token_key(site, credential_id);
        let text = self.token_text(&key).await?;
        self.decode("token", &key, &text).await
    }

    /// Caches a token under its account and as the site's newest.
    pub async fn put_token(&self, site: &str, entry: &CachedToken) {
        let ttl = (entry.expires_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        if ttl.is_zero() {
            return;
        }
        self.put_json(
            "token",
            &self.token_key(site, entry.credential_id),
            entry,
            ttl,
        )
        .await;
        self.put_json("token", &self.site_token_key(site), entry, ttl)
            .await;
    }

    /// Seals a token for the cache.
    pub fn seal(&self, site: &str, account: &str, token: &Secret) -> crate::error::Result<String> {
        self.key
            .seal(token.expose(), SealContext::Token { site, account })
    }

    /// Drops an account's token, and the site's newest if it is that one.
    pub async fn invalidate(&self, site: &str, credential_id: i64) {
        let newest_key = self.site_token_key(site);
        let newest: Option<CachedToken> = match self.store_get("token", &newest_key).await {
            Ok(Some(text)) => serde_json::from_str(&text).ok(),
            _ => self
                .near_get(&newest_key)
                .and_then(|(_, text)| serde_json::from_str(&text).ok()),
        };
        self.delete("token", &self.token_key(site, credential_id))
            .await;
        if newest.is_none_or(|t| t.credential_id == credential_id) {
            self.delete("token", &newest_key).await;
        }
    }

    pub async fn credentials(&self, site: &str) -> Option<Vec<CredentialEntry>> {
        self.get_json("credentials", &self.credentials_key(site), true)
            .await
    }

    pub async fn put_credentials(&self, site: &str, list: &[CredentialEntry], ttl: Duration) {
        self.put_json("credentials", &self.credentials_key(site), &list, ttl)
            .await;
    }

    pub async fn account_stats(&self, site: &str) -> Option<Vec<crate::selection::AccountStats>> {
        self.get_json("account_stats", &self.stats_key(site), true)
            .await
    }

    pub async fn put_account_stats(
        &self,
        site: &str,
        stats: &[crate::selection::AccountStats],
        ttl: Duration,
    ) {
        self.put_json("account_stats", &self.stats_key(site), &stats, ttl)
            .await;
    }

    pub async fn forget_account_stats(&self, site: &str) {
        self.delete("account_stats", &self.stats_key(site)).await;
    }

    /// The blacklist or cooldown of an account mirrored in the cache, if one is in force.
    /// With Redis, a copy is kept in process, so that an outage does not let a blocked
    /// account be tried again at once.
    pub async fn block(&self, site: &str, id: i64) -> Option<(BlockReason, DateTime<Utc>)> {
        let key = self.blacklist_key(site, id);
        let found = match self.store_get("blacklist", &key).await {
            Ok(found) => found,
            Err(_) => self.near.as_ref().and_then(|near| near.get(&key)),
        };
        let block = found.as_deref().and_then(parse_block);
        if block.is_some() {
            self.counters.hit("blacklist");
        } else {
            self.counters.miss("blacklist");
        }
        block.filter(|(_, until)| *until > Utc::now())
    }

    /// Mirrors a block that the database holds (it expires with the block).
    pub async fn put_block(&self, site: &str, id: i64, reason: BlockReason, until: DateTime<Utc>) {
        let Ok(ttl) = (until - Utc::now()).to_std() else {
            return;
        };
        if ttl.is_zero() {
            return;
        }
        let key = self.blacklist_key(site, id);
        let value = format!("{}\n{}", reason.as_str(), until.timestamp_millis());
        if let Some(near) = &self.near {
            near.set(&key, value.clone(), ttl);
        }
        if !self.paused() {
            let result = self.store.set(&key, &value, ttl).await;
            let _ = self.note("blacklist", "set", result);
        }
    }

    pub async fn remove_block(&self, site: &str, id: i64) {
        self.delete("blacklist", &self.blacklist_key(site, id))
            .await;
    }

    /// Drops a site's cached credential list and statistics: the next use reloads them.
    pub async fn forget_accounts(&self, site: &str) {
        self.delete("credentials", &self.credentials_key(site))
            .await;
        self.delete("account_stats", &self.stats_key(site)).await;
    }
}

/// `REASON\nUNTIL_MS`, as [`TokenCache::put_block`] writes it.
fn parse_block(text: &str) -> Option<(BlockReason, DateTime<Utc>)> {
    let (reason, until) = text.split_once('\n')?;
    Some((
        BlockReason::parse(reason)?,
        DateTime::from_timestamp_millis(until.parse().ok()?)?,
    ))
}

/// The key prefixes of the cache kinds (never the slots or locks, which share the prefix).
const KIND_PREFIXES: [(&str, &str); 5] = [
    ("token", "token:"),
    ("token", "site-token:"),
    ("credentials", "credentials:"),
    ("account_stats", "account-stats:"),
    ("blacklist", "blacklist:"),
];

impl TokenCache {
    /// Keys per cache kind, as the backend counts them (SCAN on Redis).
    pub async fn key_counts(&self) -> Result<BTreeMap<&'static str, usize>> {
        let mut counts = BTreeMap::new();
        for (kind, prefix) in KIND_PREFIXES {
            let n = self
                .store
                .count_prefix(&format!("{}:{prefix}", self.prefix))
                .await?;
            *counts.entry(kind).or_insert(0) += n;
        }
        Ok(counts)
    }

    /// Deletes the cached entries of every site, or of one; returns how many keys.
    pub async fn clear(&self, site: Option<&str>) -> Result<usize> {
        let mut removed = 0;
        let prefixes: Vec<String> = match site {
            None => KIND_PREFIXES
                .iter()
                .map(|(_, p)| format!("{}:{p}", self.prefix))
                .collect(),
            Some(site) => vec![
                format!("{}:token:{site}:", self.prefix),
                format!("{}:blacklist:{site}:", self.prefix),
            ],
        };
        for prefix in &prefixes {
            removed += self.store.delete_prefix(prefix).await?;
            if let Some(near) = &self.near {
                near.delete_prefix(prefix);
            }
        }
        if let Some(site) = site {
            for key in [
                self.site_token_key(site),
                self.credentials_key(site),
                self.stats_key(site),
            ] {
                if self.store.delete(&key).await? {
                    removed += 1;
                }
                if let Some(near) = &self.near {
                    near.delete(&key);
                }
            }
        }
        Ok(removed)
    }
}

//! What the pipeline keeps in the cache store, under which keys, and the hit/miss counters.
//!
//! | kind | key | value | expires |
//! |---|---|---|---|
//! | `token` | `P:token:SITE:ID` | [`CachedToken`], the token sealed | with the token |
//! | `token` | `P:site-token:SITE` | the site's newest [`CachedToken`] | with the token |
//! | `credentials` | `P:credentials:SITE` | [`CredentialEntry`] list, passwords sealed | `credentials_ttl` |
//! | `account_stats` | `P:account-stats:SITE` | [`AccountStats`] list | `account_stats_ttl` |
//! | `blacklist` | `P:blacklist:SITE:ID` | `REASON\nUNTIL_MS`: a blacklist or cooldown, mirrored from the database | with the block |
//! | (tombstone) | `P:revoked:SITE:ID:FINGERPRINT` | `1`: that token was invalidated | with the token |
//!
//! With the Redis backend, token entries are also kept in an in-process near cache: an entry
//! read from Redis less than [`NEAR_WINDOW`] ago is served without a Redis round trip (so an
//! invalidation made on another instance is seen here within that window at the latest), and
//! while Redis is unreachable the near cache serves the tokens it holds until they expire.
//! After a Redis failure, the [`Breaker`] leaves Redis alone for a pause that doubles with each
//! failed probe, so that no request waits on a dead connection; the outage and the recovery
//! are each logged once. Local ages (near cache, breaker) are measured on the monotonic clock.
//!
//! Every cache failure is non-fatal: it is logged, counted as an error of its kind, and the
//! caller goes on as on a miss (the database is the source of truth).

use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::breaker::{Admission, Breaker, Change};
use super::{CacheStore, TokenWrite};
use crate::crypto::{SealContext, SecretKey};
use crate::error::{Error, Result};
use crate::outcome::BlockReason;
use crate::secret::Secret;

/// How long a token entry read from Redis is served from the in-process near cache.
pub const NEAR_WINDOW: Duration = Duration::from_secs(1);

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
    /// The account's own proxy URL, sealed.
    #[serde(default)]
    pub proxy_encrypted: Option<String>,
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

/// Frees the breaker's probe if the call it guards is dropped before its answer.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.probe_abandoned();
        }
    }
}

/// The pipeline's view of the cache: typed entries, keys, counters, sealing.
#[derive(Clone)]
pub struct TokenCache {
    store: CacheStore,
    /// In-process copies of token entries read from Redis (none for the memory backend).
    near: Option<Arc<super::MemoryStore>>,
    /// Keeps requests away from a Redis that failed.
    breaker: Arc<Breaker>,
    /// The origin of the near cache's time stamps (monotonic).
    epoch: Instant,
    prefix: Arc<str>,
    key: SecretKey,
    pub counters: Arc<CacheCounters>,
    /// Token entries as last decoded and opened, by key, with the stored text they came from:
    /// a hit whose text is unchanged skips the JSON decoding, the date parsing and the
    /// decryption. The stored text stays the truth; this only remembers work already done.
    decoded: Arc<std::sync::RwLock<std::collections::HashMap<String, Arc<Decoded>>>>,
}

/// One token entry, decoded and opened, and the stored text it was read from.
struct Decoded {
    text: Arc<str>,
    entry: CachedToken,
    token: Secret,
}

/// Entries remembered at most: beyond, the memo is cleared (one key per account and site).
const DECODED_MAX: usize = 65_536;

impl TokenCache {
    pub fn new(store: CacheStore, key_prefix: &str, key: SecretKey) -> TokenCache {
        let near = matches!(store, CacheStore::Redis(_)).then(Arc::default);
        TokenCache {
            store,
            near,
            breaker: Arc::default(),
            epoch: Instant::now(),
            prefix: Arc::from(key_prefix),
            key,
            counters: Arc::default(),
            decoded: Arc::default(),
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
        !self.breaker.is_open()
    }

    fn note<T>(&self, kind: &str, op: &str, result: Result<T>) -> Result<T> {
        match &result {
            Ok(_) => {
                if self.breaker.succeeded() == Change::Closed {
                    log::info!(
                        "event=cache_backend_restored backend={}",
                        self.store.backend()
                    );
                }
            }
            Err(e) => {
                self.counters.error(kind);
                if self.breaker.failed() == Change::Opened {
                    log::warn!("event=cache_backend_unreachable backend={} op={op} error=\"{e}\" fallback=in_process", self.store.backend());
                }
            }
        }
        result
    }

    /// Runs one call to the store through the breaker: refused at once while it is open,
    /// sent as the one probe when the pause is over.
    async fn guarded<T>(
        &self,
        kind: &str,
        op: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let admission = self.breaker.admit();
        if admission == Admission::Refuse {
            self.counters.error(kind);
            return Err(Error::CacheUnavailable(
                "left alone after a failure (breaker open)".into(),
            ));
        }
        // A probe whose caller goes away before the answer frees the probe for another.
        let mut probe = ProbeGuard {
            breaker: &self.breaker,
            armed: admission == Admission::Probe,
        };
        let result = call.await;
        probe.armed = false;
        self.note(kind, op, result)
    }

    /// One round trip to the backend when the breaker is open and no probe is under way (the
    /// background probe of `CacheActor`); closes the breaker when it answers. Returns whether
    /// the backend is up as far as the cache knows.
    pub async fn probe(&self) -> bool {
        if !self.breaker.admit_background_probe() {
            return self.backend_up();
        }
        let mut probe = ProbeGuard {
            breaker: &self.breaker,
            armed: true,
        };
        let result = match &self.store {
            CacheStore::Redis(redis) => redis.ping().await.map(|_| ()),
            CacheStore::Memory(_) => Ok(()),
        };
        probe.armed = false;
        // Not counted as an error of a cache kind: no lookup was refused.
        match result {
            Ok(()) => {
                if self.breaker.succeeded() == Change::Closed {
                    log::info!(
                        "event=cache_backend_restored backend={} by=probe",
                        self.store.backend()
                    );
                }
                true
            }
            Err(_) => {
                self.breaker.failed();
                false
            }
        }
    }

    async fn store_get(&self, kind: &str, key: &str) -> Result<Option<String>> {
        self.guarded(kind, "get", self.store.get(key)).await
    }

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
        let _ = self
            .guarded(kind, "set", self.store.set(key, &text, ttl))
            .await;
    }

    /// Writes a token entry unless a newer one is stored (fencing) or the token was
    /// invalidated (its tombstone under `revoked`), each checked in one atomic step with the
    /// write. The near cache takes the entry only once the store did (or while Redis is
    /// away), so that a refused entry is never served from it.
    async fn put_token_entry(&self, key: &str, entry: &CachedToken, ttl: Duration, revoked: &str) {
        let Ok(text) = serde_json::to_string(entry) else {
            return;
        };
        let written = match &self.store {
            CacheStore::Memory(memory) => {
                if memory.set_unless(key, text.clone(), ttl, revoked) {
                    TokenWrite::Written
                } else {
                    TokenWrite::Revoked
                }
            }
            CacheStore::Redis(redis) => {
                if self
                    .near
                    .as_ref()
                    .is_some_and(|near| near.get(revoked).is_some())
                {
                    TokenWrite::Revoked
                } else {
                    let call = redis.set_token(key, &text, ttl, entry.fence, Some(revoked));
                    match self.guarded("token", "set", call).await {
                        Ok(written) => written,
                        // Redis is away: the near cache serves meanwhile.
                        Err(_) => TokenWrite::Written,
                    }
                }
            }
        };
        match written {
            TokenWrite::Written => self.near_put(key, &text, ttl),
            TokenWrite::Stale => {
                log::warn!(
                    "event=stale_token_discarded store=redis fence={}",
                    entry.fence
                );
                self.near_forget(key);
            }
            TokenWrite::Revoked => {
                log::info!(
                    "event=invalidated_token_not_cached account={} acquisition_id={}",
                    entry.account,
                    entry.acquisition_id
                );
                self.near_forget(key);
            }
        }
    }

    fn near_forget(&self, key: &str) {
        if let Some(near) = &self.near {
            near.delete(key);
        }
    }

    async fn delete(&self, kind: &str, key: &str) {
        if let Some(near) = &self.near {
            near.delete(key);
        }
        self.decoded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.store_delete(kind, key).await;
    }

    /// Keeps a copy in the near cache, stamped with the (monotonic) time it was known to be
    /// current.
    fn near_put(&self, key: &str, text: &str, ttl: Duration) {
        if let Some(near) = &self.near {
            let at = self.epoch.elapsed().as_millis();
            near.set(key, format!("{at}\n{text}"), ttl);
        }
    }

    /// A near-cache copy and its age.
    fn near_get(&self, key: &str) -> Option<(Duration, String)> {
        let stamped = self.near.as_ref()?.get(key)?;
        let (at, text) = stamped.split_once('\n')?;
        let at = Duration::from_millis(at.parse().ok()?);
        let age = self.epoch.elapsed().saturating_sub(at);
        Some((age, text.to_string()))
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
        // In process, the stored text is shared: a repeated hit compares one pointer.
        let text: Arc<str> = match &self.store {
            CacheStore::Memory(memory) => memory.get_shared(&key)?,
            CacheStore::Redis(_) => Arc::from(self.token_text(&key).await?),
        };
        if let Some(known) = self.remembered(&key, &text) {
            return Some((known.entry.clone(), known.token.clone()));
        }
        let entry: CachedToken = self.decode("token", &key, &text).await?;
        match self.key.open(
            &entry.token,
            SealContext::Token {
                site,
                account: &entry.account,
            },
        ) {
            Ok(token) => {
                self.remember(key, text, &entry, &token);
                Some((entry, token))
            }
            Err(e) => {
                log::warn!("event=cache_entry_unreadable kind=token site={site} error=\"{e}\"");
                self.counters.error("token");
                None
            }
        }
    }

    /// The decoded entry of `key` if it was decoded from this very text.
    fn remembered(&self, key: &str, text: &Arc<str>) -> Option<Arc<Decoded>> {
        let decoded = self.decoded.read().unwrap_or_else(|p| p.into_inner());
        decoded
            .get(key)
            .filter(|d| Arc::ptr_eq(&d.text, text) || *d.text == **text)
            .cloned()
    }

    fn remember(&self, key: String, text: Arc<str>, entry: &CachedToken, token: &Secret) {
        let mut decoded = self.decoded.write().unwrap_or_else(|p| p.into_inner());
        if decoded.len() >= DECODED_MAX {
            decoded.clear();
        }
        decoded.insert(
            key,
            Arc::new(Decoded {
                text,
                entry: entry.clone(),
                token: token.clone(),
            }),
        );
    }

    /// The cached entry of one account's token, left sealed: what the dashboard shows
    /// (expiry, issue time, the acquisition behind it) needs no token material. Not counted
    /// as a hit or a miss: no caller asked for the token.
    pub async fn token_entry(&self, site: &str, credential_id: i64) -> Option<CachedToken> {
        let key = self.token_key(site, credential_id);
        let text = self.token_text(&key).await?;
        self.decode("token", &key, &text).await
    }

    /// Caches a token under its account and as the site's newest, unless it was invalidated.
    pub async fn put_token(&self, site: &str, entry: &CachedToken) {
        let ttl = (entry.expires_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        if ttl.is_zero() {
            return;
        }
        let revoked = self.revoked_key(site, entry.credential_id, &entry.token);
        let account_key = self.token_key(site, entry.credential_id);
        self.put_token_entry(&account_key, entry, ttl, &revoked)
            .await;
        self.put_token_entry(&self.site_token_key(site), entry, ttl, &revoked)
            .await;
    }

    /// Seals a token for the cache.
    pub fn seal(&self, site: &str, account: &str, token: &Secret) -> crate::error::Result<String> {
        self.key
            .seal(token.expose(), SealContext::Token { site, account })
    }

    /// Drops an account's token, and the site's newest if it is that one; `stored` is the
    /// token just deleted from the `tokens` table (sealed, and when it expires).
    ///
    /// Each token dropped leaves a tombstone until it expires, written before the entries are
    /// deleted: an acquisition that read the token before the invalidation and caches it
    /// afterwards is refused (the write checks the tombstone in the same step), so once the
    /// invalidation has answered, the token is never handed out again.
    pub async fn invalidate(
        &self,
        site: &str,
        credential_id: i64,
        stored: Option<(&str, DateTime<Utc>)>,
    ) {
        let account_key = self.token_key(site, credential_id);
        let newest_key = self.site_token_key(site);
        let account: Option<CachedToken> = self.entry_for_invalidation(&account_key).await;
        let newest: Option<CachedToken> = self.entry_for_invalidation(&newest_key).await;
        let mut dropped: Vec<(String, DateTime<Utc>)> = stored
            .map(|(sealed, expires)| (sealed.to_string(), expires))
            .into_iter()
            .collect();
        for entry in account.iter().chain(newest.iter()) {
            if entry.credential_id == credential_id {
                dropped.push((entry.token.clone(), entry.expires_at));
            }
        }
        for (sealed, expires_at) in &dropped {
            self.revoke(site, credential_id, sealed, *expires_at).await;
        }
        self.delete("token", &account_key).await;
        if newest.is_none_or(|t| t.credential_id == credential_id) {
            self.delete("token", &newest_key).await;
        }
    }

    /// The entry under `key` as far as it can be known (the store, else the near cache).
    async fn entry_for_invalidation(&self, key: &str) -> Option<CachedToken> {
        let text = match self.store_get("token", key).await {
            Ok(found) => found,
            Err(_) => self.near_get(key).map(|(_, text)| text),
        };
        serde_json::from_str(&text?).ok()
    }

    /// Leaves the tombstone of a token until it expires. Like deletes, sent whatever the
    /// breaker says, and kept in process too.
    async fn revoke(
        &self,
        site: &str,
        credential_id: i64,
        sealed: &str,
        expires_at: DateTime<Utc>,
    ) {
        let Ok(ttl) = (expires_at - Utc::now()).to_std() else {
            return;
        };
        if ttl.is_zero() {
            return;
        }
        let key = self.revoked_key(site, credential_id, sealed);
        if let Some(near) = &self.near {
            near.set(&key, "1".into(), ttl);
        }
        let result = self.store.set(&key, "1", ttl).await;
        let _ = self.note("token", "revoke", result);
    }

    /// The tombstone key of one token (by the fingerprint of its sealed form).
    fn revoked_key(&self, site: &str, credential_id: i64, sealed: &str) -> String {
        format!(
            "{}:revoked:{site}:{credential_id}:{}",
            self.prefix,
            crate::secret::fingerprint(sealed)
        )
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
        let _ = self
            .guarded("blacklist", "set", self.store.set(&key, &value, ttl))
            .await;
    }

    pub async fn remove_block(&self, site: &str, id: i64) {
        self.delete("blacklist", &self.blacklist_key(site, id))
            .await;
    }

    /// The site's next round-robin turn from Redis (`P:turn:SITE`); `None` in process or
    /// while Redis fails (the caller counts in process then).
    pub async fn next_turn(&self, site: &str) -> Option<u64> {
        let CacheStore::Redis(redis) = &self.store else {
            return None;
        };
        let key = format!("{}:turn:{site}", self.prefix);
        self.guarded("token", "incr", redis.incr(&key)).await.ok()
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
        self.decoded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
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

//! [`TokenCache`]: the pipeline's typed view of the cache store — token entries, credential
//! lists, account statistics and mirrored blocks — with sealing and the near cache.
//!
//! Reads and writes go through [`GuardedStore`], and with Redis through the one breaker of
//! the Redis link ([`crate::redis`]).
//!
//! Every cache failure is non-fatal: it is logged, counted as an error of its kind, and the
//! caller goes on as on a miss (the database is the source of truth).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::entries::{decode_block, encode_block, CachedToken, CredentialEntry};
use super::guarded::GuardedStore;
use super::kinds::{CacheCounters, CacheKind};
use super::listener::Listener;
use super::near::{DecodedTokens, NearCache, OpenedToken};
use super::redis_store::TokenWrite;
use super::store::CacheStore;
use crate::error::Result;
use crate::policy::outcome::BlockReason;
use crate::policy::selection::AccountStats;
use crate::redis::Keys;
use crate::vault::crypto::{SealContext, SecretKey};
use crate::vault::secret::Secret;

/// The cache backend as `/performance/cache-stats` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BackendFacts {
    Redis {
        url: String,
        /// Whether this instance hears the changes made by all instances (subscribed to the
        /// channel of changes): near copies are then served without a round trip until a
        /// change is heard; `false` (subscribing, or the subscription broke): re-read each
        /// second.
        changes_heard: bool,
        used_memory_bytes: u64,
        keys_under_prefix: usize,
        key_prefix: String,
    },
    Memory {
        keys: usize,
    },
}

/// The pipeline's view of the cache: typed entries, keys, counters, sealing.
#[derive(Clone)]
pub struct TokenCache {
    store: CacheStore,
    /// In-process copies of token entries read from Redis (none for the memory backend).
    near: Option<Arc<NearCache>>,
    /// Keys whose read from the store outlived [`NEAR_WAIT`] and still runs: their near
    /// copies are served meanwhile without another read piling up on a stalled Redis.
    reading: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The same store behind the breaker, counting failures per kind: how entries are read
    /// and written.
    guarded: GuardedStore,
    keys: Keys,
    key: SecretKey,
    pub counters: Arc<CacheCounters>,
    decoded: Arc<DecodedTokens>,
    /// With Redis, the listener that keeps the near cache told of changes (ends with the last
    /// handle on the cache).
    _listener: Option<Arc<Listener>>,
}

impl TokenCache {
    pub fn new(store: CacheStore, key_prefix: &str, key: SecretKey) -> TokenCache {
        let near: Option<Arc<NearCache>> = matches!(store, CacheStore::Redis(_)).then(Arc::default);
        let counters: Arc<CacheCounters> = Arc::default();
        let listener = match (store.link(), &near) {
            (Some(link), Some(near)) if tokio::runtime::Handle::try_current().is_ok() => {
                Some(Arc::new(Listener::start(link.clone(), near)))
            }
            _ => None,
        };
        TokenCache {
            _listener: listener,
            guarded: GuardedStore::new(store.clone(), counters.clone()),
            store,
            near,
            keys: Keys::new(key_prefix),
            key,
            counters,
            decoded: Arc::default(),
            reading: Arc::default(),
        }
    }

    /// The store (in process, or Redis over the link).
    pub fn store(&self) -> &CacheStore {
        &self.store
    }

    /// Whether the backend is reachable as far as the Redis link knows (always, in process).
    pub fn backend_up(&self) -> bool {
        self.guarded.is_up()
    }

    /// Reads and decodes an entry; counts hit or miss when `count` (token lookups are
    /// counted by the caller, which also judges freshness).
    async fn get_json<T: DeserializeOwned>(
        &self,
        kind: CacheKind,
        key: &str,
        count: bool,
    ) -> Option<T> {
        let text = self.guarded.get(kind, key).await.ok()?;
        if count {
            match text {
                Some(_) => self.counters.hit(kind),
                None => self.counters.miss(kind),
            }
        }
        self.decode(kind, key, &text?).await
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        kind: CacheKind,
        key: &str,
        text: &str,
    ) -> Option<T> {
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

    async fn put_json<T: Serialize>(&self, kind: CacheKind, key: &str, value: &T, ttl: Duration) {
        let Ok(text) = serde_json::to_string(value) else {
            return;
        };
        // Best effort: a failed write is counted (and an outage logged) by `guarded`; the
        // next read misses and goes to the database.
        let _ = self.guarded.set(kind, key, &text, ttl).await;
    }

    /// Writes a token entry unless a newer one is stored (fencing) or the token was
    /// invalidated (its tombstone under `revoked`), each checked in one atomic step with the
    /// write. The near cache takes the entry only once the store did (or while Redis is
    /// away), so that a refused entry is never served from it.
    /// `site_level`: the site's newest token, shared by its accounts, where a token of
    /// another account from a later grant refuses this one — the expected race of logins
    /// that end out of grant order (this account's own entry was written): counted, and
    /// logged at debug only.
    async fn put_token_entry(
        &self,
        key: &str,
        entry: &CachedToken,
        ttl: Duration,
        revoked: &str,
        site_level: bool,
    ) {
        let Ok(text) = serde_json::to_string(entry) else {
            return;
        };
        let generation = self.near.as_ref().map_or(0, |near| near.generation());
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
                    .is_some_and(|near| near.marked(revoked).is_some())
                {
                    TokenWrite::Revoked
                } else {
                    let call = redis.set_token(key, &text, ttl, entry.fence, Some(revoked));
                    match self.guarded.call(CacheKind::Token, call).await {
                        Ok(written) => written,
                        // Redis is away: the near cache serves meanwhile.
                        Err(_) => TokenWrite::Written,
                    }
                }
            }
        };
        match written {
            TokenWrite::Written => {
                if let Some(near) = &self.near {
                    near.put(key, Arc::from(text), ttl, generation);
                }
            }
            TokenWrite::Stale if site_level => {
                self.counters.site_token_superseded();
                log::debug!(
                    "event=site_token_superseded store=redis account={} fence={}",
                    entry.account,
                    entry.fence
                );
                self.near_forget(key);
            }
            TokenWrite::Stale => {
                log::warn!(
                    "event=stale_token_discarded store=redis account={} fence={}",
                    entry.account,
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
            near.forget(key);
        }
    }

    async fn delete(&self, kind: CacheKind, key: &str) {
        self.near_forget(key);
        self.decoded.forget(key);
        self.guarded.delete(kind, key).await;
    }

    /// A near-cache copy, and whether it is current.
    fn near_get(&self, key: &str) -> Option<super::near::Near> {
        self.near.as_ref()?.get(key)
    }

    /// The entry under `key`: from the near cache when recent, else from the store; while the
    /// store is unreachable or slow (no answer within [`NEAR_WAIT`]), from the near cache
    /// whatever its age: a token the near cache holds never waits on a blackholed Redis for
    /// the command timeout. The read goes on in the background meanwhile (its answer refreshes
    /// the near cache, its failure reaches the breaker).
    async fn token_text(&self, key: &str) -> Option<Arc<str>> {
        let near = self.near_get(key);
        let read = || read_token(self.guarded.clone(), self.near.clone(), key.to_string());
        let Some(near) = near else {
            return read().await.ok().flatten();
        };
        if near.current {
            return Some(near.text);
        }
        let reading = self.reading.clone();
        if !lock_set(&reading).insert(key.to_string()) {
            return Some(near.text);
        }
        let (key, read) = (key.to_string(), read());
        let read = tokio::spawn(async move {
            let found = read.await;
            lock_set(&reading).remove(&key);
            found
        });
        match tokio::time::timeout(NEAR_WAIT, read).await {
            Ok(Ok(Ok(found))) => found,
            _ => Some(near.text),
        }
    }

    /// The cached token when it is at hand: already opened, and in process or current in the
    /// near cache (no read of Redis, no decoding, no decryption). `None` says only "not at
    /// hand": [`TokenCache::token`] then decides. The hot path of an acquire (issue 23).
    pub fn token_at_hand(
        &self,
        site: &str,
        credential_id: Option<i64>,
    ) -> Option<Arc<OpenedToken>> {
        thread_local! {
            /// The key of the last lookup on this thread, its buffer kept for the next.
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            self.keys.token_key_into(site, credential_id, key);
            let text: Arc<str> = match &self.store {
                CacheStore::Memory(memory) => memory.get_shared(key)?,
                CacheStore::Redis(_) => Some(self.near_get(key)?).filter(|near| near.current)?.text,
            };
            self.decoded.get(key, &text)
        })
    }

    /// The cached token of one account, or of the site's newest login; with the token opened.
    pub async fn token(&self, site: &str, credential_id: Option<i64>) -> Option<Arc<OpenedToken>> {
        let key = match credential_id {
            Some(id) => self.keys.token(site, id),
            None => self.keys.site_token(site),
        };
        // In process, the stored text is shared: a repeated hit compares one pointer.
        let text: Arc<str> = match &self.store {
            CacheStore::Memory(memory) => memory.get_shared(&key)?,
            CacheStore::Redis(_) => self.token_text(&key).await?,
        };
        if let Some(known) = self.decoded.get(&key, &text) {
            return Some(known);
        }
        let entry: CachedToken = self.decode(CacheKind::Token, &key, &text).await?;
        match self.key.open(
            &entry.token,
            SealContext::Token {
                site,
                account: &entry.account,
            },
        ) {
            Ok(token) => Some(self.decoded.put(key, OpenedToken::new(text, entry, token))),
            Err(e) => {
                log::warn!("event=cache_entry_unreadable kind=token site={site} error=\"{e}\"");
                self.counters.error(CacheKind::Token);
                None
            }
        }
    }

    /// The cached entry of one account's token, left sealed: what the dashboard shows
    /// (expiry, issue time, the acquisition behind it) needs no token material. Not counted
    /// as a hit or a miss: no caller asked for the token.
    pub async fn token_entry(&self, site: &str, credential_id: i64) -> Option<CachedToken> {
        let key = self.keys.token(site, credential_id);
        let text = self.token_text(&key).await?;
        self.decode(CacheKind::Token, &key, &text).await
    }

    /// Caches a token under its account and as the site's newest, unless it was invalidated.
    pub async fn put_token(&self, site: &str, entry: &CachedToken) {
        let ttl = (entry.expires_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        if ttl.is_zero() {
            return;
        }
        let revoked = self.keys.revoked(site, entry.credential_id, &entry.token);
        let account_key = self.keys.token(site, entry.credential_id);
        self.put_token_entry(&account_key, entry, ttl, &revoked, false)
            .await;
        self.put_token_entry(&self.keys.site_token(site), entry, ttl, &revoked, true)
            .await;
    }

    /// Seals a token for the cache.
    pub fn seal(&self, site: &str, account: &str, token: &Secret) -> Result<String> {
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
    ///
    /// Answers whether every cached entry could be read: an entry that cannot be (the store
    /// fails and the near cache does not hold it, or it does not decode) is still deleted,
    /// but its token is unknown, so it gets no tombstone (logged
    /// `event=cache_invalidation_unread`).
    pub async fn invalidate(
        &self,
        site: &str,
        credential_id: i64,
        stored: Option<(&str, DateTime<Utc>)>,
    ) -> bool {
        let account_key = self.keys.token(site, credential_id);
        let newest_key = self.keys.site_token(site);
        let account = self.entry_for_invalidation(&account_key).await;
        let newest = self.entry_for_invalidation(&newest_key).await;
        let read = account.is_ok() && newest.is_ok();
        let (account, newest) = (account.ok().flatten(), newest.ok().flatten());
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
        self.delete(CacheKind::Token, &account_key).await;
        if newest.is_none_or(|t| t.credential_id == credential_id) {
            self.delete(CacheKind::Token, &newest_key).await;
        }
        read
    }

    /// Drops a token the database refused as stale (a newer one is stored under a later
    /// fence): its tombstone first, so that a racing write of it is refused, then its entries
    /// where they are still this one. A newer entry cached meanwhile is left alone.
    pub async fn forget_stale(&self, site: &str, entry: &CachedToken) {
        self.revoke(site, entry.credential_id, &entry.token, entry.expires_at)
            .await;
        for key in [
            self.keys.token(site, entry.credential_id),
            self.keys.site_token(site),
        ] {
            let current = self.entry_for_invalidation(&key).await.ok().flatten();
            if current.is_some_and(|c| c.acquisition_id == entry.acquisition_id) {
                self.delete(CacheKind::Token, &key).await;
            }
        }
    }

    /// The entry under `key` as far as it can be known (the store, else the near cache); an
    /// error (logged) when neither can say: the entry may exist, its token unknown.
    async fn entry_for_invalidation(&self, key: &str) -> Result<Option<CachedToken>, String> {
        let text = match self.guarded.get(CacheKind::Token, key).await {
            Ok(found) => found,
            Err(e) => match self.near_get(key) {
                Some(near) => Some(near.text.to_string()),
                None => {
                    log::warn!(
                        "event=cache_invalidation_unread key={key} error=\"{e}\" tombstone=not_written"
                    );
                    return Err(e.to_string());
                }
            },
        };
        let Some(text) = text else { return Ok(None) };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            log::warn!(
                "event=cache_invalidation_unread key={key} error=\"undecodable entry: {e}\" tombstone=not_written"
            );
            e.to_string()
        })
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
        let key = self.keys.revoked(site, credential_id, sealed);
        if let Some(near) = &self.near {
            near.mark(&key, "1".into(), ttl);
        }
        if let Err(e) = self
            .guarded
            .set_always(CacheKind::Token, &key, "1", ttl)
            .await
        {
            // The entries are still deleted; only a racing write of this token is not refused.
            log::warn!("event=cache_tombstone_failed key={key} error=\"{e}\"");
        }
    }

    pub async fn credentials(&self, site: &str) -> Option<Vec<CredentialEntry>> {
        self.get_json(CacheKind::Credentials, &self.keys.credentials(site), true)
            .await
    }

    pub async fn put_credentials(&self, site: &str, list: &[CredentialEntry], ttl: Duration) {
        self.put_json(
            CacheKind::Credentials,
            &self.keys.credentials(site),
            &list,
            ttl,
        )
        .await;
    }

    pub async fn account_stats(&self, site: &str) -> Option<Vec<AccountStats>> {
        self.get_json(
            CacheKind::AccountStats,
            &self.keys.account_stats(site),
            true,
        )
        .await
    }

    pub async fn put_account_stats(&self, site: &str, stats: &[AccountStats], ttl: Duration) {
        self.put_json(
            CacheKind::AccountStats,
            &self.keys.account_stats(site),
            &stats,
            ttl,
        )
        .await;
    }

    pub async fn forget_account_stats(&self, site: &str) {
        self.delete(CacheKind::AccountStats, &self.keys.account_stats(site))
            .await;
    }

    /// The blacklist or cooldown of an account mirrored in the cache, if one is in force.
    /// With Redis, a copy is kept in process, so that an outage does not let a blocked
    /// account be tried again at once.
    pub async fn block(&self, site: &str, id: i64) -> Option<(BlockReason, DateTime<Utc>)> {
        let key = self.keys.blacklist(site, id);
        let found = match self.guarded.get(CacheKind::Blacklist, &key).await {
            Ok(found) => found,
            Err(_) => self.near.as_ref().and_then(|near| near.marked(&key)),
        };
        let block = found.as_deref().and_then(decode_block);
        if block.is_some() {
            self.counters.hit(CacheKind::Blacklist);
        } else {
            self.counters.miss(CacheKind::Blacklist);
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
        let key = self.keys.blacklist(site, id);
        let value = encode_block(reason, until);
        if let Some(near) = &self.near {
            near.mark(&key, value.clone(), ttl);
        }
        // Best effort: the database holds the block, and the near copy serves meanwhile.
        let _ = self
            .guarded
            .set(CacheKind::Blacklist, &key, &value, ttl)
            .await;
    }

    pub async fn remove_block(&self, site: &str, id: i64) {
        self.delete(CacheKind::Blacklist, &self.keys.blacklist(site, id))
            .await;
    }

    /// The site's next round-robin turn from Redis (`P:turn:SITE`); `None` in process or
    /// while Redis fails (the caller counts in process then).
    pub async fn next_turn(&self, site: &str) -> Option<u64> {
        let CacheStore::Redis(redis) = &self.store else {
            return None;
        };
        let key = self.keys.turn(site);
        self.guarded
            .call(CacheKind::Token, redis.incr(&key))
            .await
            .ok()
    }

    /// Drops a site's cached credential list and statistics: the next use reloads them.
    pub async fn forget_accounts(&self, site: &str) {
        self.delete(CacheKind::Credentials, &self.keys.credentials(site))
            .await;
        self.delete(CacheKind::AccountStats, &self.keys.account_stats(site))
            .await;
    }
}

impl TokenCache {
    /// Keys per cache kind, as the backend counts them (SCAN on Redis).
    pub async fn key_counts(&self) -> Result<BTreeMap<CacheKind, usize>> {
        let mut counts = BTreeMap::new();
        for (kind, prefix) in self.keys.kind_prefixes() {
            let n = self.store.count_prefix(&prefix).await?;
            *counts.entry(kind).or_insert(0) += n;
        }
        Ok(counts)
    }

    /// What `/performance/cache-stats` shows of the backend.
    pub async fn backend_facts(&self) -> Result<BackendFacts> {
        Ok(match &self.store {
            CacheStore::Redis(redis) => BackendFacts::Redis {
                url: redis.display_url().to_string(),
                changes_heard: self.near.as_ref().is_some_and(|near| near.is_hearing()),
                used_memory_bytes: redis.used_memory().await?,
                // Every key tokend owns: entries and tombstones under `P:`, the shared state
                // (slots, locks, budgets…) under `{P}:`.
                keys_under_prefix: self.keys_under_prefix().await?,
                key_prefix: self.keys.prefix().to_string(),
            },
            CacheStore::Memory(memory) => BackendFacts::Memory {
                keys: memory.count_prefix(""),
            },
        })
    }

    /// Every key tokend owns (both roots of [`Keys::roots`]).
    pub async fn keys_under_prefix(&self) -> Result<usize> {
        let mut n = 0;
        for root in self.keys.roots() {
            n += self.store.count_prefix(&root).await?;
        }
        Ok(n)
    }

    /// Deletes the cached entries of every site, or of one; returns how many keys.
    pub async fn clear(&self, site: Option<&str>) -> Result<usize> {
        self.decoded.clear();
        let mut removed = 0;
        let (prefixes, singles): (Vec<String>, Vec<String>) = match site {
            None => (self.keys.kind_prefixes().map(|(_, p)| p).collect(), vec![]),
            Some(site) => {
                let (prefixes, singles) = self.keys.site_entries(site);
                (prefixes.into(), singles.into())
            }
        };
        for prefix in &prefixes {
            removed += self.store.delete_prefix(prefix).await?;
            if let Some(near) = &self.near {
                near.forget_prefix(prefix);
            }
        }
        for key in &singles {
            if self.store.delete(key).await? {
                removed += 1;
            }
            self.near_forget(key);
        }
        Ok(removed)
    }
}

/// How long a token the near cache holds (no longer current, see [`super::near`]) waits for the store before
/// it is served from the near cache: a healthy Redis answers in well under a millisecond.
const NEAR_WAIT: Duration = Duration::from_millis(200);

fn lock_set(
    set: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads a token entry from the store, and keeps the near copy in step with the answer.
async fn read_token(
    guarded: GuardedStore,
    near: Option<Arc<NearCache>>,
    key: String,
) -> Result<Option<Arc<str>>> {
    let generation = near.as_ref().map_or(0, |near| near.generation());
    let found: Option<Arc<str>> = guarded.get(CacheKind::Token, &key).await?.map(Arc::from);
    if let Some(near) = &near {
        match &found {
            Some(text) => {
                let left = serde_json::from_str::<CachedToken>(text)
                    .ok()
                    .and_then(|e| (e.expires_at - Utc::now()).to_std().ok());
                if let Some(left) = left {
                    near.put(&key, text.clone(), left, generation);
                }
            }
            None => near.forget(&key),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use chrono::Duration as Span;

    fn cache() -> TokenCache {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let key = SecretKey::from_base64(&key).expect("32-byte key");
        TokenCache::new(CacheStore::Memory(Arc::default()), "t", key)
    }

    fn entry(cache: &TokenCache, site: &str, id: i64, token: &str, life: i64) -> CachedToken {
        let now = Utc::now();
        let account = format!("acc{id}");
        CachedToken {
            credential_id: id,
            token: cache
                .seal(site, &account, &Secret::new(token.to_string()))
                .unwrap(),
            account,
            token_type: "Bearer".into(),
            issued_at: now,
            expires_at: now + Span::seconds(life),
            refresh_at: now + Span::seconds(life * 2 / 3),
            acquisition_id: format!("acq-{token}"),
            fence: 0,
        }
    }

    /// Issue 27 item 5: logins of two accounts that end out of grant order. The later one
    /// to finish finds the site's newest token from a later grant: refused there (counted),
    /// while its own account's token is kept and served.
    #[actix_rt::test]
    async fn a_site_token_superseded_by_a_later_grant_keeps_the_accounts_own() {
        let url = std::env::var("TOKEND_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
        let store =
            crate::cache::RedisStore::new(crate::redis::RedisLink::open(&url, "unused").unwrap());
        if store.get("tokend-unit-probe").await.is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "Redis is required in CI"
            );
            return;
        }
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let key = SecretKey::from_base64(&key).expect("32-byte key");
        let prefix = format!("tokend-unit-{}", uuid::Uuid::new_v4());
        let cache = TokenCache::new(CacheStore::Redis(store), &prefix, key);
        let later = CachedToken {
            fence: 5,
            ..entry(&cache, "s", 2, "two", 60)
        };
        let earlier = CachedToken {
            fence: 3,
            ..entry(&cache, "s", 1, "one", 60)
        };
        cache.put_token("s", &later).await;
        cache.put_token("s", &earlier).await;
        assert_eq!(cache.counters.site_tokens_superseded(), 1);
        let own = cache.token("s", Some(1)).await.expect("account 1's token");
        assert_eq!(own.token.expose(), "one");
        let newest = cache.token("s", None).await.expect("the site's newest");
        assert_eq!(newest.token.expose(), "two");
    }

    #[actix_rt::test]
    async fn a_token_is_served_under_its_account_and_as_the_sites_newest() {
        let cache = cache();
        cache
            .put_token("s", &entry(&cache, "s", 1, "one", 60))
            .await;
        cache
            .put_token("s", &entry(&cache, "s", 2, "two", 60))
            .await;
        let mine = cache.token("s", Some(1)).await.expect("account 1's token");
        assert_eq!(mine.token.expose(), "one");
        let newest = cache.token("s", None).await.expect("the site's newest");
        assert_eq!(newest.token.expose(), "two");
        // A second hit is the very same opened entry: nothing decoded again.
        let again = cache.token("s", Some(1)).await.unwrap();
        assert!(Arc::ptr_eq(&mine, &again));
        assert!(cache.token("other", Some(1)).await.is_none());
    }

    #[actix_rt::test]
    async fn an_invalidated_token_is_not_cached_again_by_a_late_writer() {
        let cache = cache();
        let late = entry(&cache, "s", 1, "old", 60);
        cache.put_token("s", &late).await;
        cache.invalidate("s", 1, None).await;
        assert!(cache.token("s", Some(1)).await.is_none());
        assert!(cache.token("s", None).await.is_none());
        // An acquisition that read the token before the invalidation writes it back: refused.
        cache.put_token("s", &late).await;
        assert!(cache.token("s", Some(1)).await.is_none());
        // A new token for the account is cached as usual.
        cache
            .put_token("s", &entry(&cache, "s", 1, "new", 60))
            .await;
        assert_eq!(
            cache.token("s", Some(1)).await.unwrap().token.expose(),
            "new"
        );
    }

    #[actix_rt::test]
    async fn an_invalidation_that_cannot_read_the_entries_says_so() {
        let readable = cache();
        readable
            .put_token("s", &entry(&readable, "s", 1, "one", 60))
            .await;
        assert!(
            readable.invalidate("s", 1, None).await,
            "read and tombstoned"
        );
        // Redis does not answer and the near cache never held the entry: its token is
        // unknown, so no tombstone can be written for it.
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let key = SecretKey::from_base64(&key).unwrap();
        let link = crate::redis::RedisLink::open("redis://127.0.0.1:1/0", "t").unwrap();
        let unread = TokenCache::new(CacheStore::new(Some(&link)), "t", key);
        assert!(!unread.invalidate("s", 1, None).await);
    }

    #[actix_rt::test]
    async fn an_entry_sealed_for_another_account_is_an_error_not_a_token() {
        let cache = cache();
        let mut stolen = entry(&cache, "s", 1, "secret", 60);
        stolen.account = "someone_else".into();
        cache.put_token("s", &stolen).await;
        assert!(cache.token("s", Some(1)).await.is_none());
        assert_eq!(cache.counters.get(CacheKind::Token).errors, 1);
    }

    #[actix_rt::test]
    async fn clearing_one_site_leaves_the_others_and_counts_what_went() {
        let cache = cache();
        cache.put_token("a", &entry(&cache, "a", 1, "x", 60)).await;
        cache
            .put_token("ab", &entry(&cache, "ab", 1, "y", 60))
            .await;
        let until = Utc::now() + Span::seconds(60);
        cache.put_block("a", 1, BlockReason::Failed, until).await;
        let counts = cache.key_counts().await.unwrap();
        assert_eq!(counts[&CacheKind::Token], 4);
        assert_eq!(counts[&CacheKind::Blacklist], 1);
        // a's token, a's newest and a's block.
        assert_eq!(cache.clear(Some("a")).await.unwrap(), 3);
        assert!(cache.token("a", Some(1)).await.is_none());
        assert!(cache.block("a", 1).await.is_none());
        assert_eq!(
            cache.token("ab", Some(1)).await.unwrap().token.expose(),
            "y"
        );
    }

    #[actix_rt::test]
    async fn a_mirrored_block_is_read_back_and_counted() {
        let cache = cache();
        assert!(cache.block("s", 1).await.is_none());
        let until = Utc::now() + Span::seconds(120);
        cache
            .put_block("s", 1, BlockReason::CaptchaError, until)
            .await;
        let (reason, read) = cache.block("s", 1).await.expect("the block");
        assert_eq!(reason, BlockReason::CaptchaError);
        assert_eq!(read.timestamp_millis(), until.timestamp_millis());
        let counts = cache.counters.get(CacheKind::Blacklist);
        assert_eq!((counts.hits, counts.misses), (1, 1));
        cache.remove_block("s", 1).await;
        assert!(cache.block("s", 1).await.is_none());
    }
}

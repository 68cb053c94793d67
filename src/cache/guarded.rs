//! [`GuardedStore`]: the cache store as the pipeline reads it. With Redis, every call goes
//! through the one breaker of the Redis link ([`crate::redis::RedisLink`]): refused at once
//! while Redis is taken for unreachable (the caller goes on as on a miss, with the near
//! cache), so that no request waits on a dead connection. Every failure is counted as an error
//! of its cache kind; the outage and the recovery are logged once, by the link.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::kinds::{CacheCounters, CacheKind};
use super::store::CacheStore;
use crate::error::Result;
use crate::redis::Admit;

/// The store and the counters its failures go to.
#[derive(Clone)]
pub struct GuardedStore {
    store: CacheStore,
    counters: Arc<CacheCounters>,
}

impl GuardedStore {
    pub fn new(store: CacheStore, counters: Arc<CacheCounters>) -> GuardedStore {
        GuardedStore { store, counters }
    }

    /// Whether the backend is reachable as far as the link knows (always, in process).
    pub fn is_up(&self) -> bool {
        self.store.link().is_none_or(|link| link.is_up())
    }

    /// Runs one call to the store, counting its failure under `kind`.
    pub async fn call<T>(
        &self,
        kind: CacheKind,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let result = call.await;
        if result.is_err() {
            self.counters.error(kind);
        }
        result
    }

    pub async fn get(&self, kind: CacheKind, key: &str) -> Result<Option<String>> {
        self.call(kind, self.store.get(key)).await
    }

    pub async fn set(&self, kind: CacheKind, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.call(kind, self.store.set(key, value, ttl, Admit::WhenUp))
            .await
    }

    /// Whether a write sent whatever the breaker says goes to the background: while the link
    /// is down, the caller does not wait on a Redis known to be unreachable (the write lands
    /// if Redis answers within the command timeout, and its failure is logged there).
    fn in_background(&self) -> bool {
        !self.is_up() && tokio::runtime::Handle::try_current().is_ok()
    }

    /// A write sent whatever the breaker says (a tombstone must not be lost); a failure is
    /// counted and returned (or, in the background, logged).
    pub async fn set_always(
        &self,
        kind: CacheKind,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<()> {
        if self.in_background() {
            let (this, key, value) = (self.clone(), key.to_string(), value.to_string());
            tokio::spawn(async move {
                let sent = this.store.set(&key, &value, ttl, Admit::Always);
                if let Err(e) = this.call(kind, sent).await {
                    log::warn!("event=cache_write_failed kind={kind} key={key} error=\"{e}\" sent=background");
                }
            });
            return Ok(());
        }
        self.call(kind, self.store.set(key, value, ttl, Admit::Always))
            .await
    }

    /// Deletes are always sent, whatever the breaker says: an invalidation must not be lost
    /// (while the link is down, in the background).
    pub async fn delete(&self, kind: CacheKind, key: &str) {
        if self.in_background() {
            let (this, key) = (self.clone(), key.to_string());
            tokio::spawn(async move { this.delete_now(kind, &key).await });
            return;
        }
        self.delete_now(kind, key).await;
    }

    async fn delete_now(&self, kind: CacheKind, key: &str) {
        if let Err(e) = self.call(kind, self.store.delete(key)).await {
            // Logged each time: an entry left behind is served until it expires.
            log::warn!("event=cache_delete_failed kind={kind} key={key} error=\"{e}\"");
        }
    }
}

//! [`GuardedStore`]: the cache store behind the [`Breaker`]. After a Redis failure the
//! breaker leaves Redis alone for a pause that doubles with each failed probe, so that no
//! request waits on a dead connection; the outage and the recovery are each logged once, and
//! every failure is counted as an error of its cache kind.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::breaker::{Admission, Breaker, Change};
use super::kinds::{CacheCounters, CacheKind};
use super::store::CacheStore;
use crate::error::{Error, Result};

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

/// The store, the breaker in front of it, and the counters its failures go to.
#[derive(Clone)]
pub struct GuardedStore {
    store: CacheStore,
    breaker: Arc<Breaker>,
    counters: Arc<CacheCounters>,
}

impl GuardedStore {
    pub fn new(store: CacheStore, counters: Arc<CacheCounters>) -> GuardedStore {
        GuardedStore {
            store,
            breaker: Arc::default(),
            counters,
        }
    }

    /// Whether the backend is reachable as far as the breaker knows (always, in process).
    pub fn is_up(&self) -> bool {
        !self.breaker.is_open()
    }

    fn note<T>(&self, kind: CacheKind, op: &str, result: Result<T>) -> Result<T> {
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
    pub async fn call<T>(
        &self,
        kind: CacheKind,
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
            return self.is_up();
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

    pub async fn get(&self, kind: CacheKind, key: &str) -> Result<Option<String>> {
        self.call(kind, "get", self.store.get(key)).await
    }

    pub async fn set(&self, kind: CacheKind, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.call(kind, "set", self.store.set(key, value, ttl))
            .await
    }

    /// A write sent whatever the breaker says (a tombstone must not be lost); a failure is
    /// counted and returned.
    pub async fn set_always(
        &self,
        kind: CacheKind,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<()> {
        let result = self.store.set(key, value, ttl).await;
        self.note(kind, "set", result)
    }

    /// Deletes are always sent, whatever the breaker says: an invalidation must not be lost.
    pub async fn delete(&self, kind: CacheKind, key: &str) {
        let result = self.store.delete(key).await;
        if let Err(e) = self.note(kind, "delete", result) {
            // Logged each time: an entry left behind is served until it expires.
            log::warn!("event=cache_delete_failed kind={kind} key={key} error=\"{e}\"");
        }
    }
}

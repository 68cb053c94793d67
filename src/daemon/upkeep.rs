//! The upkeep of the cache and of the login slots that share its Redis: a sweep and a probe,
//! a task of their own (nothing asks them anything, so no actor). The hot path reads the
//! store through [`TokenCache`] and never waits here.
//!
//! - Every [`SWEEP_INTERVAL`], expired in-process entries are dropped (memory backend).
//! - Every [`PROBE_INTERVAL`], while Redis is taken for unreachable (the cache's breaker is
//!   open, or the login slots fell back to in-process limits), one probe asks Redis whether
//!   it is back, so that recovery does not wait for a request to find out. While the cache
//!   finds Redis unreachable, the slots (on the same Redis) fall back too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CacheStore, TokenCache};
use crate::slots::Slots;

pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How often Redis is probed while it is taken for unreachable.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the sweep (memory backend) or the probe (Redis); must run inside an actix system.
pub fn start(cache: &TokenCache, slots: &Slots) {
    match cache.store() {
        CacheStore::Memory(memory) => {
            let memory = memory.clone();
            actix::spawn(async move {
                let mut every = tokio::time::interval(SWEEP_INTERVAL);
                every.tick().await;
                loop {
                    every.tick().await;
                    let dropped = memory.sweep();
                    if dropped > 0 {
                        log::debug!("event=cache_sweep dropped={dropped}");
                    }
                }
            });
        }
        CacheStore::Redis(_) => {
            let prober = Prober {
                cache: cache.clone(),
                slots: slots.clone(),
                probing: Arc::default(),
            };
            actix::spawn(async move {
                let mut every = tokio::time::interval(PROBE_INTERVAL);
                every.tick().await;
                loop {
                    every.tick().await;
                    prober.probe();
                }
            });
        }
    }
}

/// Asks Redis whether it is back, for the cache and the slots that share it.
struct Prober {
    cache: TokenCache,
    slots: Slots,
    /// Set while a probe is under way: a blackholed Redis makes one wait, not a pile.
    probing: Arc<AtomicBool>,
}

impl Prober {
    /// Starts one probe unless Redis is taken for reachable or a probe is under way. While
    /// the cache finds Redis unreachable, the slots (on the same Redis) fall back too.
    fn probe(&self) {
        self.slots.follow_cache_backend(self.cache.backend_up());
        if (self.cache.backend_up() && !self.slots.is_degraded())
            || self.probing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (cache, slots, probing) =
            (self.cache.clone(), self.slots.clone(), self.probing.clone());
        actix::spawn(async move {
            if cache.probe().await {
                slots.probe().await;
            }
            probing.store(false, Ordering::Release);
        });
    }
}

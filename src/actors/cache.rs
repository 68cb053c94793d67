//! `CacheActor`: owns the cache store (in-process or Redis) and its upkeep.
//!
//! The hot path reads the store through a cloned [`CacheStore`] handle and never queues here;
//! this actor does the slow and periodic work.
//!
//! Messages: [`CacheHealth`] (backend, reachability, key count), [`WatchSlots`] (the login
//! slots whose Redis fallback the probe also ends).
//! Timers: every [`SWEEP_INTERVAL`], expired in-process entries are dropped; every
//! [`PROBE_INTERVAL`], while Redis is taken for unreachable (the cache's breaker is open, or
//! the slots fell back to in-process limits), one probe asks Redis whether it is back, so
//! that recovery does not wait for a request to find out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::cache::{CacheStore, TokenCache};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::slots::Slots;

pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How often Redis is probed while it is taken for unreachable.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

pub struct CacheActor {
    store: CacheStore,
    cache: TokenCache,
    /// The login slots, once the server has made them.
    slots: Option<Slots>,
    /// Set while a probe is under way: a blackholed Redis makes one wait, not a pile.
    probing: Arc<AtomicBool>,
    /// `{key_prefix}:`, the start of every key tokend owns.
    prefix: String,
}

impl CacheActor {
    pub fn new(cache: &TokenCache, config: &Config) -> CacheActor {
        CacheActor {
            store: cache.store().clone(),
            cache: cache.clone(),
            slots: None,
            probing: Arc::default(),
            prefix: format!("{}:", config.redis.key_prefix),
        }
    }

    /// Starts one probe unless Redis is taken for reachable or a probe is under way. While
    /// the cache finds Redis unreachable, the slots (on the same Redis) fall back too.
    fn probe(&self) {
        if let Some(slots) = &self.slots {
            slots.follow_cache_backend(self.cache.backend_up());
        }
        let slots_degraded = self.slots.as_ref().is_some_and(Slots::is_degraded);
        if (self.cache.backend_up() && !slots_degraded) || self.probing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (cache, slots, probing) =
            (self.cache.clone(), self.slots.clone(), self.probing.clone());
        actix::spawn(async move {
            if cache.probe().await {
                if let Some(slots) = slots {
                    slots.probe().await;
                }
            }
            probing.store(false, Ordering::Release);
        });
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_INTERVAL, |actor, _| {
            if let CacheStore::Memory(memory) = &actor.store {
                let dropped = memory.sweep();
                if dropped > 0 {
                    log::debug!("event=cache_sweep dropped={dropped}");
                }
            }
        });
        if matches!(self.store, CacheStore::Redis(_)) {
            ctx.run_interval(PROBE_INTERVAL, |actor, _| actor.probe());
        }
    }
}

/// The login slots, whose fallback to in-process limits the probe also ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchSlots(pub Slots);

impl Handler<WatchSlots> for CacheActor {
    type Result = ();

    fn handle(&mut self, WatchSlots(slots): WatchSlots, _: &mut Context<Self>) {
        self.slots = Some(slots);
    }
}

/// The cache backend's state, for `/health`.
#[derive(Message)]
#[rtype(result = "Result<CacheHealthReport>")]
pub struct CacheHealth;

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CacheHealthReport {
    /// `memory` or `redis`.
    #[schema(value_type = String)]
    pub backend: std::borrow::Cow<'static, str>,
    pub keys: usize,
    /// Round trip in milliseconds (Redis only).
    pub latency_ms: Option<f64>,
}

impl Handler<CacheHealth> for CacheActor {
    type Result = ResponseFuture<Result<CacheHealthReport>>;

    fn handle(&mut self, _: CacheHealth, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let prefix = self.prefix.clone();
        let breaker_open = !self.cache.backend_up();
        Box::pin(async move {
            // While the breaker keeps requests away, health does not wait on Redis either: the
            // background probe finds out when it is back.
            if breaker_open {
                return Err(Error::CacheUnavailable(
                    "unreachable; requests use the in-process fallback while a background \
                     probe waits for it"
                        .into(),
                ));
            }
            let latency_ms = match &store {
                CacheStore::Redis(redis) => Some(redis.ping().await?),
                CacheStore::Memory(_) => None,
            };
            let keys = store.count_prefix(&prefix).await?;
            Ok(CacheHealthReport {
                backend: store.backend().into(),
                keys,
                latency_ms,
            })
        })
    }
}

impl From<MailboxError> for Error {
    fn from(e: MailboxError) -> Self {
        Error::Internal(format!("actor unavailable: {e}"))
    }
}

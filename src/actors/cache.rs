//! `CacheActor`: owns the cache store (in-process or Redis) and its upkeep.
//!
//! The hot path reads the store through a cloned [`CacheStore`] handle and never queues here;
//! this actor does the slow and periodic work.
//!
//! Messages: [`CacheHealth`] (backend, reachability, key count).
//! Timers: every [`SWEEP_INTERVAL`], expired in-process entries are dropped. Whether Redis is
//! reachable, and finding it back, is the Redis link's own business ([`crate::redis`]).

use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::cache::{CacheStore, TokenCache};
use crate::config::Config;
use crate::error::{Error, Result};

pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// The longest `/health` waits for Redis's answer while the link says it is up: a Redis that
/// has gone silent this moment is reported, and the health answer does not wait for the
/// command timeout (the ping goes on in the background and tells the link).
pub const HEALTH_WAIT: Duration = Duration::from_millis(300);

pub struct CacheActor {
    store: CacheStore,
    cache: TokenCache,
}

impl CacheActor {
    pub fn new(cache: &TokenCache, _config: &Config) -> CacheActor {
        CacheActor {
            store: cache.store().clone(),
            cache: cache.clone(),
        }
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
    }
}

/// The cache backend's state, for `/health`.
#[derive(Message)]
#[rtype(result = "Result<CacheHealthReport>")]
pub struct CacheHealth;

#[derive(Debug, Clone, Serialize)]
pub struct CacheHealthReport {
    pub backend: &'static str,
    pub keys: usize,
    /// Round trip in milliseconds (Redis only).
    pub latency_ms: Option<f64>,
}

impl Handler<CacheHealth> for CacheActor {
    type Result = ResponseFuture<Result<CacheHealthReport>>;

    fn handle(&mut self, _: CacheHealth, _: &mut Context<Self>) -> Self::Result {
        let (store, cache) = (self.store.clone(), self.cache.clone());
        Box::pin(async move {
            // While the link's breaker is open, health does not wait on Redis either: the
            // link's probe finds out when it is back.
            if !cache.backend_up() {
                return Err(Error::CacheUnavailable(
                    "unreachable; requests use the in-process fallback while a background \
                     probe waits for it"
                        .into(),
                ));
            }
            let latency_ms = match &store {
                CacheStore::Redis(redis) => {
                    // Spawned: past the wait, the ping goes on and its answer (or its
                    // timeout) reaches the link.
                    let redis = redis.clone();
                    let ping = tokio::spawn(async move { redis.ping().await });
                    match tokio::time::timeout(HEALTH_WAIT, ping).await {
                        Ok(Ok(latency)) => Some(latency?),
                        Ok(Err(e)) => return Err(Error::Internal(format!("cache ping: {e}"))),
                        Err(_) => {
                            return Err(Error::CacheUnavailable(format!(
                                "no answer within {} ms",
                                HEALTH_WAIT.as_millis()
                            )))
                        }
                    }
                }
                CacheStore::Memory(_) => None,
            };
            let keys = cache.keys_under_prefix().await?;
            Ok(CacheHealthReport {
                backend: store.backend(),
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

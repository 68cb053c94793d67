//! `CacheActor`: owns the cache store (in-process or Redis) and its upkeep.
//!
//! The hot path reads the store through a cloned [`CacheStore`] handle and never queues here;
//! this actor does the slow and periodic work.
//!
//! Messages: [`CacheHealth`] (backend, reachability, key count).
//! Timers: every [`SWEEP_INTERVAL`], expired in-process entries are dropped.

use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::cache::CacheStore;
use crate::config::Config;
use crate::error::{Error, Result};

pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

pub struct CacheActor {
    store: CacheStore,
    /// `{key_prefix}:`, the start of every key tokend owns.
    prefix: String,
}

impl CacheActor {
    pub fn new(store: CacheStore, config: &Config) -> CacheActor {
        CacheActor {
            store,
            prefix: format!("{}:", config.redis.key_prefix),
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
        let store = self.store.clone();
        let prefix = self.prefix.clone();
        Box::pin(async move {
            let latency_ms = match &store {
                CacheStore::Redis(redis) => Some(redis.ping().await?),
                CacheStore::Memory(_) => None,
            };
            let keys = store.count_prefix(&prefix).await?;
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

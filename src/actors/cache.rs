//! `CacheActor`: the upkeep of the token cache, and its answer to `/health`.
//!
//! It owns what the cache does on its own, not the reads and writes of the hot path (the
//! pipeline reads the store through [`TokenCache`] and never waits on this actor):
//!
//! - the **sweep** (memory backend): every [`SWEEP_INTERVAL`], expired in-process entries are
//!   dropped;
//! - the **validity probe** (Redis backend): every [`PROBE_INTERVAL`], while Redis is taken for
//!   unreachable (the cache's breaker is open, or the login slots on the same Redis fell back
//!   to in-process limits), one probe asks Redis whether it is back, so that recovery does not
//!   wait for a request to find out; while the cache finds Redis unreachable, the slots fall
//!   back too. One probe at a time: a blackholed Redis makes one wait, not a pile;
//! - the **health question**: [`CacheHealth`] (asked by `AlertActor` for `/health`'s `cache`
//!   component) answers the backend, its round trip and the keys tokend holds there.
//!
//! It is built by `daemon::server` once the cache and the login slots exist.

use std::time::Duration;

use actix::prelude::*;

use crate::cache::health::CacheHealthReport;
use crate::cache::{CacheStore, TokenCache};
use crate::error::{Error, Result};
use crate::slots::Slots;

/// How often expired in-process entries are dropped (memory backend).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How often Redis is probed while it is taken for unreachable.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The cache's upkeep: its sweep or its Redis probe, and its health.
pub struct CacheActor {
    cache: TokenCache,
    /// The login slots share the cache's Redis: they follow its state and are probed with it.
    slots: Slots,
    /// Set while a probe is under way.
    probing: bool,
    sweep_every: Duration,
}

impl CacheActor {
    pub fn new(cache: TokenCache, slots: Slots) -> CacheActor {
        CacheActor {
            cache,
            slots,
            probing: false,
            sweep_every: SWEEP_INTERVAL,
        }
    }

    /// The same actor, sweeping at another pace (tests).
    #[cfg(test)]
    fn sweeping_every(self, sweep_every: Duration) -> CacheActor {
        CacheActor {
            sweep_every,
            ..self
        }
    }

    fn sweep(&mut self) {
        if let CacheStore::Memory(memory) = self.cache.store() {
            let dropped = memory.sweep();
            if dropped > 0 {
                log::debug!("event=cache_sweep dropped={dropped}");
            }
        }
    }

    /// Starts one probe unless Redis is taken for reachable or a probe is under way. The
    /// probe runs in the actor's context, beside its messages: a health question is answered
    /// while a probe waits on a silent Redis.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        self.slots.follow_cache_backend(self.cache.backend_up());
        if (self.cache.backend_up() && !self.slots.is_degraded()) || self.probing {
            return;
        }
        self.probing = true;
        let (cache, slots) = (self.cache.clone(), self.slots.clone());
        let probe = async move {
            if cache.probe().await {
                slots.probe().await;
            }
        };
        ctx.spawn(
            probe
                .into_actor(self)
                .map(|(), actor, _| actor.probing = false),
        );
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.cache.store() {
            CacheStore::Memory(_) => {
                ctx.run_interval(self.sweep_every, |actor, _| actor.sweep());
            }
            CacheStore::Redis(_) => {
                ctx.run_interval(PROBE_INTERVAL, |actor, ctx| actor.probe(ctx));
            }
        }
    }
}

/// The cache's state for `/health`: see [`crate::cache::health::check`]. While the breaker
/// keeps requests away from Redis, the answer is an error at once (the probe finds out when
/// it is back).
#[derive(Message)]
#[rtype(result = "Result<CacheHealthReport>")]
pub struct CacheHealth;

impl Handler<CacheHealth> for CacheActor {
    type Result = ResponseFuture<Result<CacheHealthReport>>;

    fn handle(&mut self, _: CacheHealth, _: &mut Context<Self>) -> Self::Result {
        let cache = self.cache.clone();
        Box::pin(async move { crate::cache::health::check(&cache).await })
    }
}

/// Asks `cache` for its health; a stopped actor is an unavailable cache.
pub async fn ask_health(cache: &Addr<CacheActor>) -> Result<CacheHealthReport> {
    match cache.send(CacheHealth).await {
        Ok(answer) => answer,
        Err(e) => Err(Error::CacheUnavailable(format!(
            "the cache actor does not answer: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use base64::Engine;

    use super::*;
    use crate::config::ConcurrencyConfig;
    use crate::slots::concurrency::ConcurrencyActor;
    use crate::vault::crypto::SecretKey;

    /// A cache on the memory backend (prefix `t`), and in-process login slots.
    fn memory_cache() -> (TokenCache, Slots) {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let key = SecretKey::from_base64(&key).unwrap();
        let cache = TokenCache::new(CacheStore::Memory(Arc::default()), "t", key);
        let config = ConcurrencyConfig::default();
        let slots = Slots::new(ConcurrencyActor::new(&config).start(), None, &config);
        (cache, slots)
    }

    #[actix_rt::test]
    async fn the_actor_sweeps_expired_entries_and_answers_the_health_question() {
        let (cache, slots) = memory_cache();
        let CacheStore::Memory(memory) = cache.store().clone() else {
            unreachable!()
        };
        let store = cache.store();
        store
            .set("t:token:s:1", "x", Duration::from_millis(30))
            .await
            .unwrap();
        store
            .set("t:token:s:2", "x", Duration::from_secs(3600))
            .await
            .unwrap();
        let actor = CacheActor::new(cache.clone(), slots)
            .sweeping_every(Duration::from_millis(20))
            .start();
        let deadline = Instant::now() + Duration::from_secs(5);
        while memory.held() != 1 {
            assert!(Instant::now() < deadline, "the expired entry was not swept");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = ask_health(&actor).await.unwrap();
        assert_eq!((report.backend, report.keys), ("memory", 1));
    }

    #[actix_rt::test]
    async fn a_stopped_cache_actor_reads_as_an_unavailable_cache() {
        let (cache, slots) = memory_cache();
        let actor = CacheActor::create(|ctx| {
            ctx.stop();
            CacheActor::new(cache, slots)
        });
        let answer = ask_health(&actor).await;
        assert!(
            matches!(&answer, Err(Error::CacheUnavailable(why)) if why.contains("does not answer")),
            "{answer:?}"
        );
    }
}

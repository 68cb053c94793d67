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
use crate::error::{Error, Result};

pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// The longest `/health` waits for Redis's answer while the link says it is up: a Redis that
/// has gone silent this moment is reported, and the health answer does not wait for the
/// command timeout (the ping goes on in the background and tells the link).
pub const HEALTH_WAIT: Duration = Duration::from_millis(300);

pub struct CacheActor {
    store: CacheStore,
    cache: TokenCache,
    sweep_every: Duration,
}

impl CacheActor {
    pub fn new(cache: &TokenCache) -> CacheActor {
        CacheActor {
            store: cache.store().clone(),
            cache: cache.clone(),
            sweep_every: SWEEP_INTERVAL,
        }
    }

    #[cfg(test)]
    fn sweeping_every(self, sweep_every: Duration) -> CacheActor {
        CacheActor {
            sweep_every,
            ..self
        }
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.sweep_every, |actor, _| {
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

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CacheHealthReport {
    /// `memory` or `redis`.
    #[schema(value_type = String)]
    pub backend: std::borrow::Cow<'static, str>,
    /// Keys tokend owns (`None` when Redis did not answer this check).
    pub keys: Option<usize>,
    /// Round trip in milliseconds (Redis only).
    pub latency_ms: Option<f64>,
    /// Why the details are missing while the link is up (a passing error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Handler<CacheHealth> for CacheActor {
    type Result = ResponseFuture<Result<CacheHealthReport>>;

    fn handle(&mut self, _: CacheHealth, _: &mut Context<Self>) -> Self::Result {
        let (store, cache) = (self.store.clone(), self.cache.clone());
        Box::pin(async move {
            let Some(link) = store.link().cloned() else {
                return Ok(CacheHealthReport {
                    backend: store.backend().into(),
                    keys: Some(cache.keys_under_prefix().await?),
                    latency_ms: None,
                    note: None,
                });
            };
            // The state is the link's: while its breaker is open, health does not wait on
            // Redis either (the link's probe finds out when it is back).
            if !link.is_up() {
                return Err(unreachable());
            }
            // A ping spawned, so that past the wait it goes on and its answer reaches the
            // link; a Redis silent for the whole wait is taken for down at once.
            let ping = tokio::spawn({
                let link = link.clone();
                async move { link.ping().await }
            });
            let latency = match tokio::time::timeout(HEALTH_WAIT, ping).await {
                Ok(Ok(latency)) => latency,
                Ok(Err(e)) => return Err(Error::Internal(format!("cache ping: {e}"))),
                Err(_) => {
                    let why = format!("no answer to PING within {} ms", HEALTH_WAIT.as_millis());
                    link.found_unreachable("redis health", &why);
                    return Err(unreachable());
                }
            };
            let counted = match latency {
                Ok(latency) => cache.keys_under_prefix().await.map(|keys| (keys, latency)),
                Err(e) => Err(e),
            };
            match counted {
                Ok((keys, latency)) => Ok(CacheHealthReport {
                    backend: store.backend().into(),
                    keys: Some(keys),
                    latency_ms: Some(latency),
                    note: None,
                }),
                // Errors that have not gone on long enough for the link to take Redis for
                // down: up, as every policy sees it, with what went wrong.
                Err(e) if link.is_up() => Ok(CacheHealthReport {
                    backend: store.backend().into(),
                    keys: None,
                    latency_ms: None,
                    note: Some(e.to_string()),
                }),
                Err(_) => Err(unreachable()),
            }
        })
    }
}

fn unreachable() -> Error {
    Error::CacheUnavailable(
        "unreachable; requests use the in-process fallback while a background probe waits \
         for it"
            .into(),
    )
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
    use crate::redis::Admit;
    use crate::vault::crypto::SecretKey;

    /// A cache on the memory backend (prefix `t`).
    fn memory_cache() -> TokenCache {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let key = SecretKey::from_base64(&key).unwrap();
        TokenCache::new(CacheStore::Memory(Arc::default()), "t", key)
    }

    #[actix_rt::test]
    async fn the_actor_sweeps_expired_entries_and_answers_the_health_question() {
        let cache = memory_cache();
        let CacheStore::Memory(memory) = cache.store().clone() else {
            unreachable!()
        };
        let store = cache.store();
        store
            .set("t:token:s:1", "x", Duration::from_millis(30), Admit::Always)
            .await
            .unwrap();
        store
            .set("t:token:s:2", "x", Duration::from_secs(3600), Admit::Always)
            .await
            .unwrap();
        let actor = CacheActor::new(&cache)
            .sweeping_every(Duration::from_millis(20))
            .start();
        let deadline = Instant::now() + Duration::from_secs(5);
        while memory.held() != 1 {
            assert!(Instant::now() < deadline, "the expired entry was not swept");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = ask_health(&actor).await.unwrap();
        assert_eq!((report.backend.as_ref(), report.keys), ("memory", Some(1)));
    }

    #[actix_rt::test]
    async fn a_stopped_cache_actor_reads_as_an_unavailable_cache() {
        let cache = memory_cache();
        let actor = CacheActor::create(|ctx| {
            ctx.stop();
            CacheActor::new(&cache)
        });
        let answer = ask_health(&actor).await;
        assert!(
            matches!(&answer, Err(Error::CacheUnavailable(why)) if why.contains("does not answer")),
            "{answer:?}"
        );
    }
}

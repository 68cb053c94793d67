//! The cache backend's state: the `cache` component of `/health`.

use serde::Serialize;

use super::{CacheStore, TokenCache};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct CacheHealthReport {
    pub backend: &'static str,
    pub keys: usize,
    /// Round trip in milliseconds (Redis only).
    pub latency_ms: Option<f64>,
}

/// The backend, its round trip and how many keys tokend holds there. While the breaker keeps
/// requests away from Redis, this does not wait on it either (the probe of
/// `daemon::upkeep` finds out when it is back): the answer is then an error.
pub async fn check(cache: &TokenCache) -> Result<CacheHealthReport> {
    if !cache.backend_up() {
        return Err(Error::CacheUnavailable(
            "unreachable; requests use the in-process fallback while a background \
             probe waits for it"
                .into(),
        ));
    }
    let store = cache.store();
    let latency_ms = match store {
        CacheStore::Redis(redis) => Some(redis.ping().await?),
        CacheStore::Memory(_) => None,
    };
    let keys = store.count_prefix(&cache.key_root()).await?;
    Ok(CacheHealthReport {
        backend: store.backend(),
        keys,
        latency_ms,
    })
}

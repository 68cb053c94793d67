//! The cache backend's state: the `cache` component of `/health`, answered by `CacheActor`
//! (its `CacheHealth` message).

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
/// `CacheActor` finds out when it is back): the answer is then an error.
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use base64::Engine;

    use super::*;
    use crate::vault::crypto::SecretKey;

    /// The in-process backend: no round trip, and only the keys under tokend's prefix count.
    #[actix_rt::test]
    async fn the_memory_backend_counts_the_keys_under_the_prefix() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let key = SecretKey::from_base64(&key).unwrap();
        let store = CacheStore::Memory(Arc::default());
        let cache = TokenCache::new(store.clone(), "t", key);
        let hour = Duration::from_secs(3600);
        store.set("t:token:s:1", "x", hour).await.unwrap();
        store.set("t:creds:s", "x", hour).await.unwrap();
        store.set("other:token:s:1", "x", hour).await.unwrap();
        let report = check(&cache).await.unwrap();
        assert_eq!(
            (report.backend, report.keys, report.latency_ms),
            ("memory", 2, None)
        );
    }
}

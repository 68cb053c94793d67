//! [`CacheStore`]: one interface over the in-process store and Redis. Handles are cheap
//! clones, so the hot path reads the store directly instead of queueing behind the actor.

use std::sync::Arc;
use std::time::Duration;

use super::memory::MemoryStore;
use super::redis_store::RedisStore;
use crate::error::Result;
use crate::redis::{Admit, RedisLink};

#[derive(Clone)]
pub enum CacheStore {
    Memory(Arc<MemoryStore>),
    Redis(RedisStore),
}

impl CacheStore {
    /// Redis over the link when there is one, else in process.
    pub fn new(link: Option<&RedisLink>) -> CacheStore {
        match link {
            Some(link) => CacheStore::Redis(RedisStore::new(link.clone())),
            None => CacheStore::Memory(Arc::default()),
        }
    }

    /// The Redis link, when the cache is in Redis.
    pub fn link(&self) -> Option<&RedisLink> {
        match self {
            CacheStore::Redis(redis) => Some(redis.link()),
            CacheStore::Memory(_) => None,
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            CacheStore::Memory(_) => "memory",
            CacheStore::Redis(_) => "redis",
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>> {
        match self {
            CacheStore::Memory(m) => Ok(m.get(key)),
            CacheStore::Redis(r) => r.get(key).await,
        }
    }

    /// A write; with `Admit::Always` sent to Redis whatever its breaker says.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration, admit: Admit) -> Result<()> {
        match self {
            CacheStore::Memory(m) => {
                m.set(key, value.to_string(), ttl);
                Ok(())
            }
            CacheStore::Redis(r) => r.set(key, value, ttl, admit).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        match self {
            CacheStore::Memory(m) => Ok(m.delete(key)),
            CacheStore::Redis(r) => r.delete(key).await,
        }
    }

    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        match self {
            CacheStore::Memory(m) => Ok(m.delete_prefix(prefix)),
            CacheStore::Redis(r) => r.delete_prefix(prefix).await,
        }
    }

    pub async fn count_prefix(&self, prefix: &str) -> Result<usize> {
        match self {
            CacheStore::Memory(m) => Ok(m.count_prefix(prefix)),
            CacheStore::Redis(r) => r.count_prefix(prefix).await,
        }
    }
}

//! The Redis cache backend: the token cache's reads and writes over the one Redis link
//! ([`RedisLink`]), whose breaker and timeouts bound every wait on a dead Redis.

use std::time::Duration;

use crate::error::Result;
use crate::redis::scripts::{CACHE_DELETE, TOKEN_SET};
use crate::redis::{Admit, RedisLink};

/// Keys asked for per SCAN step; large enough to be quick, small enough not to block Redis.
const SCAN_BATCH: usize = 500;
/// How the cache names itself in errors and logs.
const WHAT: &str = "redis cache";

/// What became of a token write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWrite {
    Written,
    /// The stored entry carries a newer fencing number.
    Stale,
    /// The token was invalidated (its tombstone is there).
    Revoked,
}

#[derive(Clone)]
pub struct RedisStore {
    link: RedisLink,
}

impl RedisStore {
    pub fn new(link: RedisLink) -> RedisStore {
        RedisStore { link }
    }

    /// The link, shared with the slots and the policies.
    pub fn link(&self) -> &RedisLink {
        &self.link
    }

    pub fn display_url(&self) -> &str {
        self.link.display_url()
    }

    pub async fn incr(&self, key: &str) -> Result<u64> {
        let cmd = redis::cmd("INCR").arg(key).clone();
        self.link.query(WHAT, Admit::WhenUp, &cmd).await
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>> {
        let cmd = redis::cmd("GET").arg(key).clone();
        self.link.query(WHAT, Admit::WhenUp, &cmd).await
    }

    /// A write through the breaker (`Admit::WhenUp`), or sent whatever it says.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration, admit: Admit) -> Result<()> {
        let millis = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let cmd = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(millis)
            .clone();
        self.link.query(WHAT, admit, &cmd).await
    }

    /// Sets `key` unless the JSON stored there carries a `fence` newer than `fence`
    /// (0 is never compared). Returns whether it was written.
    pub async fn set_fenced(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        fence: u64,
    ) -> Result<bool> {
        Ok(self.set_token(key, value, ttl, fence, None).await? == TokenWrite::Written)
    }

    /// [`RedisStore::set_fenced`], and not at all while `revoked` (the tombstone of an
    /// invalidated token) exists — checked in the same atomic step.
    pub async fn set_token(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        fence: u64,
        revoked: Option<&str>,
    ) -> Result<TokenWrite> {
        let millis = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let mut invocation = TOKEN_SET.key(key);
        if let Some(revoked) = revoked {
            invocation.key(revoked);
        }
        invocation
            .arg(value)
            .arg(millis)
            .arg(fence)
            .arg(self.link.keys().changes_channel())
            .arg(self.link.change_message(key));
        let written: u64 = self.link.invoke(WHAT, Admit::WhenUp, &invocation).await?;
        Ok(match written {
            1 => TokenWrite::Written,
            2 => TokenWrite::Revoked,
            _ => TokenWrite::Stale,
        })
    }

    /// Deletes are sent whatever the breaker says: an invalidation must not be lost. The
    /// change is published in the same step, for the near caches of every instance.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let mut invocation = CACHE_DELETE.key(key);
        invocation
            .arg(self.link.keys().changes_channel())
            .arg(self.link.change_message(key));
        let removed: u64 = self.link.invoke(WHAT, Admit::Always, &invocation).await?;
        Ok(removed > 0)
    }

    /// Every key under `prefix`, found with SCAN (never KEYS, which blocks Redis), on every
    /// master of a cluster.
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        self.link
            .scan(WHAT, &format!("{prefix}*"), SCAN_BATCH)
            .await
    }

    /// Deletes every key under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let keys = self.scan_prefix(prefix).await?;
        let mut removed = 0;
        for chunk in keys.chunks(SCAN_BATCH) {
            let cmd = redis::cmd("UNLINK").arg(chunk).clone();
            let n: usize = self.link.query(WHAT, Admit::Always, &cmd).await?;
            removed += n;
        }
        let announce = redis::cmd("PUBLISH")
            .arg(self.link.keys().changes_channel())
            .arg(self.link.change_message(&format!("{prefix}*")))
            .clone();
        // Not heard (an ACL without the channel): near copies are then re-read each second.
        if let Err(e) = self.link.query::<u64>(WHAT, Admit::Always, &announce).await {
            log::warn!("event=cache_change_unpublished prefix={prefix} error=\"{e}\"");
        }
        Ok(removed)
    }

    pub async fn count_prefix(&self, prefix: &str) -> Result<usize> {
        Ok(self.scan_prefix(prefix).await?.len())
    }

    /// Round trip in milliseconds.
    pub async fn ping(&self) -> Result<f64> {
        self.link.ping().await
    }

    /// `used_memory` from INFO memory, in bytes (of every master of a cluster).
    pub async fn used_memory(&self) -> Result<u64> {
        self.link.used_memory(WHAT).await
    }
}

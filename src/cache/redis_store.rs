//! The Redis cache backend: a lazily connecting, self-reconnecting connection manager with
//! bounded connect and command timeouts, so that no caller waits long on a dead Redis.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use crate::error::{Error, Result};
use crate::vault::secret::redact_url;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys asked for per SCAN step; large enough to be quick, small enough not to block Redis.
const SCAN_BATCH: usize = 500;

/// Writes a token entry unless its tombstone exists or the stored entry carries a newer
/// `fence` (the field of [`super::CachedToken`]).
pub(super) const SET_FENCED: &str = r#"
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local mine = tonumber(ARGV[3])
if mine > 0 then
  local current = redis.call('GET', KEYS[1])
  if current then
    local ok, entry = pcall(cjson.decode, current)
    if ok and type(entry) == 'table' and tonumber(entry.fence or 0) > mine then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

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
    conn: ConnectionManager,
    display_url: String,
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::CacheUnavailable(e.to_string())
}

impl RedisStore {
    /// Prepares the connection without waiting for Redis: tokend starts while Redis is down.
    pub fn connect(url: &str) -> Result<RedisStore> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::config("redis.url", format!("{}: {e}", redact_url(url))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| Error::config("redis.url", e.to_string()))?;
        Ok(RedisStore {
            conn,
            display_url: redact_url(url),
        })
    }

    /// The shared connection, for the Redis slots.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    pub async fn incr(&self, key: &str) -> Result<u64> {
        self.conn.clone().incr(key, 1).await.map_err(unavailable)
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>> {
        self.conn.clone().get(key).await.map_err(unavailable)
    }

    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let millis = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        self.conn
            .clone()
            .pset_ex(key, value, millis)
            .await
            .map_err(unavailable)
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
        let script = redis::Script::new(SET_FENCED);
        let mut invocation = script.key(key);
        if let Some(revoked) = revoked {
            invocation.key(revoked);
        }
        invocation.arg(value).arg(millis).arg(fence);
        let written: u64 = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(match written {
            1 => TokenWrite::Written,
            2 => TokenWrite::Revoked,
            _ => TokenWrite::Stale,
        })
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        let removed: u64 = self.conn.clone().del(key).await.map_err(unavailable)?;
        Ok(removed > 0)
    }

    /// Every key under `prefix`, found with SCAN (never KEYS, which blocks Redis).
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let pattern = format!("{prefix}*");
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Deletes every key under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let keys = self.scan_prefix(prefix).await?;
        let mut conn = self.conn.clone();
        let mut removed = 0;
        for chunk in keys.chunks(SCAN_BATCH) {
            let n: usize = conn.unlink(chunk).await.map_err(unavailable)?;
            removed += n;
        }
        Ok(removed)
    }

    pub async fn count_prefix(&self, prefix: &str) -> Result<usize> {
        Ok(self.scan_prefix(prefix).await?.len())
    }

    /// Round trip in milliseconds.
    pub async fn ping(&self) -> Result<f64> {
        let started = Instant::now();
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    }

    /// `used_memory` from INFO memory, in bytes.
    pub async fn used_memory(&self) -> Result<u64> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }
}

//! In-process copies kept beside the store.
//!
//! - [`NearCache`]: with the Redis backend, token entries and blocks read from Redis, stamped
//!   with the (monotonic) time they were known to be current. An entry younger than
//!   [`NEAR_WINDOW`] is served without a round trip, so an invalidation made on another
//!   instance is seen here within that window at the latest; while Redis is unreachable the
//!   copies are served until they expire.
//! - [`DecodedTokens`]: token entries as last decoded and opened, by key, with the stored text
//!   they came from. A hit whose text is unchanged skips the JSON decoding, the date parsing
//!   and the decryption. The stored text stays the truth; this only remembers work done.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use std::time::{Duration, Instant};

use super::entries::{CachedToken, ReadyHeaders};
use super::memory::MemoryStore;
use crate::vault::secret::Secret;

/// How long a token entry read from Redis is served from the in-process near cache.
pub const NEAR_WINDOW: Duration = Duration::from_secs(1);

/// Copies of Redis entries, with the monotonic time each was known to be current.
pub struct NearCache {
    copies: MemoryStore,
    /// The origin of the time stamps.
    epoch: Instant,
}

impl Default for NearCache {
    fn default() -> NearCache {
        NearCache {
            copies: MemoryStore::default(),
            epoch: Instant::now(),
        }
    }
}

impl NearCache {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Keeps a copy, stamped now.
    pub fn put(&self, key: &str, text: &str, ttl: Duration) {
        let at = self.now().as_millis();
        self.copies.set(key, format!("{at}\n{text}"), ttl);
    }

    /// A copy and its age.
    pub fn get(&self, key: &str) -> Option<(Duration, String)> {
        let stamped = self.copies.get(key)?;
        let (at, text) = stamped.split_once('\n')?;
        let at = Duration::from_millis(at.parse().ok()?);
        Some((self.now().saturating_sub(at), text.to_string()))
    }

    /// Keeps a marker or a block as is (no age: read only while Redis is away, or as a
    /// tombstone).
    pub fn mark(&self, key: &str, value: String, ttl: Duration) {
        self.copies.set(key, value, ttl);
    }

    /// A value kept with [`NearCache::mark`].
    pub fn marked(&self, key: &str) -> Option<String> {
        self.copies.get(key)
    }

    pub fn forget(&self, key: &str) {
        self.copies.delete(key);
    }

    pub fn forget_prefix(&self, prefix: &str) {
        self.copies.delete_prefix(prefix);
    }
}

/// One token entry, decoded and opened, and the stored text it was read from: what a cache
/// hit hands out (shared, so that a hit copies nothing it does not answer with).
pub struct OpenedToken {
    pub text: Arc<str>,
    pub entry: CachedToken,
    pub token: Secret,
    /// The headers to send with it, made once here rather than per answer.
    pub ready: ReadyHeaders,
    /// The whole HTTP answer of a cache hit on this entry, serialized by the first hit and
    /// sent as is by every later one (issue 23): a hit costs a look-up, not a serialization.
    hit_answer: OnceLock<Bytes>,
}

impl OpenedToken {
    pub fn new(text: Arc<str>, entry: CachedToken, token: Secret) -> OpenedToken {
        let ready = entry.ready_headers(&token);
        OpenedToken {
            text,
            entry,
            token,
            ready,
            hit_answer: OnceLock::new(),
        }
    }

    /// The answer of a hit, once one was kept (the cache does not know the API's envelope;
    /// whoever answers makes it and keeps it with [`OpenedToken::keep_hit_answer`]).
    pub fn hit_answer(&self) -> Option<Bytes> {
        self.hit_answer.get().cloned()
    }

    /// Keeps the answer of a hit; the first one kept stays.
    pub fn keep_hit_answer(&self, answer: Bytes) -> Bytes {
        self.hit_answer.get_or_init(|| answer).clone()
    }
}

/// Entries remembered at most: beyond, the memo is cleared (one key per account and site).
const DECODED_MAX: usize = 65_536;

/// Token entries as last decoded and opened, by key.
#[derive(Default)]
pub struct DecodedTokens {
    by_key: RwLock<HashMap<String, Arc<OpenedToken>>>,
}

impl DecodedTokens {
    /// The decoded entry of `key` if it was decoded from this very text (in process the
    /// stored text is shared, so a repeated hit compares one pointer).
    pub fn get(&self, key: &str, text: &Arc<str>) -> Option<Arc<OpenedToken>> {
        let by_key = self.by_key.read().unwrap_or_else(|p| p.into_inner());
        by_key
            .get(key)
            .filter(|d| Arc::ptr_eq(&d.text, text) || *d.text == **text)
            .cloned()
    }

    pub fn put(&self, key: String, decoded: OpenedToken) -> Arc<OpenedToken> {
        let decoded = Arc::new(decoded);
        let mut by_key = self.by_key.write().unwrap_or_else(|p| p.into_inner());
        if by_key.len() >= DECODED_MAX {
            by_key.clear();
        }
        by_key.insert(key, decoded.clone());
        decoded
    }

    pub fn forget(&self, key: &str) {
        self.by_key
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    pub fn clear(&self) {
        self.by_key
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn decoded(text: &Arc<str>) -> OpenedToken {
        let now = Utc::now();
        OpenedToken::new(
            text.clone(),
            CachedToken::sample(now),
            Secret::new("t".to_string()),
        )
    }

    #[test]
    fn a_decoded_entry_is_used_only_for_the_text_it_came_from() {
        let memo = DecodedTokens::default();
        let text: Arc<str> = Arc::from("{\"v\":1}");
        memo.put("k".into(), decoded(&text));
        assert!(memo.get("k", &text).is_some());
        // The same text in another allocation (read again from Redis) still matches.
        assert!(memo.get("k", &Arc::from("{\"v\":1}")).is_some());
        // A new entry under the same key does not.
        assert!(memo.get("k", &Arc::from("{\"v\":2}")).is_none());
        memo.forget("k");
        assert!(memo.get("k", &text).is_none());
    }

    #[test]
    fn a_near_copy_knows_its_age() {
        let near = NearCache::default();
        near.put("k", "a\nb", Duration::from_secs(60));
        let (age, text) = near.get("k").expect("kept");
        assert_eq!(text, "a\nb");
        assert!(age < NEAR_WINDOW);
        near.forget("k");
        assert!(near.get("k").is_none());
    }
}

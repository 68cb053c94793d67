//! In-process copies kept beside the store.
//!
//! - [`NearCache`]: with the Redis backend, token entries read from Redis (and blocks and
//!   tombstones, read only while Redis is away). Every change to a cached entry is published
//!   on the channel of changes ([`crate::redis::Keys::changes_channel`]), and each instance
//!   listens ([`super::listener`]): while it is subscribed, a copy is current until a change
//!   to its key is heard (re-read at the latest after [`HEARD_WINDOW`]), so a hit costs no
//!   round trip and an invalidation on another instance is seen as soon as it is published.
//!   While it is not (before the subscription, or after it broke), a copy is current for
//!   [`NEAR_WINDOW`]. While Redis is unreachable the copies are served until they expire.
//! - [`DecodedTokens`]: token entries as last decoded and opened, by key, with the stored text
//!   they came from. A hit whose text is unchanged skips the JSON decoding, the date parsing
//!   and the decryption. The stored text stays the truth; this only remembers work done.

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::entries::{CachedToken, ReadyHeaders};
use super::memory::MemoryStore;
use crate::vault::secret::Secret;

/// How long a copy read from Redis is current while no change can be heard.
pub const NEAR_WINDOW: Duration = Duration::from_secs(1);
/// How long a copy is current while changes are heard: a bound for the rare change that was
/// published but not heard (a subscription that broke silently and came back).
pub const HEARD_WINDOW: Duration = Duration::from_secs(30);

/// Copies of Redis entries, with the time each was known to be current.
#[derive(Default)]
pub struct NearCache {
    copies: Mutex<HashMap<String, NearCopy>>,
    /// Blocks and tombstones, kept as is.
    marks: MemoryStore,
    /// Bumped by every change heard and every (re)subscription: a copy whose read started
    /// before a bump is not taken as current (the change may have come after the read).
    generation: AtomicU64,
    /// Whether the listener is subscribed to the channel of changes now.
    hearing: AtomicBool,
}

struct NearCopy {
    text: Arc<str>,
    /// When it was known to be current; `None` when a change was heard during its read.
    known_at: Option<Instant>,
    expires: Instant,
}

/// A copy and whether it may be served without asking Redis.
pub struct Near {
    pub text: Arc<str>,
    pub current: bool,
}

impl NearCache {
    fn copies(&self) -> std::sync::MutexGuard<'_, HashMap<String, NearCopy>> {
        self.copies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation to give [`NearCache::put`] for a read that starts now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps a copy of what a read (or this instance's own write) that started at
    /// `generation` found: current from now, unless a change was heard since it started.
    pub fn put(&self, key: &str, text: Arc<str>, ttl: Duration, generation: u64) {
        let now = Instant::now();
        let known_at = (self.generation() == generation).then_some(now);
        self.copies().insert(
            key.to_string(),
            NearCopy {
                text,
                known_at,
                expires: now + ttl,
            },
        );
    }

    /// The copy under `key`, unless it expired.
    pub fn get(&self, key: &str) -> Option<Near> {
        let now = Instant::now();
        let window = if self.hearing.load(Ordering::Acquire) {
            HEARD_WINDOW
        } else {
            NEAR_WINDOW
        };
        let mut copies = self.copies();
        let copy = copies.get(key)?;
        if copy.expires <= now {
            copies.remove(key);
            return None;
        }
        Some(Near {
            text: copy.text.clone(),
            current: copy
                .known_at
                .is_some_and(|at| now.saturating_duration_since(at) < window),
        })
    }

    /// Keeps a marker or a block as is (read only while Redis is away, or as a tombstone).
    pub fn mark(&self, key: &str, value: String, ttl: Duration) {
        self.marks.set(key, value, ttl);
    }

    /// A value kept with [`NearCache::mark`].
    pub fn marked(&self, key: &str) -> Option<String> {
        self.marks.get(key)
    }

    /// Forgets a copy (this process changed or deleted the entry): a read that started
    /// before is not taken as current either.
    pub fn forget(&self, key: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.copies().remove(key);
        self.marks.delete(key);
    }

    pub fn forget_prefix(&self, prefix: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.copies().retain(|key, _| !key.starts_with(prefix));
        self.marks.delete_prefix(prefix);
    }

    /// A change published on the channel: `KEY`, or `PREFIX*` after a clear.
    pub fn heard(&self, change: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut copies = self.copies();
        match change.strip_suffix('*') {
            Some(prefix) => copies.retain(|key, _| !key.starts_with(prefix)),
            None => {
                copies.remove(change);
            }
        }
    }

    /// The listener is subscribed (`true`: changes are heard from now on, so no copy made
    /// before is taken as current) or lost its subscription (`false`).
    pub fn hearing(&self, now_hearing: bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if now_hearing {
            for copy in self.copies().values_mut() {
                copy.known_at = None;
            }
        }
        self.hearing.store(now_hearing, Ordering::Release);
    }

    /// Whether changes are heard now.
    pub fn is_hearing(&self) -> bool {
        self.hearing.load(Ordering::Acquire)
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
    fn a_near_copy_is_current_until_a_change_is_heard() {
        let near = NearCache::default();
        near.hearing(true);
        let before = near.generation();
        near.put("k", Arc::from("a\nb"), Duration::from_secs(60), before);
        let copy = near.get("k").expect("kept");
        assert_eq!(&*copy.text, "a\nb");
        assert!(copy.current);
        near.heard("k");
        assert!(near.get("k").is_none(), "a change forgets the copy");
        // A read that started before a change was heard is kept, but not as current.
        let started = near.generation();
        near.heard("other");
        near.put("k", Arc::from("old"), Duration::from_secs(60), started);
        assert!(!near.get("k").expect("kept").current);
        // A clear forgets a prefix; a new subscription makes every copy suspect.
        near.put(
            "p:1",
            Arc::from("x"),
            Duration::from_secs(60),
            near.generation(),
        );
        near.put(
            "q:1",
            Arc::from("y"),
            Duration::from_secs(60),
            near.generation(),
        );
        near.heard("p:*");
        assert!(near.get("p:1").is_none());
        near.hearing(true);
        assert!(!near.get("q:1").expect("kept").current);
    }
}

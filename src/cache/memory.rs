//! The in-process cache backend: a map of keys to values that expire, behind a mutex held only
//! for a lookup or an insert (never across an await).

use foldhash::HashMap;
use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A value as decoded by a reader, and the stored text it was decoded from.
type Decoded = (Arc<str>, Arc<dyn Any + Send + Sync>);

#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
    /// Values read decoded ([`MemoryStore::get_decoded`]: a site's credential list and account
    /// statistics), kept with the text they came from so that each stored value is decoded
    /// once, not on every read, and every reader shares that one copy (issue 23). Only keys
    /// read that way are here (one or two per site); a write of the key drops its entry.
    decoded: Mutex<HashMap<String, Decoded>>,
}

struct Entry {
    /// Shared, so that a hot-path read copies a pointer rather than the text.
    value: Arc<str>,
    expires: Instant,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-written (each operation is
        // a single insert or remove), so a poisoned lock is safe to keep using.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn decoded_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Decoded>> {
        self.decoded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value under `key` as `decode` makes it, decoded once per stored value: later reads
    /// of the same value share it. `None`: no live entry; `Some(None)`: `decode` refused the
    /// text (nothing is kept).
    pub fn get_decoded<T: Any + Send + Sync>(
        &self,
        key: &str,
        decode: impl FnOnce(&str) -> Option<T>,
    ) -> Option<Option<Arc<T>>> {
        let text = self.get_shared(key)?;
        let known = self
            .decoded_lock()
            .get(key)
            .filter(|(of, _)| Arc::ptr_eq(of, &text))
            .map(|(_, value)| value.clone());
        if let Some(Ok(value)) = known.map(|value| value.downcast::<T>()) {
            return Some(Some(value));
        }
        // Decoded outside the locks: a large list does not hold up the token reads.
        let Some(value) = decode(&text) else {
            return Some(None);
        };
        let value = Arc::new(value);
        let shared: Arc<dyn Any + Send + Sync> = value.clone();
        self.decoded_lock().insert(key.to_string(), (text, shared));
        Some(Some(value))
    }

    /// Drops what was decoded from the value of `key` (the value changes or goes).
    fn forget_decoded(&self, key: &str) {
        let mut decoded = self.decoded_lock();
        if !decoded.is_empty() {
            decoded.remove(key);
        }
    }

    /// The value under `key`, unless it has expired.
    pub fn get(&self, key: &str) -> Option<String> {
        self.get_shared(key).map(|value| value.to_string())
    }

    /// The same, shared: no copy of the text.
    pub fn get_shared(&self, key: &str) -> Option<Arc<str>> {
        let now = Instant::now();
        let mut entries = self.lock();
        match entries.get(key) {
            Some(entry) if entry.expires > now => Some(entry.value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn set(&self, key: &str, value: String, ttl: Duration) {
        self.forget_decoded(key);
        let expires = Instant::now() + ttl;
        self.lock().insert(
            key.to_string(),
            Entry {
                value: Arc::from(value),
                expires,
            },
        );
    }

    /// Sets `key` unless `blocker` holds a live entry (a revoked token's tombstone), in one
    /// step; returns whether it was set.
    pub fn set_unless(&self, key: &str, value: String, ttl: Duration, blocker: &str) -> bool {
        self.forget_decoded(key);
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.get(blocker).is_some_and(|e| e.expires > now) {
            return false;
        }
        entries.insert(
            key.to_string(),
            Entry {
                value: Arc::from(value),
                expires: now + ttl,
            },
        );
        true
    }

    pub fn delete(&self, key: &str) -> bool {
        self.forget_decoded(key);
        self.lock().remove(key).is_some()
    }

    /// Removes every key starting with `prefix`; returns how many.
    pub fn delete_prefix(&self, prefix: &str) -> usize {
        self.decoded_lock()
            .retain(|key, _| !key.starts_with(prefix));
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|key, _| !key.starts_with(prefix));
        before - entries.len()
    }

    /// Live keys starting with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> usize {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(key, entry)| entry.expires > now && key.starts_with(prefix))
            .count()
    }

    /// Entries held, expired ones included (until a sweep drops them).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.lock().len()
    }

    /// Drops expired entries; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, entry| entry.expires > now);
        let swept = before - entries.len();
        drop(entries);
        if swept > 0 {
            // What was decoded from a value that is gone (or replaced) goes with it.
            self.decoded_lock().retain(|key, (text, _)| {
                self.get_shared(key).is_some_and(|t| Arc::ptr_eq(&t, text))
            });
        }
        swept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_prefixes_and_sweep() {
        let store = MemoryStore::default();
        store.set("tokend:token:a:1", "t1".into(), Duration::from_secs(60));
        store.set("tokend:token:b:1", "t2".into(), Duration::from_secs(60));
        store.set("tokend:creds:a", "c".into(), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.get("tokend:token:a:1").as_deref(), Some("t1"));
        assert_eq!(
            store.get("tokend:creds:a"),
            None,
            "expired entries are not returned"
        );
        assert_eq!(store.count_prefix("tokend:"), 2);
        assert_eq!(store.delete_prefix("tokend:token:a:"), 1);
        assert_eq!(store.get("tokend:token:a:1"), None);
        store.set("x", "y".into(), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.sweep(), 1);
    }

    #[test]
    fn a_value_is_decoded_once_until_it_changes() {
        let store = MemoryStore::default();
        let decode = |text: &str| text.parse::<u32>().ok();
        assert!(store.get_decoded("k", decode).is_none(), "no entry");
        store.set("k", "1".into(), Duration::from_secs(60));
        let first = store.get_decoded("k", decode).unwrap().unwrap();
        let again = store
            .get_decoded("k", |_: &str| -> Option<u32> { panic!("decoded twice") })
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again), "one shared copy");
        store.set("k", "2".into(), Duration::from_secs(60));
        assert_eq!(*store.get_decoded("k", decode).unwrap().unwrap(), 2);
        store.set("k", "x".into(), Duration::from_secs(60));
        assert!(store.get_decoded("k", decode).unwrap().is_none(), "refused");
        assert!(store.delete("k"));
        assert!(store.get_decoded("k", decode).is_none());
        assert!(store.decoded_lock().is_empty());
    }
}

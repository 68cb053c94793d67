//! The in-process cache backend: a map of keys to values that expire, behind a mutex held only
//! for a lookup or an insert (never across an await).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
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
        self.lock().remove(key).is_some()
    }

    /// Removes every key starting with `prefix`; returns how many.
    pub fn delete_prefix(&self, prefix: &str) -> usize {
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
        before - entries.len()
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
}

//! The cache kinds (what an entry is) and their hit, miss and error counters.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// What a cache entry holds; each kind is counted on its own in `/metrics` and Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheKind {
    Token,
    Credentials,
    AccountStats,
    Blacklist,
}

impl CacheKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [CacheKind; 4] = [
        CacheKind::Token,
        CacheKind::Credentials,
        CacheKind::AccountStats,
        CacheKind::Blacklist,
    ];

    /// The name reports and logs use (`kind=token`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::Token => "token",
            CacheKind::Credentials => "credentials",
            CacheKind::AccountStats => "account_stats",
            CacheKind::Blacklist => "blacklist",
        }
    }
}

impl std::fmt::Display for CacheKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Hits, misses and errors per cache kind; shared, lock-free, read by `MonitorActor`.
#[derive(Debug, Default)]
pub struct CacheCounters {
    counts: [[AtomicU64; 3]; CacheKind::ALL.len()],
    /// Writes of the site's newest token refused because another account's token, from a
    /// later grant, is there already: the expected race of logins that end out of order.
    site_token_superseded: AtomicU64,
}

/// The counts of one kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KindCounts {
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
}

impl KindCounts {
    /// Percent of lookups that hit; `None` before the first lookup.
    pub fn hit_rate(&self) -> Option<f64> {
        let total = self.hits + self.misses;
        (total > 0).then(|| self.hits as f64 * 100.0 / total as f64)
    }
}

const HIT: usize = 0;
const MISS: usize = 1;
const ERROR: usize = 2;

impl CacheCounters {
    fn bump(&self, kind: CacheKind, which: usize) {
        self.counts[kind as usize][which].fetch_add(1, Ordering::Relaxed);
    }

    pub fn hit(&self, kind: CacheKind) {
        self.bump(kind, HIT);
    }

    pub fn miss(&self, kind: CacheKind) {
        self.bump(kind, MISS);
    }

    pub fn error(&self, kind: CacheKind) {
        self.bump(kind, ERROR);
    }

    pub fn site_token_superseded(&self) {
        self.site_token_superseded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn site_tokens_superseded(&self) -> u64 {
        self.site_token_superseded.load(Ordering::Relaxed)
    }

    pub fn get(&self, kind: CacheKind) -> KindCounts {
        let c = &self.counts[kind as usize];
        KindCounts {
            hits: c[HIT].load(Ordering::Relaxed),
            misses: c[MISS].load(Ordering::Relaxed),
            errors: c[ERROR].load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        self.site_token_superseded.store(0, Ordering::Relaxed);
        for kind in &self.counts {
            for count in kind {
                count.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_counted_on_its_own() {
        let counters = CacheCounters::default();
        counters.hit(CacheKind::Token);
        counters.hit(CacheKind::Token);
        counters.miss(CacheKind::Token);
        counters.error(CacheKind::Blacklist);
        let token = counters.get(CacheKind::Token);
        assert_eq!((token.hits, token.misses, token.errors), (2, 1, 0));
        assert_eq!(counters.get(CacheKind::Blacklist).errors, 1);
        assert_eq!(counters.get(CacheKind::Credentials).hits, 0);
        let rate = token.hit_rate().expect("three lookups");
        assert!((rate - 200.0 / 3.0).abs() < 1e-9);
        counters.reset();
        assert_eq!(counters.get(CacheKind::Token).hits, 0);
        assert_eq!(counters.get(CacheKind::Token).hit_rate(), None);
    }

    #[test]
    fn names_are_the_documented_ones() {
        let names: Vec<&str> = CacheKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["token", "credentials", "account_stats", "blacklist"]
        );
        for kind in CacheKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}

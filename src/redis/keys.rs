//! The key schema: every key tokend writes, built here and nowhere else, from `key_prefix`
//! (`P` below). Keys carry Redis Cluster hash tags (the part in `{}` picks the shard), so that
//! every key one Lua script touches shares one tag:
//!
//! - the shared limiter state (slots, locks, circuits, budgets, adaptive limits, checkouts,
//!   turns) is under `{P}:`, one tag: one shard holds it all, and any script may touch any of
//!   it;
//! - the token cache is under `P:KIND:{SITE}`, one tag per site: the fenced token write touches
//!   a token and its tombstone, both of one site; sites spread over the shards.
//!
//! | kind | key | value | expires |
//! |---|---|---|---|
//! | `token` | `P:token:{SITE}:ID` | [`CachedToken`], the token sealed | with the token |
//! | `token` | `P:site-token:{SITE}` | the site's newest [`CachedToken`] | with the token |
//! | (tombstone) | `P:revoked:{SITE}:ID:FINGERPRINT` | `1`: that token was invalidated | with the token |
//! | `credentials` | `P:credentials:{SITE}` | [`CredentialEntry`] list, passwords sealed | `credentials_ttl` |
//! | `account_stats` | `P:account-stats:{SITE}` | [`AccountStats`] list | `account_stats_ttl` |
//! | `blacklist` | `P:blacklist:{SITE}:ID` | `REASON\nUNTIL_MS`: a block mirrored from the database | with the block |
//! | (rotation) | `{P}:turn:SITE` | the site's round-robin counter | never |
//! | (slots) | `{P}:slots:leases` | sorted set: lease id → expiry (ms, Redis's clock) | lazily |
//! | (slots) | `{P}:slots:holders` | hash: lease id → `SITE\nACCOUNT` | with its lease |
//! | (slots) | `{P}:slots:queue`, `{P}:slots:queue-seq` | sorted set: waiter id → arrival number; its counter | lazily |
//! | (slots) | `{P}:slots:waiters` | hash: waiter id → `DEADLINE\nSITE\nACCOUNT` | lazily |
//! | (slots) | `{P}:slots:limits` | hash: `global`, `per_site`, `per_account` set at run time | never |
//! | (slots) | `{P}:slots:site-limits` | hash: site → its adaptive limit | never |
//! | (slots) | `{P}:slots:fence` | the fencing number of the latest grant | never |
//! | (slots) | `{P}:slots:counts` | hash: live leases in all, per site, per account (counted again when off) | never |
//! | (lock) | `{P}:lock:SITE:ID` | the owner of an account's single-flight lock | `lock_timeout`, renewed |
//! | (circuit) | `{P}:circuit:SITE` | hash: failures, retry_at, pause, probe_until, reason, message | a day |
//! | (budget) | `{P}:budget:SITE`, `{P}:budget:SITE:ID` | sorted set: login id → when | the window |
//! | (adaptive) | `{P}:aimd:SITE` | hash: limit, streak, halved_at | never |
//! | (checkout) | `{P}:checkout:SITE:ID` | the checkout id holding the account | with the lease |
//! | (checkout) | `{P}:checkouts` | hash: checkout id → the checkout as JSON | swept |
//!
//! [`CachedToken`]: crate::cache::CachedToken
//! [`CredentialEntry`]: crate::cache::CredentialEntry
//! [`AccountStats`]: crate::policy::selection::AccountStats

use std::sync::Arc;

use crate::cache::CacheKind;

/// The key prefixes of the cache kinds, after `P:` (never the shared state, under `{P}:`).
const KIND_PREFIXES: [(CacheKind, &str); 5] = [
    (CacheKind::Token, "token:"),
    (CacheKind::Token, "site-token:"),
    (CacheKind::Credentials, "credentials:"),
    (CacheKind::AccountStats, "account-stats:"),
    (CacheKind::Blacklist, "blacklist:"),
];

/// Builds the keys under one `key_prefix`.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    pub fn new(key_prefix: &str) -> Keys {
        Keys {
            prefix: Arc::from(key_prefix),
        }
    }

    /// The configured `key_prefix`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P:`, the start of every cache key.
    pub fn root(&self) -> String {
        format!("{}:", self.prefix)
    }

    /// `{P}:`, the start of every key of the shared state (one hash tag).
    pub fn shared_root(&self) -> String {
        format!("{{{}}}:", self.prefix)
    }

    /// Both roots: every key tokend owns starts with one of them.
    pub fn roots(&self) -> [String; 2] {
        [self.root(), self.shared_root()]
    }

    /// The channel every change to a cached entry is published on (`P:cache-changes`): the
    /// key written or deleted, or `PREFIX*` after a clear. The near caches of all instances
    /// listen and forget what changed (issue 23).
    pub fn changes_channel(&self) -> String {
        format!("{}:cache-changes", self.prefix)
    }

    pub fn token(&self, site: &str, id: i64) -> String {
        format!("{}:token:{{{site}}}:{id}", self.prefix)
    }

    pub fn site_token(&self, site: &str) -> String {
        format!("{}:site-token:{{{site}}}", self.prefix)
    }

    /// [`Keys::token`] (with an account's id) or [`Keys::site_token`] (without), written into
    /// `key`: a cache hit builds its key in a buffer it keeps, without allocating.
    pub fn token_key_into(&self, site: &str, credential_id: Option<i64>, key: &mut String) {
        use std::fmt::Write;
        key.clear();
        key.push_str(&self.prefix);
        match credential_id {
            Some(id) => {
                key.push_str(":token:{");
                key.push_str(site);
                let _ = write!(key, "}}:{id}");
            }
            None => {
                key.push_str(":site-token:{");
                key.push_str(site);
                key.push('}');
            }
        }
    }

    pub fn credentials(&self, site: &str) -> String {
        format!("{}:credentials:{{{site}}}", self.prefix)
    }

    pub fn account_stats(&self, site: &str) -> String {
        format!("{}:account-stats:{{{site}}}", self.prefix)
    }

    pub fn blacklist(&self, site: &str, id: i64) -> String {
        format!("{}:blacklist:{{{site}}}:{id}", self.prefix)
    }

    /// The tombstone key of one token (by the fingerprint of its sealed form).
    pub fn revoked(&self, site: &str, id: i64, sealed: &str) -> String {
        format!(
            "{}:revoked:{{{site}}}:{id}:{}",
            self.prefix,
            crate::vault::secret::fingerprint(sealed)
        )
    }

    /// A key of the shared state: `{P}:` then `rest`.
    fn shared(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{{{}}}:{rest}", self.prefix)
    }

    pub fn turn(&self, site: &str) -> String {
        self.shared(format_args!("turn:{site}"))
    }

    pub fn slot_leases(&self) -> String {
        self.shared(format_args!("slots:leases"))
    }

    pub fn slot_holders(&self) -> String {
        self.shared(format_args!("slots:holders"))
    }

    pub fn slot_queue(&self) -> String {
        self.shared(format_args!("slots:queue"))
    }

    pub fn slot_queue_seq(&self) -> String {
        self.shared(format_args!("slots:queue-seq"))
    }

    pub fn slot_waiters(&self) -> String {
        self.shared(format_args!("slots:waiters"))
    }

    pub fn slot_limits(&self) -> String {
        self.shared(format_args!("slots:limits"))
    }

    pub fn site_limits(&self) -> String {
        self.shared(format_args!("slots:site-limits"))
    }

    pub fn slot_counts(&self) -> String {
        self.shared(format_args!("slots:counts"))
    }

    pub fn fence(&self) -> String {
        self.shared(format_args!("slots:fence"))
    }

    pub fn lock(&self, site: &str, credential_id: i64) -> String {
        self.shared(format_args!("lock:{site}:{credential_id}"))
    }

    pub fn circuit(&self, site: &str) -> String {
        self.shared(format_args!("circuit:{site}"))
    }

    pub fn site_budget(&self, site: &str) -> String {
        self.shared(format_args!("budget:{site}"))
    }

    pub fn account_budget(&self, site: &str, credential_id: i64) -> String {
        self.shared(format_args!("budget:{site}:{credential_id}"))
    }

    pub fn aimd(&self, site: &str) -> String {
        self.shared(format_args!("aimd:{site}"))
    }

    pub fn checkout(&self, site: &str, credential_id: i64) -> String {
        self.shared(format_args!("checkout:{site}:{credential_id}"))
    }

    pub fn checkouts(&self) -> String {
        self.shared(format_args!("checkouts"))
    }

    /// The prefix of every key of each cache kind (several per kind).
    pub fn kind_prefixes(&self) -> impl Iterator<Item = (CacheKind, String)> + '_ {
        KIND_PREFIXES
            .iter()
            .map(|(kind, p)| (*kind, format!("{}:{p}", self.prefix)))
    }

    /// What `clear` removes for one site: the prefixes of its per-account entries, and its
    /// single keys.
    pub fn site_entries(&self, site: &str) -> ([String; 2], [String; 3]) {
        (
            [
                format!("{}:token:{{{site}}}:", self.prefix),
                format!("{}:blacklist:{{{site}}}:", self.prefix),
            ],
            [
                self.site_token(site),
                self.credentials(site),
                self.account_stats(site),
            ],
        )
    }
}

/// The hash tag of a key: what Redis Cluster hashes to pick its shard.
#[cfg(test)]
fn tag(key: &str) -> &str {
    let Some(open) = key.find('{') else {
        return key;
    };
    match key[open + 1..].find('}') {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sites_prefixes_do_not_reach_another_site_with_a_longer_name() {
        let keys = Keys::new("tokend");
        let ([tokens, blocks], singles) = keys.site_entries("court");
        assert!(keys.token("court", 7).starts_with(&tokens));
        assert!(!keys.token("court_zxfw", 7).starts_with(&tokens));
        assert!(keys.blacklist("court", 7).starts_with(&blocks));
        assert!(!keys.blacklist("court_zxfw", 7).starts_with(&blocks));
        assert!(singles.contains(&keys.site_token("court")));
    }

    #[test]
    fn a_token_key_built_in_a_buffer_is_the_token_key() {
        let keys = Keys::new("tokend");
        let mut key = String::from("left over");
        keys.token_key_into("court_zxfw", Some(42), &mut key);
        assert_eq!(key, keys.token("court_zxfw", 42));
        keys.token_key_into("court_zxfw", None, &mut key);
        assert_eq!(key, keys.site_token("court_zxfw"));
    }

    #[test]
    fn every_kind_prefix_is_under_the_root_and_the_shared_state_is_not_a_kind() {
        let keys = Keys::new("P");
        for (_, prefix) in keys.kind_prefixes() {
            assert!(prefix.starts_with(&keys.root()));
            assert!(!keys.slot_leases().starts_with(&prefix));
            assert!(!keys.lock("court", 1).starts_with(&prefix));
        }
        assert_eq!(keys.revoked("s", 1, "x"), keys.revoked("s", 1, "x"));
        assert_ne!(keys.revoked("s", 1, "x"), keys.revoked("s", 1, "y"));
    }

    /// Every group of keys one script touches shares one hash tag (Redis Cluster runs a
    /// script only on keys of one slot).
    #[test]
    fn the_keys_of_each_script_share_one_hash_tag() {
        let keys = Keys::new("tokend");
        let groups: [Vec<String>; 5] = [
            vec![
                keys.token("s", 1),
                keys.revoked("s", 1, "x"),
                keys.site_token("s"),
            ],
            vec![
                keys.slot_leases(),
                keys.slot_holders(),
                keys.slot_queue(),
                keys.slot_queue_seq(),
                keys.slot_waiters(),
                keys.slot_limits(),
                keys.site_limits(),
                keys.fence(),
                keys.slot_counts(),
                keys.aimd("s"),
            ],
            vec![keys.lock("s", 1), keys.circuit("t")],
            vec![keys.site_budget("s"), keys.account_budget("s", 2)],
            vec![keys.checkout("s", 1), keys.checkouts(), keys.turn("s")],
        ];
        for group in &groups {
            for key in group {
                assert_eq!(tag(key), tag(&group[0]), "{key} vs {}", group[0]);
            }
        }
        assert_eq!(tag(&keys.slot_leases()), "tokend");
        assert_eq!(tag(&keys.lock("s", 1)), tag(&keys.checkouts()));
        assert_eq!(tag(&keys.token("court", 1)), "court");
    }
}

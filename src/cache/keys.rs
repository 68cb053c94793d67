//! The key scheme: every key tokend owns starts with `{key_prefix}:`, then the kind, the site
//! and (for per-account entries) the account id.
//!
//! | kind | key | value | expires |
//! |---|---|---|---|
//! | `token` | `P:token:SITE:ID` | [`CachedToken`], the token sealed | with the token |
//! | `token` | `P:site-token:SITE` | the site's newest [`CachedToken`] | with the token |
//! | `credentials` | `P:credentials:SITE` | [`CredentialEntry`] list, passwords sealed | `credentials_ttl` |
//! | `account_stats` | `P:account-stats:SITE` | [`AccountStats`] list | `account_stats_ttl` |
//! | `blacklist` | `P:blacklist:SITE:ID` | `REASON\nUNTIL_MS`: a blacklist or cooldown, mirrored from the database | with the block |
//! | (tombstone) | `P:revoked:SITE:ID:FINGERPRINT` | `1`: that token was invalidated | with the token |
//! | (rotation) | `P:turn:SITE` | the site's round-robin counter | never |
//!
//! [`CachedToken`]: super::CachedToken
//! [`CredentialEntry`]: super::CredentialEntry
//! [`AccountStats`]: crate::policy::selection::AccountStats

use std::sync::Arc;

use super::kinds::CacheKind;

/// The key prefixes of the cache kinds (never the slots or locks, which share the prefix).
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

    /// `{key_prefix}:`, the start of every key tokend owns.
    pub fn root(&self) -> String {
        format!("{}:", self.prefix)
    }

    pub fn token(&self, site: &str, id: i64) -> String {
        format!("{}:token:{site}:{id}", self.prefix)
    }

    pub fn site_token(&self, site: &str) -> String {
        format!("{}:site-token:{site}", self.prefix)
    }

    pub fn credentials(&self, site: &str) -> String {
        format!("{}:credentials:{site}", self.prefix)
    }

    pub fn account_stats(&self, site: &str) -> String {
        format!("{}:account-stats:{site}", self.prefix)
    }

    pub fn blacklist(&self, site: &str, id: i64) -> String {
        format!("{}:blacklist:{site}:{id}", self.prefix)
    }

    /// The tombstone key of one token (by the fingerprint of its sealed form).
    pub fn revoked(&self, site: &str, id: i64, sealed: &str) -> String {
        format!(
            "{}:revoked:{site}:{id}:{}",
            self.prefix,
            crate::vault::secret::fingerprint(sealed)
        )
    }

    pub fn turn(&self, site: &str) -> String {
        format!("{}:turn:{site}", self.prefix)
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
                format!("{}:token:{site}:", self.prefix),
                format!("{}:blacklist:{site}:", self.prefix),
            ],
            [
                self.site_token(site),
                self.credentials(site),
                self.account_stats(site),
            ],
        )
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
    fn every_kind_prefix_is_under_the_root_and_slots_are_not_a_kind() {
        let keys = Keys::new("P");
        for (_, prefix) in keys.kind_prefixes() {
            assert!(prefix.starts_with(&keys.root()));
            assert!(!"P:slots:court".starts_with(&prefix));
        }
        assert_eq!(keys.revoked("s", 1, "x"), keys.revoked("s", 1, "x"));
        assert_ne!(keys.revoked("s", 1, "x"), keys.revoked("s", 1, "y"));
    }
}

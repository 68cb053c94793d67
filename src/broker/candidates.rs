//! Which accounts an acquisition may try, in order: the site's credential list and account
//! statistics (cached with their TTLs, loaded from the database on a miss), the blacklist,
//! and the ranking of SPEC §5.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use chrono::{DateTime, Utc};

use super::pipeline::Broker;
use crate::cache::memory::MemoryStore;
use crate::cache::{CacheKind, CacheStore, CredentialEntry};
use crate::config::{seconds, SiteConfig};
use crate::error::{Error, Result};
use crate::policy::budget::BudgetLimits;
use crate::policy::outcome::BlockReason;
use crate::policy::selection::{rank, spread, AccountStats, Strategy};

/// Loads of a site's accounts in progress, by broker (its state's address) and site: the
/// single flight of [`Broker::credential_list`] and the account statistics. A leaf lock,
/// held for one look-up.
type AccountLoads = HashMap<(usize, String), Weak<tokio::sync::Mutex<()>>>;
static ACCOUNT_LOADS: LazyLock<Mutex<AccountLoads>> = LazyLock::new(Mutex::default);

impl Broker {
    /// The site's accounts (active or not), from the cache or the database.
    /// A derived site (SPEC §13) has no accounts of its own: these are its parent's.
    /// Shared: in process, the cached list is decoded once per stored list, not per call
    /// (issue 23: with 10k accounts a decode per acquisition cost 10k allocations and a
    /// transient copy of the list per concurrent login).
    pub(super) async fn credential_list(
        &self,
        site: &SiteConfig,
    ) -> Result<Arc<Vec<CredentialEntry>>> {
        let site = self.account_owner(site);
        let key = || self.keys().credentials(&site.name);
        if let Some(list) = self.decoded_in_process(CacheKind::Credentials, key) {
            return Ok(list);
        }
        if let Some(list) = self.inner.cache.credentials(&site.name).await {
            return Ok(Arc::new(list));
        }
        // One load per site at a time: the callers that missed together wait for it and
        // take what it cached, rather than each loading (and holding) the whole list.
        let loading = self.account_load_lock(&site.name);
        let _load = match loading.try_lock() {
            Ok(load) => load,
            Err(_) => {
                let load = loading.lock().await;
                if let Some(list) = self.decoded_in_process(CacheKind::Credentials, key) {
                    return Ok(list);
                }
                if let Some(list) = self.inner.cache.credentials(&site.name).await {
                    return Ok(Arc::new(list));
                }
                load
            }
        };
        let (list, _) = self.reload_accounts(site).await?;
        Ok(Arc::new(list))
    }

    async fn account_stats(&self, site: &SiteConfig) -> Result<Arc<Vec<AccountStats>>> {
        let site = self.account_owner(site);
        let key = || self.keys().account_stats(&site.name);
        if let Some(stats) = self.decoded_in_process(CacheKind::AccountStats, key) {
            return Ok(stats);
        }
        if let Some(stats) = self.inner.cache.account_stats(&site.name).await {
            return Ok(Arc::new(stats));
        }
        let loading = self.account_load_lock(&site.name);
        let _load = match loading.try_lock() {
            Ok(load) => load,
            Err(_) => {
                let load = loading.lock().await;
                if let Some(stats) = self.decoded_in_process(CacheKind::AccountStats, key) {
                    return Ok(stats);
                }
                if let Some(stats) = self.inner.cache.account_stats(&site.name).await {
                    return Ok(Arc::new(stats));
                }
                load
            }
        };
        let (_, stats) = self.load_accounts(site).await?;
        let ttl = seconds(self.inner.config.cache.account_stats_ttl);
        self.inner
            .cache
            .put_account_stats(&site.name, &stats, ttl)
            .await;
        Ok(Arc::new(stats))
    }

    /// The lock a load of the site's accounts from the database holds (one per broker and
    /// site; weak, so it goes when no load holds or waits for it).
    fn account_load_lock(&self, site: &str) -> Arc<tokio::sync::Mutex<()>> {
        let broker = Arc::as_ptr(&self.inner) as usize;
        let mut loads = ACCOUNT_LOADS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = loads
            .get(&(broker, site.to_string()))
            .and_then(Weak::upgrade)
        {
            return lock;
        }
        loads.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        loads.insert((broker, site.to_string()), Arc::downgrade(&lock));
        lock
    }

    fn keys(&self) -> crate::redis::keys::Keys {
        crate::redis::keys::Keys::new(&self.inner.config.redis.key_prefix)
    }

    /// A cached list read from the in-process store, decoded once per stored list and
    /// shared (a hit, counted). `None` with Redis, on a miss, or when the entry does not
    /// decode: the typed read of [`crate::cache::TokenCache`] then counts the miss, or
    /// counts and drops the unreadable entry.
    fn decoded_in_process<T>(&self, kind: CacheKind, key: impl FnOnce() -> String) -> Option<Arc<T>>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let CacheStore::Memory(memory) = self.inner.cache.store() else {
            return None;
        };
        let memory: &MemoryStore = memory;
        let decoded = memory.get_decoded(&key(), |text| serde_json::from_str::<T>(text).ok())??;
        self.inner.cache.counters.hit(kind);
        Some(decoded)
    }

    /// Reads the site's accounts from the database and caches the list and the statistics.
    async fn reload_accounts(
        &self,
        site: &SiteConfig,
    ) -> Result<(Vec<CredentialEntry>, Vec<AccountStats>)> {
        let site = self.account_owner(site);
        let (list, stats) = self.load_accounts(site).await?;
        let ttls = &self.inner.config.cache;
        self.inner
            .cache
            .put_credentials(&site.name, &list, seconds(ttls.credentials_ttl))
            .await;
        self.inner
            .cache
            .put_account_stats(&site.name, &stats, seconds(ttls.account_stats_ttl))
            .await;
        Ok((list, stats))
    }

    async fn load_accounts(
        &self,
        site: &SiteConfig,
    ) -> Result<(Vec<CredentialEntry>, Vec<AccountStats>)> {
        let name = site.name.clone();
        let rows = self
            .inner
            .pool
            .run(move |conn| crate::db::accounts::list(conn, Some(&name)))
            .await?;
        let list = rows
            .iter()
            .map(|r| CredentialEntry {
                id: r.id,
                account: r.account.clone(),
                password_encrypted: r.password_encrypted.clone(),
                is_preferred: r.is_preferred,
                is_active: r.is_active,
                blocked_until: r.blocked_until.map(|t| t.and_utc()),
                block_reason: r.block_reason.as_deref().and_then(BlockReason::parse),
                proxy_encrypted: r.proxy_encrypted.clone(),
            })
            .collect();
        let stats = rows
            .into_iter()
            .map(|r| AccountStats {
                credential_id: r.id,
                account: r.account,
                is_preferred: r.is_preferred,
                is_active: r.is_active,
                login_success_count: r.login_success_count,
                login_failure_count: r.login_failure_count,
                last_login_success_at: r.last_login_success_at,
                last_login_attempt_at: r.last_login_attempt_at,
            })
            .collect();
        Ok((list, stats))
    }

    /// Loads the site's credential list and account statistics from the database into the
    /// cache, and reads the blacklist; returns what was loaded.
    pub async fn warm_up(&self, site_name: &str) -> Result<WarmUp> {
        let site = self.site(site_name)?;
        let (list, stats) = self.reload_accounts(site).await?;
        let mut blacklisted = Vec::new();
        for entry in &list {
            if self
                .block_of(&self.account_owner(site).name, entry)
                .await
                .is_some()
            {
                blacklisted.push(entry.account.clone());
            }
        }
        log::info!(
            "event=cache_warm_up site={} credentials={} blacklisted={}",
            site.name,
            list.len(),
            blacklisted.len()
        );
        Ok(WarmUp {
            site_name: site.name.clone(),
            credentials_loaded: list.len(),
            account_stats_loaded: stats.len(),
            active_accounts: list.iter().filter(|c| c.is_active).count(),
            blacklisted,
        })
    }

    /// The id of an account of the site, by name.
    pub(super) async fn credential_id_of(&self, site: &SiteConfig, account: &str) -> Result<i64> {
        let list = self.credential_list(site).await?;
        list.iter()
            .find(|c| c.account == account)
            .map(|c| c.id)
            .ok_or_else(|| Error::AccountNotFound {
                site: site.name.clone(),
                account: account.to_string(),
            })
    }

    /// The accounts to try, best first. With `credential_id`, just that one (if usable).
    #[cfg(test)]
    pub(super) async fn candidates(
        &self,
        site: &SiteConfig,
        credential_id: Option<i64>,
    ) -> Result<Vec<CredentialEntry>> {
        self.candidates_in_turn(site, credential_id, None).await
    }

    /// The accounts to try, best first, or rotated by the round-robin `turn` the caller took
    /// (else the next). With `credential_id`, just that one (if usable).
    pub(super) async fn candidates_in_turn(
        &self,
        site: &SiteConfig,
        credential_id: Option<i64>,
        turn: Option<u64>,
    ) -> Result<Vec<CredentialEntry>> {
        let list = self.credential_list(site).await?;
        if let Some(id) = credential_id {
            let entry = self.the_one_asked_for(site, &list, id).await?;
            return self.within_budget(site, vec![entry]).await;
        }
        if list.is_empty() {
            return Err(unavailable(
                site,
                "no accounts; add one with `tokend accounts add`".into(),
            ));
        }
        let accounts = self.with_stats(site, &list).await;
        let (blocked, next_usable) = self.blocked(site, &list).await;
        let ranked = rank(
            &accounts,
            |a| blocked.contains(&a.credential_id),
            Utc::now().naive_utc(),
        );
        if ranked.is_empty() {
            let next = next_usable.map_or(String::new(), |at| {
                format!(
                    "; the next is usable at {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            });
            return Err(unavailable(site, format!(
                "all {} accounts are inactive, blacklisted or cooling down{next} (`tokend accounts list` shows why, `tokend accounts unblock` lifts a block)",
                list.len()
            )));
        }
        let ranked: Vec<_> = ranked
            .into_iter()
            .filter(|a| self.held(site, a.credential_id).is_none())
            .collect();
        if ranked.is_empty() {
            return Err(self.all_checked_out(site));
        }
        let ranked = match (site.selection, turn) {
            (Strategy::Best, _) => ranked,
            (strategy, Some(turn)) => spread(ranked, strategy, turn),
            (strategy, None) => spread(ranked, strategy, self.next_turn(site).await),
        };
        let ranked = ranked
            .into_iter()
            .filter_map(|a| list.iter().find(|c| c.id == a.credential_id).cloned())
            .collect();
        self.within_budget(site, ranked).await
    }

    /// The account a caller named by `credential_id`, if it exists and may log in.
    async fn the_one_asked_for(
        &self,
        site: &SiteConfig,
        list: &[CredentialEntry],
        id: i64,
    ) -> Result<CredentialEntry> {
        let Some(entry) = list.iter().find(|c| c.id == id) else {
            return Err(Error::AccountNotFound {
                site: site.name.clone(),
                account: format!("with credential_id {id}"),
            });
        };
        if !entry.is_active {
            return Err(unavailable(
                site,
                format!("account `{}` is inactive", entry.account),
            ));
        }
        if let Some((reason, until)) = self.block_of(&self.account_owner(site).name, entry).await {
            return Err(unavailable(
                site,
                format!(
                    "account `{}` is {} until {} after a {} (`tokend accounts unblock` lifts it)",
                    entry.account,
                    reason.state().as_str(),
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    reason.as_str()
                ),
            ));
        }
        Ok(entry.clone())
    }

    /// The statistics of every account of the list, as the ranking reads them. Accounts
    /// added since the statistics were cached take part with no history; without
    /// statistics at all (database away), accounts are ranked on what the list says.
    async fn with_stats(&self, site: &SiteConfig, list: &[CredentialEntry]) -> Vec<AccountStats> {
        let stats = match self.account_stats(site).await {
            Ok(stats) => stats,
            Err(e) => {
                log::warn!(
                    "event=account_stats_unavailable site={} error=\"{e}\" action=rank_without_stats",
                    site.name
                );
                Arc::default()
            }
        };
        let mut by_id: HashMap<i64, &AccountStats> =
            stats.iter().map(|s| (s.credential_id, s)).collect();
        list.iter()
            .map(|c| {
                let mut s = by_id.remove(&c.id).cloned().unwrap_or(AccountStats {
                    credential_id: c.id,
                    account: c.account.clone(),
                    is_preferred: c.is_preferred,
                    is_active: c.is_active,
                    login_success_count: 0,
                    login_failure_count: 0,
                    last_login_success_at: None,
                    last_login_attempt_at: None,
                });
                s.is_active = c.is_active;
                s.is_preferred = c.is_preferred;
                s
            })
            .collect()
    }

    /// The active accounts under a blacklist or cooldown, and when the first block ends.
    async fn blocked(
        &self,
        site: &SiteConfig,
        list: &[CredentialEntry],
    ) -> (Vec<i64>, Option<DateTime<Utc>>) {
        let owner = &self.account_owner(site).name;
        let mut blocked = Vec::new();
        let mut next_usable: Option<DateTime<Utc>> = None;
        for entry in list.iter().filter(|c| c.is_active) {
            if let Some((_, until)) = self.block_of(owner, entry).await {
                blocked.push(entry.id);
                next_usable = Some(next_usable.map_or(until, |n| n.min(until)));
            }
        }
        (blocked, next_usable)
    }

    /// The site's next round-robin turn, from 0: shared through Redis when configured (an
    /// INCR), so that instances rotate together; else counted in process.
    pub(super) async fn next_turn(&self, site: &SiteConfig) -> u64 {
        if let Some(taken) = self.inner.cache.next_turn(&site.name).await {
            return taken.saturating_sub(1);
        }
        self.inner
            .turns
            .get(&site.name)
            .map_or(0, |turn| turn.fetch_add(1, Ordering::Relaxed))
    }

    /// The account whose round-robin `turn` it is: the one [`spread`] puts first, among the
    /// active accounts that are not blocked, by id. `None` when there is none (the slow path
    /// says why).
    pub(super) async fn account_in_turn(&self, site: &SiteConfig, turn: u64) -> Option<i64> {
        let list = self.credential_list(site).await.ok()?;
        let (blocked, _) = self.blocked(site, &list).await;
        let mut usable: Vec<i64> = list
            .iter()
            .filter(|c| c.is_active && !blocked.contains(&c.id))
            .map(|c| c.id)
            .collect();
        if usable.is_empty() {
            return None;
        }
        usable.sort_unstable();
        Some(usable[(turn % usable.len() as u64) as usize])
    }

    /// The candidates whose login budget (SPEC §12) is not spent; `LOGIN_BUDGET_EXHAUSTED`
    /// with the wait until the first one frees when none is left, or the site's is spent.
    async fn within_budget(
        &self,
        site: &SiteConfig,
        candidates: Vec<CredentialEntry>,
    ) -> Result<Vec<CredentialEntry>> {
        let limits = BudgetLimits::of(site);
        if limits.unlimited() {
            return Ok(candidates);
        }
        let ids: Vec<i64> = candidates.iter().map(|c| c.id).collect();
        let (site_count, counts) = self.inner.budgets.counts(&site.name, &ids).await;
        let exhausted = |frees_in: f64| Error::LoginBudgetExhausted {
            site: site.name.clone(),
            retry_after: std::time::Duration::from_secs_f64(
                frees_in.clamp(1.0, crate::policy::budget::WINDOW.as_secs_f64()),
            ),
        };
        if site_count.spent(limits.per_site) {
            return Err(exhausted(site_count.frees_in));
        }
        let mut next_free = f64::MAX;
        let mut left = Vec::with_capacity(candidates.len());
        for (candidate, count) in candidates.into_iter().zip(counts) {
            if count.spent(limits.per_account) {
                next_free = next_free.min(count.frees_in);
            } else {
                left.push(candidate);
            }
        }
        if left.is_empty() {
            return Err(exhausted(next_free));
        }
        Ok(left)
    }
}

/// `NO_AVAILABLE_ACCOUNT` for the site, saying why.
fn unavailable(site: &SiteConfig, reason: String) -> Error {
    Error::NoAvailableAccount {
        site: site.name.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::super::states::fixture::{Fixture, SITE};
    use crate::drivers::FailureKind;
    use crate::error::Error;

    /// Records `ok` successes and `failed` failures of account `id`, `hours_ago`.
    async fn history(f: &Fixture, id: i64, ok: u32, failed: u32, hours_ago: i64) {
        let at = (Utc::now() - chrono::Duration::hours(hours_ago)).naive_utc();
        f.db(move |conn| {
            for n in 0..ok + failed {
                crate::db::accounts::record_attempt(conn, id, n < ok, at)?;
            }
            Ok(())
        })
        .await;
    }

    #[actix_rt::test]
    async fn preferred_first_then_recent_success_then_success_rate_and_blocked_skipped() {
        let f = Fixture::start("", "").await;
        let plain = f.add("plain", false);
        let reliable = f.add("reliable", false);
        let flaky = f.add("flaky", false);
        let preferred = f.add("preferred", true);
        f.add("off", false);
        f.add("blocked", false);
        let old = f.add("old", false);
        history(&f, reliable, 3, 0, 1).await;
        history(&f, flaky, 3, 3, 1).await;
        history(&f, old, 3, 0, 200).await;
        f.db(|conn| crate::db::accounts::set_active(conn, SITE, "off", false))
            .await;
        let broker = f.broker();
        let site = broker.site(SITE).unwrap();
        let list = broker.credential_list(site).await.unwrap();
        let blocked = list.iter().find(|c| c.account == "blocked").unwrap();
        broker.penalise(site, blocked, FailureKind::Failed).await;

        let order: Vec<i64> = broker
            .candidates(site, None)
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(order, [preferred, reliable, flaky, old, plain]);
    }

    #[actix_rt::test]
    async fn a_named_account_is_tried_alone_if_it_can_be() {
        let f = Fixture::start("", "").await;
        let first = f.add("first", true);
        let second = f.add("second", false);
        let off = f.add("off", false);
        f.db(|conn| crate::db::accounts::set_active(conn, SITE, "off", false))
            .await;
        let broker = f.broker();
        let site = broker.site(SITE).unwrap();
        let only: Vec<i64> = broker
            .candidates(site, Some(second))
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(only, [second]);
        assert_eq!(broker.candidates(site, None).await.unwrap()[0].id, first);
        let inactive = broker.candidates(site, Some(off)).await.unwrap_err();
        assert!(
            matches!(&inactive, Error::NoAvailableAccount { reason, .. } if reason.contains("inactive")),
            "{inactive:?}"
        );
        assert!(matches!(
            broker.candidates(site, Some(9_999)).await,
            Err(Error::AccountNotFound { .. })
        ));
        assert_eq!(
            broker.credential_id_of(site, "second").await.unwrap(),
            second
        );
    }

    #[actix_rt::test]
    async fn no_accounts_is_said_plainly() {
        let f = Fixture::start("", "").await;
        let broker = f.broker();
        let site = broker.site(SITE).unwrap();
        let none = broker.candidates(site, None).await.unwrap_err();
        assert!(
            matches!(&none, Error::NoAvailableAccount { reason, .. } if reason.contains("tokend accounts add")),
            "{none:?}"
        );
    }

    /// The account a round-robin turn serves from the cache is the one its login would
    /// start with, blocked and inactive accounts left out of both.
    #[actix_rt::test]
    async fn the_account_in_turn_is_the_first_candidate_of_that_turn() {
        let f = Fixture::start("", "selection = \"round_robin\"\n").await;
        let ids = [f.add("a", false), f.add("b", true), f.add("c", false)];
        f.add("off", false);
        f.add("blocked", false);
        f.db(|conn| crate::db::accounts::set_active(conn, SITE, "off", false))
            .await;
        let broker = f.broker();
        let site = broker.site(SITE).unwrap();
        let list = broker.credential_list(site).await.unwrap();
        let blocked = list.iter().find(|c| c.account == "blocked").unwrap();
        broker.penalise(site, blocked, FailureKind::Failed).await;
        for turn in 0..6 {
            let first = broker
                .candidates_in_turn(site, None, Some(turn))
                .await
                .unwrap()[0]
                .id;
            assert_eq!(broker.account_in_turn(site, turn).await, Some(first));
            assert_eq!(first, ids[turn as usize % 3], "turn {turn}");
        }
    }

    #[actix_rt::test]
    async fn round_robin_takes_the_accounts_in_turn() {
        let f = Fixture::start("", "selection = \"round_robin\"\n").await;
        let ids = [f.add("a", false), f.add("b", false), f.add("c", false)];
        let broker = f.broker();
        let site = broker.site(SITE).unwrap();
        let mut firsts = Vec::new();
        for _ in 0..6 {
            firsts.push(broker.candidates(site, None).await.unwrap()[0].id);
        }
        // Each account comes first in turn, whatever the first turn was.
        for pair in firsts.windows(2) {
            let at = ids.iter().position(|id| *id == pair[0]).unwrap();
            assert_eq!(pair[1], ids[(at + 1) % 3], "{firsts:?}");
        }
    }
}

/// What a cache warm-up loaded (`POST /performance/cache/warm-up`).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct WarmUp {
    pub site_name: String,
    pub credentials_loaded: usize,
    pub account_stats_loaded: usize,
    pub active_accounts: usize,
    /// The accounts blacklisted or cooling down now, by name.
    pub blacklisted: Vec<String>,
}

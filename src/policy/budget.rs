//! Login budgets (SPEC §12): how many logins a site, and each of its accounts, may make in
//! any sliding hour — portals count logins over time, not only logins in flight.
//!
//! With Redis the logins of the last hour are sorted sets shared by every instance,
//! `{P}:budget:SITE` and `{P}:budget:SITE:ID` (member: a login id, score: when, on Redis's
//! clock); a login is taken by one Lua script (`src/redis/scripts/budget_take.lua`) that checks
//! both limits and counts it, so two instances cannot both take the last one. Without Redis,
//! or while the Redis link's breaker is open, the same windows are kept in process and
//! seeded, the first time a site is asked about, from the history table, so that a restart
//! does not hand out a fresh hour.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::config::SiteConfig;
use crate::db::Pool;
use crate::error::{Error, Result};
use crate::redis::scripts::{BUDGET_COUNT, BUDGET_TAKE};
use crate::redis::{Admit, RedisLink};

/// How the budgets name themselves in errors and logs.
const WHAT: &str = "redis budgets";

/// The window logins are counted over.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// The logins a site's budgets allow, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    pub per_site: u32,
    pub per_account: u32,
}

impl BudgetLimits {
    pub fn of(site: &SiteConfig) -> BudgetLimits {
        BudgetLimits {
            per_site: site.login_budget_per_site_per_hour,
            per_account: site.login_budget_per_account_per_hour,
        }
    }

    pub fn unlimited(self) -> bool {
        self.per_site == 0 && self.per_account == 0
    }
}

/// Logins counted in the window, and how long until the oldest of them leaves it.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct WindowCount {
    pub used: u32,
    /// Seconds until the oldest counted login leaves the window (0 when none is counted).
    pub frees_in: f64,
}

impl WindowCount {
    /// Logins left under `limit` (`None`: unlimited).
    pub fn left(self, limit: u32) -> Option<u32> {
        (limit > 0).then(|| limit.saturating_sub(self.used))
    }

    pub fn spent(self, limit: u32) -> bool {
        limit > 0 && self.used >= limit
    }
}

/// The budgets of every site. Cheap to clone.
#[derive(Clone)]
pub struct LoginBudgets {
    redis: Option<RedisLink>,
    pool: Pool,
    local: Arc<Mutex<LocalWindows>>,
}

/// In-process windows: login times (ms) per site and per (site, account).
#[derive(Default)]
struct LocalWindows {
    seeded: std::collections::HashSet<String>,
    sites: HashMap<String, VecDeque<i64>>,
    accounts: HashMap<(String, i64), VecDeque<i64>>,
}

fn count_of(times: Option<&mut VecDeque<i64>>, now: i64) -> WindowCount {
    let window = WINDOW.as_millis() as i64;
    let Some(times) = times else {
        return WindowCount::default();
    };
    while times.front().is_some_and(|t| *t <= now - window) {
        times.pop_front();
    }
    WindowCount {
        used: times.len() as u32,
        frees_in: times
            .front()
            .map_or(0.0, |t| (t + window - now).max(0) as f64 / 1000.0),
    }
}

impl LoginBudgets {
    pub fn new(redis: Option<RedisLink>, pool: Pool) -> LoginBudgets {
        LoginBudgets {
            redis,
            pool,
            local: Arc::default(),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, LocalWindows> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the last hour's logins of a site from the history, once per process.
    async fn seed(&self, site: &str) {
        if self.local().seeded.contains(site) {
            return;
        }
        let since =
            (Utc::now() - chrono::Duration::from_std(WINDOW).unwrap_or_default()).naive_utc();
        let name = site.to_string();
        let logins = self
            .pool
            .run(move |conn| crate::db::history::logins_since(conn, &name, since))
            .await;
        let mut local = self.local();
        if !local.seeded.insert(site.to_string()) {
            return;
        }
        match logins {
            Ok(logins) => {
                for (id, at) in logins {
                    let at = at.and_utc().timestamp_millis();
                    local
                        .sites
                        .entry(site.to_string())
                        .or_default()
                        .push_back(at);
                    if let Some(id) = id {
                        local
                            .accounts
                            .entry((site.to_string(), id))
                            .or_default()
                            .push_back(at);
                    }
                }
                let LocalWindows {
                    sites, accounts, ..
                } = &mut *local;
                for times in sites.values_mut().chain(accounts.values_mut()) {
                    times.make_contiguous().sort_unstable();
                }
            }
            Err(e) => log::warn!("event=login_budget_unseeded site={site} error=\"{e}\""),
        }
    }

    /// Logins in the window: the site's, then each account's of `ids`.
    pub async fn counts(&self, site: &str, ids: &[i64]) -> (WindowCount, Vec<WindowCount>) {
        if let Some(redis) = &self.redis {
            let mut script = BUDGET_COUNT.key(redis.keys().site_budget(site));
            for id in ids {
                script.key(redis.keys().account_budget(site, *id));
            }
            script.arg(WINDOW.as_millis() as u64);
            // An error is the link's to log (once per outage): counted in process meanwhile.
            let answer: Result<Vec<i64>> = redis.invoke(WHAT, Admit::WhenUp, &script).await;
            if let Ok(values) = answer {
                let mut counts = values.chunks(2).map(|pair| WindowCount {
                    used: pair[0].max(0) as u32,
                    frees_in: pair.get(1).copied().unwrap_or(0).max(0) as f64 / 1000.0,
                });
                let site_count = counts.next().unwrap_or_default();
                return (site_count, counts.collect());
            }
        }
        self.seed(site).await;
        let now = Utc::now().timestamp_millis();
        let mut local = self.local();
        let site_count = count_of(local.sites.get_mut(site), now);
        let accounts = ids
            .iter()
            .map(|id| count_of(local.accounts.get_mut(&(site.to_string(), *id)), now))
            .collect();
        (site_count, accounts)
    }

    /// Counts one login of (site, account), if both budgets allow it; otherwise the error
    /// says how long until they do.
    pub async fn take(&self, site: &str, id: i64, limits: BudgetLimits) -> Result<()> {
        if limits.unlimited() {
            return Ok(());
        }
        let refused = |wait_ms: i64| Error::LoginBudgetExhausted {
            site: site.to_string(),
            retry_after: Duration::from_millis(wait_ms.max(1000) as u64),
        };
        if let Some(redis) = &self.redis {
            let mut script = BUDGET_TAKE.key(redis.keys().site_budget(site));
            script
                .key(redis.keys().account_budget(site, id))
                .arg(limits.per_site)
                .arg(limits.per_account)
                .arg(WINDOW.as_millis() as u64)
                .arg(uuid::Uuid::new_v4().to_string());
            // An error is the link's to log (once per outage): counted in process meanwhile.
            match redis.invoke(WHAT, Admit::WhenUp, &script).await {
                Ok((1, _)) => return Ok(()),
                Ok((_, wait)) => return Err(refused(wait)),
                Err(_) => {}
            }
        }
        self.seed(site).await;
        let now = Utc::now().timestamp_millis();
        let mut local = self.local();
        let key = (site.to_string(), id);
        let site_count = count_of(local.sites.get_mut(site), now);
        let account_count = count_of(local.accounts.get_mut(&key), now);
        let mut exhausted = None;
        for (count, limit) in [
            (site_count, limits.per_site),
            (account_count, limits.per_account),
        ] {
            if count.spent(limit) {
                exhausted = Some(exhausted.unwrap_or(0.0f64).max(count.frees_in));
            }
        }
        if let Some(wait) = exhausted {
            return Err(refused((wait * 1000.0) as i64));
        }
        local
            .sites
            .entry(site.to_string())
            .or_default()
            .push_back(now);
        local.accounts.entry(key).or_default().push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::models::NewHistory;

    fn pool(dir: &std::path::Path) -> Pool {
        let pool = Pool::connect(&format!("sqlite://{}/b.db", dir.display()), 2).unwrap();
        pool.migrate().unwrap();
        pool
    }

    fn limits(per_site: u32, per_account: u32) -> BudgetLimits {
        BudgetLimits {
            per_site,
            per_account,
        }
    }

    /// The wait an exhausted budget answers with, in seconds.
    fn retry_after(refused: Result<()>) -> u64 {
        match refused {
            Err(Error::LoginBudgetExhausted { retry_after, .. }) => retry_after.as_secs(),
            other => panic!("not refused for the budget: {other:?}"),
        }
    }

    #[actix_rt::test]
    async fn the_login_after_the_last_is_refused_with_the_wait_until_one_frees() {
        let dir = tempfile::tempdir().unwrap();
        let budgets = LoginBudgets::new(None, pool(dir.path()));
        let both = limits(3, 2);
        budgets.take("s", 1, both).await.unwrap();
        budgets.take("s", 1, both).await.unwrap();
        // The account's two are spent: it waits (about) an hour for its first to leave.
        let wait = retry_after(budgets.take("s", 1, both).await);
        assert!((3590..=3600).contains(&wait), "{wait}");
        // Another account may still log in, once: then the site's three are spent.
        budgets.take("s", 2, both).await.unwrap();
        retry_after(budgets.take("s", 3, both).await);
        // Other sites count on their own.
        budgets.take("t", 1, both).await.unwrap();
        let (site, accounts) = budgets.counts("s", &[1, 2, 3]).await;
        assert_eq!(site.used, 3);
        assert_eq!(site.left(both.per_site), Some(0));
        let used: Vec<u32> = accounts.iter().map(|c| c.used).collect();
        assert_eq!(used, [2, 1, 0]);
        assert_eq!(accounts[2].left(both.per_account), Some(2));
        assert!(
            (3590.0..=3600.0).contains(&site.frees_in),
            "{}",
            site.frees_in
        );
    }

    #[actix_rt::test]
    async fn without_budgets_every_login_is_taken_and_none_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let budgets = LoginBudgets::new(None, pool(dir.path()));
        for _ in 0..10 {
            budgets.take("s", 1, limits(0, 0)).await.unwrap();
        }
        let (site, _) = budgets.counts("s", &[1]).await;
        assert_eq!((site.used, site.left(0)), (0, None));
        assert!(!site.spent(0));
    }

    fn login(id: &str, credential_id: i64, minutes_ago: i64, attempts: i32) -> NewHistory {
        let at = (Utc::now() - chrono::Duration::minutes(minutes_ago)).naive_utc();
        let account = format!("a{credential_id}");
        NewHistory {
            attempt_count: attempts,
            ..NewHistory::login(id, "s", (&account, credential_id), at)
        }
    }

    #[actix_rt::test]
    async fn a_restart_does_not_hand_out_a_fresh_hour() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path());
        // Before the restart: two logins of account 1 in this hour, one an hour and more
        // ago, and an acquisition served without a login (no driver ran).
        let rows = vec![
            login("recent-1", 1, 10, 1),
            login("recent-2", 1, 50, 2),
            login("too-old", 1, 70, 1),
            login("no-login", 1, 5, 0),
        ];
        pool.run(move |conn| crate::db::history::insert_batch(conn, &rows))
            .await
            .unwrap();
        let budgets = LoginBudgets::new(None, pool);
        let (site, accounts) = budgets.counts("s", &[1]).await;
        assert_eq!((site.used, accounts[0].used), (2, 2));
        // The oldest counted login (50 minutes ago) leaves the window in about 10 minutes.
        assert!(
            (590.0..=610.0).contains(&site.frees_in),
            "{}",
            site.frees_in
        );
        let wait = retry_after(budgets.take("s", 1, limits(0, 2)).await);
        assert!((590..=610).contains(&wait), "{wait}");
        budgets.take("s", 2, limits(0, 2)).await.unwrap();
    }
}

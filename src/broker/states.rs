//! Account states and site health (SPEC §11): the penalties a failed login deserves, kept in
//! the database beside the account and mirrored in the cache; lifting them by hand; the
//! state of every account as operators see it; whether each site can serve a login; and the
//! watcher that shows the daemon accounts the CLI added, removed or changed.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::pipeline::Broker;
use crate::accounts::AccountView;
use crate::cache::CredentialEntry;
use crate::config::{seconds, SiteConfig};
use crate::drivers::FailureKind;
use crate::error::{Error, Result};
use crate::policy::budget::BudgetLimits;
use crate::policy::circuit::{CircuitState, CircuitView};
use crate::policy::outcome::{AccountState, BlockReason};

/// How often the daemon looks for account changes made outside it (the CLI).
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Whether a site can serve a login now (`/health` `components.sites.{name}`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SiteReport {
    #[serde(skip)]
    pub name: String,
    /// `up`, `circuit_open` or `no_accounts`.
    #[schema(value_type = String)]
    pub status: std::borrow::Cow<'static, str>,
    pub usable_accounts: usize,
    pub accounts: usize,
    pub circuit: CircuitView,
    /// The site's slot limit in force (adaptive, or `max_concurrent_per_site`).
    pub concurrency_limit: u32,
    /// Logins in this sliding hour against the site's budgets (absent when unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_budget: Option<BudgetReport>,
    /// The site whose accounts it uses (a derived site: its parent's); absent for a site
    /// with accounts of its own. `accounts` and `usable_accounts` count those.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts_of_site: Option<String>,
}

/// A site's login budgets as they stand.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BudgetReport {
    pub per_site_per_hour: u32,
    pub per_account_per_hour: u32,
    /// Logins of the whole site in the window.
    pub site_used: u32,
    /// Logins the site has left (`null`: no site budget).
    pub site_left: Option<u32>,
    /// Seconds until the oldest counted login leaves the window.
    pub frees_in: f64,
}

impl Broker {
    /// The block an account is under now: the database's (as cached in the credential
    /// list) or the cache's mirror (a block set while the database was unreachable, or by
    /// another instance since the list was loaded).
    pub(super) async fn block_of(
        &self,
        site: &str,
        entry: &CredentialEntry,
    ) -> Option<(BlockReason, DateTime<Utc>)> {
        match entry.stored_block(Utc::now()) {
            Some(block) => Some(block),
            None => self.inner.cache.block(site, entry.id).await,
        }
    }

    /// Penalises an account for a failure that was its own fault (SPEC §11): a refused
    /// password blacklists it, a captcha or an unknown failure cools it down. Network errors
    /// and timeouts never reach here.
    pub(super) async fn penalise(
        &self,
        site: &SiteConfig,
        candidate: &CredentialEntry,
        kind: FailureKind,
    ) {
        let accounts = &self.inner.config.accounts;
        let (reason, length) = match kind {
            FailureKind::Credential => (
                BlockReason::CredentialError,
                accounts.blacklist_duration_hours * 3600.0,
            ),
            FailureKind::Captcha => (BlockReason::CaptchaError, accounts.captcha_cooldown),
            FailureKind::Failed => (BlockReason::Failed, accounts.failure_cooldown),
            FailureKind::Proxy => (BlockReason::ProxyError, accounts.proxy_cooldown),
            FailureKind::Network | FailureKind::Timeout | FailureKind::Misconfigured => return,
        };
        let length = seconds(length);
        if length.is_zero() {
            return;
        }
        let until =
            Utc::now() + chrono::Duration::from_std(length).unwrap_or(chrono::Duration::MAX);
        let id = candidate.id;
        let stored = self
            .inner
            .pool
            .run(move |conn| crate::db::accounts::block(conn, id, until.naive_utc(), reason))
            .await;
        if let Err(e) = &stored {
            log::warn!(
                "event=account_block_not_saved site={} account={} error=\"{e}\" kept=cache",
                site.name,
                candidate.account
            );
        }
        self.inner
            .cache
            .put_block(&site.name, id, reason, until)
            .await;
        self.inner.cache.forget_accounts(&site.name).await;
        log::warn!(
            "event=account_{} site={} account={} reason={} until={}",
            match reason.state() {
                AccountState::Blacklisted => "blacklisted",
                _ => "cooling_down",
            },
            site.name,
            candidate.account,
            reason.as_str(),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }

    /// Lifts an account's blacklist or cooldown at once; returns whether it had one.
    pub async fn unblock(&self, site_name: &str, account: &str) -> Result<bool> {
        let site = self.site(site_name)?;
        let (name, owned) = (site.name.clone(), account.to_string());
        let Some((id, stored)) = self
            .inner
            .pool
            .run(move |conn| crate::db::accounts::unblock(conn, &name, &owned))
            .await?
        else {
            return Err(Error::AccountNotFound {
                site: site.name.clone(),
                account: account.to_string(),
            });
        };
        let mirrored = self.inner.cache.block(&site.name, id).await.is_some();
        self.inner.cache.remove_block(&site.name, id).await;
        self.inner.cache.forget_accounts(&site.name).await;
        let was_blocked = stored || mirrored;
        log::info!(
            "event=account_unblocked site={} account={account} was_blocked={was_blocked}",
            site.name
        );
        Ok(was_blocked)
    }

    /// The accounts of one site, or of all, with their state now.
    pub async fn account_views(&self, site_name: Option<&str>) -> Result<Vec<AccountView>> {
        // A derived site's accounts are its parent's (SPEC §13): shown under that site.
        let filter = match site_name {
            Some(name) => Some(self.account_owner(self.site(name)?).name.clone()),
            None => None,
        };
        let rows = self
            .inner
            .pool
            .run(move |conn| crate::db::accounts::list(conn, filter.as_deref()))
            .await?;
        let now = Utc::now();
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            // A block mirrored in the cache only (set while the database was unreachable).
            let mirrored = match AccountView::stored_block(&row, now) {
                Some(_) => None,
                None => self.inner.cache.block(&row.site_name, row.id).await,
            };
            views.push(AccountView::new(row, now, mirrored));
        }
        self.fill_budgets(&mut views).await;
        for held in self.inner.checkouts.known() {
            if let Some(view) = views
                .iter_mut()
                .find(|v| v.site_name == held.accounts_site && v.id == held.credential_id)
            {
                view.checkout = Some(held);
            }
        }
        Ok(views)
    }

    /// Sets each account's logins left in this hour, for sites that have a budget.
    async fn fill_budgets(&self, views: &mut [AccountView]) {
        for site in &self.inner.config.sites {
            let limits = BudgetLimits::of(site);
            if limits.per_account == 0 {
                continue;
            }
            let ids: Vec<i64> = views
                .iter()
                .filter(|v| v.site_name == site.name)
                .map(|v| v.id)
                .collect();
            let (_, counts) = self.inner.budgets.counts(&site.name, &ids).await;
            let left: HashMap<i64, Option<u32>> = ids
                .into_iter()
                .zip(counts)
                .map(|(id, count)| (id, count.left(limits.per_account)))
                .collect();
            for view in views.iter_mut().filter(|v| v.site_name == site.name) {
                view.login_budget_left = left.get(&view.id).copied().flatten();
            }
        }
    }

    /// Closes a site's circuit by hand.
    pub async fn close_circuit(&self, site_name: &str) -> Result<CircuitView> {
        let site = self.site(site_name)?;
        self.inner.circuits.close(&site.name).await;
        log::info!("event=site_circuit_closed site={} by=operator", site.name);
        Ok(self.inner.circuits.view(&site.name).await)
    }

    /// Whether each configured site can serve a login now.
    pub async fn site_reports(&self) -> Vec<SiteReport> {
        let mut reports = Vec::with_capacity(self.inner.config.sites.len());
        for site in &self.inner.config.sites {
            reports.push(self.site_report(site).await);
        }
        reports
    }

    async fn site_report(&self, site: &SiteConfig) -> SiteReport {
        let circuit = self.inner.circuits.view(&site.name).await;
        self.inner
            .metrics
            .set_circuit_open(&site.name, circuit.state != CircuitState::Closed);
        let (accounts, usable) = match self.credential_list(site).await {
            Ok(list) => {
                let mut usable = 0;
                for entry in list.iter().filter(|c| c.is_active) {
                    if self.block_of(&site.name, entry).await.is_none() {
                        usable += 1;
                    }
                }
                (list.len(), usable)
            }
            Err(e) => {
                // Unknown is not "no accounts": the database health says what is wrong.
                log::debug!(
                    "event=site_accounts_unknown site={} error=\"{e}\"",
                    site.name
                );
                (0, 0)
            }
        };
        let status = if circuit.state == CircuitState::Open {
            "circuit_open"
        } else if usable == 0 {
            "no_accounts"
        } else {
            "up"
        };
        let limits = BudgetLimits::of(site);
        let login_budget = if limits.unlimited() {
            None
        } else {
            let (count, _) = self.inner.budgets.counts(&site.name, &[]).await;
            Some(BudgetReport {
                per_site_per_hour: limits.per_site,
                per_account_per_hour: limits.per_account,
                site_used: count.used,
                site_left: count.left(limits.per_site),
                frees_in: count.frees_in,
            })
        };
        let max = self.inner.config.concurrency.max_concurrent_per_site;
        let concurrency_limit = self.inner.adaptive.current(site, max).await;
        self.inner
            .metrics
            .set_site_limit(&site.name, concurrency_limit);
        SiteReport {
            name: site.name.clone(),
            status: status.into(),
            usable_accounts: usable,
            accounts,
            circuit,
            concurrency_limit,
            login_budget,
            accounts_of_site: Some(self.account_owner(site).name.clone())
                .filter(|owner| *owner != site.name),
        }
    }

    /// Polls a cheap marker of the accounts table and drops the cached account lists when it
    /// moves, so that accounts added, removed or changed by the CLI are used within a second.
    pub fn watch_accounts(&self) {
        let broker = self.clone();
        actix_web::rt::spawn(async move {
            let mut last = None;
            let mut every = tokio::time::interval(WATCH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let marker = broker
                    .inner
                    .pool
                    .run(crate::db::accounts::change_marker)
                    .await;
                let Ok(marker) = marker else {
                    continue;
                };
                if last.is_some_and(|last| last != marker) {
                    log::info!("event=accounts_changed action=reload");
                    for site in &broker.inner.config.sites {
                        broker.inner.cache.forget_accounts(&site.name).await;
                    }
                }
                last = Some(marker);
            }
        });
    }
}

/// A broker over a fresh SQLite database, for the tests of `broker/*`.
#[cfg(test)]
pub(in crate::broker) mod fixture {
    use std::sync::Arc;

    use super::Broker;
    use crate::accounts::NewAccount;
    use crate::config::Config;
    use crate::daemon::server::RunningServer;
    use crate::vault::secret::Secret;

    const SECRET_KEY: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
    pub(in crate::broker) const SITE: &str = "court_zxfw";

    /// tokend in process with one site (`court_zxfw`, whose portal is never called).
    pub(in crate::broker) struct Fixture {
        pub(in crate::broker) server: RunningServer,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        /// `extra`: more TOML (sections); `site_keys`: more keys of the site.
        pub(in crate::broker) async fn start(extra: &str, site_keys: &str) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let text = format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{db}\"\n\
                 [history]\nspool_file = \"{spool}\"\n{extra}\n\
                 [[sites]]\nname = \"{SITE}\"\ndriver = \"http\"\n\
                 login_url = \"http://127.0.0.1:9/login\"\n{site_keys}\n",
                db = dir.path().join("tokend.db").display(),
                spool = dir.path().join("history.spool").display(),
            );
            let env = |name: &str| (name == "TOKEND_SECRET_KEY").then(|| SECRET_KEY.to_string());
            let config = Config::from_sources(Some(&text), &env).unwrap();
            let server = crate::daemon::server::start(Arc::new(config))
                .await
                .unwrap();
            Fixture { server, _dir: dir }
        }

        pub(in crate::broker) fn broker(&self) -> &Broker {
            &self.server.state.broker
        }

        /// Adds an account of the site; its id.
        pub(in crate::broker) fn add(&self, account: &str, preferred: bool) -> i64 {
            let state = &self.server.state;
            let new = NewAccount {
                site_name: SITE.into(),
                account: account.into(),
                password: Secret::new("pw-0123456789"),
                preferred,
                proxy: None,
            };
            crate::accounts::add(&state.pool, &state.key, &new)
                .unwrap()
                .id
        }

        /// Runs database work on the fixture's pool.
        pub(in crate::broker) async fn db<T: Send + 'static>(
            &self,
            work: impl FnOnce(&mut crate::db::DbConnection) -> crate::error::Result<T> + Send + 'static,
        ) -> T {
            self.server.state.pool.run(work).await.unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::fixture::{Fixture, SITE};
    use crate::drivers::FailureKind;
    use crate::error::Error;

    /// (state, reason, seconds until the block ends) of each account, by name.
    async fn states(f: &Fixture) -> Vec<(String, &'static str, Option<&'static str>, i64)> {
        let now = Utc::now();
        let mut views = f.broker().account_views(Some(SITE)).await.unwrap();
        views.sort_by_key(|v| v.id);
        views
            .into_iter()
            .map(|v| {
                let left = v.until.map_or(0, |until| (until - now).num_seconds());
                (
                    v.account,
                    v.state.as_str(),
                    v.reason.map(|r| r.as_str()),
                    left,
                )
            })
            .collect()
    }

    #[actix_rt::test]
    async fn each_failure_kind_earns_its_penalty() {
        let f = Fixture::start("", "").await;
        let kinds = [
            ("refused", FailureKind::Credential),
            ("captcha", FailureKind::Captcha),
            ("failed", FailureKind::Failed),
            ("network", FailureKind::Network),
            ("timeout", FailureKind::Timeout),
        ];
        for (account, _) in kinds {
            f.add(account, false);
        }
        let broker = f.broker();
        let site = broker.site(SITE).unwrap();
        let list = broker.credential_list(site).await.unwrap();
        for (account, kind) in kinds {
            let entry = list.iter().find(|c| c.account == account).unwrap();
            broker.penalise(site, entry, kind).await;
        }
        let got = states(&f).await;
        let near = |left: i64, wanted: i64| (wanted - 5..=wanted).contains(&left);
        let expect = [
            ("refused", "blacklisted", Some("credential_error"), 3600),
            ("captcha", "cooling_down", Some("captcha_error"), 120),
            ("failed", "cooling_down", Some("failed"), 60),
            ("network", "active", None, 0),
            ("timeout", "active", None, 0),
        ];
        for ((account, state, reason, left), (name, s, r, wanted)) in got.iter().zip(expect) {
            assert_eq!((account.as_str(), *state, *reason), (name, s, r), "{got:?}");
            assert!(
                near(*left, wanted),
                "{name}: {left} s left, not {wanted}: {got:?}"
            );
        }
        // Only the accounts without a penalty are tried.
        let tried: Vec<String> = broker
            .candidates(site, None)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.account)
            .collect();
        assert_eq!(tried, ["network", "timeout"]);
    }

    #[actix_rt::test]
    async fn a_block_is_kept_and_lifted_by_hand() {
        let f = Fixture::start("", "").await;
        let id = f.add("alice", false);
        let broker = f.broker();
        let site = broker.site(SITE).unwrap();
        let entry = broker.credential_list(site).await.unwrap()[0].clone();
        broker.penalise(site, &entry, FailureKind::Captcha).await;
        let refused = broker.candidates(site, Some(id)).await.unwrap_err();
        assert!(
            matches!(&refused, Error::NoAvailableAccount { reason, .. }
                if reason.contains("cooling_down") && reason.contains("captcha_error")),
            "{refused:?}"
        );
        let all = broker.candidates(site, None).await.unwrap_err();
        assert!(all.to_string().contains("the next is usable at"), "{all}");
        assert!(broker.unblock(SITE, "alice").await.unwrap());
        assert!(
            !broker.unblock(SITE, "alice").await.unwrap(),
            "nothing left to lift"
        );
        assert_eq!(broker.candidates(site, Some(id)).await.unwrap()[0].id, id);
        assert!(matches!(
            broker.unblock(SITE, "nobody").await,
            Err(Error::AccountNotFound { .. })
        ));
    }
}

//! The slow path of one acquisition (SPEC §1, §11), as an [`Acquisition`] whose methods run
//! in the order of the flow: the site's circuit, the candidates, then for each account its
//! single-flight lock → a second look in the cache → a login slot → a second look in the
//! `tokens` table → the circuit's admission → the login → keeping the token, or the penalty
//! the failure deserves → the history row, the monitor events and the rejection count.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::pipeline::{Broker, Flight};
use super::request::{AcquiredToken, Source};
use crate::cache::{CachedToken, CredentialEntry};
use crate::config::{seconds, SiteConfig};
use crate::db::models::{NewHistory, NewToken};
use crate::drivers::{Credentials, FailureKind, LoginFailure, LoginStats, LoginToken, RetryGate};
use crate::error::{Error, Result};
use crate::policy::adaptive::Signal;
use crate::policy::circuit::{Admission, CircuitState, SiteOutcome, Streak};
use crate::policy::outcome::{AcquisitionStatus, TriggerReason};
use crate::slots::Slot;
use crate::vault::crypto::SealContext;
use crate::vault::secret::{fingerprint, redact, Secret};
use crate::watch::monitor::{AcquisitionFinished, AcquisitionStarted, Rejected};

/// How one candidate account ended.
enum Attempt {
    /// A token: this acquisition's login, or one another acquisition obtained meanwhile.
    Token(AcquiredToken),
    /// No token from this account; the next may be tried unless the site is at fault.
    Failed(LoginFailure),
}

/// What the history row of an acquisition accumulates across accounts.
#[derive(Default)]
struct Ledger {
    login_ran: bool,
    /// A derived site asked its parent for a token (SPEC §13): recorded like a login.
    parent_asked: bool,
    /// The acquisition waited for a lock or a slot: if it then times out, that is recorded.
    waited: bool,
    stats: LoginStats,
    last: Option<(i64, String)>,
    failures: Vec<serde_json::Value>,
}

/// One acquisition on the slow path.
pub(super) struct Acquisition<'a> {
    broker: &'a Broker,
    site: &'a SiteConfig,
    id: String,
    trigger: TriggerReason,
    /// When the caller arrived (a forced refresh wants a token issued after this).
    arrived: DateTime<Utc>,
    started: Instant,
    force: bool,
    ledger: Ledger,
}

impl Broker {
    /// The slow path: a token after at most one login per account tried.
    pub(super) async fn login(
        &self,
        site: &SiteConfig,
        credential_id: Option<i64>,
        turn: Option<u64>,
        force: bool,
        trigger: TriggerReason,
        arrived: DateTime<Utc>,
    ) -> Result<AcquiredToken> {
        let id = uuid::Uuid::new_v4().to_string();
        // Known while it runs, so that a stop that cuts it can log and record it.
        let _running = self.inner.running.begin(&site.name, &id, trigger, arrived);
        let mut acquisition = Acquisition {
            broker: self,
            site,
            id,
            trigger,
            arrived,
            started: Instant::now(),
            force,
            ledger: Ledger::default(),
        };
        let result = acquisition.run(credential_id, turn).await;
        acquisition.record(&result);
        result
    }
}

impl Acquisition<'_> {
    fn timeout(&self) -> Duration {
        seconds(self.broker.inner.config.concurrency.acquisition_timeout)
    }

    fn remaining(&self) -> Duration {
        self.timeout().saturating_sub(self.started.elapsed())
    }

    /// Tries the candidates in order until one gives a token; `turn`: the round-robin turn
    /// the caller took.
    async fn run(
        &mut self,
        credential_id: Option<i64>,
        turn: Option<u64>,
    ) -> Result<AcquiredToken> {
        self.refuse_if_site_paused().await?;
        let candidates = self
            .broker
            .candidates_in_turn(self.site, credential_id, turn)
            .await?;
        let mut last_failure: Option<LoginFailure> = None;
        for candidate in &candidates {
            if self.remaining().is_zero() {
                break;
            }
            // Waits are bounded by what is left of acquisition_timeout; a login that has
            // begun is not cut (login_timeout bounds it).
            let failure = match self.try_account(candidate).await? {
                Attempt::Token(token) => return Ok(token),
                Attempt::Failed(failure) => failure,
            };
            self.ledger.failures.push(json!({
                "account": candidate.account,
                "error_type": failure.error_type(),
                "message": failure.message,
            }));
            let site_fault = failure.is_site_fault();
            last_failure = Some(failure);
            if site_fault {
                // The portal, not the account: another account would meet the same portal.
                break;
            }
        }
        Err(match last_failure {
            Some(failure) if !self.remaining().is_zero() => Error::AcquisitionFailed {
                site: self.site.name.clone(),
                status: failure.kind.status(),
                message: failure.message,
            },
            _ => Error::Timeout(format!(
                "no token for site `{}` within acquisition_timeout ({:.0}s)",
                self.site.name,
                self.timeout().as_secs_f64()
            )),
        })
    }

    /// An open circuit refuses before anything waits (SPEC §11); half-open lets the caller
    /// on, the probe is decided just before a login.
    async fn refuse_if_site_paused(&self) -> Result<()> {
        let view = self.broker.inner.circuits.view(&self.site.name).await;
        if view.state != CircuitState::Open {
            return Ok(());
        }
        let wait = view
            .retry_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .unwrap_or(Duration::from_secs(1));
        Err(Admission::Open(wait)
            .refusal_because(&self.site.name, view.message.as_deref())
            .unwrap_or_else(|| Error::Internal("open circuit without refusal".into())))
    }

    /// One candidate account: lock, second look, slot, second look, login.
    async fn try_account(&mut self, candidate: &CredentialEntry) -> Result<Attempt> {
        self.ledger.last = Some((candidate.id, candidate.account.clone()));
        let mut flight = match self.join_flight(candidate).await {
            Ok(flight) => flight,
            Err(failure) => return Ok(Attempt::Failed(failure)),
        };
        let shared_flight = match self.shared_lock(candidate).await? {
            Ok(lock) => lock,
            Err(failure) => return Ok(Attempt::Failed(failure)),
        };
        if let Some(token) = self.cached_since(candidate).await {
            return Ok(Attempt::Token(token));
        }
        if let Some(failure) = self.blocked_meanwhile(candidate).await {
            return Ok(Attempt::Failed(failure));
        }
        let parent = match self.parent_first(candidate).await {
            Ok(parent) => parent,
            Err(failure) => return Ok(Attempt::Failed(failure)),
        };
        let mut slot = Some(self.slot(candidate).await?);
        if let Some(token) = self.stored_since(candidate).await {
            return Ok(Attempt::Token(token));
        }
        match self.confirm_lock(&shared_flight, candidate).await? {
            Ok(false) => {}
            // Another instance's login ran meanwhile: its token, if it left one.
            Ok(true) => {
                if let Some(token) = self.cached_since(candidate).await {
                    return Ok(Attempt::Token(token));
                }
                if let Some(token) = self.stored_since(candidate).await {
                    return Ok(Attempt::Token(token));
                }
            }
            Err(failure) => return Ok(Attempt::Failed(failure)),
        }
        let probe = self.admit_login(candidate).await?;
        shared_flight.login_starts();
        let outcome = self
            .log_in(candidate, &mut slot, probe, parent.as_ref(), &shared_flight)
            .await?;
        flight.finished(outcome.as_ref().err());
        Ok(match outcome {
            Ok(token) => Attempt::Token(token),
            Err(failure) => Attempt::Failed(failure),
        })
    }

    /// The account's single flight in this process: a caller that finds a login running
    /// waits for it (bounded only by its own acquisition_timeout) and gets its result.
    async fn join_flight(
        &mut self,
        candidate: &CredentialEntry,
    ) -> std::result::Result<tokio::sync::OwnedMutexGuard<Flight>, LoginFailure> {
        let flight = self.broker.flight((self.site.name.clone(), candidate.id));
        let queued_at = Instant::now();
        let flight = match flight.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                self.ledger.waited = true;
                tokio::time::timeout(self.remaining(), flight.lock_owned())
                    .await
                    .map_err(|_| {
                        LoginFailure::new(
                            FailureKind::Timeout,
                            format!(
                                "the login of account `{}` did not finish within this acquisition's time",
                                candidate.account
                            ),
                        )
                    })?
            }
        };
        match flight.failed_since(queued_at) {
            Some(failure) => Err(failure),
            None => Ok(flight),
        }
    }

    /// Across instances (Redis): the same lock. A holder that is gone loses it after
    /// lock_timeout; one that logs in renews it.
    async fn shared_lock(
        &mut self,
        candidate: &CredentialEntry,
    ) -> Result<std::result::Result<crate::slots::FlightLock, LoginFailure>> {
        let wait = self.remaining();
        let locked = self
            .broker
            .inner
            .slots
            .lock(&self.site.name, candidate.id, &candidate.account, wait)
            .await;
        match locked {
            Ok(lock) => Ok(Ok(lock)),
            Err(Error::Timeout(message)) => {
                self.ledger.waited = true;
                Ok(Err(LoginFailure::new(FailureKind::Timeout, message)))
            }
            // Redis failed while this caller waited for another instance's login: a fault of
            // the cache backend, answered as one (503 CACHE_UNAVAILABLE, counted as a
            // rejection), never a login failure; and never a login without the lock.
            Err(e) => Err(e),
        }
    }

    /// Before the login: a lock taken in process while Redis was unreachable is confirmed
    /// in Redis ([`crate::slots::Slots::confirm`]); `Ok(true)` when another instance's
    /// login held it meanwhile.
    async fn confirm_lock(
        &mut self,
        lock: &crate::slots::FlightLock,
        candidate: &CredentialEntry,
    ) -> Result<std::result::Result<bool, LoginFailure>> {
        let wait = self.remaining();
        let slots = &self.broker.inner.slots;
        match slots.confirm(lock, &candidate.account, wait).await {
            Ok(waited) => Ok(Ok(waited)),
            Err(Error::Timeout(message)) => {
                self.ledger.waited = true;
                Ok(Err(LoginFailure::new(FailureKind::Timeout, message)))
            }
            Err(e) => Err(e),
        }
    }

    /// Another instance may have blocked the account while this one waited.
    async fn blocked_meanwhile(&self, candidate: &CredentialEntry) -> Option<LoginFailure> {
        let owner = &self.broker.account_owner(self.site).name;
        let checkouts = &self.broker.inner.checkouts;
        if let Some(held) = checkouts.held_now(owner, candidate.id).await {
            return Some(LoginFailure::new(
                FailureKind::Failed,
                format!(
                    "account `{}` is checked out by a job until {}",
                    candidate.account,
                    held.lease_until
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            ));
        }
        let cache = &self.broker.inner.cache;
        let (reason, until) = cache.block(&self.site.name, candidate.id).await?;
        Some(LoginFailure::new(
            FailureKind::Failed,
            format!(
                "account `{}` is {} until {until}",
                candidate.account,
                reason.state().as_str()
            ),
        ))
    }

    /// A derived site's parent token comes first, before this site holds a slot: the
    /// parent's acquisition takes slots of its own. `None` for a site that logs in itself.
    async fn parent_first(
        &mut self,
        candidate: &CredentialEntry,
    ) -> std::result::Result<Option<AcquiredToken>, LoginFailure> {
        if !self.site.is_derived() {
            return Ok(None);
        }
        self.ledger.parent_asked = true;
        let token = self
            .broker
            .parent_token(self.site, candidate, self.remaining())
            .await?;
        self.ledger.failures.push(json!({
            "parent_site": self.site.from_site,
            "parent_acquisition_id": token.acquisition_id,
            "parent_source": token.source,
        }));
        Ok(Some(token))
    }

    /// The site's circuit lets the login run (answers whether it is the half-open probe),
    /// and the login is counted against the site's and the account's budget before it runs.
    async fn admit_login(&self, candidate: &CredentialEntry) -> Result<bool> {
        let broker = self.broker;
        let site = self.site;
        let policy = broker.circuit_policy(site);
        let admission = broker.inner.circuits.admit(&site.name, &policy).await;
        if let Admission::Open(_) = admission {
            let why = broker.inner.circuits.view(&site.name).await.message;
            if let Some(refusal) = admission.refusal_because(&site.name, why.as_deref()) {
                return Err(refusal);
            }
        }
        let limits = crate::policy::budget::BudgetLimits::of(site);
        let probe = admission == Admission::Probe;
        let taken = broker.inner.budgets.take(&site.name, candidate.id, limits);
        if let Err(refused) = taken.await {
            if probe {
                broker.inner.circuits.probe_not_run(&site.name).await;
            }
            return Err(refused);
        }
        Ok(probe)
    }

    async fn slot(&mut self, candidate: &CredentialEntry) -> Result<Slot> {
        let slots = &self.broker.inner.slots;
        // Waiting in the queue makes this acquisition one that waited, whatever comes next.
        self.ledger.waited = true;
        let wait = slots.acquire(&self.site.name, &candidate.account);
        match tokio::time::timeout(self.remaining(), wait).await {
            Ok(slot) => slot,
            Err(_) => Err(Error::QueueTimeout(format!(
                "no login slot for site `{}` within this acquisition's time",
                self.site.name
            ))),
        }
    }

    /// The login itself, and what its outcome means for the account and the site.
    async fn log_in(
        &mut self,
        candidate: &CredentialEntry,
        slot: &mut Option<Slot>,
        probe: bool,
        parent: Option<&AcquiredToken>,
        lock: &crate::slots::FlightLock,
    ) -> Result<std::result::Result<AcquiredToken, LoginFailure>> {
        let broker = self.broker;
        let site = self.site;
        let (password, own_proxy) = match self.open_secrets(candidate, parent) {
            Ok(opened) => opened,
            Err(failure) => return Ok(Err(failure)),
        };
        self.announce_login(candidate);
        let driver = broker
            .inner
            .drivers
            .get(&site.name)
            .ok_or_else(|| Error::UnknownSite(site.name.clone()))?;
        let proxy = own_proxy
            .as_ref()
            .or((!site.proxy.is_empty()).then_some(&site.proxy));
        let creds = Credentials {
            site: &site.name,
            account: &candidate.account,
            password: &password,
            proxy,
            own_proxy: own_proxy.is_some(),
        };
        let retry = &broker.inner.config.retry;
        let mut gate = CongestionGate {
            broker,
            site,
            account: &candidate.account,
            slot,
            until: Instant::now() + seconds(retry.login_timeout),
        };
        // A lock lost meanwhile (issue 27) stops the login: another instance may log the
        // account in once the lock's life in Redis ends.
        let done = tokio::select! {
            biased;
            done = driver.login_with_retries(&creds, retry, &mut gate) => Some(done),
            () = lock.lost() => None,
        };
        let Some((outcome, stats)) = done else {
            return Ok(Err(self.lock_lost(candidate).await));
        };
        self.ledger.stats.add(&stats);
        let paused = broker
            .settle(
                site,
                candidate,
                outcome.as_ref().err(),
                probe,
                stats.last_sent,
            )
            .await;
        if let (Some(paused), Err(failure)) = (paused, &outcome) {
            self.login_failed(candidate, failure, &stats).await;
            self.ledger.failures.push(json!({
                "account": candidate.account,
                "error_type": failure.error_type(),
                "message": failure.message,
            }));
            return Err(paused);
        }
        match outcome {
            Ok(login) => {
                let fence = slot.as_ref().map_or(0, Slot::fence);
                self.logged_in(candidate, login, fence, parent, &stats)
                    .await
                    .map(Ok)
            }
            Err(failure) => {
                self.login_failed(candidate, &failure, &stats).await;
                Ok(Err(failure))
            }
        }
    }

    /// A login stopped because its account's lock was lost: recorded as a timeout, neither
    /// the account's fault nor the site's (no penalty, no circuit).
    async fn lock_lost(&mut self, candidate: &CredentialEntry) -> LoginFailure {
        let failure = LoginFailure::new(
            FailureKind::Timeout,
            format!(
                "the login of account `{}` was stopped: its single-flight lock in Redis was lost \
                 (taken by another instance, or not renewed in time), and another instance may \
                 log the account in now",
                candidate.account
            ),
        );
        self.login_failed(candidate, &failure, &LoginStats::default())
            .await;
        failure
    }

    /// What the driver logs in with: the password (sealed under the site that owns the
    /// accounts), or a derived site's parent token; and the account's own proxy, if any.
    fn open_secrets(
        &self,
        candidate: &CredentialEntry,
        parent: Option<&AcquiredToken>,
    ) -> std::result::Result<(Secret, Option<Secret>), LoginFailure> {
        let key = &self.broker.inner.key;
        let owner = &self.broker.account_owner(self.site).name;
        let account = &candidate.account;
        let password = match parent {
            Some(parent) => parent.token.clone(),
            None => key
                .open(
                    &candidate.password_encrypted,
                    SealContext::Password {
                        site: owner,
                        account,
                    },
                )
                .map_err(|e| {
                    log::error!(
                        "event=password_unreadable site={} account={account} error=\"{e}\"",
                        self.site.name
                    );
                    LoginFailure::new(FailureKind::Failed, e.to_string())
                })?,
        };
        let proxy = match &candidate.proxy_encrypted {
            Some(sealed) => Some(
                key.open(
                    sealed,
                    SealContext::Proxy {
                        site: owner,
                        account,
                    },
                )
                .map_err(|e| LoginFailure::new(FailureKind::Failed, e.to_string()))?,
            ),
            None => None,
        };
        Ok((password, proxy))
    }

    /// The first login of this acquisition is an acquisition started for the monitor; every
    /// login is known to the stop, which logs and records one it cuts.
    fn announce_login(&mut self, candidate: &CredentialEntry) {
        let inner = &self.broker.inner;
        if !self.ledger.login_ran {
            self.ledger.login_ran = true;
            inner.monitor.do_send(AcquisitionStarted {
                site: self.site.name.clone(),
            });
        }
        inner
            .running
            .logging_in(&self.id, candidate.id, &candidate.account);
    }

    async fn logged_in(
        &self,
        candidate: &CredentialEntry,
        mut login: LoginToken,
        fence: u64,
        parent: Option<&AcquiredToken>,
        stats: &LoginStats,
    ) -> Result<AcquiredToken> {
        if let Some(parent) = parent {
            // A derived token never outlives the token it was derived from.
            login.expires_at = login.expires_at.min(parent.expires_at);
        }
        let token = self.keep(candidate, login, fence).await?;
        log::info!(
            "event=login_succeeded site={} account={} acquisition_id={} attempts={} duration={:.3}s token={}",
            self.site.name,
            candidate.account,
            self.id,
            stats.attempts,
            stats.duration,
            redact(token.token.expose())
        );
        Ok(token)
    }

    async fn login_failed(
        &self,
        candidate: &CredentialEntry,
        failure: &LoginFailure,
        stats: &LoginStats,
    ) {
        if failure.parent_refused {
            self.broker.drop_parent_token(self.site, candidate).await;
        }
        log::warn!(
            "event=login_failed site={} account={} acquisition_id={} error_type={} attempts={} message=\"{}\"",
            self.site.name,
            candidate.account,
            self.id,
            failure.error_type(),
            stats.attempts,
            failure.message.replace('"', "'")
        );
    }

    /// A cached token that serves this caller: any fresh one, or with `force`, one issued
    /// after the caller arrived (a login that ran while it waited).
    async fn cached_since(&self, candidate: &CredentialEntry) -> Option<AcquiredToken> {
        let hit = self
            .broker
            .inner
            .cache
            .token(&self.site.name, Some(candidate.id))
            .await?;
        let entry = &hit.entry;
        let fresh = entry.is_fresh(Utc::now(), self.broker.inner.config.cache.refresh_ahead);
        (fresh && (!self.force || entry.issued_at >= self.arrived))
            .then(|| AcquiredToken::from_hit(&hit, Source::Store))
    }

    /// The same, from the `tokens` table (another instance, or a cache that lost it).
    async fn stored_since(&self, candidate: &CredentialEntry) -> Option<AcquiredToken> {
        let inner = &self.broker.inner;
        let site = &self.site.name;
        let (name, account) = (site.clone(), candidate.account.clone());
        let stored = match inner
            .pool
            .run(move |conn| crate::db::tokens::find(conn, &name, &account))
            .await
        {
            Ok(stored) => stored?,
            Err(e) => {
                log::warn!("event=token_store_unavailable site={site} error=\"{e}\"");
                return None;
            }
        };
        let entry = self.cache_entry(
            stored.fence.max(0) as u64,
            candidate,
            &stored.token,
            &stored.token_type,
            stored.updated_at.and_utc(),
            stored.expires_at.and_utc(),
        );
        if !entry.is_fresh(Utc::now(), inner.config.cache.refresh_ahead)
            || (self.force && entry.issued_at < self.arrived)
        {
            return None;
        }
        let context = SealContext::Token {
            site,
            account: &candidate.account,
        };
        let token = match inner.key.open(&stored.token, context) {
            Ok(token) => token,
            Err(e) => {
                log::warn!("event=stored_token_unreadable site={site} error=\"{e}\"");
                return None;
            }
        };
        inner.cache.put_token(site, &entry).await;
        Some(AcquiredToken::from_cache(&entry, token, Source::Store))
    }

    fn cache_entry(
        &self,
        fence: u64,
        candidate: &CredentialEntry,
        sealed: &str,
        token_type: &str,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> CachedToken {
        CachedToken {
            credential_id: candidate.id,
            account: candidate.account.clone(),
            token: sealed.to_string(),
            token_type: token_type.to_string(),
            expires_at,
            issued_at,
            refresh_at: super::refresh::refresh_point(
                issued_at,
                expires_at,
                &self.broker.inner.config.cache,
            ),
            acquisition_id: self.id.clone(),
            fence,
        }
    }

    /// Stores a new token (table and cache) and answers with it.
    async fn keep(
        &self,
        candidate: &CredentialEntry,
        login: LoginToken,
        fence: u64,
    ) -> Result<AcquiredToken> {
        let inner = &self.broker.inner;
        let site = &self.site.name;
        let sealed = inner.cache.seal(site, &candidate.account, &login.token)?;
        // The driver's own scheme (a cookie session) wins over the site's `token_type`.
        let token_type = login
            .token_type
            .clone()
            .unwrap_or_else(|| self.site.token_type().to_string());
        let entry = self.cache_entry(
            fence,
            candidate,
            &sealed,
            &token_type,
            Utc::now(),
            login.expires_at,
        );
        inner.cache.put_token(site, &entry).await;
        let (name, account) = (site.clone(), candidate.account.clone());
        let expires_at = login.expires_at.naive_utc();
        let stored = inner
            .pool
            .run(move |conn| {
                let token_type = token_type.as_str();
                let now = Utc::now().naive_utc();
                crate::db::tokens::upsert(
                    conn,
                    &NewToken {
                        site_name: &name,
                        account: &account,
                        token: &sealed,
                        token_type,
                        expires_at,
                        created_at: now,
                        updated_at: now,
                        fence: fence as i64,
                    },
                )
            })
            .await;
        match stored {
            Ok(true) => {}
            Ok(false) => {
                // Cached first so that waiters are served without waiting on the database;
                // a newer token is stored, so this one goes from the cache too.
                log::warn!(
                    "event=stale_token_discarded store=database site={site} account={} fence={fence}",
                    candidate.account
                );
                inner.cache.forget_stale(site, &entry).await;
            }
            Err(e) => log::warn!(
                "event=token_store_failed site={site} account={} error=\"{e}\"",
                candidate.account
            ),
        }
        Ok(AcquiredToken::from_cache(
            &entry,
            login.token,
            Source::Login,
        ))
    }

    /// The history row, the monitor events and the rejection count of this acquisition.
    fn record(&self, result: &Result<AcquiredToken>) {
        let inner = &self.broker.inner;
        let site = &self.site.name;
        if let Err(e) = result {
            if let Some(reason) = e.rejection() {
                inner.monitor.do_send(Rejected {
                    site: site.clone(),
                    reason,
                });
            }
        }
        let (status, token, error) = match result {
            Ok(t) => (AcquisitionStatus::Success, Some(t), None),
            Err(Error::AcquisitionFailed {
                status, message, ..
            }) => (*status, None, Some(message.clone())),
            Err(e @ (Error::Timeout(_) | Error::QueueTimeout(_))) => {
                (AcquisitionStatus::Timeout, None, Some(e.to_string()))
            }
            Err(e) => (AcquisitionStatus::Failed, None, Some(e.to_string())),
        };
        // A row for every acquisition that logged in, and for one that waited and gave up.
        let timed_out = status == AcquisitionStatus::Timeout && self.ledger.waited;
        if !(self.ledger.login_ran || self.ledger.parent_asked || timed_out) {
            return;
        }
        if !self.ledger.login_ran {
            // Counted as running for the instant it takes to be counted as finished.
            inner
                .monitor
                .do_send(AcquisitionStarted { site: site.clone() });
        }
        let total = self.started.elapsed().as_secs_f64();
        let (credential_id, account) = match (token, &self.ledger.last) {
            (Some(t), _) => (Some(t.credential_id), Some(t.account.clone())),
            (None, Some((id, account))) => (Some(*id), Some(account.clone())),
            (None, None) => (None, None),
        };
        let login_duration = self.ledger.login_ran.then_some(self.ledger.stats.duration);
        let now = Utc::now().naive_utc();
        inner.history.record(NewHistory {
            acquisition_id: self.id.clone(),
            site_name: site.clone(),
            account,
            credential_id,
            status: status.as_str().to_string(),
            trigger_reason: self.trigger.as_str().to_string(),
            attempt_count: self.ledger.stats.attempts as i32,
            total_duration: total,
            login_duration,
            captcha_attempts: self.ledger.stats.captcha_attempts as i32,
            network_retries: self.ledger.stats.network_retries as i32,
            token_fingerprint: token.map(|t| fingerprint(t.token.expose())),
            token_redacted: token.map(|t| redact(t.token.expose())),
            error_message: error,
            error_details: (!self.ledger.failures.is_empty())
                .then(|| serde_json::Value::from(self.ledger.failures.clone()).to_string()),
            created_at: now,
            started_at: self.arrived.naive_utc(),
            finished_at: Some(now),
        });
        inner.monitor.do_send(AcquisitionFinished {
            site: site.clone(),
            status,
            duration: total,
            login_duration,
        });
    }
}

/// The retries of one login (issue 21): a congestion answer halves the site's adaptive
/// limit at once, and with adaptive concurrency the retry gives its slot back and queues for
/// one under the new limit, so that retries do not keep the portal busier than it allows.
struct CongestionGate<'a> {
    broker: &'a Broker,
    site: &'a SiteConfig,
    account: &'a str,
    slot: &'a mut Option<Slot>,
    /// The login's end: no slot is waited for past it.
    until: Instant,
}

impl RetryGate for CongestionGate<'_> {
    fn congested<'a>(
        &'a mut self,
        failure: &'a LoginFailure,
        sent: Instant,
    ) -> futures_util::future::BoxFuture<'a, std::result::Result<(), LoginFailure>> {
        Box::pin(async move {
            let inner = &self.broker.inner;
            let max = inner.config.concurrency.max_concurrent_per_site;
            let congestion = Signal::Congestion;
            inner
                .adaptive
                .observe(self.site, max, congestion, Some(sent))
                .await;
            if !self.site.adaptive_concurrency {
                return Ok(());
            }
            // Released before queueing again: the queue grants under the limit now in force.
            self.slot.take();
            let wait = self.until.saturating_duration_since(Instant::now());
            let queued = inner.slots.acquire(&self.site.name, self.account);
            match tokio::time::timeout(wait, queued).await {
                Ok(Ok(slot)) => {
                    *self.slot = Some(slot);
                    Ok(())
                }
                Ok(Err(e)) => Err(no_slot_after(failure, &e.to_string())),
                Err(_) => Err(no_slot_after(failure, "login_timeout elapsed")),
            }
        })
    }
}

/// The congestion answer a retry met, when no slot under the lowered limit came in time.
fn no_slot_after(failure: &LoginFailure, why: &str) -> LoginFailure {
    let mut failure = failure.clone().last_attempt();
    failure.message = format!(
        "{}; no login slot for the retry under the lowered limit: {why}",
        failure.message
    );
    failure
}

impl Flight {
    /// The failure of a login that finished after `since`: a caller that waited for that
    /// login takes its result instead of logging in again.
    fn failed_since(&self, since: Instant) -> Option<LoginFailure> {
        self.last_failure
            .as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, failure)| failure.clone())
    }

    fn finished(&mut self, failure: Option<&LoginFailure>) {
        self.last_failure = failure.map(|f| (Instant::now(), f.clone()));
    }
}

impl Broker {
    /// What a finished login means for the account (SPEC §11: penalised only for its own
    /// fault), for its statistics and for the site's circuit. Returns the refusal of a site
    /// this login paused (its program cannot run, or its portal changed).
    async fn settle(
        &self,
        site: &SiteConfig,
        candidate: &CredentialEntry,
        failure: Option<&LoginFailure>,
        probe: bool,
        sent: Option<Instant>,
    ) -> Option<Error> {
        let signal = match failure {
            None => Signal::Success,
            Some(f) if f.congestion || f.kind == FailureKind::Captcha => Signal::Congestion,
            Some(_) => Signal::Failure,
        };
        let max = self.inner.config.concurrency.max_concurrent_per_site;
        self.inner.adaptive.observe(site, max, signal, sent).await;
        let policy = self.circuit_policy(site);
        let circuits = &self.inner.circuits;
        match failure {
            // The account's own proxy: the portal was not reached, the site is not at fault.
            Some(f) if f.kind == FailureKind::Proxy => {
                if !site.is_derived() {
                    self.penalise(site, candidate, f.kind).await;
                }
                return None;
            }
            Some(f) if f.kind == FailureKind::Misconfigured => {
                let message = format!(
                    "paused (site_misconfigured): {}; no account was penalised. Fix the \
                     configuration, then close the circuit (POST \
                     /api/v1/automation/sites/{}/circuit/close)",
                    f.message, site.name
                );
                return Some(self.pause_site(site, "site_misconfigured", &message).await);
            }
            Some(f) if f.is_site_fault() => {
                let outcome = SiteOutcome::Down(f.retry_after);
                if let Some(retry_at) = circuits.record(&site.name, &policy, outcome, probe).await {
                    log::warn!(
                        "event=site_circuit_open site={} retry_at={} probe_failed={probe} error_type={} message=\"{}\"",
                        site.name,
                        retry_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        f.error_type(),
                        f.message.replace('"', "'")
                    );
                }
                return None;
            }
            Some(f) if f.kind == FailureKind::Failed => {
                return self.unrecognised(site, candidate, f, probe).await;
            }
            _ => {}
        }
        // The portal answered: the site is up, whatever it said about the account.
        self.inner.protocol.answered(&site.name);
        circuits
            .record(&site.name, &policy, SiteOutcome::Answered, probe)
            .await;
        // A derived site has no accounts of its own: its exchanges neither penalise nor
        // count as logins of its parent's accounts.
        if site.is_derived() {
            return None;
        }
        if let Some(failure) = failure {
            self.penalise(site, candidate, failure.kind).await;
        }
        self.count_attempt(site, candidate, failure.is_none()).await;
        None
    }

    /// A `failed` answer (one tokend does not recognise): the account's fault when it is
    /// the first of a streak; from `site_changed_threshold` different accounts in a row, the
    /// portal changed and the site is paused (issue 21).
    async fn unrecognised(
        &self,
        site: &SiteConfig,
        candidate: &CredentialEntry,
        failure: &LoginFailure,
        probe: bool,
    ) -> Option<Error> {
        let threshold = self.inner.config.site_changed_threshold(site);
        let paused = self.inner.circuits.view(&site.name).await.reason.is_some();
        if probe && paused {
            // The probe of a paused site met the same answer: it stays paused, longer.
            let policy = self.circuit_policy(site);
            let down = SiteOutcome::Down(None);
            self.inner
                .circuits
                .record(&site.name, &policy, down, true)
                .await;
            return None;
        }
        let streak = if threshold == 0 {
            Streak::First
        } else {
            self.inner
                .protocol
                .failed(&site.name, &candidate.account, threshold)
        };
        match streak {
            Streak::First => {
                let policy = self.circuit_policy(site);
                let answered = SiteOutcome::Answered;
                self.inner
                    .circuits
                    .record(&site.name, &policy, answered, probe)
                    .await;
                if !site.is_derived() {
                    self.penalise(site, candidate, failure.kind).await;
                    self.count_attempt(site, candidate, false).await;
                }
                None
            }
            Streak::Suspect => None,
            Streak::Reached(accounts) => {
                let message = format!(
                    "paused (site_protocol_changed): {} different accounts in a row ({}) got \
                     an answer tokend does not recognise, so the portal has likely changed its \
                     login protocol or page; last answer: {}. Check the site's configuration, \
                     then close the circuit (POST /api/v1/automation/sites/{}/circuit/close); a \
                     probe login that succeeds also ends the pause",
                    accounts.len(),
                    accounts.join(", "),
                    failure.message,
                    site.name
                );
                Some(
                    self.pause_site(site, "site_protocol_changed", &message)
                        .await,
                )
            }
        }
    }

    /// Pauses the site for `reason` like an open circuit, logs it, and answers with the
    /// refusal the callers get.
    async fn pause_site(&self, site: &SiteConfig, reason: &str, message: &str) -> Error {
        let policy = self.circuit_policy(site);
        let retry_at = self
            .inner
            .circuits
            .pause(&site.name, &policy, reason, message)
            .await;
        log::error!(
            "event=site_paused site={} reason={reason} retry_at={} message=\"{}\"",
            site.name,
            retry_at.map_or_else(
                || "-".to_string(),
                |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            message.replace('"', "'")
        );
        let wait = retry_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .unwrap_or(Duration::from_secs(1));
        Error::SiteUnavailable {
            site: site.name.clone(),
            reason: message.to_string(),
            retry_after: wait,
        }
    }

    async fn count_attempt(&self, site: &SiteConfig, candidate: &CredentialEntry, success: bool) {
        let id = candidate.id;
        let at = Utc::now().naive_utc();
        if let Err(e) = self
            .inner
            .pool
            .run(move |conn| crate::db::accounts::record_attempt(conn, id, success, at))
            .await
        {
            log::warn!(
                "event=account_stats_not_saved site={} account={} error=\"{e}\"",
                site.name,
                candidate.account
            );
        }
        self.inner.cache.forget_account_stats(&site.name).await;
    }
}

impl LoginStats {
    fn add(&mut self, other: &LoginStats) {
        self.attempts += other.attempts;
        self.captcha_attempts += other.captcha_attempts;
        self.network_retries += other.network_retries;
        self.duration += other.duration;
        self.last_sent = other.last_sent.or(self.last_sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_takes_the_failure_of_the_login_it_waited_for() {
        let mut flight = Flight::default();
        let before = Instant::now();
        flight.finished(Some(&LoginFailure::new(
            FailureKind::Captcha,
            "wrong captcha",
        )));
        let got = flight.failed_since(before).map(|f| f.kind);
        assert_eq!(got, Some(FailureKind::Captcha));
        // A caller that came after the failure logs in itself.
        assert!(flight.failed_since(Instant::now()).is_none());
        flight.finished(None);
        assert!(flight.failed_since(before).is_none());
    }
}

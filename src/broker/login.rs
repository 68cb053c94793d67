//! The slow path: for each candidate account, the single-flight lock, a login slot, a second
//! look (cache, then the `tokens` table), the login with retries, and its bookkeeping
//! (account statistics, blacklist, stored token, history row, monitor events).

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{AcquiredToken, Broker, Source};
use crate::actors::monitor::{AcquisitionFinished, AcquisitionStarted};
use crate::cache::{CachedToken, CredentialEntry};
use crate::config::{seconds, SiteConfig};
use crate::crypto::SealContext;
use crate::db::models::{NewHistory, NewToken};
use crate::drivers::{Credentials, FailureKind, LoginFailure, LoginStats, LoginToken};
use crate::error::{Error, Result};
use crate::outcome::{AcquisitionStatus, TriggerReason};
use crate::secret::{fingerprint, redact};

/// How one candidate account ended.
enum Attempt {
    /// A token another acquisition obtained meanwhile.
    Reused(AcquiredToken),
    LoggedIn(AcquiredToken),
    /// The login failed; the next account may be tried.
    Failed(LoginFailure),
}

/// What the history row of an acquisition accumulates across accounts.
#[derive(Default)]
struct Ledger {
    login_ran: bool,
    stats: LoginStats,
    last: Option<(i64, String)>,
    failures: Vec<serde_json::Value>,
}

impl Broker {
    pub(super) async fn login(
        &self,
        site: &SiteConfig,
        credential_id: Option<i64>,
        force: bool,
        trigger: TriggerReason,
        arrived: DateTime<Utc>,
    ) -> Result<AcquiredToken> {
        let acquisition_id = uuid::Uuid::new_v4().to_string();
        // Issue 15: known while it runs, so that a stop that cuts it can log and record it.
        let _running = self
            .inner
            .running
            .begin(&site.name, &acquisition_id, trigger, arrived);
        let started = Instant::now();
        let timeout = seconds(self.inner.config.concurrency.acquisition_timeout);
        let candidates = self.candidates(site, credential_id).await?;
        let mut ledger = Ledger::default();
        let mut last_failure: Option<LoginFailure> = None;
        let mut result: Option<Result<AcquiredToken>> = None;
        for candidate in &candidates {
            let remaining = timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            let attempt = self.attempt(
                site,
                candidate,
                force,
                arrived,
                &acquisition_id,
                &mut ledger,
            );
            match tokio::time::timeout(remaining, attempt).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    result = Some(Err(e));
                    break;
                }
                Ok(Ok(Attempt::Reused(token))) => {
                    result = Some(Ok(token));
                    break;
                }
                Ok(Ok(Attempt::LoggedIn(token))) => {
                    result = Some(Ok(token));
                    break;
                }
                Ok(Ok(Attempt::Failed(failure))) => {
                    ledger.failures.push(json!({
                        "account": candidate.account,
                        "error_type": failure.kind.status().as_str(),
                        "message": failure.message,
                    }));
                    last_failure = Some(failure);
                }
            }
        }
        let result = result.unwrap_or_else(|| match last_failure {
            Some(failure) if started.elapsed() < timeout => Err(Error::AcquisitionFailed {
                site: site.name.clone(),
                error_type: failure.kind.status().as_str(),
                message: failure.message,
            }),
            _ => Err(Error::Timeout(format!(
                "no token for site `{}` within acquisition_timeout ({:.0}s)",
                site.name,
                timeout.as_secs_f64()
            ))),
        });
        if ledger.login_ran {
            self.finish(
                site,
                &acquisition_id,
                trigger,
                arrived,
                started,
                &ledger,
                &result,
            );
        }
        result
    }

    /// One candidate account: lock, slot, second look, login.
    async fn attempt(
        &self,
        site: &SiteConfig,
        candidate: &CredentialEntry,
        force: bool,
        arrived: DateTime<Utc>,
        acquisition_id: &str,
        ledger: &mut Ledger,
    ) -> Result<Attempt> {
        let config = &self.inner.config.concurrency;
        let flight = self.flight((site.name.clone(), candidate.id));
        // A busy or broken account only ends its own attempt: the next account is tried.
        let Ok(_flight) =
            tokio::time::timeout(seconds(config.lock_timeout), flight.lock_owned()).await
        else {
            let message = format!(
                "the login of account `{}` did not finish within lock_timeout",
                candidate.account
            );
            return Ok(Attempt::Failed(LoginFailure::new(
                FailureKind::Timeout,
                message,
            )));
        };
        // Across instances (Redis), the same lock; then a second look, since another
        // instance may have logged in meanwhile.
        let _shared_flight = self
            .inner
            .slots
            .lock(&site.name, candidate.id, &candidate.account)
            .await?;
        if let Some(token) = self.cached_since(site, candidate, force, arrived).await {
            return Ok(Attempt::Reused(token));
        }
        let slot = self
            .inner
            .slots
            .acquire(&site.name, &candidate.account)
            .await?;
        if let Some(token) = self
            .stored_since(site, candidate, force, arrived, acquisition_id)
            .await
        {
            return Ok(Attempt::Reused(token));
        }

        let sealed = SealContext::Password {
            site: &site.name,
            account: &candidate.account,
        };
        let password = match self.inner.key.open(&candidate.password_encrypted, sealed) {
            Ok(password) => password,
            Err(e) => {
                log::error!(
                    "event=password_unreadable site={} account={} error=\"{e}\"",
                    site.name,
                    candidate.account
                );
                return Ok(Attempt::Failed(LoginFailure::new(
                    FailureKind::Failed,
                    e.to_string(),
                )));
            }
        };
        if !ledger.login_ran {
            ledger.login_ran = true;
            self.inner.monitor.do_send(AcquisitionStarted {
                site: site.name.clone(),
            });
        }
        ledger.last = Some((candidate.id, candidate.account.clone()));
        self.inner
            .running
            .logging_in(acquisition_id, candidate.id, &candidate.account);
        let driver = self
            .inner
            .drivers
            .get(&site.name)
            .ok_or_else(|| Error::UnknownSite(site.name.clone()))?;
        let creds = Credentials {
            site: &site.name,
            account: &candidate.account,
            password: &password,
        };
        let (outcome, stats) = driver
            .login_with_retries(&creds, &self.inner.config.retry)
            .await;
        ledger.stats.attempts += stats.attempts;
        ledger.stats.captcha_attempts += stats.captcha_attempts;
        ledger.stats.network_retries += stats.network_retries;
        ledger.stats.duration += stats.duration;
        self.count_attempt(site, candidate, outcome.is_ok()).await;
        match outcome {
            Ok(login) => {
                let token = self
                    .keep(site, candidate, login, acquisition_id, slot.fence())
                    .await?;
                log::info!(
                    "event=login_succeeded site={} account={} acquisition_id={acquisition_id} attempts={} duration={:.3}s token={}",
                    site.name,
                    candidate.account,
                    stats.attempts,
                    stats.duration,
                    redact(token.token.expose())
                );
                Ok(Attempt::LoggedIn(token))
            }
            Err(failure) => {
                log::warn!(
                    "event=login_failed site={} account={} acquisition_id={acquisition_id} error_type={} attempts={} message=\"{}\"",
                    site.name,
                    candidate.account,
                    failure.kind.status().as_str(),
                    stats.attempts,
                    failure.message.replace('"', "'")
                );
                Ok(Attempt::Failed(failure))
            }
        }
    }

    /// A cached token that serves this caller: any fresh one, or with `force`, one issued
    /// after the caller arrived (a login that ran while it waited).
    async fn cached_since(
        &self,
        site: &SiteConfig,
        candidate: &CredentialEntry,
        force: bool,
        arrived: DateTime<Utc>,
    ) -> Option<AcquiredToken> {
        let (entry, token) = self
            .inner
            .cache
            .token(&site.name, Some(candidate.id))
            .await?;
        let fresh = entry.seconds_left(Utc::now()) > self.inner.config.cache.refresh_ahead;
        (fresh && (!force || entry.issued_at >= arrived))
            .then(|| AcquiredToken::from_cache(&entry, token, Source::Store))
    }

    /// The same, from the `tokens` table (another instance, or a cache that lost it).
    async fn stored_since(
        &self,
        site: &SiteConfig,
        candidate: &CredentialEntry,
        force: bool,
        arrived: DateTime<Utc>,
        acquisition_id: &str,
    ) -> Option<AcquiredToken> {
        let (name, account) = (site.name.clone(), candidate.account.clone());
        let stored = match self
            .inner
            .pool
            .run(move |conn| crate::db::tokens::find(conn, &name, &account))
            .await
        {
            Ok(stored) => stored?,
            Err(e) => {
                log::warn!(
                    "event=token_store_unavailable site={} error=\"{e}\"",
                    site.name
                );
                return None;
            }
        };
        let expires_at = stored.expires_at.and_utc();
        let left = (expires_at - Utc::now()).num_milliseconds() as f64 / 1000.0;
        if left <= self.inner.config.cache.refresh_ahead
            || (force && stored.updated_at.and_utc() < arrived)
        {
            return None;
        }
        let token = self
            .inner
            .key
            .open(
                &stored.token,
                SealContext::Token {
                    site: &site.name,
                    account: &candidate.account,
                },
            )
            .map_err(|e| {
                log::warn!(
                    "event=stored_token_unreadable site={} error=\"{e}\"",
                    site.name
                )
            })
            .ok()?;
        let entry = self.cache_entry(
            stored.fence.max(0) as u64,
            candidate,
            &stored.token,
            &stored.token_type,
            stored.updated_at.and_utc(),
            expires_at,
            acquisition_id,
        );
        self.inner.cache.put_token(&site.name, &entry).await;
        Some(AcquiredToken::from_cache(&entry, token, Source::Store))
    }

    #[allow(clippy::too_many_arguments)]
    fn cache_entry(
        &self,
        fence: u64,
        candidate: &CredentialEntry,
        sealed: &str,
        token_type: &str,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        acquisition_id: &str,
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
                &self.inner.config.cache,
            ),
            acquisition_id: acquisition_id.to_string(),
            fence,
        }
    }

    /// Stores a new token (table and cache) and answers with it.
    async fn keep(
        &self,
        site: &SiteConfig,
        candidate: &CredentialEntry,
        login: LoginToken,
        acquisition_id: &str,
        fence: u64,
    ) -> Result<AcquiredToken> {
        let sealed = self
            .inner
            .cache
            .seal(&site.name, &candidate.account, &login.token)?;
        let now = Utc::now();
        let entry = self.cache_entry(
            fence,
            candidate,
            &sealed,
            "Bearer",
            now,
            login.expires_at,
            acquisition_id,
        );
        self.inner.cache.put_token(&site.name, &entry).await;
        let (name, account, row_token) =
            (site.name.clone(), candidate.account.clone(), sealed.clone());
        let expires_at = login.expires_at.naive_utc();
        let stored = self
            .inner
            .pool
            .run(move |conn| {
                let now = Utc::now().naive_utc();
                crate::db::tokens::upsert(
                    conn,
                    &NewToken {
                        site_name: &name,
                        account: &account,
                        token: &row_token,
                        token_type: "Bearer",
                        expires_at,
                        created_at: now,
                        updated_at: now,
                        fence: fence as i64,
                    },
                )
            })
            .await;
        if let Ok(false) = stored {
            log::warn!(
                "event=stale_token_discarded store=database site={} account={} fence={fence}",
                site.name,
                candidate.account
            );
        }
        if let Err(e) = stored {
            log::warn!(
                "event=token_store_failed site={} account={} error=\"{e}\"",
                site.name,
                candidate.account
            );
        }
        Ok(AcquiredToken::from_cache(
            &entry,
            login.token,
            Source::Login,
        ))
    }

    /// Account statistics and the blacklist after a login attempt.
    async fn count_attempt(&self, site: &SiteConfig, candidate: &CredentialEntry, success: bool) {
        let cache = &self.inner.cache;
        if success {
            cache.unblacklist(&site.name, candidate.id).await;
        } else {
            let hours = self.inner.config.accounts.blacklist_duration_hours;
            cache
                .blacklist(&site.name, candidate.id, seconds(hours * 3600.0))
                .await;
            log::warn!(
                "event=account_blacklisted site={} account={} hours={hours}",
                site.name,
                candidate.account
            );
        }
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
        cache.forget_account_stats(&site.name).await;
    }

    /// The history row and the monitor event of an acquisition that reached a login.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        site: &SiteConfig,
        acquisition_id: &str,
        trigger: TriggerReason,
        arrived: DateTime<Utc>,
        started: Instant,
        ledger: &Ledger,
        result: &Result<AcquiredToken>,
    ) {
        let total = started.elapsed().as_secs_f64();
        let (status, token, error) = match result {
            Ok(t) => (AcquisitionStatus::Success, Some(t), None),
            Err(Error::AcquisitionFailed {
                error_type,
                message,
                ..
            }) => {
                let status = AcquisitionStatus::ALL
                    .into_iter()
                    .find(|s| s.as_str() == *error_type)
                    .unwrap_or(AcquisitionStatus::Failed);
                (status, None, Some(message.clone()))
            }
            Err(Error::Timeout(message)) => {
                (AcquisitionStatus::Timeout, None, Some(message.clone()))
            }
            Err(e) => (FailureKind::Failed.status(), None, Some(e.to_string())),
        };
        let (credential_id, account) = match (token, &ledger.last) {
            (Some(t), _) => (Some(t.credential_id), Some(t.account.clone())),
            (None, Some((id, account))) => (Some(*id), Some(account.clone())),
            (None, None) => (None, None),
        };
        let now = Utc::now().naive_utc();
        self.inner.history.record(NewHistory {
            acquisition_id: acquisition_id.to_string(),
            site_name: site.name.clone(),
            account,
            credential_id,
            status: status.as_str().to_string(),
            trigger_reason: trigger.as_str().to_string(),
            attempt_count: ledger.stats.attempts as i32,
            total_duration: total,
            login_duration: Some(ledger.stats.duration),
            captcha_attempts: ledger.stats.captcha_attempts as i32,
            network_retries: ledger.stats.network_retries as i32,
            token_fingerprint: token.map(|t| fingerprint(t.token.expose())),
            token_redacted: token.map(|t| redact(t.token.expose())),
            error_message: error,
            error_details: (!ledger.failures.is_empty())
                .then(|| serde_json::Value::from(ledger.failures.clone()).to_string()),
            created_at: now,
            started_at: arrived.naive_utc(),
            finished_at: Some(now),
        });
        self.inner.monitor.do_send(AcquisitionFinished {
            site: site.name.clone(),
            status,
            duration: total,
            login_duration: Some(ledger.stats.duration),
        });
    }
}

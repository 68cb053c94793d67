//! Stopping with a grace period (SIGTERM/SIGINT): what is still running when the grace ends.
//!
//! - [`RunningLogins`]: the logins in progress (site, account, acquisition id), kept by the
//!   broker while a driver runs, so that each login cut by the stop is logged
//!   (`event=login_abandoned`) and recorded in the history (status `timeout`, error
//!   `shutdown`).
//! - [`Shutdown`]: the "grace is over" signal that waiting callers race against (they then get
//!   503 `SHUTTING_DOWN` instead of a closed connection), and the count of those callers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::db::models::NewHistory;
use crate::history::HistoryRecorder;
use crate::policy::outcome::{AcquisitionStatus, TriggerReason};

/// One acquisition of the slow path; `account` is set once its driver runs.
#[derive(Debug, Clone)]
pub struct RunningLogin {
    pub site: String,
    pub acquisition_id: String,
    pub trigger: TriggerReason,
    pub arrived: DateTime<Utc>,
    /// The account being logged in (credential id, name), once a login started.
    pub account: Option<(i64, String)>,
}

/// The acquisitions running now. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RunningLogins {
    inner: Arc<Mutex<HashMap<u64, RunningLogin>>>,
    next: Arc<AtomicU64>,
}

/// Removes its acquisition from [`RunningLogins`] when dropped (finished, failed or cut).
#[must_use]
pub struct RunningGuard {
    logins: RunningLogins,
    id: u64,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.logins.map().remove(&self.id);
    }
}

impl RunningLogins {
    /// The map, also after a thread panicked holding it: each change is one insert, update
    /// or removal, so the map is whole, and skipping it would hide a login from the stop.
    /// The poisoning is logged once and cleared.
    fn map(&self) -> MutexGuard<'_, HashMap<u64, RunningLogin>> {
        self.inner.lock().unwrap_or_else(|poisoned| {
            log::warn!(
                "event=running_logins_lock_poisoned action=recovered detail=\"a thread panicked while tracking logins; the map is kept\""
            );
            self.inner.clear_poison();
            poisoned.into_inner()
        })
    }

    /// An acquisition of `site` enters the slow path.
    pub fn begin(
        &self,
        site: &str,
        acquisition_id: &str,
        trigger: TriggerReason,
        arrived: DateTime<Utc>,
    ) -> RunningGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.map().insert(
            id,
            RunningLogin {
                site: site.to_string(),
                acquisition_id: acquisition_id.to_string(),
                trigger,
                arrived,
                account: None,
            },
        );
        RunningGuard {
            logins: self.clone(),
            id,
        }
    }

    /// The acquisition's driver starts logging in with this account.
    pub fn logging_in(&self, acquisition_id: &str, credential_id: i64, account: &str) {
        if let Some(login) = self
            .map()
            .values_mut()
            .find(|l| l.acquisition_id == acquisition_id)
        {
            login.account = Some((credential_id, account.to_string()));
        }
    }

    /// The logins whose driver is running now.
    pub fn logging_in_now(&self) -> Vec<RunningLogin> {
        self.map()
            .values()
            .filter(|l| l.account.is_some())
            .cloned()
            .collect()
    }

    /// Logs and records each login still running: the stop cuts it. Answers how many.
    pub fn abandon_all(&self, history: &HistoryRecorder) -> usize {
        let cut = self.logging_in_now();
        let now = Utc::now();
        for login in &cut {
            let (credential_id, account) = login.account.clone().unzip();
            let seconds = (now - login.arrived).num_milliseconds() as f64 / 1000.0;
            log::warn!(
                "event=login_abandoned site={} account={} acquisition_id={} reason=shutdown running_for={seconds:.3}s",
                login.site,
                account.as_deref().unwrap_or("-"),
                login.acquisition_id
            );
            history.record(NewHistory {
                acquisition_id: login.acquisition_id.clone(),
                site_name: login.site.clone(),
                account,
                credential_id,
                status: AcquisitionStatus::Timeout.as_str().to_string(),
                trigger_reason: login.trigger.as_str().to_string(),
                attempt_count: 1,
                total_duration: seconds,
                login_duration: None,
                captcha_attempts: 0,
                network_retries: 0,
                token_fingerprint: None,
                token_redacted: None,
                error_message: Some("shutdown".to_string()),
                error_details: None,
                created_at: now.naive_utc(),
                started_at: login.arrived.naive_utc(),
                finished_at: Some(now.naive_utc()),
            });
        }
        cut.len()
    }
}

/// The end of the grace period, as callers see it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    over: tokio::sync::watch::Sender<bool>,
    waiting: Arc<AtomicUsize>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            over: tokio::sync::watch::channel(false).0,
            waiting: Arc::default(),
        }
    }
}

/// Counts one caller waiting for an acquisition while it lives.
pub struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shutdown {
    /// The grace is over: every waiting caller is answered now.
    pub fn end_grace(&self) {
        self.over.send_replace(true);
    }

    /// Resolves once the grace is over (never, while tokend runs).
    pub async fn grace_over(&self) {
        let mut over = self.over.subscribe();
        if over.wait_for(|over| *over).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// A caller starts waiting for an acquisition.
    pub fn waiting(&self) -> Waiting {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(self.waiting.clone())
    }

    /// Callers waiting for an acquisition now.
    pub fn waiting_now(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_tracked_after_a_thread_panicked_holding_the_map() {
        let logins = RunningLogins::default();
        let poisoner = logins.clone();
        let panicked = std::thread::spawn(move || {
            let _held = poisoner.inner.lock().unwrap();
            panic!("a thread dies holding the map");
        })
        .join();
        assert!(panicked.is_err() && logins.inner.is_poisoned());
        let guard = logins.begin("s", "acq-1", TriggerReason::TokenNeeded, Utc::now());
        logins.logging_in("acq-1", 7, "u1");
        let running = logins.logging_in_now();
        assert_eq!(running.len(), 1, "the login is tracked: {running:?}");
        assert_eq!(running[0].account, Some((7, "u1".to_string())));
        assert!(!logins.inner.is_poisoned(), "the poisoning is cleared");
        drop(guard);
        assert!(logins.logging_in_now().is_empty());
    }
}

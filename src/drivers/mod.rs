//! Login drivers (SPEC §6): how tokend logs in to a site, and the retry policy around it.
//!
//! [`LoginDriver::login_with_retries`] runs one driver attempt after another inside
//! `login_timeout`: network errors are retried with exponential backoff up to
//! `max_network_retries`, captcha errors after `captcha_retry_delay` up to
//! `max_captcha_retries`, and a credential error is never retried. Before a retry that
//! follows a congestion answer, the caller's [`RetryGate`] acts on it at once.
//!
//! Layout, leaves first: `login` (what one attempt takes and gives: [`Credentials`],
//! [`LoginToken`], [`LoginFailure`]), `deadline` (the login's clock, [`Deadline`]),
//! `process` (a program run in a process group of its own) and [`cookies`]; then the drivers
//! [`http`], [`command`], [`court`], [`derived`] and [`recipe`]; here, the driver of a site
//! ([`LoginDriver`]) and its retries. Imports go one way: from here to the drivers, from the
//! drivers to the leaves; no driver imports this file.

pub mod command;
pub mod cookies;
pub mod court;
mod deadline;
pub mod derived;
pub mod http;
mod login;
mod process;
pub mod recipe;

use std::time::{Duration, Instant};

use crate::config::{seconds, DriverKind, RetryConfig, SiteConfig};
use crate::error::Result;

pub use deadline::Deadline;
pub use login::{clean_message, read_answer, Credentials, FailureKind, LoginFailure, LoginToken};

/// Extra time a driver gets beyond `login_timeout` to report its own timeout.
const DRIVER_GRACE: Duration = Duration::from_secs(2);

/// What happened over all attempts of one login.
#[derive(Debug, Clone, Default)]
pub struct LoginStats {
    pub attempts: u32,
    pub captcha_attempts: u32,
    pub network_retries: u32,
    /// Seconds spent in the driver, retries and their waits included.
    pub duration: f64,
    /// When the last attempt was sent (adaptive concurrency: which limit it was sent under).
    pub last_sent: Option<Instant>,
}

/// What the caller of [`LoginDriver::login_with_retries`] does when an attempt met congestion
/// (a 429, a `rate_limit_pattern` answer, a captcha error) and the login will retry: the
/// broker halves the site's adaptive limit at once and makes the retry wait for a slot under
/// it. An `Err` ends the login with that failure.
pub trait RetryGate: Send {
    /// `sent`: when the attempt that met congestion was sent.
    fn congested<'a>(
        &'a mut self,
        failure: &'a LoginFailure,
        sent: Instant,
    ) -> futures_util::future::BoxFuture<'a, Result<(), LoginFailure>>;
}

/// Seconds to wait before retrying after `outcome`, counting the retry in `stats`; `None`:
/// the login ends with it (a success, a failure that is not retried, retries spent).
fn retry_wait(
    outcome: &Result<LoginToken, LoginFailure>,
    stats: &mut LoginStats,
    retry: &RetryConfig,
) -> Option<f64> {
    let Err(f) = outcome else {
        return None;
    };
    if f.last_attempt {
        if f.kind == FailureKind::Captcha {
            stats.captcha_attempts += 1;
        }
        return None;
    }
    match f.kind {
        FailureKind::Network if stats.network_retries < retry.max_network_retries => {
            let wait = retry.network_retry_delay_base * 2f64.powi(stats.network_retries as i32);
            stats.network_retries += 1;
            Some(wait)
        }
        FailureKind::Captcha => {
            stats.captcha_attempts += 1;
            (stats.captcha_attempts <= retry.max_captcha_retries)
                .then_some(retry.captcha_retry_delay)
        }
        _ => None,
    }
}

/// A site's driver, built once from its configuration.
pub enum LoginDriver {
    Http(Box<http::HttpDriver>),
    Command(command::CommandDriver),
    /// SPEC §13: a token exchanged for the parent's (handed in as the password).
    Derived(Box<derived::DerivedDriver>),
    /// Issue 26: a portal's login described by a recipe file.
    Recipe(Box<recipe::RecipeDriver>),
}

impl LoginDriver {
    /// The driver of `site`, knowing the other `sites` (a derived site's parent) and where
    /// to count captcha solves.
    pub fn with_context(
        site: &SiteConfig,
        default_ttl: Duration,
        sites: &[SiteConfig],
        metrics: Option<std::sync::Arc<crate::watch::metrics::Metrics>>,
    ) -> Result<LoginDriver> {
        Ok(match site.driver {
            DriverKind::CourtZxfw | DriverKind::CourtBaoquan => {
                let parent = sites.iter().find(|s| s.name == site.from_site);
                LoginDriver::Recipe(Box::new(recipe::RecipeDriver::builtin(
                    site, parent, metrics,
                )?))
            }
            DriverKind::Recipe => {
                let parent = sites.iter().find(|s| s.name == site.from_site);
                LoginDriver::Recipe(Box::new(recipe::RecipeDriver::new(site, parent, metrics)?))
            }
            DriverKind::Derived => {
                LoginDriver::Derived(Box::new(derived::DerivedDriver::new(site, default_ttl)))
            }
            DriverKind::Http => {
                LoginDriver::Http(Box::new(http::HttpDriver::new(site, default_ttl)?))
            }
            DriverKind::Command => {
                LoginDriver::Command(command::CommandDriver::new(site, default_ttl))
            }
        })
    }

    /// Lets a `command` site hand captchas to a person (SPEC §13).
    pub fn with_captchas(self, captchas: crate::lifecycle::captcha::Captchas) -> LoginDriver {
        match self {
            LoginDriver::Command(d) => LoginDriver::Command(d.with_captchas(captchas)),
            LoginDriver::Recipe(d) => LoginDriver::Recipe(Box::new(d.with_captchas(captchas))),
            other => other,
        }
    }

    async fn attempt(
        &self,
        creds: &Credentials<'_>,
        deadline: &Deadline,
    ) -> Result<LoginToken, LoginFailure> {
        match self {
            LoginDriver::Http(d) => d.login(creds, deadline.remaining()).await,
            LoginDriver::Command(d) => d.login(creds, deadline).await,
            LoginDriver::Derived(d) => d.login(creds, deadline.remaining()).await,
            LoginDriver::Recipe(d) => d.login(creds, deadline).await,
        }
    }

    /// Logs in, retrying as the policy allows, all inside `login_timeout`; `gate` is asked
    /// before each retry that follows a congestion answer.
    pub async fn login_with_retries(
        &self,
        creds: &Credentials<'_>,
        retry: &RetryConfig,
        gate: &mut dyn RetryGate,
    ) -> (Result<LoginToken, LoginFailure>, LoginStats) {
        let started = Instant::now();
        let deadline = Deadline::new(started + seconds(retry.login_timeout));
        let mut stats = LoginStats::default();
        let result = loop {
            if deadline.remaining().is_zero() {
                break Err(LoginFailure::new(
                    FailureKind::Timeout,
                    "login_timeout elapsed",
                ));
            }
            stats.attempts += 1;
            let sent = Instant::now();
            stats.last_sent = Some(sent);
            // Drivers honour `remaining` themselves; the grace is a safety net that lets them
            // report (and clean up after) their own timeout first.
            let outcome = match deadline
                .run(DRIVER_GRACE, self.attempt(creds, &deadline))
                .await
            {
                Some(outcome) => outcome,
                None => Err(LoginFailure::new(
                    FailureKind::Timeout,
                    "login_timeout elapsed",
                )),
            };
            let Some(wait) = retry_wait(&outcome, &mut stats, retry) else {
                break outcome;
            };
            let Err(failure) = &outcome else {
                break outcome;
            };
            log::info!(
                "event=login_retry site={} account={} error_type={} attempt={} wait={wait:.2}s",
                creds.site,
                creds.account,
                failure.error_type(),
                stats.attempts
            );
            // A portal that asked for a longer pause than the retry would keep is not
            // knocked on again within this login: the site's circuit honours its wish.
            let wait = seconds(wait).max(failure.retry_after.unwrap_or_default());
            if Instant::now() + wait >= deadline.at() {
                break outcome;
            }
            // Congestion is a signal the moment it arrives, not when the login ends.
            if failure.congestion || failure.kind == FailureKind::Captcha {
                if let Err(stop) = gate.congested(failure, sent).await {
                    break Err(stop);
                }
            }
            tokio::time::sleep(wait).await;
        };
        stats.duration = started.elapsed().as_secs_f64();
        (result, stats)
    }
}

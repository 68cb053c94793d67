//! Job checkouts on the pipeline: [`Broker::checkout`] hands out a token and holds its
//! account for the job, [`Broker::renew_checkout`] extends the lease (and renews the token
//! when it would expire inside it), [`Broker::release_checkout`] ends it with the job's
//! outcome. The holds themselves are [`crate::lifecycle::checkout::Checkouts`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::pipeline::Broker;
use super::request::{AcquireRequest, AcquiredToken};
use crate::config::SiteConfig;
use crate::error::{Error, Result};
use crate::lifecycle::checkout::{self, Checkout};
use crate::policy::outcome::TriggerReason;

/// `POST /tokens/checkout`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub site_name: String,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub credential_id: Option<i64>,
    /// Seconds the account is held unless renewed (1 to 86400; default 300).
    #[serde(default)]
    pub lease_seconds: Option<f64>,
    /// What the job is (a case number, a task id): shown beside the hold.
    #[serde(default)]
    pub job: Option<String>,
}

/// `POST /tokens/checkout/{id}/renew`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The new lease from now (default: the checkout's first lease length, 300 s if unknown).
    #[serde(default)]
    pub lease_seconds: Option<f64>,
}

/// How the job went, given at release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutOutcome {
    /// The job is done; the token stays for the next caller.
    #[default]
    Ok,
    /// The portal refused the token: it is invalidated.
    TokenRejected,
    /// The job failed because of the account: counted like a failed login (cooldown).
    Failed,
}

/// `POST /tokens/checkout/{id}/release`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    #[serde(default)]
    pub outcome: CheckoutOutcome,
}

/// A held account and its token.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedOut {
    pub checkout: Checkout,
    pub token: AcquiredToken,
    /// On renewal: whether the token was renewed (it would have expired inside the lease).
    pub token_renewed: bool,
}

/// A job label: up to 200 characters, no control characters (it is shown in tables and logs).
fn checked_job(job: &str) -> Result<()> {
    if job.chars().count() > 200 || job.chars().any(char::is_control) {
        return Err(Error::invalid(
            "job",
            "at most 200 characters, none of them control characters",
        ));
    }
    Ok(())
}

fn lease_end(lease: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

impl Broker {
    /// The job checkouts.
    pub fn checkouts(&self) -> &crate::lifecycle::checkout::Checkouts {
        &self.inner.checkouts
    }

    /// The hold on an account of `site`'s accounts (the site itself, or a derived site's
    /// root parent), as this instance knows it.
    pub(super) fn held(&self, site: &SiteConfig, credential_id: i64) -> Option<Checkout> {
        if !self.inner.checkouts.any() {
            return None;
        }
        let owner = &self.account_owner(site).name;
        self.inner.checkouts.held(owner, credential_id)
    }

    /// An acquire that names a held account is refused (409 `CHECKED_OUT`).
    pub(super) fn refuse_if_held(&self, site: &SiteConfig, credential_id: i64) -> Result<()> {
        match self.held(site, credential_id) {
            Some(held) => Err(Error::CheckedOut {
                site: site.name.clone(),
                account: held.account,
                until: held.lease_until,
            }),
            None => Ok(()),
        }
    }

    /// Hands out a token and holds its account for the job.
    pub async fn checkout(&self, request: CheckoutRequest) -> Result<CheckedOut> {
        let site = self.site(&request.site_name)?;
        let lease = checkout::lease(request.lease_seconds)?;
        let job = request
            .job
            .map(|j| checked_job(&j).map(|()| j))
            .transpose()?;
        let owner = self.account_owner(site).name.clone();
        let named = request.account.is_some() || request.credential_id.is_some();
        let mut refused: HashSet<i64> = HashSet::new();
        // A hold lost to another job at the last moment: the next acquire skips that account
        // (the mirror knows it now); bounded by the accounts there are.
        for _ in 0..=self.credential_list(site).await?.len() {
            let token = self
                .acquire(AcquireRequest {
                    site_name: site.name.clone(),
                    credential_id: request.credential_id,
                    account: request.account.clone(),
                    force_refresh: false,
                })
                .await?;
            let held = Checkout {
                checkout_id: uuid::Uuid::new_v4().to_string(),
                site_name: site.name.clone(),
                accounts_site: owner.clone(),
                account: token.account.clone(),
                credential_id: token.credential_id,
                job: job.clone(),
                since: Utc::now(),
                lease_until: lease_end(lease),
            };
            match self.inner.checkouts.hold(&held).await? {
                Ok(()) => {
                    log::info!(
                        "event=checkout_started site={} account={} checkout_id={} lease_until={} job={:?}",
                        site.name,
                        held.account,
                        held.checkout_id,
                        held.lease_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        held.job.as_deref().unwrap_or("")
                    );
                    return Ok(CheckedOut {
                        checkout: held,
                        token,
                        token_renewed: false,
                    });
                }
                Err(by) if named || !refused.insert(token.credential_id) => {
                    return Err(Error::CheckedOut {
                        site: site.name.clone(),
                        account: token.account,
                        until: by.until,
                    })
                }
                Err(_) => continue,
            }
        }
        Err(self.all_checked_out(site))
    }

    /// `NO_AVAILABLE_ACCOUNT` because every usable account is held, with the first lease end.
    pub(super) fn all_checked_out(&self, site: &SiteConfig) -> Error {
        let owner = &self.account_owner(site).name;
        Error::AllCheckedOut {
            site: site.name.clone(),
            until: self
                .inner
                .checkouts
                .first_lease_end(owner)
                .unwrap_or_else(|| Utc::now() + chrono::Duration::seconds(1)),
        }
    }

    /// Extends a lease; renews the token first when it would expire inside the new lease.
    pub async fn renew_checkout(&self, id: &str, request: RenewRequest) -> Result<CheckedOut> {
        let current = self.find_checkout(id).await?;
        let first = (current.lease_until - current.since).to_std().ok();
        let lease = checkout::lease(request.lease_seconds.or(first.map(|d| {
            d.as_secs_f64()
                .clamp(checkout::MIN_LEASE_SECS, checkout::MAX_LEASE_SECS)
        })))?;
        let until = lease_end(lease);
        let renewed = self
            .inner
            .checkouts
            .renew(id, until)
            .await?
            .ok_or_else(|| Error::CheckoutNotFound(id.to_string()))?;
        let site = self.site_of_hold(&renewed)?;
        let (token, token_renewed) = self.token_for_lease(site, &renewed).await?;
        log::info!(
            "event=checkout_renewed site={} account={} checkout_id={id} lease_until={} token_renewed={token_renewed}",
            renewed.site_name,
            renewed.account,
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        Ok(CheckedOut {
            checkout: renewed,
            token,
            token_renewed,
        })
    }

    /// The held account's token for the lease: the cached one, or a fresh login by the
    /// holder when the cached one would expire before the lease ends.
    async fn token_for_lease(
        &self,
        site: &SiteConfig,
        held: &Checkout,
    ) -> Result<(AcquiredToken, bool)> {
        let cached = self
            .inner
            .cache
            .token(&site.name, Some(held.credential_id))
            .await;
        let margin =
            chrono::Duration::milliseconds((self.inner.config.cache.refresh_ahead * 1000.0) as i64);
        if let Some(hit) = cached {
            if hit.entry.expires_at - margin > held.lease_until {
                let token = AcquiredToken::from_hit(&hit, super::request::Source::Cache);
                return Ok((token, false));
            }
        }
        let _renewal = self
            .inner
            .checkouts
            .renewal(&held.accounts_site, held.credential_id);
        let token = self
            .login(
                site,
                Some(held.credential_id),
                None,
                true,
                TriggerReason::ForceRefresh,
                Utc::now(),
            )
            .await?;
        Ok((token, true))
    }

    /// Ends a lease with the job's outcome.
    pub async fn release_checkout(&self, id: &str, request: ReleaseRequest) -> Result<Checkout> {
        let released = self
            .inner
            .checkouts
            .release(id)
            .await?
            .ok_or_else(|| Error::CheckoutNotFound(id.to_string()))?;
        self.inner
            .metrics
            .checkout_ended(&released.site_name, "released");
        log::info!(
            "event=checkout_released site={} account={} checkout_id={id} outcome={}",
            released.site_name,
            released.account,
            serde_json::to_value(request.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        );
        let site = self.site_of_hold(&released)?;
        match request.outcome {
            CheckoutOutcome::Ok => {}
            CheckoutOutcome::TokenRejected => {
                self.invalidate(&site.name, &released.account).await?;
            }
            CheckoutOutcome::Failed => {
                // The account is its accounts site's (a derived site's parent's).
                let owner = self.site(&released.accounts_site)?;
                let entry = self
                    .credential_list(owner)
                    .await?
                    .iter()
                    .find(|c| c.id == released.credential_id)
                    .cloned();
                if let Some(entry) = entry {
                    self.penalise(owner, &entry, crate::drivers::FailureKind::Failed)
                        .await;
                }
            }
        }
        Ok(released)
    }

    async fn find_checkout(&self, id: &str) -> Result<Checkout> {
        self.inner
            .checkouts
            .list()
            .await?
            .into_iter()
            .find(|c| c.checkout_id == id)
            .ok_or_else(|| Error::CheckoutNotFound(id.to_string()))
    }

    fn site_of_hold(&self, held: &Checkout) -> Result<&SiteConfig> {
        self.site(&held.site_name)
    }

    /// Sweeps ended leases every [`checkout::SYNC_EVERY`] (and keeps the mirror current):
    /// each is logged and counted once, by whichever instance swept it.
    pub fn start_checkout_sweeper(&self) {
        let broker = self.clone();
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(checkout::SYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                broker.sweep_checkouts().await;
            }
        });
    }

    async fn sweep_checkouts(&self) {
        match self.inner.checkouts.sweep().await {
            Ok(ended) => {
                for held in ended {
                    self.inner
                        .metrics
                        .checkout_ended(&held.site_name, "expired");
                    log::warn!(
                        "event=checkout_expired site={} account={} checkout_id={} lease_until={} job={:?}",
                        held.site_name,
                        held.account,
                        held.checkout_id,
                        held.lease_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        held.job.as_deref().unwrap_or("")
                    );
                }
            }
            Err(e) => log::debug!("event=checkout_sweep_failed error=\"{e}\""),
        }
        let mut counts: HashMap<String, i64> = HashMap::new();
        for held in self.inner.checkouts.known() {
            *counts.entry(held.site_name).or_default() += 1;
        }
        let sites: Vec<&str> = self
            .inner
            .config
            .sites
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        self.inner.metrics.set_checkouts(&sites, &counts);
    }
}

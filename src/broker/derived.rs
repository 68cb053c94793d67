//! Derived sites (SPEC §13, §15 `court_baoquan`): a token of the same account on the parent
//! site, taken through the parent's normal acquisition — its cache, its single flight, its
//! slots, its history row — so that one parent login serves every derived site. The derived
//! acquisition asks for it before it takes a slot of its own, so that the two never wait on
//! each other for the global limit.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::pipeline::Broker;
use super::request::{AcquireRequest, AcquiredToken};
use crate::cache::CredentialEntry;
use crate::config::SiteConfig;
use crate::drivers::{FailureKind, LoginFailure};
use crate::error::{Error, Result};
use crate::policy::outcome::{AcquisitionStatus, TriggerReason};

impl Broker {
    /// The parent's token for `candidate`, within `remaining`; its failure as this site's.
    pub(super) async fn parent_token(
        &self,
        site: &SiteConfig,
        candidate: &CredentialEntry,
        remaining: Duration,
    ) -> std::result::Result<AcquiredToken, LoginFailure> {
        let request = AcquireRequest {
            site_name: site.from_site.clone(),
            credential_id: Some(candidate.id),
            account: None,
            force_refresh: false,
        };
        let broker = self.clone();
        // Boxed: the parent's acquisition is the same pipeline this one runs in.
        let parent: Pin<Box<dyn Future<Output = Result<AcquiredToken>> + Send>> =
            Box::pin(async move { broker.acquire_as(request, TriggerReason::TokenNeeded).await });
        let outcome = match tokio::time::timeout(remaining, parent).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout(format!(
                "no token of the parent site `{}` within this acquisition's time",
                site.from_site
            ))),
        };
        let error = match outcome {
            Ok(token) => {
                log::info!(
                    "event=parent_token site={} parent={} account={} source={:?} parent_acquisition_id={}",
                    site.name,
                    site.from_site,
                    candidate.account,
                    token.source,
                    token.acquisition_id
                );
                return Ok(token);
            }
            Err(e) => e,
        };
        let kind = match &error {
            Error::AcquisitionFailed { status, .. } => kind_of(*status),
            Error::Timeout(_) | Error::QueueTimeout(_) => FailureKind::Timeout,
            _ => FailureKind::Failed,
        };
        let message = match error {
            Error::AcquisitionFailed { message, .. } => message,
            other => other.to_string(),
        };
        Err(LoginFailure::new(
            kind,
            format!("parent site `{}`: {message}", site.from_site),
        ))
    }
}

impl Broker {
    /// The parent's token was refused by the exchange of `site`: it is dropped (with every
    /// token derived from it), so that the next acquisition gets a fresh one.
    pub(super) async fn drop_parent_token(&self, site: &SiteConfig, candidate: &CredentialEntry) {
        let parent = &site.from_site;
        match self.invalidate(parent, &candidate.account).await {
            Ok(_) => log::warn!(
                "event=parent_token_refused site={} parent={parent} account={} action=invalidated",
                site.name,
                candidate.account
            ),
            Err(e) => log::warn!(
                "event=parent_token_refused site={} parent={parent} account={} error=\"{e}\"",
                site.name,
                candidate.account
            ),
        }
    }
}

fn kind_of(status: AcquisitionStatus) -> FailureKind {
    match status {
        AcquisitionStatus::NetworkError => FailureKind::Network,
        AcquisitionStatus::CaptchaError => FailureKind::Captcha,
        AcquisitionStatus::CredentialError => FailureKind::Credential,
        AcquisitionStatus::Timeout => FailureKind::Timeout,
        AcquisitionStatus::Success | AcquisitionStatus::Failed => FailureKind::Failed,
    }
}

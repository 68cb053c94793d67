//! What the dashboard shows of each account's token (`GET /api/v1/automation/tokens/status`):
//! where the next acquire would find it, until when it lives, and which kind of acquisition
//! got it — never the token, not even sealed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::pipeline::Broker;
use crate::error::Result;

/// Where an account's token is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldIn {
    /// In the cache: served on the hot path.
    Cache,
    /// Only in the `tokens` table: served after a look in the store.
    Store,
}

/// One account's token, without the token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenStatus {
    pub account: String,
    pub credential_id: i64,
    /// `cache`, `store`, or `null` when the account has no live token.
    #[schema(value_type = Option<String>)]
    pub source: Option<HeldIn>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When the portal issued it (for a token only in the store: when it was stored).
    pub issued_at: Option<DateTime<Utc>>,
    pub seconds_left: Option<f64>,
    /// Whether an acquire would hand it out now (more than its refresh margin left).
    pub fresh: bool,
    /// The acquisition that logged in for it (cached tokens only).
    pub acquisition_id: Option<String>,
    /// What caused that login: `token_needed`, `force_refresh`, `refresh_ahead`, `warm_up`
    /// or `manual`; `null` while its history row is not written yet.
    pub trigger_reason: Option<String>,
}

impl Broker {
    /// The token of every account of a site (a derived site: of its parent's accounts), as
    /// far as expiry and origin go.
    pub async fn token_statuses(&self, site_name: &str) -> Result<Vec<TokenStatus>> {
        let site = self.site(site_name)?;
        let name = site.name.clone();
        // A derived site's tokens belong to its parent's accounts.
        let owner = self.account_owner(site).name.clone();
        let (accounts, stored) = self
            .inner
            .pool
            .run(move |conn| {
                let accounts = crate::db::accounts::list(conn, Some(&owner))?;
                let stored = crate::db::tokens::expiries(conn, &name)?;
                Ok((accounts, stored))
            })
            .await?;
        let stored: HashMap<String, (DateTime<Utc>, DateTime<Utc>)> = stored
            .into_iter()
            .map(|(account, expires, written)| (account, (expires.and_utc(), written.and_utc())))
            .collect();
        let now = Utc::now();
        let refresh_ahead = self.inner.config.cache.refresh_ahead;
        let mut statuses = Vec::with_capacity(accounts.len());
        for account in accounts {
            let cached = self.inner.cache.token_entry(&site.name, account.id).await;
            let status = match cached.filter(|entry| entry.expires_at > now) {
                Some(entry) => TokenStatus {
                    account: account.account,
                    credential_id: account.id,
                    source: Some(HeldIn::Cache),
                    expires_at: Some(entry.expires_at),
                    issued_at: Some(entry.issued_at),
                    seconds_left: Some(entry.seconds_left(now)),
                    fresh: entry.is_fresh(now, refresh_ahead),
                    acquisition_id: Some(entry.acquisition_id),
                    trigger_reason: None,
                },
                None => {
                    let live = stored
                        .get(&account.account)
                        .filter(|(expires, _)| *expires > now);
                    TokenStatus {
                        source: live.map(|_| HeldIn::Store),
                        expires_at: live.map(|(expires, _)| *expires),
                        issued_at: live.map(|(_, written)| *written),
                        seconds_left: live.map(|(expires, _)| {
                            (*expires - now).num_milliseconds() as f64 / 1000.0
                        }),
                        fresh: live.is_some_and(|(expires, written)| {
                            let left = (*expires - now).num_milliseconds() as f64 / 1000.0;
                            left > crate::cache::margin(*written, *expires, refresh_ahead)
                        }),
                        account: account.account,
                        credential_id: account.id,
                        acquisition_id: None,
                        trigger_reason: None,
                    }
                }
            };
            statuses.push(status);
        }
        self.add_triggers(&mut statuses).await?;
        Ok(statuses)
    }

    /// Fills in what caused each cached token's login, from the history.
    async fn add_triggers(&self, statuses: &mut [TokenStatus]) -> Result<()> {
        let ids: Vec<String> = statuses
            .iter()
            .filter_map(|s| s.acquisition_id.clone())
            .collect();
        let triggers: HashMap<String, String> = self
            .inner
            .pool
            .run(move |conn| crate::db::history::triggers(conn, &ids))
            .await?
            .into_iter()
            .collect();
        for status in statuses.iter_mut() {
            if let Some(id) = &status.acquisition_id {
                status.trigger_reason = triggers.get(id).cloned();
            }
        }
        Ok(())
    }
}

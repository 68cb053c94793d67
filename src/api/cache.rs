//! The cache endpoints: `GET /performance/cache-stats`, `POST /performance/cache/warm-up`,
//! `DELETE /performance/cache/clear`.

use actix_web::{web, HttpResponse};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answer::ok;
use super::answer::ErrorBody;
use super::state::AppState;
use crate::cache::tokens::BackendFacts;
use crate::config::validate_site_name;
use crate::error::Error;
use crate::watch::monitor::Snapshot;

/// One cache kind's lookups and keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheKindStats {
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    /// Percent; `null` before the first lookup.
    pub hit_rate: Option<f64>,
    pub keys: usize,
}

/// `GET /performance/cache-stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheStatsAnswer {
    pub kinds: BTreeMap<String, CacheKindStats>,
    /// `type` (`memory` or `redis`) and the backend's facts.
    pub backend: BackendFacts,
}

/// `DELETE /performance/cache/clear`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClearAnswer {
    pub site_name: Option<String>,
    pub deleted_keys: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteQuery {
    #[serde(default)]
    site_name: Option<String>,
}

impl SiteQuery {
    /// The site, validated; `None` when absent or empty.
    fn site(&self) -> Result<Option<&str>, Error> {
        match self.site_name.as_deref().filter(|s| !s.is_empty()) {
            Some(site) => validate_site_name("site_name", site).map(|_| Some(site)),
            None => Ok(None),
        }
    }
}

/// Hits, misses, errors, hit rate and keys per kind; backend facts.
#[utoipa::path(
    get,
    path = "/api/v1/automation/performance/cache-stats",
    operation_id = "cacheStats",
    tag = "cache",
    responses(
        (status = 200, description = "{kinds, backend}", body = super::answer::Answer<CacheStatsAnswer>),
    ),
)]
pub async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let snapshot = state.actors.monitor.send(Snapshot).await?;
    let keys = state.cache.key_counts().await?;
    let kinds = snapshot
        .cache
        .iter()
        .map(|(kind, c)| {
            let entry = CacheKindStats {
                hits: c.hits,
                misses: c.misses,
                errors: c.errors,
                hit_rate: c.hit_rate(),
                keys: keys.get(kind).copied().unwrap_or(0),
            };
            (kind.as_str().to_string(), entry)
        })
        .collect();
    let backend = state.cache.backend_facts().await?;
    Ok(ok(CacheStatsAnswer { kinds, backend }))
}

/// Loads a site's credential list, account statistics and blacklist into the cache.
#[utoipa::path(
    post,
    path = "/api/v1/automation/performance/cache/warm-up",
    operation_id = "warmUpCache",
    tag = "cache",
    params(("site_name" = String, Query)),
    responses(
        (status = 200, description = "What was loaded", body = super::answer::Answer<crate::broker::WarmUp>),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn warm_up(
    state: web::Data<AppState>,
    query: web::Query<SiteQuery>,
) -> Result<HttpResponse, Error> {
    let site = query
        .site()?
        .ok_or_else(|| Error::invalid("site_name", "is required"))?;
    Ok(ok(state.broker.warm_up(site).await?))
}

/// Deletes tokend's cached entries (all, or one site's); never the slots or locks.
#[utoipa::path(
    delete,
    path = "/api/v1/automation/performance/cache/clear",
    operation_id = "clearCache",
    tag = "cache",
    params(("site_name" = Option<String>, Query)),
    responses(
        (status = 200, description = "{site_name, deleted_keys}", body = super::answer::Answer<ClearAnswer>),
        (status = 400, description = "Bad input", body = ErrorBody),
    ),
)]
pub async fn clear(
    state: web::Data<AppState>,
    query: web::Query<SiteQuery>,
) -> Result<HttpResponse, Error> {
    let site = query.site()?;
    if let Some(site) = site {
        state.broker.site(site)?;
    }
    let deleted = state.cache.clear(site).await?;
    log::info!(
        "event=cache_cleared site={} keys={deleted}",
        site.unwrap_or("*")
    );
    Ok(ok(ClearAnswer {
        site_name: site.map(str::to_string),
        deleted_keys: deleted,
    }))
}

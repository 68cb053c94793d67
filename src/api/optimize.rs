//! `POST /performance/optimize-concurrency[?apply=true]`: recommendations from live usage and
//! the day's history; with `apply`, the new limits take effect at once, for every instance
//! sharing the Redis.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answer::ok;
use super::answer::ErrorBody;
use super::state::AppState;
use crate::error::Error;
use crate::slots::concurrency::SlotLimits;
use crate::slots::LimitsSource;
use crate::watch::monitor::Snapshot;
use crate::watch::recommend::{recommend, Recommendation, SiteLoad, SlotLoad};

/// `POST /performance/optimize-concurrency`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OptimizeAnswer {
    pub current_limits: SlotLimits,
    /// Where `current_limits` come from; `fallback`: Redis cannot be read
    /// (`current_limits_error` says why).
    pub current_limits_source: LimitsSource,
    pub current_limits_error: Option<String>,
    pub recommended_limits: SlotLimits,
    pub recommendations: Vec<Recommendation>,
    pub optimization_applied: bool,
    pub analysis: OptimizeAnalysis,
}

/// The figures the recommendations come from: the day's sites and the live slots.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OptimizeAnalysis {
    pub sites: Vec<SiteLoad>,
    pub slots: SlotLoad,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizeQuery {
    #[serde(default)]
    apply: bool,
}

/// Recommends concurrency limits; applies them with `apply=true`.
#[utoipa::path(
    post,
    path = "/api/v1/automation/performance/optimize-concurrency",
    operation_id = "optimizeConcurrency",
    tag = "performance",
    params(("apply" = Option<bool>, Query)),
    responses(
        (status = 200, description = "{current_limits, recommended_limits, recommendations, optimization_applied, analysis}", body = super::answer::Answer<OptimizeAnswer>),
        (status = 400, description = "Bad input", body = ErrorBody),
    ),
)]
pub async fn optimize(
    state: web::Data<AppState>,
    query: web::Query<OptimizeQuery>,
) -> Result<HttpResponse, Error> {
    let in_force = state.slots.limits().await;
    let limits = in_force.limits;
    let usage = state.slots.usage_here().await?;
    let live = state.actors.monitor.send(Snapshot).await?;
    let day = state
        .pool
        .run(|conn| crate::db::statistics::report(conn, 1, None))
        .await?;
    let sites: Vec<SiteLoad> = day
        .site_breakdown
        .into_iter()
        .map(|row| {
            let live = live.sites.get(&row.site_name);
            SiteLoad {
                acquisitions: u64::try_from(row.totals.total).unwrap_or(0),
                success_rate: row.totals.success_rate,
                timeout_rate: live.map_or(0.0, |c| c.timeout_rate()),
                congestion_rate: live.map_or(0.0, |c| c.congestion_rate()),
                avg_duration: row.totals.avg_duration,
                adaptive: state
                    .config
                    .site(&row.site_name)
                    .is_some_and(|s| s.adaptive_concurrency),
                site: row.site_name,
            }
        })
        .collect();
    let slots = SlotLoad {
        queue_size: usage.queue_size,
        oldest_wait_seconds: usage.oldest_wait_seconds,
        queue_timeout: state.config.concurrency.queue_timeout,
        sites_configured: state.config.sites.len(),
    };
    let (recommendations, next) = recommend(limits, &slots, &sites, &state.config.alerts);
    let applied = query.apply && !recommendations.is_empty();
    if applied {
        state.slots.set_limits(next).await?;
        log::info!(
            "event=limits_optimized global={} per_site={} per_account={} changes={}",
            next.global,
            next.per_site,
            next.per_account,
            recommendations.len()
        );
    }
    Ok(ok(OptimizeAnswer {
        current_limits: limits,
        current_limits_source: in_force.source,
        current_limits_error: in_force.error,
        recommended_limits: next,
        recommendations,
        optimization_applied: applied,
        analysis: OptimizeAnalysis { sites, slots },
    }))
}

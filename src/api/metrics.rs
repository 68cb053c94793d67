//! Live metrics (`GET /performance/metrics`, `POST /performance/metrics/reset`), statistics
//! from the history (`GET /performance/statistics`), and the Prometheus exposition
//! (`GET /metrics`).

use actix_web::{web, HttpResponse};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answer::ok;
use super::answer::ErrorBody;
use super::state::AppState;
use crate::config::validate_site_name;
use crate::error::Error;
use crate::policy::outcome::RejectionReason;
use crate::watch::monitor::{Counters as MonitorCounters, MetricsSnapshot, Reset, Snapshot};

/// Counts of one scope (all sites, or one site).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Counters {
    pub total_acquisitions: u64,
    pub successful_acquisitions: u64,
    pub failed_acquisitions: u64,
    /// Percent.
    pub success_rate: f64,
    /// Seconds.
    pub avg_duration: f64,
    pub avg_login_duration: f64,
    pub timeout_count: u64,
    pub network_error_count: u64,
    pub captcha_error_count: u64,
    pub credential_error_count: u64,
    pub concurrent_acquisitions: u64,
    pub timeout_rate: f64,
    /// Requests refused before any login ran (SPEC §11).
    pub rejected_acquisitions: u64,
    pub rejections: Rejections,
}

/// Refused requests by reason.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rejections {
    pub no_available_account: u64,
    pub site_unavailable: u64,
    pub queue_full: u64,
    pub queue_timeout: u64,
    pub login_budget_exhausted: u64,
    /// Waits that a Redis fault ended (503 `CACHE_UNAVAILABLE`).
    pub cache_unavailable: u64,
}

impl From<&MonitorCounters> for Counters {
    fn from(c: &MonitorCounters) -> Counters {
        let rejected = |reason| c.rejections.get(&reason).copied().unwrap_or(0);
        Counters {
            total_acquisitions: c.total_acquisitions,
            successful_acquisitions: c.successful_acquisitions,
            failed_acquisitions: c.failed_acquisitions,
            success_rate: c.success_rate(),
            avg_duration: c.avg_duration(),
            avg_login_duration: c.avg_login_duration(),
            timeout_count: c.timeout_count,
            network_error_count: c.network_error_count,
            captcha_error_count: c.captcha_error_count,
            credential_error_count: c.credential_error_count,
            concurrent_acquisitions: c.concurrent_acquisitions,
            timeout_rate: c.timeout_rate(),
            rejected_acquisitions: c.rejected_acquisitions,
            rejections: Rejections {
                no_available_account: rejected(RejectionReason::NoAvailableAccount),
                site_unavailable: rejected(RejectionReason::SiteUnavailable),
                queue_full: rejected(RejectionReason::QueueFull),
                queue_timeout: rejected(RejectionReason::QueueTimeout),
                login_budget_exhausted: rejected(RejectionReason::LoginBudgetExhausted),
                cache_unavailable: rejected(RejectionReason::CacheUnavailable),
            },
        }
    }
}

/// Seconds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl From<[f64; 3]> for Percentiles {
    fn from([p50, p95, p99]: [f64; 3]) -> Percentiles {
        Percentiles { p50, p95, p99 }
    }
}

/// One cache kind's lookups.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    /// Percent; `null` before the first lookup.
    pub hit_rate: Option<f64>,
}

/// The SPEC's metrics object: the totals, and per site, per cache kind, percentiles.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LiveMetrics {
    /// The totals, as every site has them.
    #[serde(flatten)]
    pub totals: Counters,
    /// Percent; `null` before the first token lookup.
    pub cache_hit_rate: Option<f64>,
    pub duration_percentiles: Percentiles,
    pub login_duration_percentiles: Percentiles,
    pub sites: BTreeMap<String, Counters>,
    pub cache: BTreeMap<String, CacheCounters>,
    pub uptime_seconds: f64,
}

impl From<&MetricsSnapshot> for LiveMetrics {
    fn from(snapshot: &MetricsSnapshot) -> LiveMetrics {
        LiveMetrics {
            totals: Counters::from(&snapshot.totals),
            cache_hit_rate: snapshot.cache_hit_rate(),
            duration_percentiles: snapshot.percentiles.into(),
            login_duration_percentiles: snapshot.login_percentiles.into(),
            sites: (snapshot.sites.iter())
                .map(|(site, c)| (site.clone(), Counters::from(c)))
                .collect(),
            cache: (snapshot.cache.iter())
                .map(|(kind, c)| {
                    let counts = CacheCounters {
                        hits: c.hits,
                        misses: c.misses,
                        errors: c.errors,
                        hit_rate: c.hit_rate(),
                    };
                    ((*kind).to_string(), counts)
                })
                .collect(),
            uptime_seconds: snapshot.uptime_seconds,
        }
    }
}

/// `POST /performance/metrics/reset`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResetAnswer {
    pub reset: bool,
    /// The metrics just before.
    pub previous: LiveMetrics,
}

/// Live metrics.
#[utoipa::path(
    get,
    path = "/api/v1/automation/performance/metrics",
    operation_id = "liveMetrics",
    tag = "performance",
    responses(
        (status = 200, description = "Live metrics, per site, cache, percentiles", body = super::answer::Answer<LiveMetrics>),
    ),
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let snapshot = state.actors.monitor.send(Snapshot).await?;
    Ok(ok(LiveMetrics::from(&snapshot)))
}

/// Zeroes the live counters; answers with the snapshot taken just before.
#[utoipa::path(
    post,
    path = "/api/v1/automation/performance/metrics/reset",
    operation_id = "resetMetrics",
    tag = "performance",
    responses(
        (status = 200, description = "{reset, previous}", body = super::answer::Answer<ResetAnswer>),
    ),
)]
pub async fn reset(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let before = state.actors.monitor.send(Reset).await?;
    log::info!(
        "event=metrics_reset total_before={}",
        before.totals.total_acquisitions
    );
    Ok(ok(ResetAnswer {
        reset: true,
        previous: LiveMetrics::from(&before),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatisticsQuery {
    #[serde(default)]
    days: Option<String>,
    #[serde(default)]
    site_name: Option<String>,
}

/// Days of history in a report by default, and at most.
const DEFAULT_DAYS: u32 = 7;
const MAX_REPORT_DAYS: u32 = 90;

/// The history of the last `days` days (1–90), computed in SQL, with the live metrics.
#[utoipa::path(
    get,
    path = "/api/v1/automation/performance/statistics",
    operation_id = "statistics",
    tag = "performance",
    params(
        ("days" = Option<u32>, Query, description = "1 to 90, default 7"),
        ("site_name" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "period, summary, status_breakdown, site_breakdown, account_breakdown, daily_trend, real_time_metrics", body = super::answer::Answer<StatisticsAnswer>),
        (status = 400, description = "Bad input", body = ErrorBody),
    ),
)]
pub async fn statistics(
    state: web::Data<AppState>,
    query: web::Query<StatisticsQuery>,
) -> Result<HttpResponse, Error> {
    let query = query.into_inner();
    let days = match &query.days {
        Some(days) => super::history::checked_days(days, MAX_REPORT_DAYS)?,
        None => DEFAULT_DAYS,
    };
    let site = query.site_name.filter(|s| !s.is_empty());
    if let Some(site) = &site {
        validate_site_name("site_name", site)?;
    }
    let report = state
        .pool
        .run(move |conn| crate::db::statistics::report(conn, days, site.as_deref()))
        .await?;
    let live = state.actors.monitor.send(Snapshot).await?;
    Ok(ok(StatisticsAnswer {
        report,
        real_time_metrics: LiveMetrics::from(&live),
    }))
}

/// The report from the history, with the live metrics (not from the database).
#[derive(Debug, Serialize, ToSchema)]
pub struct StatisticsAnswer {
    #[serde(flatten)]
    pub report: crate::db::statistics::StatisticsReport,
    pub real_time_metrics: LiveMetrics,
}

/// Prometheus text exposition (OpenMetrics).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "prometheusMetrics",
    tag = "metrics",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"),
    ),
)]
pub async fn prometheus(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.actors.metrics.encode())
}

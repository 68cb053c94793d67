//! Live metrics (`GET /performance/metrics`, `POST /performance/metrics/reset`), statistics
//! from the history (`GET /performance/statistics`), and the Prometheus exposition
//! (`GET /metrics`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::answer::ok;
use super::answer::ErrorBody;
use super::state::AppState;
use crate::actors::history::Statistics;
use crate::actors::monitor::{Counters, MetricsSnapshot, Reset, Snapshot};
use crate::config::validate_site_name;
use crate::error::Error;

fn counters_json(c: &Counters) -> Value {
    json!({
        "total_acquisitions": c.total_acquisitions,
        "successful_acquisitions": c.successful_acquisitions,
        "failed_acquisitions": c.failed_acquisitions,
        "success_rate": c.success_rate(),
        "avg_duration": c.avg_duration(),
        "avg_login_duration": c.avg_login_duration(),
        "timeout_count": c.timeout_count,
        "network_error_count": c.network_error_count,
        "captcha_error_count": c.captcha_error_count,
        "credential_error_count": c.credential_error_count,
        "concurrent_acquisitions": c.concurrent_acquisitions,
        "timeout_rate": c.timeout_rate(),
        "rejected_acquisitions": c.rejected_acquisitions,
        "rejections": crate::outcome::RejectionReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), json!(c.rejections.get(r).copied().unwrap_or(0))))
            .collect::<serde_json::Map<String, Value>>(),
    })
}

/// The SPEC's metrics object: totals, per site, cache, percentiles.
pub fn snapshot_json(snapshot: &MetricsSnapshot) -> Value {
    let mut data = counters_json(&snapshot.totals);
    data["cache_hit_rate"] = json!(snapshot.cache_hit_rate());
    let [p50, p95, p99] = snapshot.percentiles;
    data["duration_percentiles"] = json!({"p50": p50, "p95": p95, "p99": p99});
    let [l50, l95, l99] = snapshot.login_percentiles;
    data["login_duration_percentiles"] = json!({"p50": l50, "p95": l95, "p99": l99});
    data["sites"] = snapshot
        .sites
        .iter()
        .map(|(site, c)| (site.clone(), counters_json(c)))
        .collect();
    data["cache"] = snapshot
        .cache
        .iter()
        .map(|(kind, c)| ((*kind).to_string(), json!({"hits": c.hits, "misses": c.misses, "errors": c.errors, "hit_rate": c.hit_rate()})))
        .collect();
    data["uptime_seconds"] = json!(snapshot.uptime_seconds);
    data
}

/// Live metrics.
#[utoipa::path(
    get,
    path = "/api/v1/automation/performance/metrics",
    operation_id = "liveMetrics",
    tag = "performance",
    responses(
        (status = 200, description = "Live metrics, per site, cache, percentiles", body = super::schemas::Answer<super::schemas::LiveMetrics>),
    ),
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let snapshot = state.actors.monitor.send(Snapshot).await?;
    Ok(ok(snapshot_json(&snapshot)))
}

/// Zeroes the live counters; answers with the snapshot taken just before.
#[utoipa::path(
    post,
    path = "/api/v1/automation/performance/metrics/reset",
    operation_id = "resetMetrics",
    tag = "performance",
    responses(
        (status = 200, description = "{reset, previous}", body = super::schemas::Answer<super::schemas::ResetAnswer>),
    ),
)]
pub async fn reset(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let before = state.actors.monitor.send(Reset).await?;
    log::info!(
        "event=metrics_reset total_before={}",
        before.totals.total_acquisitions
    );
    Ok(ok(
        json!({"reset": true, "previous": snapshot_json(&before)}),
    ))
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
        (status = 200, description = "period, summary, status_breakdown, site_breakdown, account_breakdown, daily_trend, real_time_metrics", body = super::schemas::Answer<super::schemas::StatisticsAnswer>),
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
    let mut report = state
        .actors
        .history
        .send(Statistics { days, site })
        .await??;
    let live = state.actors.monitor.send(Snapshot).await?;
    report.real_time_metrics = Some(snapshot_json(&live));
    Ok(ok(report))
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

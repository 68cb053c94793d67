//! The alert vocabulary and the threshold rules: [`Alert`], [`Severity`], the [`HealthLevel`]
//! they add up to, and [`evaluate`], which checks a metrics snapshot against `[alerts]`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::cache::CacheKind;
use crate::config::AlertsConfig;
use crate::watch::monitor::MetricsSnapshot;

/// Rate-based alerts wait for this many finished acquisitions, so one early failure does not
/// page anyone.
pub(super) const MIN_ACQUISITIONS_FOR_RATES: u64 = 5;
/// The cache-hit alert waits for this many token lookups.
pub(super) const MIN_LOOKUPS_FOR_HIT_RATE: u64 = 20;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// The severity [`Severity::as_str`] wrote, read back (a stored alert transition).
    pub fn parse(text: &str) -> Option<Severity> {
        [Severity::Low, Severity::Medium, Severity::High]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    /// `low_success_rate`, `site_unavailable`, `database_unreachable`, …
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: Cow<'static, str>,
    pub message: String,
    pub severity: Severity,
    pub value: f64,
    pub threshold: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthLevel {
    Healthy,
    Warning,
    Degraded,
    Unhealthy,
}

impl HealthLevel {
    pub fn from_alerts(alerts: &[Alert]) -> HealthLevel {
        match alerts.iter().map(|a| a.severity).max() {
            None => HealthLevel::Healthy,
            Some(Severity::Low) => HealthLevel::Warning,
            Some(Severity::Medium) => HealthLevel::Degraded,
            Some(Severity::High) => HealthLevel::Unhealthy,
        }
    }
}

/// Threshold checks over a metrics snapshot (the component checks are added by [`Health`](super::alert::Health)).
pub fn evaluate(metrics: &MetricsSnapshot, thresholds: &AlertsConfig) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let totals = &metrics.totals;
    let mut check =
        |fires: bool, kind: &'static str, severity, value: f64, threshold: f64, message: String| {
            if fires {
                alerts.push(Alert {
                    kind: kind.into(),
                    message,
                    severity,
                    value,
                    threshold,
                });
            }
        };
    let enough = totals.total_acquisitions >= MIN_ACQUISITIONS_FOR_RATES;
    let success = totals.success_rate();
    check(
        enough && success < thresholds.min_success_rate,
        "low_success_rate",
        Severity::High,
        success,
        thresholds.min_success_rate,
        format!(
            "success rate {success:.1}% is below {}%",
            thresholds.min_success_rate
        ),
    );
    let timeouts = totals.timeout_rate();
    check(
        enough && timeouts > thresholds.max_timeout_rate,
        "high_timeout_rate",
        Severity::Medium,
        timeouts,
        thresholds.max_timeout_rate,
        format!(
            "timeout rate {timeouts:.1}% is above {}%",
            thresholds.max_timeout_rate
        ),
    );
    let avg = totals.avg_duration();
    check(
        enough && avg > thresholds.max_avg_duration,
        "high_avg_duration",
        Severity::Medium,
        avg,
        thresholds.max_avg_duration,
        format!(
            "average acquisition takes {avg:.1}s, above {}s",
            thresholds.max_avg_duration
        ),
    );
    let running = totals.concurrent_acquisitions as f64;
    let max_running = f64::from(thresholds.max_concurrent_acquisitions);
    check(
        running > max_running,
        "high_concurrency",
        Severity::Medium,
        running,
        max_running,
        format!("{running} acquisitions running at once, above {max_running}"),
    );
    if let Some(token) = metrics.cache.get(&CacheKind::Token) {
        let hit_rate = token.hit_rate().unwrap_or(100.0);
        check(
            token.hits + token.misses >= MIN_LOOKUPS_FOR_HIT_RATE
                && hit_rate < thresholds.min_cache_hit_rate,
            "low_cache_hit_rate",
            Severity::Low,
            hit_rate,
            thresholds.min_cache_hit_rate,
            format!(
                "token cache hit rate {hit_rate:.1}% is below {}%",
                thresholds.min_cache_hit_rate
            ),
        );
    }
    alerts
}

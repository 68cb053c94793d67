//! `AlertActor`: turns live metrics and component checks into a health level and alerts.
//!
//! Messages: [`Health`] (checks the database, asks `CacheActor` for the cache backend,
//! `MonitorActor` for the metrics and the broker for the sites, then evaluates the `[alerts]`
//! thresholds),
//! [`Evaluate`] (the same on a timer, logging the transitions), [`AlertHistory`].
//! The worst severity decides the level: high → unhealthy, medium → degraded, low → warning.
//! Each firing/resolved transition is POSTed to the webhook, and kept (`alert_history`,
//! [`AlertHistory`]): stored in the database, so that it survives a restart.
//!
//! It is built last, once what it watches exists: the pool, the cache, the monitor, the
//! broker and the webhook are given to [`AlertActor::new`].
//!
//! The rules themselves are in [`super::alert_rules`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::alert_history::{AlertHistoryLog, AlertTransition, KEEP, MAX_TRANSITIONS};
use super::alert_rules::MIN_ACQUISITIONS_FOR_RATES;
pub use super::alert_rules::{evaluate, Alert, HealthLevel, Severity};
use super::cache::{ask_health, CacheActor};
pub use super::components::HealthComponents;
use super::components::{Check, CheckStatus, NoDetails};
use crate::broker::{Broker, SiteReport};
use crate::config::{seconds, AlertsConfig};
use crate::db::Pool;
use crate::lifecycle::webhook::Webhook;
use crate::watch::monitor::{MetricsSnapshot, MonitorActor, Snapshot};

pub struct AlertActor {
    thresholds: AlertsConfig,
    /// Asked for the `cache` component of the health.
    cache: Addr<CacheActor>,
    monitor: Addr<MonitorActor>,
    /// The database: checked for health, and where the transitions are kept.
    pool: Pool,
    /// The pipeline: whether each site can serve a login.
    broker: Broker,
    /// Token requests and rejections counted at the last evaluation: the rejection rate is
    /// taken over the window since.
    window: RequestCounts,
    /// Alerts firing now, and when each was last logged.
    firing: HashMap<Cow<'static, str>, Instant>,
    /// The last day's transitions, for the dashboard.
    history_log: AlertHistoryLog,
    /// Where transitions are POSTed (`[notify] webhook_url`); a no-op without one.
    webhook: Webhook,
}

/// Requests (token lookups) and rejections since start (or the last metrics reset).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestCounts {
    requests: u64,
    rejected: u64,
}

impl RequestCounts {
    fn of(metrics: &MetricsSnapshot) -> RequestCounts {
        let token = metrics
            .cache
            .get(&crate::cache::CacheKind::Token)
            .copied()
            .unwrap_or_default();
        RequestCounts {
            requests: token.hits + token.misses,
            rejected: metrics.totals.rejected_acquisitions,
        }
    }

    /// Percent of the requests since `before` that were rejected, with how many requests;
    /// a reset in between starts the window again.
    fn rejection_rate(self, before: RequestCounts) -> (f64, u64) {
        let (requests, rejected) =
            if self.requests < before.requests || self.rejected < before.rejected {
                (self.requests, self.rejected)
            } else {
                (
                    self.requests - before.requests,
                    self.rejected - before.rejected,
                )
            };
        if requests == 0 {
            return (0.0, 0);
        }
        (
            (rejected as f64 * 100.0 / requests as f64).min(100.0),
            requests,
        )
    }
}

/// The last day's alert transitions, newest first: the stored ones, or this process's own
/// while the database cannot be read (logged).
#[derive(Message)]
#[rtype(result = "Vec<AlertTransition>")]
pub struct AlertHistory;

impl Handler<AlertHistory> for AlertActor {
    type Result = ResponseFuture<Vec<AlertTransition>>;

    fn handle(&mut self, _: AlertHistory, _: &mut Context<Self>) -> Self::Result {
        let in_memory = self.history_log.recent(Utc::now());
        let since = (Utc::now() - KEEP).naive_utc();
        let pool = self.pool.clone();
        Box::pin(async move {
            let stored = pool
                .run(move |conn| crate::db::alerts::since(conn, since, MAX_TRANSITIONS as i64))
                .await;
            match stored {
                Ok(rows) => rows.into_iter().map(AlertTransition::from_row).collect(),
                Err(e) => {
                    log::warn!("event=alert_history_unreadable fallback=in_process error=\"{e}\"");
                    in_memory
                }
            }
        })
    }
}

/// The alerts about sites that cannot serve a login (SPEC §11), and the rejection rate.
fn site_alerts(
    sites: &[SiteReport],
    rejection: (f64, u64),
    thresholds: &AlertsConfig,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let names = |status: &str| -> Vec<&str> {
        sites
            .iter()
            .filter(|s| s.status == status && s.accounts > 0)
            .map(|s| s.name.as_str())
            .collect()
    };
    let stuck = names("no_accounts");
    if !stuck.is_empty() {
        alerts.push(Alert {
            kind: "no_available_account".into(),
            message: format!(
                "no usable account (all blacklisted, cooling down or inactive) for: {}",
                stuck.join(", ")
            ),
            severity: Severity::High,
            value: stuck.len() as f64,
            threshold: 0.0,
        });
    }
    // A site paused for a reason (its portal changed, its program cannot run) has an alert
    // of its own that says why, for as long as the pause lasts.
    for (kind, sites) in [
        (
            "site_protocol_changed",
            paused_for(sites, "site_protocol_changed"),
        ),
        (
            "site_misconfigured",
            paused_for(sites, "site_misconfigured"),
        ),
    ] {
        if sites.is_empty() {
            continue;
        }
        alerts.push(Alert {
            kind: kind.into(),
            message: sites
                .iter()
                .map(|s| s.circuit.message.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" | "),
            severity: Severity::High,
            value: sites.len() as f64,
            threshold: 0.0,
        });
    }
    let paused: Vec<&str> = sites
        .iter()
        .filter(|s| s.status == "circuit_open" && s.circuit.reason.is_none())
        .map(|s| s.name.as_str())
        .collect();
    if !paused.is_empty() {
        alerts.push(Alert {
            kind: "site_unavailable".into(),
            message: format!("circuit open, logins paused, for: {}", paused.join(", ")),
            severity: Severity::High,
            value: paused.len() as f64,
            threshold: 0.0,
        });
    }
    let (rate, requests) = rejection;
    if requests >= MIN_ACQUISITIONS_FOR_RATES && rate > thresholds.max_rejection_rate {
        alerts.push(Alert {
            kind: "high_rejection_rate".into(),
            message: format!(
                "{rate:.1}% of the last {requests} requests were rejected, above {}%",
                thresholds.max_rejection_rate
            ),
            severity: Severity::Medium,
            value: rate,
            threshold: thresholds.max_rejection_rate,
        });
    }
    alerts
}

/// The sites paused for `reason` (open or waiting for their probe).
fn paused_for<'a>(sites: &'a [SiteReport], reason: &str) -> Vec<&'a SiteReport> {
    sites
        .iter()
        .filter(|s| s.circuit.reason.as_deref() == Some(reason))
        .collect()
}

impl AlertActor {
    pub fn new(
        thresholds: AlertsConfig,
        cache: Addr<CacheActor>,
        monitor: Addr<MonitorActor>,
        pool: Pool,
        broker: Broker,
        webhook: Webhook,
    ) -> AlertActor {
        AlertActor {
            thresholds,
            cache,
            monitor,
            pool,
            broker,
            window: RequestCounts::default(),
            firing: HashMap::new(),
            history_log: Default::default(),
            webhook,
        }
    }

    /// Stores one transition, in the background; a failure is logged (the in-memory log
    /// still has it).
    fn store(&self, entry: AlertTransition) {
        let (pool, row) = (self.pool.clone(), entry.to_row());
        actix::spawn(async move {
            if let Err(e) = pool
                .run(move |conn| crate::db::alerts::insert(conn, &row))
                .await
            {
                log::warn!(
                    "event=alert_transition_not_stored type={} error=\"{e}\"",
                    entry.kind
                );
            }
        });
    }

    /// Logs each alert that starts firing (again after `repeat_interval` while it lasts) and
    /// each that stops.
    fn transitions(&mut self, alerts: &[Alert]) {
        let repeat = seconds(self.thresholds.repeat_interval);
        for alert in alerts {
            let due = self
                .firing
                .get(&alert.kind)
                .is_none_or(|last| last.elapsed() >= repeat);
            if due {
                log::warn!(
                    "ALERT firing type={} severity={} value={:.2} threshold={} message=\"{}\"",
                    alert.kind,
                    alert.severity.as_str(),
                    alert.value,
                    alert.threshold,
                    alert.message.replace('"', "'")
                );
                if !self.firing.contains_key(&alert.kind) {
                    let entry = self.history_log.firing(alert);
                    self.store(entry);
                }
                self.webhook.alert_firing(&alert.kind, alert);
                self.firing.insert(alert.kind.clone(), Instant::now());
            }
        }
        let resolved: Vec<Cow<'static, str>> = self
            .firing
            .keys()
            .filter(|kind| !alerts.iter().any(|a| a.kind == **kind))
            .cloned()
            .collect();
        for kind in resolved {
            self.firing.remove(&kind);
            log::info!("ALERT resolved type={kind}");
            let entry = self.history_log.resolved(&kind);
            self.store(entry);
            self.webhook.alert_resolved(&kind);
        }
    }
}

impl Actor for AlertActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(seconds(self.thresholds.evaluate_interval), |_, ctx| {
            ctx.address().do_send(Evaluate);
        });
    }
}

/// Checks the thresholds and components now and logs the transitions (the timer sends it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evaluate;

impl Handler<Evaluate> for AlertActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Evaluate, ctx: &mut Context<Self>) -> Self::Result {
        let assessment = ctx.address().send(Health);
        Box::pin(
            assessment
                .into_actor(self)
                .map(|report, actor, _| match report {
                    Ok(report) => {
                        actor.transitions(&report.alerts);
                        actor.window = report.window;
                    }
                    // No transition is logged this round: say so, or alerts would seem quiet.
                    Err(e) => log::warn!(
                        "event=health_evaluation_failed error=\"{e}\" transitions=skipped"
                    ),
                }),
        )
    }
}

#[derive(Message)]
#[rtype(result = "HealthReport")]
pub struct Health;

/// `GET /performance/health`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthReport {
    pub status: HealthLevel,
    pub timestamp: DateTime<Utc>,
    pub metrics: HealthMetrics,
    pub alerts: Vec<Alert>,
    /// The `[alerts]` thresholds.
    pub thresholds: AlertsConfig,
    /// database, cache, monitor, sites, slots, history, secret_key: each with its `status`.
    pub components: HealthComponents,
    /// False when the database cannot be reached: the one case answered with 503.
    #[serde(skip)]
    pub database_up: bool,
    /// The request counts this report was taken at (the next rejection window starts here).
    #[serde(skip)]
    pub window: RequestCounts,
}

impl Handler<Health> for AlertActor {
    type Result = ResponseFuture<HealthReport>;

    fn handle(&mut self, _: Health, _: &mut Context<Self>) -> Self::Result {
        let (cache, monitor) = (self.cache.clone(), self.monitor.clone());
        let pool = self.pool.clone();
        let thresholds = self.thresholds.clone();
        let (broker, window) = (self.broker.clone(), self.window);
        Box::pin(async move {
            // The cache first: a Redis silent this moment is found out within the cache's
            // health wait, so that the sites' reads that follow do not wait on it.
            let cache_state = ask_health(&cache).await;
            let (database, metrics, sites) = tokio::join!(
                crate::db::status::check(&pool),
                monitor.send(Snapshot),
                broker.site_reports()
            );
            let (metrics, mut alerts, monitor_component) = metrics_or_alert(metrics, &thresholds);
            let now = RequestCounts::of(&metrics);
            alerts.extend(site_alerts(&sites, now.rejection_rate(window), &thresholds));
            let sites_component = sites.into_iter().map(|s| (s.name.clone(), s)).collect();
            let database_up = database.is_ok();
            let database_component = component_or_alert(
                database,
                &mut alerts,
                ("database_unreachable", Severity::High, CheckStatus::Down),
            );
            let cache_component = component_or_alert(
                cache_state,
                &mut alerts,
                (
                    "cache_backend_unreachable",
                    Severity::Medium,
                    CheckStatus::Degraded,
                ),
            );
            HealthReport {
                status: HealthLevel::from_alerts(&alerts),
                timestamp: Utc::now(),
                metrics: summary(&metrics),
                alerts,
                thresholds,
                components: HealthComponents {
                    database: database_component,
                    cache: cache_component,
                    monitor: monitor_component,
                    sites: sites_component,
                    slots: None,
                    history: None,
                    redis: None,
                    secret_key: None,
                },
                database_up,
                window: now,
            }
        })
    }
}

/// A component's check: `up` with its details, or an alert (kind, severity) and the state
/// the component is reported in.
fn component_or_alert<T>(
    check: crate::error::Result<T>,
    alerts: &mut Vec<Alert>,
    (kind, severity, state): (&'static str, Severity, CheckStatus),
) -> Check<T> {
    match check {
        Ok(details) => Check::up(Some(details)),
        Err(e) => {
            alerts.push(Alert {
                kind: kind.into(),
                message: e.to_string(),
                severity,
                value: 0.0,
                threshold: 1.0,
            });
            Check::failed(state, e.to_string())
        }
    }
}

/// The metrics `/health` shows: a summary of the live metrics (all of them are at
/// `/performance/metrics`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthMetrics {
    pub total_acquisitions: u64,
    /// Percent.
    pub success_rate: f64,
    /// Seconds.
    pub avg_duration: f64,
    /// Percent.
    pub timeout_rate: f64,
    pub concurrent_acquisitions: u64,
    /// Percent; `null` before the first token lookup.
    pub cache_hit_rate: Option<f64>,
    /// Requests refused before any login ran (SPEC §11).
    pub rejected_acquisitions: u64,
    pub uptime_seconds: f64,
}

fn summary(metrics: &MetricsSnapshot) -> HealthMetrics {
    let totals = &metrics.totals;
    HealthMetrics {
        total_acquisitions: totals.total_acquisitions,
        success_rate: totals.success_rate(),
        avg_duration: totals.avg_duration(),
        timeout_rate: totals.timeout_rate(),
        concurrent_acquisitions: totals.concurrent_acquisitions,
        cache_hit_rate: metrics.cache_hit_rate(),
        rejected_acquisitions: totals.rejected_acquisitions,
        uptime_seconds: metrics.uptime_seconds,
    }
}

/// The live metrics and their threshold alerts, with the `monitor` component. When
/// `MonitorActor` does not answer, the metrics are unknown: a high alert and a `down`
/// component say why, instead of empty metrics reading as healthy.
fn metrics_or_alert(
    answer: Result<MetricsSnapshot, MailboxError>,
    thresholds: &AlertsConfig,
) -> (MetricsSnapshot, Vec<Alert>, Check<NoDetails>) {
    match answer {
        Ok(metrics) => {
            let alerts = evaluate(&metrics, thresholds);
            (metrics, alerts, Check::up(None))
        }
        Err(e) => {
            let message =
                format!("the metrics actor does not answer ({e}): live metrics are unknown");
            let alert = Alert {
                kind: "monitor_unreachable".into(),
                message: message.clone(),
                severity: Severity::High,
                value: 0.0,
                threshold: 1.0,
            };
            let component = Check::failed(CheckStatus::Down, message);
            (MetricsSnapshot::default(), vec![alert], component)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::outcome::AcquisitionStatus;
    use crate::watch::monitor::{AcquisitionFinished, AcquisitionStarted};

    #[actix_rt::test]
    async fn failing_logins_raise_a_high_alert() {
        let counters: std::sync::Arc<crate::cache::CacheCounters> = Default::default();
        let exposition = std::sync::Arc::new(crate::watch::metrics::Metrics::new(counters.clone()));
        let monitor = MonitorActor::new(counters, exposition).start();
        for i in 0..10 {
            let status = if i < 3 {
                AcquisitionStatus::Success
            } else {
                AcquisitionStatus::CredentialError
            };
            monitor.do_send(AcquisitionStarted { site: "s".into() });
            monitor.do_send(AcquisitionFinished {
                site: "s".into(),
                status,
                duration: 1.0,
                login_duration: None,
            });
        }
        let metrics = monitor.send(Snapshot).await.unwrap();
        let alerts = evaluate(&metrics, &AlertsConfig::default());
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, "low_success_rate");
        assert_eq!(HealthLevel::from_alerts(&alerts), HealthLevel::Unhealthy);
        assert_eq!(HealthLevel::from_alerts(&[]), HealthLevel::Healthy);
    }

    #[actix_rt::test]
    async fn a_dead_monitor_is_not_healthy() {
        let counters: std::sync::Arc<crate::cache::CacheCounters> = Default::default();
        let exposition = std::sync::Arc::new(crate::watch::metrics::Metrics::new(counters.clone()));
        let monitor = MonitorActor::create(|ctx| {
            ctx.stop();
            MonitorActor::new(counters, exposition)
        });
        let answer = monitor.send(Snapshot).await;
        assert!(answer.is_err(), "the stopped monitor answered");
        let (_, alerts, component) = metrics_or_alert(answer, &AlertsConfig::default());
        assert_eq!(HealthLevel::from_alerts(&alerts), HealthLevel::Unhealthy);
        assert_eq!(alerts[0].kind, "monitor_unreachable");
        assert_eq!(component.status, CheckStatus::Down, "{component:?}");
        assert!(component.error.is_some_and(|e| !e.is_empty()));
    }
}

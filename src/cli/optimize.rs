//! `tokend optimize`: the maintenance steps, run through the daemon's API in a fixed order,
//! each printing its result; the command fails (exit 1) when any step failed, after running
//! the others.

use serde::de::DeserializeOwned;
use serde_json::json;

use crate::actors::alert::{HealthLevel, HealthReport};
use crate::api::history::HistoryCleanupAnswer;
use crate::api::metrics::ResetAnswer;
use crate::api::optimize::OptimizeAnswer;
use crate::broker::WarmUp;
use crate::cli::client::{self, wire_text};
use crate::cli::terminal::printable;
use crate::config::Config;
use crate::error::{Error, Result};

const PERF: &str = "/api/v1/automation/performance";

/// The steps of `tokend optimize`, as the command line gives them.
#[derive(Debug, clap::Args)]
pub struct OptimizeArgs {
    /// Check health (fails when the daemon says `unhealthy`).
    #[arg(long)]
    pub health_check: bool,
    /// Delete history older than N days (1 to 36500).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::db::history::MAX_DAYS)))]
    pub cleanup_days: Option<u32>,
    /// Load these sites' credentials, account stats and blacklist into the cache.
    #[arg(long, value_name = "SITE", num_args = 1..)]
    pub warm_cache: Vec<String>,
    /// Recommend concurrency limits from usage and history, and apply them.
    #[arg(long)]
    pub optimize_concurrency: bool,
    /// Zero the live metrics (after printing them).
    #[arg(long)]
    pub reset_metrics: bool,
    /// The daemon's address (default: http://<server.listen>).
    #[arg(long)]
    pub url: Option<String>,
    /// Seconds to keep trying while the daemon refuses connections (it may be starting).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub wait: f64,
}

/// Runs the asked steps; `Err` names how many failed.
pub async fn run(config: &Config, args: &OptimizeArgs) -> Result<()> {
    if !(args.health_check
        || args.cleanup_days.is_some()
        || !args.warm_cache.is_empty()
        || args.optimize_concurrency
        || args.reset_metrics)
    {
        return Err(Error::invalid("optimize", "name at least one step: --health-check, --cleanup-days N, --warm-cache SITE, --optimize-concurrency, --reset-metrics"));
    }
    let mut run = Maintenance {
        config,
        url: client::Endpoint::new(args.url.as_deref(), args.wait),
        steps: Vec::new(),
    };
    if args.health_check {
        run.health_check().await;
    }
    if let Some(days) = args.cleanup_days {
        run.clean_up_history(days).await;
    }
    for site in &args.warm_cache {
        run.warm_cache(site).await;
    }
    if args.optimize_concurrency {
        run.optimize_concurrency().await;
    }
    if args.reset_metrics {
        run.reset_metrics().await;
    }
    run.report()
}

/// One run of `tokend optimize`: the steps, in order, each with its result line.
struct Maintenance<'a> {
    config: &'a Config,
    url: client::Endpoint,
    steps: Vec<(String, Result<String>)>,
}

impl Maintenance<'_> {
    async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        client::post(self.config, &self.url, path, &json!({})).await
    }

    /// Fails when the daemon says `unhealthy`.
    async fn health_check(&mut self) {
        let result = client::get(self.config, &self.url, &format!("{PERF}/health"))
            .await
            .and_then(|report: HealthReport| {
                let status = wire_text(&report.status);
                let line = format!("status {status}; alerts: {}", describe_alerts(&report));
                if report.status == HealthLevel::Unhealthy {
                    Err(Error::Daemon(line))
                } else {
                    Ok(line)
                }
            });
        self.steps.push(("health check".into(), result));
    }

    async fn clean_up_history(&mut self, days: u32) {
        let result = self
            .post(&format!("/api/v1/automation/history/cleanup?days={days}"))
            .await
            .map(|d: HistoryCleanupAnswer| {
                format!("deleted {} history rows older than {days} days", d.deleted)
            });
        self.steps.push(("history cleanup".into(), result));
    }

    async fn warm_cache(&mut self, site: &str) {
        let result = self
            .post(&format!("{PERF}/cache/warm-up?site_name={site}"))
            .await
            .map(|d: WarmUp| {
                format!(
                    "{} credentials, {} blacklisted",
                    d.credentials_loaded,
                    d.blacklisted.len()
                )
            });
        self.steps.push((format!("warm cache {site}"), result));
    }

    async fn optimize_concurrency(&mut self) {
        let result = self
            .post(&format!("{PERF}/optimize-concurrency?apply=true"))
            .await
            .map(|d: OptimizeAnswer| describe_optimization(&d));
        self.steps.push(("optimize concurrency".into(), result));
    }

    async fn reset_metrics(&mut self) {
        let result = (self.post(&format!("{PERF}/metrics/reset")).await).map(|d: ResetAnswer| {
            format!(
                "reset; before: {} acquisitions, {:.1}% success",
                d.previous.totals.total_acquisitions, d.previous.totals.success_rate
            )
        });
        self.steps.push(("reset metrics".into(), result));
    }

    /// Prints one line per step; `Err` when any failed.
    fn report(self) -> Result<()> {
        let mut failed = 0;
        for (step, result) in &self.steps {
            match result {
                Ok(line) => println!("ok      {}: {}", printable(step), printable(line)),
                Err(e) => {
                    failed += 1;
                    println!("FAILED  {}: {}", printable(step), printable(&e.to_string()));
                }
            }
        }
        if failed > 0 {
            Err(Error::StepsFailed(failed))
        } else {
            Ok(())
        }
    }
}

/// `type (severity)` of each alert of a health answer, or `none`.
fn describe_alerts(health: &HealthReport) -> String {
    let alerts: Vec<String> = (health.alerts.iter())
        .map(|a| format!("{} ({})", a.kind, wire_text(&a.severity)))
        .collect();
    if alerts.is_empty() {
        "none".into()
    } else {
        alerts.join(", ")
    }
}

fn describe_optimization(data: &OptimizeAnswer) -> String {
    if data.recommendations.is_empty() {
        return format!(
            "limits {} fit the observed load",
            wire_text(&data.current_limits)
        );
    }
    let changes: Vec<String> = (data.recommendations.iter())
        .map(|r| {
            format!(
                "{} {} -> {} ({})",
                r.kind, r.current, r.recommended, r.reason
            )
        })
        .collect();
    format!("applied: {}", changes.join("; "))
}

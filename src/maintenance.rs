//! `tokend optimize`: the maintenance steps, run through the daemon's API in a fixed order,
//! each printing its result; the command fails (exit 1) when any step failed, after running
//! the others.

use serde_json::{json, Value};

use crate::client;
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
    let url = &client::Endpoint::new(args.url.as_deref(), args.wait);
    let mut steps: Vec<(String, Result<String>)> = Vec::new();
    if !(args.health_check
        || args.cleanup_days.is_some()
        || !args.warm_cache.is_empty()
        || args.optimize_concurrency
        || args.reset_metrics)
    {
        return Err(Error::invalid("optimize", "name at least one step: --health-check, --cleanup-days N, --warm-cache SITE, --optimize-concurrency, --reset-metrics"));
    }
    if args.health_check {
        let result = client::get(config, url, &format!("{PERF}/health"))
            .await
            .and_then(|data| {
                let status = data["status"].as_str().unwrap_or("unknown").to_string();
                let alerts: Vec<String> = data["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        format!(
                            "{} ({})",
                            a["type"].as_str().unwrap_or("?"),
                            a["severity"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                let line = format!(
                    "status {status}; alerts: {}",
                    if alerts.is_empty() {
                        "none".into()
                    } else {
                        alerts.join(", ")
                    }
                );
                if status == "unhealthy" {
                    Err(Error::Daemon(line))
                } else {
                    Ok(line)
                }
            });
        steps.push(("health check".into(), result));
    }
    if let Some(days) = args.cleanup_days {
        let result = client::post(
            config,
            url,
            &format!("/api/v1/automation/history/cleanup?days={days}"),
            &json!({}),
        )
        .await
        .map(|d| {
            format!(
                "deleted {} history rows older than {days} days",
                d["deleted"]
            )
        });
        steps.push(("history cleanup".into(), result));
    }
    for site in &args.warm_cache {
        let result = client::post(
            config,
            url,
            &format!("{PERF}/cache/warm-up?site_name={site}"),
            &json!({}),
        )
        .await
        .map(|d| {
            format!(
                "{} credentials, {} blacklisted",
                d["credentials_loaded"],
                d["blacklisted"].as_array().map_or(0, Vec::len)
            )
        });
        steps.push((format!("warm cache {site}"), result));
    }
    if args.optimize_concurrency {
        let result = client::post(
            config,
            url,
            &format!("{PERF}/optimize-concurrency?apply=true"),
            &json!({}),
        )
        .await
        .map(|d| describe_optimization(&d));
        steps.push(("optimize concurrency".into(), result));
    }
    if args.reset_metrics {
        let result = client::post(config, url, &format!("{PERF}/metrics/reset"), &json!({}))
            .await
            .map(|d| {
                format!(
                    "reset; before: {} acquisitions, {:.1}% success",
                    d["previous"]["total_acquisitions"],
                    d["previous"]["success_rate"].as_f64().unwrap_or(0.0)
                )
            });
        steps.push(("reset metrics".into(), result));
    }
    let mut failed = 0;
    for (step, result) in &steps {
        match result {
            Ok(line) => println!("ok      {step}: {line}"),
            Err(e) => {
                failed += 1;
                println!("FAILED  {step}: {e}");
            }
        }
    }
    if failed > 0 {
        Err(Error::StepsFailed(failed))
    } else {
        Ok(())
    }
}

fn describe_optimization(data: &Value) -> String {
    let recs = data["recommendations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if recs.is_empty() {
        return format!("limits {} fit the observed load", data["current_limits"]);
    }
    let changes: Vec<String> = recs
        .iter()
        .map(|r| {
            format!(
                "{} {} -> {} ({})",
                r["type"].as_str().unwrap_or("?"),
                r["current"],
                r["recommended"],
                r["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    format!("applied: {}", changes.join("; "))
}

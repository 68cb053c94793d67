//! The actors of tokend (SPEC §1), one per file, and [`Actors`], their addresses together.
//!
//! | actor | owns |
//! |---|---|
//! | [`CacheActor`] | the token cache and the other caches; backend `memory` or `redis` |
//! | [`ConcurrencyActor`] | login slots (global, per site, per account), the wait queue, leases |
//! | [`MonitorActor`] | live counters and duration samples, cache hit/miss counts |
//! | [`HistoryActor`] | the database; its blocking work runs on the pool's blocking threads |
//! | [`AlertActor`] | threshold checks, health level, alert log lines |

pub mod alert;
pub mod alert_history;
pub mod alert_rules;
pub mod cache;
pub mod components;
pub mod concurrency;
pub mod history;
pub mod monitor;

use std::sync::Arc;

use actix::{Actor, Addr};

pub use alert::AlertActor;
pub use cache::CacheActor;
pub use concurrency::ConcurrencyActor;
pub use history::HistoryActor;
pub use monitor::MonitorActor;

use crate::cache::TokenCache;
use crate::config::Config;
use crate::db::Pool;
use crate::watch::metrics::Metrics;

/// The running actors. Cheap to clone; handed to the HTTP handlers as `web::Data`.
#[derive(Clone)]
pub struct Actors {
    pub cache: Addr<CacheActor>,
    pub concurrency: Addr<ConcurrencyActor>,
    pub monitor: Addr<MonitorActor>,
    pub history: Addr<HistoryActor>,
    pub alert: Addr<AlertActor>,
    /// The batching way into `HistoryActor`.
    pub recorder: history::HistoryRecorder,
    /// The Prometheus exposition, fed by `MonitorActor`.
    pub metrics: Arc<Metrics>,
}

impl Actors {
    /// Starts every actor; must run inside an actix system.
    pub fn start(config: Arc<Config>, pool: Pool, cache: &TokenCache) -> Actors {
        let metrics = Arc::new(Metrics::new(cache.counters.clone()));
        let monitor = MonitorActor::new(cache.counters.clone(), metrics.clone()).start();
        let cache = CacheActor::new(cache).start();
        let concurrency = ConcurrencyActor::new(&config.concurrency).start();
        let history = HistoryActor::new(pool).start();
        let spool = crate::history::spool::Spool::new(&config.history.spool_file);
        let recorder = history::HistoryRecorder::start(history.clone(), spool);
        start_retention_job(history.clone(), config.history.retention_days);
        let alert = AlertActor::new(
            config.alerts.clone(),
            cache.clone(),
            monitor.clone(),
            history.clone(),
        )
        .start();
        Actors {
            cache,
            concurrency,
            monitor,
            history,
            alert,
            recorder,
            metrics,
        }
    }
}

/// First run of the retention job after start, then every [`RETENTION_EVERY`].
const RETENTION_FIRST: std::time::Duration = std::time::Duration::from_secs(60);
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Deletes history rows older than `retention_days`, daily.
fn start_retention_job(history: Addr<HistoryActor>, days: u32) {
    actix::spawn(async move {
        tokio::time::sleep(RETENTION_FIRST).await;
        let mut every = tokio::time::interval(RETENTION_EVERY);
        loop {
            every.tick().await;
            match history.send(history::Cleanup { days }).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => log::warn!("event=history_retention_failed error=\"{e}\""),
                Err(_) => return,
            }
        }
    });
}

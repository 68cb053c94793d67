//! [`CacheActor`] (the cache's upkeep and health), [`AlertActor`] (with its rules and its
//! transitions), and [`Actors`], the addresses of tokend's five actix actors (SPEC §1)
//! together. Each actor lives with the part it serves:
//!
//! | actor | where | owns | asked by (messages) |
//! |---|---|---|---|
//! | [`CacheActor`] | [`cache`] | the cache's sweep (memory backend) and Redis validity probe (its timers; the login slots follow the probe), the health question | `AlertActor` for `/health` (`CacheHealth`) |
//! | [`ConcurrencyActor`] | [`crate::slots::concurrency`] | login slots (global, per site, per account), the wait queue, leases | `Slots` (`AcquireSlot`, `ReleaseSlot`, `RenewLease`, `Usage`, `ReclaimExpired`, `Limits`, `SetLimits`), adaptive limits (`SetSiteLimit`) |
//! | `MonitorActor` | `watch::monitor` | live counters, duration samples, the last hour's timeline | the pipeline (`AcquisitionStarted`, `AcquisitionFinished`, `Rejected`), the API and alerts (`Snapshot`, `Reset`, `GetTimeline`) |
//! | [`HistoryActor`](crate::history::HistoryActor) | [`crate::history`] | rows on their way to SQL: the pending batch, the flushes waiting, the spool | the pipeline and the stop, through [`HistoryRecorder`] (`Record`, `Flush`) |
//! | [`AlertActor`] | [`alert`] | alerts firing, the rejection window, the last day's transitions | its timer (`Evaluate`), `/health` (`Health`), the timeline (`AlertHistory`) |
//!
//! The hot path does not wait on `CacheActor`: the pipeline reads the token store directly.
//! The queries on the stored history (statistics, pages, cleanup) are plain [`crate::db`]
//! functions run on the pool.
//!
//! `daemon::server` builds them in the order they need each other — monitor, history,
//! concurrency (then the slots), the cache actor over the cache and the slots, the broker,
//! alerts last — so nobody is handed a part after its start. This folder is the top of that
//! order: `CacheActor` serves the cache and the slots, `AlertActor` watches the broker, and
//! nothing the broker uses imports from here.

pub mod alert;
pub mod alert_history;
pub mod alert_rules;
pub mod cache;
pub mod components;

use std::sync::Arc;

use actix::Addr;

pub use alert::AlertActor;
pub use cache::CacheActor;

use crate::history::HistoryRecorder;
use crate::slots::concurrency::ConcurrencyActor;
use crate::watch::metrics::Metrics;
use crate::watch::monitor::MonitorActor;

/// The running actors. Cheap to clone; handed to the HTTP handlers as `web::Data`.
#[derive(Clone)]
pub struct Actors {
    pub cache: Addr<CacheActor>,
    pub concurrency: Addr<ConcurrencyActor>,
    pub monitor: Addr<MonitorActor>,
    /// The address of `HistoryActor`.
    pub history: HistoryRecorder,
    pub alert: Addr<AlertActor>,
    /// The Prometheus exposition, fed by `MonitorActor`.
    pub metrics: Arc<Metrics>,
}

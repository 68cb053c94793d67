//! [`AlertActor`] (with its rules and its transitions), and [`Actors`], the addresses of all
//! of tokend's actors (SPEC §1) together. Each actor lives with the part it serves:
//!
//! | actor | where | owns | messages |
//! |---|---|---|---|
//! | [`ConcurrencyActor`] | [`crate::slots::concurrency`] | login slots (global, per site, per account), the wait queue, leases | `AcquireSlot`, `ReleaseSlot`, `RenewLease`, `Usage`, `ReclaimExpired`, `Limits`, `SetLimits`, `SetSiteLimit` |
//! | `MonitorActor` | `watch::monitor` | live counters, duration samples, the last hour's timeline | `AcquisitionStarted`, `AcquisitionFinished`, `Rejected`, `Snapshot`, `Reset`, `GetTimeline` |
//! | [`HistoryActor`](crate::history::HistoryActor) | [`crate::history`] | rows on their way to SQL: the pending batch, the flushes waiting, the spool | a row, a flush (through [`HistoryRecorder`]) |
//! | [`AlertActor`] | [`alert`] | alerts firing, the rejection window, the last day's transitions | `Evaluate` (timer), `Health`, `AlertHistory` |
//!
//! The cache has no actor: the pipeline reads the store directly, and its sweep and Redis
//! probe are a task (`daemon::upkeep`). The queries on the stored history
//! (statistics, pages, cleanup) are plain [`crate::db`] functions run on the pool.
//!
//! `daemon::server` builds them in the order they need each other — monitor, history,
//! concurrency (then the slots and the broker over them), alerts last — so nobody is handed
//! a part after its start. This folder is the top of that order: `AlertActor` watches the
//! broker, and nothing the broker uses imports from here.

pub mod alert;
pub mod alert_history;
pub mod alert_rules;
pub mod cache;

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

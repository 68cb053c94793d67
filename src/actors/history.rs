//! `HistoryActor`: owns the database side of tokend (SPEC §1).
//!
//! Runs on a `SyncArbiter` (a few threads of its own), so that diesel's blocking calls never
//! hold up the async threads that serve HTTP.
//!
//! Messages: [`CheckDatabase`] (health: a round trip and its latency), [`RecordBatch`]
//! (insert history rows; a replayed `acquisition_id` adds nothing), [`Statistics`] (the
//! `/statistics` report, in SQL), [`Page`] (a page of history), [`Cleanup`] (delete rows
//! older than N days, in batches; also run daily by the retention job of [`super::Actors`]).
//!
//! Callers do not send rows one by one: they hand them to a [`HistoryRecorder`], whose task
//! gathers up to [`BATCH_ROWS`] rows or [`BATCH_WINDOW`] of time into one batch, and keeps a
//! batch the database refused until it can be written.

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::db::models::NewHistory;
use crate::db::Pool;
use crate::error::{Error, Result};
use crate::spool::Spool;

/// Most rows in one insert: 1000 rows of 19 columns stay under SQLite's limit of 32766
/// parameters per statement, and larger batches write faster.
pub const BATCH_ROWS: usize = 1000;
/// Longest a row waits for companions before its batch is written.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// Wait between attempts to write a batch the database refused.
const RETRY_AFTER: Duration = Duration::from_secs(5);

pub struct HistoryActor {
    pool: Pool,
}

impl Actor for HistoryActor {
    type Context = SyncContext<Self>;
}

impl HistoryActor {
    pub fn start(pool: Pool, threads: usize) -> Addr<HistoryActor> {
        SyncArbiter::start(threads, move || HistoryActor { pool: pool.clone() })
    }
}

/// Is the database reachable, and how fast does it answer?
#[derive(Message)]
#[rtype(result = "Result<DatabaseStatus>")]
pub struct CheckDatabase;

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseStatus {
    pub backend: &'static str,
    pub url: String,
    pub latency_ms: f64,
    pub pool_connections: u32,
    pub pool_idle: u32,
}

impl Handler<CheckDatabase> for HistoryActor {
    type Result = Result<DatabaseStatus>;

    fn handle(&mut self, _: CheckDatabase, _: &mut SyncContext<Self>) -> Self::Result {
        let started = Instant::now();
        self.pool.ping()?;
        let (pool_connections, pool_idle) = self.pool.state();
        Ok(DatabaseStatus {
            backend: self.pool.backend().name(),
            url: self.pool.display_url().to_string(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            pool_connections,
            pool_idle,
        })
    }
}

/// Inserts rows in one statement; returns how many were new.
#[derive(Message)]
#[rtype(result = "Result<usize>")]
pub struct RecordBatch(pub Vec<NewHistory>);

impl Handler<RecordBatch> for HistoryActor {
    type Result = Result<usize>;

    fn handle(
        &mut self,
        RecordBatch(rows): RecordBatch,
        _: &mut SyncContext<Self>,
    ) -> Self::Result {
        let mut conn = self.pool.get()?;
        crate::db::history::insert_batch(&mut conn, &rows)
    }
}

enum Entry {
    Row(Box<NewHistory>),
    Flush(oneshot::Sender<usize>),
}

/// The way into the history: cheap to clone, never blocks the caller.
#[derive(Clone)]
pub struct HistoryRecorder {
    sender: mpsc::UnboundedSender<Entry>,
}

impl HistoryRecorder {
    /// Starts the batching task; must run inside an actix system. Rows left in the spool by
    /// an earlier run are replayed first.
    pub fn start(history: Addr<HistoryActor>, spool: Spool) -> HistoryRecorder {
        let (sender, receiver) = mpsc::unbounded_channel();
        actix::spawn(batch_loop(history, spool, receiver));
        HistoryRecorder { sender }
    }

    pub fn record(&self, row: NewHistory) {
        if self.sender.send(Entry::Row(Box::new(row))).is_err() {
            log::error!("event=history_recorder_stopped");
        }
    }

    /// Writes everything recorded so far (and what waits in the spool) to the database;
    /// answers with the rows still waiting in the spool (0 when the database took them all).
    pub async fn flush(&self) -> usize {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Entry::Flush(done)).is_err() {
            return 0;
        }
        wait.await.unwrap_or(0)
    }
}

fn absorb(entry: Entry, pending: &mut Vec<NewHistory>, flushes: &mut Vec<oneshot::Sender<usize>>) {
    match entry {
        Entry::Row(row) => pending.push(*row),
        Entry::Flush(done) => flushes.push(done),
    }
}

/// Writes rows in batches; `Err` when the database refused one (nothing after it was tried).
async fn write(history: &Addr<HistoryActor>, rows: &[NewHistory]) -> Result<()> {
    for chunk in rows.chunks(BATCH_ROWS) {
        history.send(RecordBatch(chunk.to_vec())).await??;
    }
    Ok(())
}

/// Moves the spool's rows into the database; `true` when the spool is empty afterwards.
async fn replay(history: &Addr<HistoryActor>, spool: &Spool) -> bool {
    if spool.is_empty() {
        return true;
    }
    let rows = match spool.load() {
        Ok(rows) => rows,
        Err(e) => {
            log::error!("event=spool_unreadable error=\"{e}\"");
            return false;
        }
    };
    match write(history, &rows).await {
        Ok(()) => match spool.clear() {
            Ok(()) => {
                log::info!("event=spool_replayed rows={}", rows.len());
                true
            }
            Err(e) => {
                // The rows are in the database; a later replay of them adds nothing.
                log::error!("event=spool_not_cleared error=\"{e}\"");
                false
            }
        },
        Err(_) => false,
    }
}

async fn batch_loop(
    history: Addr<HistoryActor>,
    spool: Spool,
    mut receiver: mpsc::UnboundedReceiver<Entry>,
) {
    let mut pending: Vec<NewHistory> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<usize>> = Vec::new();
    let mut spooled = !replay(&history, &spool).await;
    let mut last_replay = Instant::now();
    loop {
        // Wait for an entry; while rows wait in the spool, wake up to replay them.
        let wait = if spooled {
            RETRY_AFTER
        } else {
            Duration::from_secs(3600)
        };
        match tokio::time::timeout(wait, receiver.recv()).await {
            Ok(Some(entry)) => absorb(entry, &mut pending, &mut flushes),
            Ok(None) => break,
            Err(_) => {}
        }
        // Gather more until the batch is full, a flush is asked for, or the window ends.
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while !pending.is_empty() && pending.len() < BATCH_ROWS && flushes.is_empty() {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(entry)) => absorb(entry, &mut pending, &mut flushes),
                Ok(None) | Err(_) => break,
            }
        }
        // While the spool holds rows, new rows join it, so the history keeps its order.
        if !pending.is_empty() {
            let written = if spooled {
                Err(Error::DatabaseUnavailable("spool not yet replayed".into()))
            } else {
                write(&history, &pending).await
            };
            if let Err(e) = written {
                match spool.append(&pending) {
                    Ok(()) => {
                        if !spooled {
                            log::warn!(
                                "event=history_spooled rows={} path={} error=\"{e}\"",
                                pending.len(),
                                spool.path().display()
                            );
                        }
                        spooled = true;
                        pending.clear();
                    }
                    // Kept in memory and tried again: nothing is dropped.
                    Err(spool_error) => log::error!(
                        "event=spool_write_failed rows={} error=\"{spool_error}\"",
                        pending.len()
                    ),
                }
            } else {
                pending.clear();
            }
        }
        if spooled && (!flushes.is_empty() || last_replay.elapsed() >= RETRY_AFTER) {
            last_replay = Instant::now();
            spooled = !replay(&history, &spool).await;
        }
        if !flushes.is_empty() {
            let waiting = if spooled {
                spool.load().map_or(0, |rows| rows.len())
            } else {
                0
            } + pending.len();
            for done in flushes.drain(..) {
                let _ = done.send(waiting);
            }
        }
    }
    if !pending.is_empty() {
        if let Err(e) = spool.append(&pending) {
            log::error!(
                "event=history_rows_lost rows={} error=\"{e}\"",
                pending.len()
            );
        }
    }
}
/// The `/statistics` report of the last `days` days.
#[derive(Message)]
#[rtype(result = "Result<serde_json::Value>")]
pub struct Statistics {
    pub days: u32,
    pub site: Option<String>,
}

impl Handler<Statistics> for HistoryActor {
    type Result = Result<serde_json::Value>;

    fn handle(&mut self, msg: Statistics, _: &mut SyncContext<Self>) -> Self::Result {
        let mut conn = self.pool.get()?;
        crate::db::statistics::report(&mut conn, msg.days, msg.site.as_deref())
    }
}

/// A page of history rows, newest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<crate::db::models::HistoryRow>>")]
pub struct Page(pub crate::db::history::HistoryFilter);

impl Handler<Page> for HistoryActor {
    type Result = Result<Vec<crate::db::models::HistoryRow>>;

    fn handle(&mut self, Page(filter): Page, _: &mut SyncContext<Self>) -> Self::Result {
        let mut conn = self.pool.get()?;
        crate::db::history::page(&mut conn, &filter)
    }
}

/// Deletes history rows older than `days` days; answers how many.
#[derive(Message)]
#[rtype(result = "Result<usize>")]
pub struct Cleanup {
    pub days: u32,
}

impl Handler<Cleanup> for HistoryActor {
    type Result = Result<usize>;

    fn handle(&mut self, msg: Cleanup, _: &mut SyncContext<Self>) -> Self::Result {
        let cutoff = chrono::Utc::now().naive_utc() - chrono::Duration::days(i64::from(msg.days));
        let mut conn = self.pool.get()?;
        let deleted = crate::db::history::delete_before(&mut conn, cutoff)?;
        log::info!("event=history_cleanup days={} deleted={deleted}", msg.days);
        Ok(deleted)
    }
}

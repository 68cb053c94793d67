//! `HistoryActor`: owns the database side of tokend (SPEC §1).
//!
//! Its blocking work (diesel) runs on the pool's blocking threads ([`Pool::run`], the one
//! road every database call takes), never on the async threads or the arbiter of the
//! actors; the actor itself only hands work out, so a slow query holds up nothing else. A
//! panic in that work (a bug, a value out of range) fails that one call with an error and is
//! logged: the history keeps serving.
//!
//! Messages: [`CheckDatabase`] (health: a round trip and its latency), [`RecordBatch`]
//! (insert history rows; a replayed `acquisition_id` adds nothing), [`Statistics`] (the
//! `/statistics` report, in SQL), [`Page`] (a page of history), [`Cleanup`] (delete rows
//! older than N days, in batches, and the alert transitions as old; also run daily by the
//! retention job of [`super::Actors`]), [`RecordAlert`] and [`AlertTransitions`] (the
//! stored alert transitions of `/alerts/history`).
//!
//! Callers do not send rows one by one: they hand them to a [`HistoryRecorder`], whose task
//! gathers up to [`BATCH_ROWS`] rows or [`BATCH_WINDOW`] of time into one batch, and keeps a
//! batch the database could not take (down, or no answer within [`WRITE_TIMEOUT`]) in the
//! spool until it can be written. The spool's file work (and its fsyncs) runs on the same
//! blocking pool as the database work, never on the arbiter of the actors. A batch the database refuses for its content is split in
//! halves until the refused rows stand alone; those go to the dead-letter file (named in a
//! log line and in `/health`), so that one bad row never blocks the spool.

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::alert_history::{AlertTransition, KEEP, MAX_TRANSITIONS};
use crate::db::models::NewHistory;
use crate::db::statistics::StatisticsReport;
use crate::db::{DbConnection, Pool};
use crate::error::{Error, Result};
use crate::history::spool::{DeadLetter, Spool};

/// Most rows in one insert: 1000 rows of 19 columns stay under SQLite's limit of 32766
/// parameters per statement, and larger batches write faster.
pub const BATCH_ROWS: usize = 1000;
/// Longest a row waits for companions before its batch is written.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// Wait between attempts to write a batch the database refused.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Longest wait for one batch write: a write that hangs (half-open connection) is given up
/// and its rows spooled, so that the flush at stop never outlasts its grace.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct HistoryActor {
    pool: Pool,
}

impl Actor for HistoryActor {
    type Context = Context<Self>;
}

impl HistoryActor {
    pub fn new(pool: Pool) -> HistoryActor {
        HistoryActor { pool }
    }

    /// Runs `work` on the pool's blocking threads; a panic there is an error of this call.
    fn run<T, F>(&self, what: &'static str, work: F) -> ResponseFuture<Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        Box::pin(async move {
            let result = pool.run(work).await;
            if let Err(e @ Error::Internal(_)) = &result {
                log::error!("event=database_work_failed work={what} error=\"{e}\"");
            }
            result
        })
    }
}

/// Is the database reachable, and how fast does it answer?
#[derive(Message)]
#[rtype(result = "Result<DatabaseStatus>")]
pub struct CheckDatabase;

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DatabaseStatus {
    /// `sqlite` or `postgresql`.
    #[schema(value_type = String)]
    pub backend: std::borrow::Cow<'static, str>,
    pub url: String,
    pub latency_ms: f64,
    pub pool_connections: u32,
    pub pool_idle: u32,
}

impl Handler<CheckDatabase> for HistoryActor {
    type Result = ResponseFuture<Result<DatabaseStatus>>;

    fn handle(&mut self, _: CheckDatabase, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let started = Instant::now();
            pool.run(|conn| {
                diesel::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), conn)?;
                Ok(())
            })
            .await?;
            let (pool_connections, pool_idle) = pool.state();
            Ok(DatabaseStatus {
                backend: pool.backend().name().into(),
                url: pool.display_url().to_string(),
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                pool_connections,
                pool_idle,
            })
        })
    }
}

/// Inserts rows in one statement; returns how many were new.
#[derive(Message)]
#[rtype(result = "Result<usize>")]
pub struct RecordBatch(pub Vec<NewHistory>);

impl Handler<RecordBatch> for HistoryActor {
    type Result = ResponseFuture<Result<usize>>;

    fn handle(&mut self, RecordBatch(rows): RecordBatch, _: &mut Context<Self>) -> Self::Result {
        self.run("record", move |conn| {
            crate::db::history::insert_batch(conn, &rows)
        })
    }
}

enum Entry {
    Row(Box<NewHistory>),
    Flush(oneshot::Sender<Result<usize>>),
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
        let writer = Writer {
            history,
            dead: DeadLetter::new(crate::history::spool::dead_letter_path(spool.path())),
        };
        actix::spawn(Batcher::run(writer, spool, receiver));
        HistoryRecorder { sender }
    }

    pub fn record(&self, row: NewHistory) {
        if self.sender.send(Entry::Row(Box::new(row))).is_err() {
            log::error!("event=history_recorder_stopped");
        }
    }

    /// Writes everything recorded so far (and what waits in the spool) to the database.
    /// `Ok` with the rows still waiting in the spool, on disk for the next start (0 when the
    /// database took them all); `Err` when rows are stranded: the recorder has stopped, the
    /// spool cannot be read, or rows the database could not take could not be spooled either.
    pub async fn flush(&self) -> Result<usize> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send(Entry::Flush(done))
            .map_err(|_| recorder_stopped())?;
        wait.await.map_err(|_| recorder_stopped())?
    }
}

fn recorder_stopped() -> Error {
    Error::Internal("the history recorder has stopped: recorded rows are not written".into())
}

/// Whether the database refused a write for what the rows hold (a value it cannot store, a
/// constraint), as opposed to being unreachable, busy or slow: only then is a row set aside.
fn refused_for_content(e: &Error) -> bool {
    use diesel::result::DatabaseErrorKind as Kind;
    let Error::Database(diesel::result::Error::DatabaseError(kind, info)) = e else {
        return false;
    };
    match kind {
        Kind::NotNullViolation | Kind::CheckViolation | Kind::ForeignKeyViolation => true,
        Kind::Unknown => {
            let message = info.message().to_ascii_lowercase();
            ![
                "locked",
                "busy",
                "timeout",
                "cancel",
                "connection",
                "terminat",
                "shut",
                "read-only",
                // SQLite: "attempt to write a readonly database" (file, directory or disk).
                "readonly",
                "disk",
                "space",
                "memory",
                "recovery",
            ]
            .iter()
            .any(|transient| message.contains(transient))
        }
        _ => false,
    }
}

/// The way rows reach the database: the actor, and where refused rows go.
struct Writer {
    history: Addr<HistoryActor>,
    dead: DeadLetter,
}

impl Writer {
    /// One batch, within [`WRITE_TIMEOUT`].
    async fn batch(&self, rows: &[NewHistory]) -> Result<usize> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.history.send(RecordBatch(rows.to_vec())))
            .await
        {
            Ok(sent) => sent?,
            Err(_) => Err(Error::DatabaseUnavailable(format!(
                "no answer to a history write within {}s",
                WRITE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Writes rows in batches; a batch refused for its content is split until the refused
    /// rows stand alone, and those go to the dead-letter file. `Err` when the database could
    /// not take a batch (nothing after it was tried; the caller keeps every row, and a row
    /// written twice adds nothing).
    async fn write(&self, rows: &[NewHistory]) -> Result<()> {
        let mut todo: Vec<&[NewHistory]> = rows.chunks(BATCH_ROWS).rev().collect();
        while let Some(batch) = todo.pop() {
            match self.batch(batch).await {
                Ok(_) => {}
                Err(e) if refused_for_content(&e) && batch.len() > 1 => {
                    let (first, second) = batch.split_at(batch.len() / 2);
                    todo.push(second);
                    todo.push(first);
                }
                Err(e) if refused_for_content(&e) => self.set_aside(&batch[0], &e).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Keeps a row the database refused in the dead-letter file (fsynced on the blocking pool).
    async fn set_aside(&self, row: &NewHistory, refusal: &Error) -> Result<()> {
        let (dead, kept, reason) = (self.dead.clone(), row.clone(), refusal.to_string());
        crate::db::blocking(move || dead.append(&kept, &reason)).await?;
        log::error!(
            "event=history_dead_letter acquisition_id={} path={} error=\"{refusal}\"",
            row.acquisition_id,
            self.dead.path().display()
        );
        Ok(())
    }
}

/// The batching task: gathers rows into batches, writes them, keeps in the spool what the
/// database cannot take, and answers flushes. Its file work (append, load, clear and their
/// fsyncs) runs on the blocking pool like the database work, so it never holds up the arbiter
/// that runs the login slots and the counters.
struct Batcher {
    writer: Writer,
    spool: Spool,
    receiver: mpsc::UnboundedReceiver<Entry>,
    /// Rows gathered for the next batch; after a failed spool write, rows nowhere on disk.
    pending: Vec<NewHistory>,
    flushes: Vec<oneshot::Sender<Result<usize>>>,
    /// Rows wait in the spool: new rows join them there, so the history keeps its order.
    spooled: bool,
    last_replay: Instant,
    /// Why the last spool write failed, while `pending` holds the rows it could not keep.
    spool_error: Option<String>,
}

impl Batcher {
    /// Replays what an earlier run left in the spool, then batches until every recorder is
    /// dropped; rows still gathered then go to the spool.
    async fn run(writer: Writer, spool: Spool, receiver: mpsc::UnboundedReceiver<Entry>) {
        let mut batcher = Batcher {
            writer,
            spool,
            receiver,
            pending: Vec::new(),
            flushes: Vec::new(),
            spooled: false,
            last_replay: Instant::now(),
            spool_error: None,
        };
        batcher.spooled = !batcher.replay().await;
        batcher.last_replay = Instant::now();
        while batcher.gather().await {
            let failed_now = batcher.write_pending().await;
            batcher.replay_if_due(failed_now).await;
            batcher.answer_flushes().await;
        }
        batcher.keep_pending().await;
    }

    /// Runs file work on the spool on the blocking pool.
    async fn on_disk<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Spool) -> Result<T> + Send + 'static,
    {
        let spool = self.spool.clone();
        crate::db::blocking(move || work(&spool)).await
    }

    /// Waits for an entry (while rows wait in the spool, wakes up to replay them), then
    /// gathers more until the batch is full, a flush is asked for, or the window ends.
    /// `false` once every recorder is dropped.
    async fn gather(&mut self) -> bool {
        let wait = if self.spooled {
            RETRY_AFTER
        } else {
            Duration::from_secs(3600)
        };
        match tokio::time::timeout(wait, self.receiver.recv()).await {
            Ok(Some(entry)) => self.absorb(entry),
            Ok(None) => return false,
            Err(_) => {}
        }
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while !self.pending.is_empty() && self.pending.len() < BATCH_ROWS && self.flushes.is_empty()
        {
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Ok(Some(entry)) => self.absorb(entry),
                Ok(None) | Err(_) => break,
            }
        }
        true
    }

    fn absorb(&mut self, entry: Entry) {
        match entry {
            Entry::Row(row) => self.pending.push(*row),
            Entry::Flush(done) => self.flushes.push(done),
        }
    }

    /// Writes the gathered rows, or spools them when the database cannot take them (or the
    /// spool already holds rows). `true` when a write was tried just now and failed: a replay
    /// in the same round would only wait again.
    async fn write_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let written = if self.spooled {
            Err(Error::DatabaseUnavailable("spool not yet replayed".into()))
        } else {
            self.writer.write(&self.pending).await
        };
        let failed_now = !self.spooled && written.is_err();
        match written {
            Ok(()) => {
                self.pending.clear();
                self.spool_error = None;
            }
            Err(e) => self.spool_pending(&e).await,
        }
        failed_now
    }

    /// Appends the gathered rows to the spool; when that fails too, they stay in memory and
    /// are tried again: nothing is dropped.
    async fn spool_pending(&mut self, cause: &Error) {
        let rows = self.pending.clone();
        match self.on_disk(move |spool| spool.append(&rows)).await {
            Ok(()) => {
                if !self.spooled {
                    log::warn!(
                        "event=history_spooled rows={} path={} error=\"{cause}\"",
                        self.pending.len(),
                        self.spool.path().display()
                    );
                }
                self.spooled = true;
                self.pending.clear();
                self.spool_error = None;
            }
            Err(spool_error) => {
                log::error!(
                    "event=spool_write_failed rows={} error=\"{spool_error}\"",
                    self.pending.len()
                );
                self.spool_error = Some(spool_error.to_string());
            }
        }
    }

    /// Replays the spool when rows wait there and a flush asks for it or [`RETRY_AFTER`] has
    /// passed since the last try.
    async fn replay_if_due(&mut self, failed_now: bool) {
        let due = !self.flushes.is_empty() || self.last_replay.elapsed() >= RETRY_AFTER;
        if self.spooled && !failed_now && due {
            self.last_replay = Instant::now();
            self.spooled = !self.replay().await;
        }
    }

    /// Moves the spool's rows into the database; `true` when the spool is empty afterwards.
    async fn replay(&self) -> bool {
        let loaded = self
            .on_disk(|spool| match spool.is_empty() {
                true => Ok(None),
                false => spool.load().map(Some),
            })
            .await;
        let rows = match loaded {
            Ok(None) => return true,
            Ok(Some(rows)) => rows,
            Err(e) => {
                log::error!("event=spool_unreadable error=\"{e}\"");
                return false;
            }
        };
        if self.writer.write(&rows).await.is_err() {
            return false;
        }
        match self.on_disk(Spool::clear).await {
            Ok(()) => {
                log::info!("event=spool_replayed rows={}", rows.len());
                true
            }
            Err(e) => {
                // The rows are in the database; a later replay of them adds nothing.
                log::error!("event=spool_not_cleared error=\"{e}\"");
                false
            }
        }
    }

    async fn answer_flushes(&mut self) {
        for done in std::mem::take(&mut self.flushes) {
            let _ = done.send(self.waiting().await);
        }
    }

    /// The rows not in the database: `Ok` with those kept in the spool, `Err` when some are
    /// nowhere on disk (the spool could not be written) or the spool cannot be read.
    async fn waiting(&self) -> Result<usize> {
        if !self.pending.is_empty() {
            let reason = self.spool_error.as_deref().unwrap_or("spool write failed");
            let stranded = format!(
                "{} history row(s) are held in memory only: {reason}",
                self.pending.len()
            );
            return Err(Error::io(
                self.spool.path(),
                std::io::Error::other(stranded),
            ));
        }
        if !self.spooled {
            return Ok(0);
        }
        self.on_disk(|spool| spool.load())
            .await
            .map(|rows| rows.len())
    }

    /// Every recorder is gone: rows still gathered go to the spool, for the next start.
    async fn keep_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.pending);
        let count = rows.len();
        if let Err(e) = self.on_disk(move |spool| spool.append(&rows)).await {
            log::error!("event=history_rows_lost rows={count} error=\"{e}\"");
        }
    }
}

/// The `/statistics` report of the last `days` days.
#[derive(Message)]
#[rtype(result = "Result<StatisticsReport>")]
pub struct Statistics {
    pub days: u32,
    pub site: Option<String>,
}

impl Handler<Statistics> for HistoryActor {
    type Result = ResponseFuture<Result<StatisticsReport>>;

    fn handle(&mut self, msg: Statistics, _: &mut Context<Self>) -> Self::Result {
        self.run("statistics", move |conn| {
            crate::db::statistics::report(conn, msg.days, msg.site.as_deref())
        })
    }
}

/// A page of history rows, newest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<crate::db::models::HistoryRow>>")]
pub struct Page(pub crate::db::history::HistoryFilter);

impl Handler<Page> for HistoryActor {
    type Result = ResponseFuture<Result<Vec<crate::db::models::HistoryRow>>>;

    fn handle(&mut self, Page(filter): Page, _: &mut Context<Self>) -> Self::Result {
        self.run("page", move |conn| crate::db::history::page(conn, &filter))
    }
}

/// Deletes history rows older than `days` days; answers how many.
#[derive(Message)]
#[rtype(result = "Result<usize>")]
pub struct Cleanup {
    pub days: u32,
}

impl Handler<Cleanup> for HistoryActor {
    type Result = ResponseFuture<Result<usize>>;

    fn handle(&mut self, msg: Cleanup, _: &mut Context<Self>) -> Self::Result {
        let days = msg.days;
        let cutoff = (1..=crate::db::history::MAX_DAYS)
            .contains(&days)
            .then(|| chrono::Duration::try_days(i64::from(days)))
            .flatten()
            .and_then(|age| chrono::Utc::now().naive_utc().checked_sub_signed(age));
        let Some(cutoff) = cutoff else {
            let max = crate::db::history::MAX_DAYS;
            return Box::pin(async move {
                Err(Error::invalid("days", format!("must be from 1 to {max}")))
            });
        };
        self.run("cleanup", move |conn| {
            let deleted = crate::db::history::delete_before(conn, cutoff)?;
            let alerts = crate::db::alerts::delete_before(conn, cutoff)?;
            log::info!(
                "event=history_cleanup days={days} deleted={deleted} alert_transitions_deleted={alerts}"
            );
            Ok(deleted)
        })
    }
}

/// Stores one alert transition; a failure is logged (the in-memory log still has it).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct RecordAlert(pub AlertTransition);

impl Handler<RecordAlert> for HistoryActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, RecordAlert(entry): RecordAlert, _: &mut Context<Self>) -> Self::Result {
        let row = entry.to_row();
        let stored = self.run("record_alert", move |conn| {
            crate::db::alerts::insert(conn, &row)
        });
        Box::pin(async move {
            let result = stored.await;
            if let Err(e) = &result {
                log::warn!(
                    "event=alert_transition_not_stored type={} error=\"{e}\"",
                    entry.kind
                );
            }
            result
        })
    }
}

/// The stored alert transitions of the last [`KEEP`], newest first, at most
/// [`MAX_TRANSITIONS`].
#[derive(Message)]
#[rtype(result = "Result<Vec<AlertTransition>>")]
pub struct AlertTransitions;

impl Handler<AlertTransitions> for HistoryActor {
    type Result = ResponseFuture<Result<Vec<AlertTransition>>>;

    fn handle(&mut self, _: AlertTransitions, _: &mut Context<Self>) -> Self::Result {
        let since = (chrono::Utc::now() - KEEP).naive_utc();
        self.run("alert_transitions", move |conn| {
            let rows = crate::db::alerts::since(conn, since, MAX_TRANSITIONS as i64)?;
            Ok(rows.into_iter().map(AlertTransition::from_row).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_panic_in_database_work_fails_that_call_only() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::connect(&format!("sqlite://{}/h.db", dir.path().display()), 2).unwrap();
        pool.migrate().unwrap();
        let actor = HistoryActor::new(pool);
        let failed: Result<()> = actor.run("test", |_| panic!("a bug")).await;
        assert!(matches!(failed, Err(Error::Internal(_))), "{failed:?}");
        let history = actor.start();
        assert!(history.send(CheckDatabase).await.unwrap().is_ok());
        let refused = history.send(Cleanup { days: u32::MAX }).await.unwrap();
        assert!(
            matches!(&refused, Err(Error::InvalidInput { field, .. }) if field == "days"),
            "{refused:?}"
        );
        assert_eq!(history.send(Cleanup { days: 1 }).await.unwrap().unwrap(), 0);
    }

    fn row(id: &str) -> NewHistory {
        let now = chrono::Utc::now().naive_utc();
        NewHistory::login(id, "court_zxfw", ("alice", 1), now)
    }

    fn sqlite_history(dir: &std::path::Path) -> Addr<HistoryActor> {
        let pool = Pool::connect(&format!("sqlite://{}/h.db", dir.display()), 2).unwrap();
        pool.migrate().unwrap();
        HistoryActor::new(pool).start()
    }

    #[actix_rt::test]
    async fn a_flush_answers_how_many_rows_wait_and_a_dead_recorder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let recorder =
            HistoryRecorder::start(sqlite_history(dir.path()), Spool::new(dir.path().join("s")));
        recorder.record(row("a"));
        assert_eq!(recorder.flush().await.unwrap(), 0);

        let (sender, receiver) = mpsc::unbounded_channel();
        drop(receiver);
        let dead = HistoryRecorder { sender };
        assert!(
            dead.flush().await.is_err(),
            "a dead recorder reads as flushed"
        );
    }

    /// The spool is a directory: it can be neither read nor written, so rows the database
    /// did not take are nowhere safe, and the flush says so.
    #[actix_rt::test]
    async fn rows_that_reach_neither_the_database_nor_the_spool_fail_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        std::fs::write(spool.join("keeps-it-non-empty"), "").unwrap();
        let recorder = HistoryRecorder::start(sqlite_history(dir.path()), Spool::new(&spool));
        recorder.record(row("a"));
        let flushed = recorder.flush().await;
        assert!(
            matches!(&flushed, Err(Error::Io { path, .. }) if path == &spool),
            "{flushed:?}"
        );
    }
}

#[cfg(test)]
mod recorder_tests {
    use std::path::Path;

    use super::*;
    use crate::history::spool::dead_letter_path;

    fn row(id: &str, status: &str) -> NewHistory {
        let now = chrono::Utc::now().naive_utc();
        NewHistory {
            status: status.into(),
            ..NewHistory::login(id, "court_zxfw", ("alice", 1), now)
        }
    }

    /// A migrated SQLite database in `dir`, and a recorder whose spool is in `dir` too.
    fn recorder(dir: &Path) -> (Pool, HistoryRecorder) {
        let pool = Pool::connect(&format!("sqlite://{}/h.db", dir.display()), 2).unwrap();
        pool.migrate().unwrap();
        let history = HistoryActor::new(pool.clone()).start();
        let recorder = HistoryRecorder::start(history, Spool::new(dir.join("h.spool")));
        (pool, recorder)
    }

    /// The acquisition ids in the history, in the order they were written.
    async fn stored(pool: &Pool) -> Vec<String> {
        let mut rows = pool
            .run(|conn| crate::db::history::recent(conn, None, 10_000))
            .await
            .unwrap();
        rows.reverse();
        rows.into_iter().map(|r| r.acquisition_id).collect()
    }

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
    }

    #[actix_rt::test]
    async fn recorded_rows_are_written_in_batches_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, recorder) = recorder(dir.path());
        let wanted = ids("r", 5);
        for id in &wanted {
            recorder.record(row(id, "success"));
        }
        // Written within the batch window, nobody asking.
        let deadline = Instant::now() + Duration::from_secs(5);
        while stored(&pool).await != wanted {
            assert!(
                Instant::now() < deadline,
                "rows not written: {:?}",
                stored(&pool).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(Spool::new(dir.path().join("h.spool")).is_empty());
    }

    #[actix_rt::test]
    async fn flush_writes_a_burst_larger_than_one_batch_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, recorder) = recorder(dir.path());
        // More rows than one SQLite statement can hold (32766 parameters / 19 columns).
        let wanted = ids("burst", 2 * BATCH_ROWS + 300);
        for id in &wanted {
            recorder.record(row(id, "success"));
        }
        assert_eq!(recorder.flush().await.unwrap(), 0, "rows left waiting");
        assert_eq!(stored(&pool).await, wanted);
        // A replayed acquisition adds nothing.
        recorder.record(row(&wanted[0], "success"));
        assert_eq!(recorder.flush().await.unwrap(), 0);
        assert_eq!(stored(&pool).await.len(), wanted.len());
    }

    #[actix_rt::test]
    async fn the_spool_of_an_earlier_run_is_written_first_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("h.spool"));
        let spooled = ids("spooled", 4);
        let rows: Vec<NewHistory> = spooled.iter().map(|id| row(id, "failed")).collect();
        spool.append(&rows[..2]).unwrap();
        spool.append(&rows[2..]).unwrap();
        let (pool, recorder) = recorder(dir.path());
        recorder.record(row("new-0", "success"));
        assert_eq!(recorder.flush().await.unwrap(), 0);
        let mut wanted = spooled;
        wanted.push("new-0".into());
        assert_eq!(stored(&pool).await, wanted);
        assert!(spool.is_empty(), "the spool was not cleared");
    }

    #[actix_rt::test]
    async fn a_refused_row_goes_to_the_dead_letter_file_and_the_rest_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("h.spool"));
        // The schema refuses an unknown status (CHECK constraint).
        let mut rows: Vec<NewHistory> =
            ids("good", 6).iter().map(|id| row(id, "success")).collect();
        rows.insert(3, row("poison-spooled", "no_such_status"));
        spool.append(&rows).unwrap();
        let (pool, recorder) = recorder(dir.path());
        recorder.record(row("live-0", "success"));
        recorder.record(row("poison-live", "no_such_status"));
        recorder.record(row("live-1", "success"));
        assert_eq!(
            recorder.flush().await.unwrap(),
            0,
            "a refused row blocked the spool"
        );
        let mut wanted = ids("good", 6);
        wanted.extend(["live-0".to_string(), "live-1".to_string()]);
        assert_eq!(stored(&pool).await, wanted);
        let dead = std::fs::read_to_string(dead_letter_path(spool.path())).unwrap();
        let dead: Vec<serde_json::Value> = dead
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let dead_ids: Vec<&str> = dead
            .iter()
            .map(|d| d["row"]["acquisition_id"].as_str().unwrap())
            .collect();
        assert_eq!(dead_ids, ["poison-spooled", "poison-live"]);
        assert!(
            dead.iter()
                .all(|d| d["error"].as_str().unwrap().contains("CHECK")),
            "{dead:?}"
        );
        assert!(spool.is_empty());
    }

    /// Sets SQLite's `query_only` on the pool's one connection: writes then fail the way they
    /// do on a database file or disk that went read-only.
    async fn read_only(pool: &Pool, on: bool) {
        let pragma = format!("PRAGMA query_only = {}", if on { "ON" } else { "OFF" });
        pool.run(move |conn| {
            diesel::RunQueryDsl::execute(diesel::sql_query(pragma), conn)?;
            Ok(())
        })
        .await
        .unwrap();
    }

    #[actix_rt::test]
    async fn rows_a_read_only_database_cannot_take_wait_in_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::connect(&format!("sqlite://{}/h.db", dir.path().display()), 1).unwrap();
        pool.migrate().unwrap();
        let history = HistoryActor::new(pool.clone()).start();
        let spool = Spool::new(dir.path().join("h.spool"));
        let recorder = HistoryRecorder::start(history, Spool::new(spool.path()));
        read_only(&pool, true).await;
        let wanted = ids("ro", 3);
        for id in &wanted {
            recorder.record(row(id, "success"));
        }
        assert_eq!(
            recorder.flush().await.unwrap(),
            3,
            "the rows do not wait in the spool"
        );
        assert_eq!(spool.load().unwrap().len(), 3);
        assert!(
            !dead_letter_path(spool.path()).exists(),
            "rows the database could not write were set aside as refused"
        );
        // Writable again: the spool is written at the next flush.
        read_only(&pool, false).await;
        assert_eq!(recorder.flush().await.unwrap(), 0);
        assert_eq!(stored(&pool).await, wanted);
    }
}

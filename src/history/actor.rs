//! `HistoryActor`: the acquisition history on its way to SQL (SPEC §1), an actix actor. It
//! owns the rows gathered for the next batch, the flushes waiting for an answer, and (through
//! [`Batches`]) the spool.
//!
//! Callers do not write rows one by one: they hand them to a [`HistoryRecorder`] (the
//! actor's address: cheap to clone; recording is a `do_send`, which queues the row without
//! waiting and without a mailbox bound, so an acquisition never waits on the history). The
//! actor gathers up to [`BATCH_ROWS`] rows or [`BATCH_WINDOW`] of time (its timer) into one
//! batch, written on the pool's blocking threads (see [`super::writer`]). A batch the
//! database could not take (down, or no answer within [`WRITE_TIMEOUT`]) waits in the spool
//! until it can be written; new rows then join it there, so the history keeps its order. The
//! spool's file work (and its fsyncs) runs on the same blocking pool as the database work,
//! never on the arbiter of the actors.
//!
//! Messages: [`Record`] (a row), [`Flush`] (write everything recorded so far; answered, once
//! those rows are stored or spooled, with the rows still waiting in the spool). A write
//! round is a future the actor waits on (`ctx.wait`): it takes no message while a round is in
//! flight, so two writes never overlap, rows are written in the order they were recorded,
//! and a flush is answered after the rows recorded before it. Rows recorded meanwhile queue
//! in the mailbox. Once every recorder is dropped the actor stops, and what it still holds
//! goes to the spool for the next start.
//!
//! The queries on the history (statistics, pages, cleanup) are not its business: they are
//! plain [`crate::db`] functions the API runs on the pool.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::batches::{Batches, FlushWaiter};
use super::writer::Writer;
pub use super::writer::{BATCH_ROWS, WRITE_TIMEOUT};
use crate::db::models::NewHistory;
use crate::db::Pool;
use crate::error::{Error, Result};
use crate::history::spool::{DeadLetter, Spool};

/// Longest a row waits for companions before its batch is written.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);

/// The address of [`HistoryActor`]: the way into the history. Cheap to clone, never blocks
/// the caller.
#[derive(Clone)]
pub struct HistoryRecorder {
    addr: Addr<HistoryActor>,
}

impl HistoryRecorder {
    /// Starts [`HistoryActor`] with its spool; must run inside an actix system. Rows left in
    /// the spool by an earlier run are replayed first.
    pub fn start(pool: Pool, spool: Spool) -> HistoryRecorder {
        HistoryRecorder {
            addr: HistoryActor::new(pool, spool).start(),
        }
    }

    /// Queues a row for the next batch, without waiting.
    pub fn record(&self, row: NewHistory) {
        if !self.addr.connected() {
            log::error!("event=history_recorder_stopped");
            return;
        }
        self.addr.do_send(Record(Box::new(row)));
    }

    /// Writes everything recorded so far (and what waits in the spool) to the database.
    /// `Ok` with the rows still waiting in the spool, on disk for the next start (0 when the
    /// database took them all); `Err` when rows are stranded: the recorder has stopped, the
    /// spool cannot be read, or rows the database could not take could not be spooled either.
    pub async fn flush(&self) -> Result<usize> {
        self.addr
            .send(Flush)
            .await
            .map_err(|_| recorder_stopped())?
    }
}

fn recorder_stopped() -> Error {
    Error::Internal("the history recorder has stopped: recorded rows are not written".into())
}

/// A row for the history.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub Box<NewHistory>);

/// Write everything recorded so far; answered with the rows still waiting in the spool.
#[derive(Message)]
#[rtype(result = "Result<usize>")]
pub struct Flush;

/// The history's owner: gathers rows into batches, has them written (or spooled) one round
/// at a time, and answers flushes.
pub struct HistoryActor {
    /// The writer and the spool; `None` only while a round runs (the actor takes no message
    /// then, so no handler finds it missing).
    batches: Option<Batches>,
    /// Rows recorded since the last round began.
    pending: Vec<NewHistory>,
    /// Flushes asked for since the last round began.
    flushes: Vec<FlushWaiter>,
}

impl HistoryActor {
    pub fn new(pool: Pool, spool: Spool) -> HistoryActor {
        let writer = Writer {
            pool,
            dead: DeadLetter::new(crate::history::spool::dead_letter_path(spool.path())),
        };
        HistoryActor {
            batches: Some(Batches::new(writer, spool)),
            pending: Vec::new(),
            flushes: Vec::new(),
        }
    }

    /// Whether a round should start now: a flush waits, the batch is full, or (`on_timer`)
    /// rows have waited a window or the spool is due a replay.
    fn round_due(&self, on_timer: bool) -> bool {
        let Some(batches) = &self.batches else {
            return false;
        };
        !self.flushes.is_empty()
            || self.pending.len() >= BATCH_ROWS
            || (on_timer && (!self.pending.is_empty() || batches.retry_due()))
    }

    /// Hands the gathered rows and flushes to one round, and waits for it before taking
    /// another message; a round that became due meanwhile starts right after.
    fn start_round(&mut self, ctx: &mut Context<Self>) {
        let Some(batches) = self.batches.take() else {
            return;
        };
        let rows = std::mem::take(&mut self.pending);
        let flushes = std::mem::take(&mut self.flushes);
        let round = batches
            .round(rows, flushes)
            .into_actor(self)
            .map(|batches, actor, ctx| actor.round_done(batches, ctx));
        ctx.wait(round);
    }

    fn round_done(&mut self, batches: Batches, ctx: &mut Context<Self>) {
        self.batches = Some(batches);
        if self.round_due(false) {
            self.start_round(ctx);
        }
    }

    /// Every [`BATCH_WINDOW`]: stops once every recorder is gone, else starts a round when
    /// rows wait or the spool is due a replay.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if !ctx.connected() {
            ctx.stop();
        } else if self.round_due(true) {
            self.start_round(ctx);
        }
    }
}

impl Actor for HistoryActor {
    type Context = Context<Self>;

    /// The spool of an earlier run is replayed before any message is taken.
    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(batches) = self.batches.take() {
            let replay = batches.replay_at_start().into_actor(self);
            ctx.wait(replay.map(|batches, actor, ctx| actor.round_done(batches, ctx)));
        }
        ctx.run_interval(BATCH_WINDOW, |actor, ctx| actor.tick(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let rows = std::mem::take(&mut self.pending);
        match &mut self.batches {
            Some(batches) => batches.keep_at_stop(rows),
            None if rows.is_empty() => {}
            None => log::error!("event=history_rows_lost rows={}", rows.len()),
        }
        for done in self.flushes.drain(..) {
            let _ = done.send(Err(recorder_stopped()));
        }
    }
}

impl Handler<Record> for HistoryActor {
    type Result = ();

    fn handle(&mut self, Record(row): Record, ctx: &mut Context<Self>) {
        self.pending.push(*row);
        if self.round_due(false) {
            self.start_round(ctx);
        }
    }
}

impl Handler<Flush> for HistoryActor {
    type Result = ResponseFuture<Result<usize>>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (done, answer) = oneshot::channel();
        self.flushes.push(done);
        if self.round_due(false) {
            self.start_round(ctx);
        }
        Box::pin(async move { answer.await.unwrap_or_else(|_| Err(recorder_stopped())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> NewHistory {
        let now = chrono::Utc::now().naive_utc();
        NewHistory::login(id, "court_zxfw", ("alice", 1), now)
    }

    fn sqlite_history(dir: &std::path::Path) -> Pool {
        let pool = Pool::connect(&format!("sqlite://{}/h.db", dir.display()), 2).unwrap();
        pool.migrate().unwrap();
        pool
    }

    #[actix_rt::test]
    async fn a_flush_answers_how_many_rows_wait_and_a_dead_recorder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let recorder =
            HistoryRecorder::start(sqlite_history(dir.path()), Spool::new(dir.path().join("s")));
        recorder.record(row("a"));
        assert_eq!(recorder.flush().await.unwrap(), 0);

        let pool = sqlite_history(dir.path());
        let spool = Spool::new(dir.path().join("dead"));
        let dead = HistoryRecorder {
            addr: HistoryActor::create(|ctx| {
                ctx.stop();
                HistoryActor::new(pool, spool)
            }),
        };
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
    use std::time::Instant;

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
        let recorder = HistoryRecorder::start(pool.clone(), Spool::new(dir.join("h.spool")));
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
        let spool = Spool::new(dir.path().join("h.spool"));
        let recorder = HistoryRecorder::start(pool.clone(), Spool::new(spool.path()));
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

    /// While a write waits for the database (its one connection is taken), recording stays
    /// a queueing that never waits, a second write does not start, and once the database
    /// answers every row is stored in the order it was recorded.
    #[actix_rt::test]
    async fn rows_recorded_during_a_write_in_flight_queue_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::connect(&format!("sqlite://{}/h.db", dir.path().display()), 1).unwrap();
        pool.migrate().unwrap();
        let recorder = HistoryRecorder::start(pool.clone(), Spool::new(dir.path().join("h.spool")));
        let wanted = ids("busy", 3 * BATCH_ROWS);
        let taken = pool.get().unwrap();
        recorder.record(row(&wanted[0], "success"));
        let first_flush = actix::spawn({
            let recorder = recorder.clone();
            async move { recorder.flush().await }
        });
        let started = Instant::now();
        for id in &wanted[1..] {
            recorder.record(row(id, "success"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "recording waited on the write in flight: {:?}",
            started.elapsed()
        );
        drop(taken);
        assert_eq!(first_flush.await.unwrap().unwrap(), 0);
        assert_eq!(recorder.flush().await.unwrap(), 0);
        assert_eq!(stored(&pool).await, wanted);
    }

    /// Once every recorder is dropped the actor stops; rows it still holds then are kept in
    /// the spool and written by the next start.
    #[actix_rt::test]
    async fn dropping_every_recorder_keeps_the_rows_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::connect(&format!("sqlite://{}/h.db", dir.path().display()), 1).unwrap();
        pool.migrate().unwrap();
        let spool = Spool::new(dir.path().join("h.spool"));
        let recorder = HistoryRecorder::start(pool.clone(), Spool::new(spool.path()));
        let taken = pool.get().unwrap();
        recorder.record(row("first", "success"));
        recorder.record(row("second", "success"));
        drop(recorder);
        // The database is taken: the rows end up in the spool, by a round or at the stop.
        let deadline = Instant::now() + Duration::from_secs(10);
        while spool.is_empty() || spool.load().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "the rows were not spooled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(taken);
        let next = HistoryRecorder::start(pool.clone(), Spool::new(spool.path()));
        assert_eq!(next.flush().await.unwrap(), 0);
        assert_eq!(stored(&pool).await, ["first", "second"]);
    }
}

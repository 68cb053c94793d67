//! `HistoryActor`: the acquisition history on its way to SQL (SPEC §1). It owns the rows
//! gathered for the next batch, the flushes waiting for an answer, and the spool.
//!
//! Callers do not write rows one by one: they hand them to a [`HistoryRecorder`] (the
//! actor's address: cheap to clone, never blocks), and the actor gathers up to
//! [`BATCH_ROWS`] rows or [`BATCH_WINDOW`] of time into one batch, written on the pool's
//! blocking threads (see [`super::writer`]). A batch the database could not take (down, or no
//! answer within [`WRITE_TIMEOUT`]) waits in the spool until it can be written; new rows then
//! join it there, so the history keeps its order. The spool's file work (and its fsyncs) runs
//! on the same blocking pool as the database work, never on the arbiter of the actors.
//!
//! Its mailbox takes two messages: a row to record, and a flush (write everything recorded so
//! far, answered with the rows still waiting in the spool). It runs as a task of its own (a
//! loop over a channel, not an actix actor: it waits on timers and on the database between
//! messages); it stops once every recorder is dropped, and what it still holds goes to the
//! spool for the next start.
//!
//! The queries on the history (statistics, pages, cleanup) are not its business: they are
//! plain [`crate::db`] functions the API runs on the pool.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::writer::Writer;
pub use super::writer::{BATCH_ROWS, WRITE_TIMEOUT};
use crate::db::models::NewHistory;
use crate::db::Pool;
use crate::error::{Error, Result};
use crate::history::spool::{DeadLetter, Spool};

/// Longest a row waits for companions before its batch is written.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// Wait between attempts to write a batch the database refused.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The actor's mailbox: a row to record, or a flush to answer.
enum Entry {
    Row(Box<NewHistory>),
    Flush(oneshot::Sender<Result<usize>>),
}

/// The address of [`HistoryActor`]: the way into the history. Cheap to clone, never blocks
/// the caller.
#[derive(Clone)]
pub struct HistoryRecorder {
    sender: mpsc::UnboundedSender<Entry>,
}

impl HistoryRecorder {
    /// Starts [`HistoryActor`] with its spool; must run inside an actix system. Rows left in
    /// the spool by an earlier run are replayed first.
    pub fn start(pool: Pool, spool: Spool) -> HistoryRecorder {
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            pool,
            dead: DeadLetter::new(crate::history::spool::dead_letter_path(spool.path())),
        };
        actix::spawn(HistoryActor::run(writer, spool, receiver));
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

/// The history's owner: gathers rows into batches, writes them, keeps in the spool what the
/// database cannot take, and answers flushes. Its file work (append, load, clear and their
/// fsyncs) runs on the blocking pool like the database work, so it never holds up the arbiter
/// that runs the login slots and the counters.
pub struct HistoryActor {
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

impl HistoryActor {
    /// Replays what an earlier run left in the spool, then batches until every recorder is
    /// dropped; rows still gathered then go to the spool.
    async fn run(writer: Writer, spool: Spool, receiver: mpsc::UnboundedReceiver<Entry>) {
        let mut actor = HistoryActor {
            writer,
            spool,
            receiver,
            pending: Vec::new(),
            flushes: Vec::new(),
            spooled: false,
            last_replay: Instant::now(),
            spool_error: None,
        };
        actor.spooled = !actor.replay().await;
        actor.last_replay = Instant::now();
        while actor.gather().await {
            let failed_now = actor.write_pending().await;
            actor.replay_if_due(failed_now).await;
            actor.answer_flushes().await;
        }
        actor.keep_pending().await;
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
}

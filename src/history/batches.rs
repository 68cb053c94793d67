//! What [`super::HistoryActor`] does with a batch, one round at a time: write the rows (see
//! [`super::writer`]), spool what the database cannot take, replay the spool when it is due,
//! and answer the flushes. A round runs off the actor's thread (the database work on the
//! pool, the spool's file work and fsyncs on the blocking pool) and owns this state while it
//! runs; the actor waits for it before it takes another message, so rounds never overlap and
//! the history keeps its order.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::writer::Writer;
use crate::db::models::NewHistory;
use crate::error::{Error, Result};
use crate::history::spool::Spool;

/// Wait between attempts to write a batch the database refused; the spool is replayed
/// sooner when the pool finds the database back ([`crate::db::Pool::comebacks`]).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A failed write that took at least this long waited for a database that did not answer.
const SLOW_FAILURE: Duration = Duration::from_secs(1);

/// A flush waiting for its answer: the rows still waiting in the spool.
pub type FlushWaiter = oneshot::Sender<Result<usize>>;

/// The way to the database and the spool, and what waits on the way.
pub struct Batches {
    writer: Writer,
    spool: Spool,
    /// Rows whose spool write failed: nowhere on disk, tried again in the next round.
    held: Vec<NewHistory>,
    /// Rows wait in the spool: new rows join them there, so the history keeps its order.
    spooled: bool,
    last_replay: Instant,
    /// When a write or a replay last failed after a wait (a database that did not answer):
    /// a flush (the stop's, say) does not make it wait again within [`RETRY_AFTER`] of it,
    /// unless the database is back. A failure that came at once costs nothing to retry.
    last_slow_failure: Option<Instant>,
    /// The pool's [`crate::db::Pool::comebacks`] at the last replay.
    comebacks_seen: u64,
    /// Why the last spool write failed, while `held` holds the rows it could not keep.
    spool_error: Option<String>,
}

impl Batches {
    pub fn new(writer: Writer, spool: Spool) -> Batches {
        let comebacks_seen = writer.pool.comebacks();
        Batches {
            comebacks_seen,
            writer,
            spool,
            held: Vec::new(),
            spooled: false,
            last_replay: Instant::now(),
            last_slow_failure: None,
            spool_error: None,
        }
    }

    /// Whether a replay of the spool is due without anybody asking: [`RETRY_AFTER`] since
    /// the last, or the database is back.
    pub fn retry_due(&self) -> bool {
        self.spooled && (self.last_replay.elapsed() >= RETRY_AFTER || self.database_back())
    }

    /// Whether the pool found the database back since the last replay.
    fn database_back(&self) -> bool {
        self.writer.pool.comebacks() != self.comebacks_seen
    }

    /// The first round: what an earlier run left in the spool goes to the database first.
    pub async fn replay_at_start(mut self) -> Batches {
        self.comebacks_seen = self.writer.pool.comebacks();
        self.spooled = !self.replay().await;
        self.last_replay = Instant::now();
        self
    }

    /// One round: writes `rows` (after any held ones), replays the spool when due, then
    /// answers `flushes`.
    pub async fn round(mut self, rows: Vec<NewHistory>, flushes: Vec<FlushWaiter>) -> Batches {
        self.held.extend(rows);
        let failed_now = self.write_held().await;
        self.replay_if_due(failed_now, !flushes.is_empty()).await;
        for done in flushes {
            let _ = done.send(self.waiting().await);
        }
        self
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

    /// Writes the held rows, or spools them when the database cannot take them (or the spool
    /// already holds rows). `true` when a write was tried just now and failed: a replay in
    /// the same round would only wait again.
    async fn write_held(&mut self) -> bool {
        if self.held.is_empty() {
            return false;
        }
        let started = Instant::now();
        let written = if self.spooled {
            Err(Error::DatabaseUnavailable("spool not yet replayed".into()))
        } else {
            self.writer.write(&self.held).await
        };
        let failed_now = !self.spooled && written.is_err();
        if failed_now {
            // The database was just tried: the spool's next replay is RETRY_AFTER from now,
            // not from the last replay (at start, maybe long ago), or a flush right after
            // this write would wait for the database all over again.
            self.last_replay = Instant::now();
            self.failed_after(started);
        }
        match written {
            Ok(()) => {
                self.held.clear();
                self.spool_error = None;
            }
            Err(e) => self.spool_held(&e).await,
        }
        failed_now
    }

    /// Appends the held rows to the spool; when that fails too, they stay in memory and are
    /// tried again: nothing is dropped.
    async fn spool_held(&mut self, cause: &Error) {
        let rows = self.held.clone();
        match self.on_disk(move |spool| spool.append(&rows)).await {
            Ok(()) => {
                if !self.spooled {
                    log::warn!(
                        "event=history_spooled rows={} path={} error=\"{cause}\"",
                        self.held.len(),
                        self.spool.path().display()
                    );
                }
                self.spooled = true;
                self.held.clear();
                self.spool_error = None;
            }
            Err(spool_error) => {
                log::error!(
                    "event=spool_write_failed rows={} error=\"{spool_error}\"",
                    self.held.len()
                );
                self.spool_error = Some(spool_error.to_string());
            }
        }
    }

    /// Replays the spool when rows wait there and a flush asks for it, [`RETRY_AFTER`] has
    /// passed since the last try, or the database is back.
    /// A flush asks only when the database did not just fail after a wait: a stop right
    /// after a write that timed out keeps the rows in the spool (written at the next start)
    /// instead of waiting for the database a second time.
    async fn replay_if_due(&mut self, failed_now: bool, flush_asked: bool) {
        let failed_lately = self
            .last_slow_failure
            .is_some_and(|at| at.elapsed() < RETRY_AFTER)
            && !self.database_back();
        let due = (flush_asked && !failed_lately) || self.retry_due();
        if self.spooled && !failed_now && due {
            let started = Instant::now();
            self.last_replay = started;
            self.comebacks_seen = self.writer.pool.comebacks();
            self.spooled = !self.replay().await;
            if self.spooled {
                self.failed_after(started);
            }
        }
    }

    /// A write or replay begun at `started` failed: remembered when it had to wait.
    fn failed_after(&mut self, started: Instant) {
        if started.elapsed() >= SLOW_FAILURE {
            self.last_slow_failure = Some(Instant::now());
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

    /// The rows not in the database: `Ok` with those kept in the spool, `Err` when some are
    /// nowhere on disk (the spool could not be written) or the spool cannot be read.
    async fn waiting(&self) -> Result<usize> {
        if !self.held.is_empty() {
            let reason = self.spool_error.as_deref().unwrap_or("spool write failed");
            let stranded = format!(
                "{} history row(s) are held in memory only: {reason}",
                self.held.len()
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

    /// The actor is stopping: `rows` (recorded since the last round) and the held ones go to
    /// the spool, for the next start. Runs on the actor's thread (it has no future left to
    /// wait on), once, at the end.
    pub fn keep_at_stop(&mut self, rows: Vec<NewHistory>) {
        self.held.extend(rows);
        if self.held.is_empty() {
            return;
        }
        let count = self.held.len();
        if let Err(e) = self.spool.append(&self.held) {
            log::error!("event=history_rows_lost rows={count} error=\"{e}\"");
        }
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::db::Pool;
    use crate::history::spool::DeadLetter;

    /// Rows waiting in the spool are due a replay as soon as the pool finds the database back
    /// (a restart, a failover), not [`RETRY_AFTER`] later.
    #[test]
    fn the_spool_is_due_a_replay_once_the_database_is_back() {
        let dir = tempfile::tempdir().unwrap();
        // SQLite cannot open a file in a directory that does not exist: an outage until the
        // directory is made.
        let missing = dir.path().join("not-yet");
        let pool = Pool::connect(&format!("sqlite://{}/h.db", missing.display()), 1).unwrap();
        let writer = Writer {
            pool: pool.clone(),
            dead: DeadLetter::new(dir.path().join("h.spool.dead-letter")),
        };
        let mut batches = Batches::new(writer, Spool::new(dir.path().join("h.spool")));
        batches.spooled = true;
        assert!(!batches.database_back());
        assert!(pool.get().is_err(), "the database is not there yet");

        std::fs::create_dir(&missing).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while pool.comebacks() == 0 {
            assert!(Instant::now() < deadline, "the pool's probe never found it");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(batches.database_back());
        assert!(
            batches.retry_due(),
            "the spool waits although the database is back"
        );
    }

    /// A write that just failed is a try of the database: the spool's replay waits
    /// [`RETRY_AFTER`] from it, however long ago the last replay was (the stop's flush right
    /// after a write that hung must not wait for the database a second time).
    #[actix_rt::test]
    async fn a_failed_write_restarts_the_wait_before_the_next_replay() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not-there");
        let pool = Pool::connect(&format!("sqlite://{}/h.db", missing.display()), 1).unwrap();
        let writer = Writer {
            pool,
            dead: DeadLetter::new(dir.path().join("h.spool.dead-letter")),
        };
        let mut batches = Batches::new(writer, Spool::new(dir.path().join("h.spool")));
        // The daemon has run for a while since its last replay.
        batches.last_replay = Instant::now() - 2 * RETRY_AFTER;
        let now = chrono::Utc::now().naive_utc();
        let row = NewHistory::login("a-1", "court_zxfw", ("alice", 1), now);
        let batches = batches.round(vec![row], Vec::new()).await;
        assert!(batches.spooled, "the row the database refused is spooled");
        assert!(
            !batches.retry_due(),
            "a replay is due at once after a write that just failed"
        );
    }
}

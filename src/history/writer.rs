//! How [`super::HistoryActor`] writes rows: in batches of at most [`BATCH_ROWS`] on the
//! pool's blocking threads, each within [`WRITE_TIMEOUT`]. A batch the database refuses for
//! its content is split in halves until the refused rows stand alone; those go to the
//! dead-letter file (named in a log line and in `/health`), so that one bad row never blocks
//! the spool.

use std::time::Duration;

use crate::db::models::NewHistory;
use crate::db::Pool;
use crate::error::{Error, Result};
use crate::history::spool::DeadLetter;

/// Most rows in one insert: 1000 rows of 19 columns stay under SQLite's limit of 32766
/// parameters per statement, and larger batches write faster.
pub const BATCH_ROWS: usize = 1000;
/// Longest wait for one batch write: a write that hangs (half-open connection) is given up
/// and its rows spooled, so that the flush at stop never outlasts its grace.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The way rows reach the database: the pool, and where refused rows go.
pub(super) struct Writer {
    pub(super) pool: Pool,
    pub(super) dead: DeadLetter,
}

impl Writer {
    /// One batch, within [`WRITE_TIMEOUT`]; returns how many rows were new. A panic in the
    /// insert (a bug, a value out of range) fails this batch only, and is logged.
    async fn batch(&self, rows: &[NewHistory]) -> Result<usize> {
        let rows = rows.to_vec();
        let insert = self
            .pool
            .run(move |conn| crate::db::history::insert_batch(conn, &rows));
        let written = match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
            Ok(written) => written,
            Err(_) => Err(Error::DatabaseUnavailable(format!(
                "no answer to a history write within {}s",
                WRITE_TIMEOUT.as_secs()
            ))),
        };
        if let Err(e @ Error::Internal(_)) = &written {
            log::error!("event=database_work_failed work=record error=\"{e}\"");
        }
        written
    }

    /// Writes rows in batches; a batch refused for its content is split until the refused
    /// rows stand alone, and those go to the dead-letter file. `Err` when the database could
    /// not take a batch (nothing after it was tried; the caller keeps every row, and a row
    /// written twice adds nothing).
    pub(super) async fn write(&self, rows: &[NewHistory]) -> Result<()> {
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

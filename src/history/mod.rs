//! The acquisition history on its way to SQL: [`HistoryActor`] (the rows gathered into
//! batches, the flushes, the spool; [`HistoryRecorder`] is its address), how it writes
//! ([`writer`]: batches, refused rows set aside), the [`spool`] (rows waiting, fsynced, while
//! the database cannot take them) and the daily [`retention`] job. The queries on the stored
//! history are [`crate::db`] functions.

pub mod actor;
mod batches;
pub mod retention;
pub mod spool;
mod writer;

pub use actor::{HistoryActor, HistoryRecorder};

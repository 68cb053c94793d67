//! The acquisition history on its way to SQL: [`spool`] (rows waiting, fsynced, while the
//! database cannot take them).
pub mod spool;

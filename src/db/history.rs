//! Queries on `token_acquisition_history`.

use diesel::prelude::*;

use super::models::{HistoryRow, NewHistory};
use super::schema::token_acquisition_history::dsl;
use super::DbConnection;
use crate::error::Result;

/// Inserts rows, skipping any whose `acquisition_id` is already stored (a replayed record
/// adds nothing). Returns how many were new.
pub fn insert_batch(conn: &mut DbConnection, rows: &[NewHistory]) -> Result<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let inserted = match conn {
        DbConnection::Sqlite(c) => diesel::insert_or_ignore_into(dsl::token_acquisition_history)
            .values(rows)
            .execute(c)?,
        DbConnection::Postgres(c) => diesel::insert_into(dsl::token_acquisition_history)
            .values(rows)
            .on_conflict(dsl::acquisition_id)
            .do_nothing()
            .execute(c)?,
    };
    Ok(inserted)
}

/// The newest rows first, optionally of one site.
pub fn recent(conn: &mut DbConnection, site: Option<&str>, limit: i64) -> Result<Vec<HistoryRow>> {
    let mut query = dsl::token_acquisition_history
        .select(HistoryRow::as_select())
        .order(dsl::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(site) = site {
        query = query.filter(dsl::site_name.eq(site));
    }
    Ok(query.load(conn)?)
}

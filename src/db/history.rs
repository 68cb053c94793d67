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

/// A page of history, newest first: rows with an id below `before_id`, filtered.
pub fn page(conn: &mut DbConnection, filter: &HistoryFilter) -> Result<Vec<HistoryRow>> {
    let mut query = dsl::token_acquisition_history
        .select(HistoryRow::as_select())
        .order(dsl::id.desc())
        .limit(filter.limit)
        .into_boxed();
    if let Some(site) = &filter.site_name {
        query = query.filter(dsl::site_name.eq(site.clone()));
    }
    if let Some(account) = &filter.account {
        query = query.filter(dsl::account.eq(account.clone()));
    }
    if let Some(status) = &filter.status {
        query = query.filter(dsl::status.eq(status.clone()));
    }
    if let Some(before) = filter.before_id {
        query = query.filter(dsl::id.lt(before));
    }
    Ok(query.load(conn)?)
}

/// What a history page is filtered by.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub site_name: Option<String>,
    pub account: Option<String>,
    pub status: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Rows deleted per statement, so that a large cleanup never holds a long lock.
const DELETE_BATCH: i64 = 5000;

/// Deletes rows created before `cutoff`, in batches; returns how many.
pub fn delete_before(conn: &mut DbConnection, cutoff: chrono::NaiveDateTime) -> Result<usize> {
    let mut deleted = 0;
    loop {
        let ids: Vec<i64> = dsl::token_acquisition_history
            .select(dsl::id)
            .filter(dsl::created_at.lt(cutoff))
            .order(dsl::id.asc())
            .limit(DELETE_BATCH)
            .load(conn)?;
        if ids.is_empty() {
            return Ok(deleted);
        }
        deleted += diesel::delete(dsl::token_acquisition_history.filter(dsl::id.eq_any(&ids)))
            .execute(conn)?;
    }
}

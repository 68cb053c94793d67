//! Queries on `token_acquisition_history`.

use diesel::prelude::*;

use super::models::{HistoryRow, NewHistory};
use super::schema::token_acquisition_history::dsl;
use super::DbConnection;
use crate::error::Result;

/// The most days a cleanup or the retention may name: a hundred years. Beyond that, the
/// cutoff leaves the range of the date types.
pub const MAX_DAYS: u32 = 36_500;

/// Inserts rows, skipping any whose `acquisition_id` is already stored (a replayed record
/// adds nothing), and adds the new ones to the daily totals — all in one transaction.
/// Returns how many were new.
pub fn insert_batch(conn: &mut DbConnection, rows: &[NewHistory]) -> Result<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    conn.transaction(|conn| {
        let fresh: Vec<&NewHistory> = match conn {
            // SQLite has one writer at a time, so inside this transaction the ids found
            // absent stay absent until the insert.
            DbConnection::Sqlite(c) => {
                let ids: Vec<&str> = rows.iter().map(|r| r.acquisition_id.as_str()).collect();
                let stored: std::collections::HashSet<String> = dsl::token_acquisition_history
                    .select(dsl::acquisition_id)
                    .filter(dsl::acquisition_id.eq_any(&ids))
                    .load::<String>(c)?
                    .into_iter()
                    .collect();
                let mut seen = std::collections::HashSet::new();
                let fresh: Vec<&NewHistory> = rows
                    .iter()
                    .filter(|r| {
                        !stored.contains(&r.acquisition_id)
                            && seen.insert(r.acquisition_id.as_str())
                    })
                    .collect();
                let values: Vec<&NewHistory> = fresh.clone();
                // A plain insert (duplicates are filtered above): `OR IGNORE` would also drop,
                // without a word, a row SQLite refuses (a CHECK or NOT NULL constraint),
                // which must reach the dead-letter file instead.
                diesel::insert_into(dsl::token_acquisition_history)
                    .values(values)
                    .execute(c)?;
                fresh
            }
            DbConnection::Postgres(c) => {
                let inserted: Vec<String> = diesel::insert_into(dsl::token_acquisition_history)
                    .values(rows)
                    .on_conflict(dsl::acquisition_id)
                    .do_nothing()
                    .returning(dsl::acquisition_id)
                    .get_results(c)?;
                let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
                rows.iter()
                    .filter(|r| inserted.contains(&r.acquisition_id))
                    .collect()
            }
        };
        super::daily::add(conn, &fresh)?;
        Ok(fresh.len())
    })
}

/// The newest rows first, optionally of one site.
/// The logins of a site since `since` (rows where a driver ran): the account, and when.
pub fn logins_since(
    conn: &mut DbConnection,
    site: &str,
    since: chrono::NaiveDateTime,
) -> Result<Vec<(Option<i64>, chrono::NaiveDateTime)>> {
    Ok(dsl::token_acquisition_history
        .filter(dsl::site_name.eq(site))
        .filter(dsl::created_at.ge(since))
        .filter(dsl::attempt_count.gt(0))
        .select((dsl::credential_id, dsl::created_at))
        .load(conn)?)
}

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

/// Deletes rows created before `cutoff`, in batches, and the daily totals of the days before
/// it; returns how many rows.
pub fn delete_before(conn: &mut DbConnection, cutoff: chrono::NaiveDateTime) -> Result<usize> {
    super::daily::delete_before(conn, &cutoff.format("%Y-%m-%d").to_string())?;
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

/// The trigger (`token_needed`, `refresh_ahead`, …) of each of these acquisitions that is
/// recorded: `(acquisition_id, trigger_reason)`.
pub fn triggers(conn: &mut DbConnection, ids: &[String]) -> Result<Vec<(String, String)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(dsl::token_acquisition_history
        .filter(dsl::acquisition_id.eq_any(ids))
        .select((dsl::acquisition_id, dsl::trigger_reason))
        .load(conn)?)
}

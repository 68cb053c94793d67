//! `alert_transitions`: each time an alert started firing or was resolved, kept beside the
//! history so that `/alerts/history` survives a restart, and deleted with it by the
//! retention job.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::alert_transitions::{self, dsl};
use super::DbConnection;
use crate::error::Result;

/// One stored transition; `state` is `firing` or `resolved`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = alert_transitions)]
pub struct AlertTransitionRow {
    #[diesel(skip_insertion)]
    pub id: i64,
    pub occurred_at: NaiveDateTime,
    pub alert_type: String,
    pub state: String,
    pub severity: Option<String>,
    pub message: Option<String>,
}

pub fn insert(conn: &mut DbConnection, row: &AlertTransitionRow) -> Result<()> {
    diesel::insert_into(dsl::alert_transitions)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// The transitions since `since`, newest first, at most `limit`.
pub fn since(
    conn: &mut DbConnection,
    since: NaiveDateTime,
    limit: i64,
) -> Result<Vec<AlertTransitionRow>> {
    Ok(dsl::alert_transitions
        .select(AlertTransitionRow::as_select())
        .filter(dsl::occurred_at.ge(since))
        .order((dsl::occurred_at.desc(), dsl::id.desc()))
        .limit(limit)
        .load(conn)?)
}

/// Deletes the transitions before `cutoff`; returns how many.
pub fn delete_before(conn: &mut DbConnection, cutoff: NaiveDateTime) -> Result<usize> {
    Ok(diesel::delete(dsl::alert_transitions.filter(dsl::occurred_at.lt(cutoff))).execute(conn)?)
}

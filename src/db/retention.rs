//! Retention: the history, and the alert transitions kept beside it, older than N days are
//! deleted — by `POST /history/cleanup` and by the daily retention job of the history.

use super::history::MAX_DAYS;
use super::DbConnection;
use crate::error::{Error, Result};

/// Deletes the history rows (in batches, with their daily totals) and the alert transitions
/// older than `days` days; answers how many history rows. `days` is from 1 to [`MAX_DAYS`]:
/// anything else is bad input, and nothing is deleted.
pub fn delete_older_than(conn: &mut DbConnection, days: u32) -> Result<usize> {
    let cutoff = (1..=MAX_DAYS)
        .contains(&days)
        .then(|| chrono::Duration::try_days(i64::from(days)))
        .flatten()
        .and_then(|age| chrono::Utc::now().naive_utc().checked_sub_signed(age))
        .ok_or_else(|| Error::invalid("days", format!("must be from 1 to {MAX_DAYS}")))?;
    let deleted = super::history::delete_before(conn, cutoff)?;
    let alerts = super::alerts::delete_before(conn, cutoff)?;
    log::info!(
        "event=history_cleanup days={days} deleted={deleted} alert_transitions_deleted={alerts}"
    );
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Pool;

    #[actix_rt::test]
    async fn days_out_of_range_are_bad_input_and_delete_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::connect(&format!("sqlite://{}/h.db", dir.path().display()), 2).unwrap();
        pool.migrate().unwrap();
        for days in [0, MAX_DAYS + 1, u32::MAX] {
            let refused = pool.run(move |conn| delete_older_than(conn, days)).await;
            assert!(
                matches!(&refused, Err(Error::InvalidInput { field, .. }) if field == "days"),
                "{days}: {refused:?}"
            );
        }
        assert_eq!(
            pool.run(|conn| delete_older_than(conn, 1)).await.unwrap(),
            0
        );
    }
}

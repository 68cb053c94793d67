//! The retention job: every day, the history and the alert transitions older than
//! `[history] retention_days` are deleted ([`crate::db::retention::delete_older_than`]).

use std::time::Duration;

use crate::db::Pool;

/// First run of the retention job after start, then every [`RETENTION_EVERY`].
const RETENTION_FIRST: Duration = Duration::from_secs(60);
const RETENTION_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Starts the daily job; must run inside an actix system. A failed run is logged, and the
/// next day's runs again.
pub fn start(pool: Pool, days: u32) {
    actix::spawn(async move {
        tokio::time::sleep(RETENTION_FIRST).await;
        let mut every = tokio::time::interval(RETENTION_EVERY);
        loop {
            every.tick().await;
            let deleted = pool
                .run(move |conn| crate::db::retention::delete_older_than(conn, days))
                .await;
            if let Err(e) = deleted {
                log::warn!("event=history_retention_failed error=\"{e}\"");
            }
        }
    });
}

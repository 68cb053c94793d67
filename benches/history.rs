//! History at scale: rows/s of batched writes (target ≥ 100k/s) and the time of the
//! `/statistics` report over a million rows (target < 250 ms), on SQLite and PostgreSQL.
//!
//! Run: `cargo bench --bench history` (PostgreSQL at `TOKEND_TEST_PG_URL` or
//! postgres://postgres@127.0.0.1:5432/test is used when reachable; a scratch database is
//! created and dropped).

use std::time::Instant;

use chrono::{Duration, Utc};
use diesel::{Connection, PgConnection, RunQueryDsl};
use tokend::db::models::NewHistory;
use tokend::db::Pool;

const ROWS: usize = 1_000_000;
/// The batch size of the history recorder.
const BATCH: usize = tokend::history::actor::BATCH_ROWS;
const STATUSES: [&str; 6] = [
    "success",
    "success",
    "success",
    "success",
    "credential_error",
    "timeout",
];

/// Rows as they are written in production: in time order (here spread evenly over the last
/// 90 days), 10 sites with 5 accounts each.
fn rows(start: usize, n: usize, rng: &mut fastrand::Rng) -> Vec<NewHistory> {
    let first = Utc::now().naive_utc() - Duration::days(90);
    let step = 90.0 * 86400.0 / ROWS as f64;
    (start..start + n)
        .map(|i| {
            let created = first + Duration::milliseconds((i as f64 * step * 1000.0) as i64);
            let site = rng.u32(0..10);
            let account = format!("acct{site}-{}", rng.u32(0..5));
            let credential_id = i64::from(rng.u32(1..500));
            let id = format!("bench-{i}");
            let site = format!("court_{site}");
            NewHistory {
                status: STATUSES[rng.usize(..STATUSES.len())].into(),
                total_duration: rng.f64() * 30.0,
                login_duration: Some(rng.f64() * 25.0),
                ..NewHistory::login(&id, &site, (&account, credential_id), created)
            }
        })
        .collect()
}

fn run(name: &str, url: &str) {
    let pool = Pool::connect(url, 4).expect("pool");
    pool.migrate().expect("migrate");
    let mut conn = pool.get().expect("connection");
    let mut rng = fastrand::Rng::with_seed(7);
    let started = Instant::now();
    let mut written = 0;
    while written < ROWS {
        let batch = rows(written, BATCH, &mut rng);
        written += tokend::db::history::insert_batch(&mut conn, &batch).expect("insert");
    }
    let per_second = written as f64 / started.elapsed().as_secs_f64();
    println!(
        "{name:<10} history writes, batches of {BATCH}: {per_second:>9.0} rows/s (target ≥ 100000) {}",
        if per_second >= 100_000.0 { "OK" } else { "BELOW TARGET" }
    );
    if let tokend::db::DbConnection::Postgres(c) = &mut *conn {
        diesel::sql_query("ANALYZE token_acquisition_history")
            .execute(c)
            .ok();
    }
    for (days, site) in [(7, None), (90, None), (30, Some("court_3"))] {
        let _ = tokend::db::statistics::report(&mut conn, days, site).expect("warm-up");
        let started = Instant::now();
        let report = tokend::db::statistics::report(&mut conn, days, site).expect("statistics");
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        println!(
            "{name:<10} /statistics days={days:<2} site={:<8} over {ROWS} rows: {ms:>7.1} ms, {} rows counted (target < 250 ms) {}",
            site.unwrap_or("all"),
            report.summary.totals.total,
            if ms < 250.0 { "OK" } else { "BELOW TARGET" }
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run(
        "sqlite",
        &format!("sqlite://{}/history.db", dir.path().display()),
    );

    let admin = std::env::var("TOKEND_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let Ok(mut conn) = PgConnection::establish(&admin) else {
        println!("postgresql not reachable at {admin}: skipped");
        return;
    };
    let name = format!("tokend_bench_{}", std::process::id());
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .expect("create database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    run("postgresql", &format!("{base}/{name}"));
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .ok();
}

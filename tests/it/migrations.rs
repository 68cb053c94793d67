//! Migrations run on SQLite and PostgreSQL, are idempotent, and give both backends the same
//! tables, columns, indexes and unique constraints: the two migration trees cannot drift.

use std::collections::BTreeSet;

use diesel::sql_types::Text;
use diesel::{QueryableByName, RunQueryDsl};
use tokend::db::{DbConnection, Pool};

use crate::support;

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// (table, column) pairs and index names of tokend's tables.
fn shape(conn: &mut DbConnection) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let tables = [
        "account_credentials",
        "tokens",
        "token_acquisition_history",
        "token_acquisition_daily",
        "alert_transitions",
    ];
    let mut columns = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    for table in tables {
        let (column_sql, index_sql) = match conn {
            DbConnection::Sqlite(_) => (
                format!("SELECT name FROM pragma_table_info('{table}')"),
                format!("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}' AND name NOT LIKE 'sqlite_autoindex%'"),
            ),
            DbConnection::Postgres(_) => (
                format!("SELECT column_name::text AS name FROM information_schema.columns WHERE table_name = '{table}'"),
                format!("SELECT indexname::text AS name FROM pg_indexes WHERE tablename = '{table}' AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'"),
            ),
        };
        let names: Vec<Name> = diesel::sql_query(column_sql).load(conn).unwrap();
        assert!(!names.is_empty(), "table {table} is missing");
        columns.extend(names.into_iter().map(|n| (table.to_string(), n.name)));
        let names: Vec<Name> = diesel::sql_query(index_sql).load(conn).unwrap();
        indexes.extend(names.into_iter().map(|n| n.name));
    }
    (columns, indexes)
}

/// Inserting the same acquisition_id or (site, account) twice is refused.
fn uniques_hold(conn: &mut DbConnection) {
    let now = "'2026-01-01 00:00:00'";
    let history = format!(
        "INSERT INTO token_acquisition_history (acquisition_id, site_name, status, trigger_reason, created_at, started_at) \
         VALUES ('acq-1', 'court_zxfw', 'success', 'manual', {now}, {now})"
    );
    diesel::sql_query(&history).execute(conn).unwrap();
    assert!(
        diesel::sql_query(&history).execute(conn).is_err(),
        "acquisition_id must be unique"
    );
    let bad_status = history
        .replace("'acq-1'", "'acq-2'")
        .replace("'success'", "'maybe'");
    assert!(
        diesel::sql_query(&bad_status).execute(conn).is_err(),
        "status is checked"
    );
    let token = format!(
        "INSERT INTO tokens (site_name, account, token, expires_at, created_at, updated_at) \
         VALUES ('court_zxfw', 'alice', 'v1.x', {now}, {now}, {now})"
    );
    diesel::sql_query(&token).execute(conn).unwrap();
    assert!(
        diesel::sql_query(&token).execute(conn).is_err(),
        "(site_name, account) must be unique"
    );
}

fn migrate_and_describe(url: &str) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let pool = Pool::connect(url, 2).unwrap();
    let applied = pool.migrate().unwrap();
    assert!(!applied.is_empty(), "a new database gets the migrations");
    assert!(
        pool.migrate().unwrap().is_empty(),
        "a second run applies nothing"
    );
    let mut conn = pool.get().unwrap();
    let described = shape(&mut conn);
    uniques_hold(&mut conn);
    described
}

#[test]
fn sqlite_and_postgres_get_the_same_schema() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = migrate_and_describe(&format!("sqlite://{}/t.db", dir.path().display()));
    assert_eq!(
        sqlite.1.len(),
        7,
        "five history indexes, one daily and one of the alert transitions: {:?}",
        sqlite.1
    );
    assert!(sqlite
        .0
        .contains(&("token_acquisition_history".into(), "error_details".into())));

    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let postgres = migrate_and_describe(&pg.url);
    assert_eq!(
        sqlite.0, postgres.0,
        "columns differ between migrations/sqlite and migrations/postgres"
    );
    assert_eq!(
        sqlite.1, postgres.1,
        "indexes differ between the two migration trees"
    );
}

#[test]
fn migration_folders_match() {
    let list = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        list("sqlite"),
        list("postgres"),
        "every migration needs both a sqlite and a postgres version"
    );
}

#[test]
fn migrate_command_runs_on_both_backends() {
    // Every folder of the migration tree is applied to a new database.
    let applied = format!(
        "applied {} migration",
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .unwrap()
            .count()
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/cli.db", dir.path().display());
    let out = support::tokend(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&applied));
    let again = support::tokend(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));

    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let out = support::tokend(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", &pg.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&applied));
}

#[test]
fn unreachable_database_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::tokend(dir.path())
        .arg("migrate")
        .env(
            "DATABASE_URL",
            "postgres://nobody:secretpw@127.0.0.1:1/none",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database unavailable"), "{stderr}");
    assert!(
        !stderr.contains("secretpw"),
        "the database password leaked: {stderr}"
    );
}

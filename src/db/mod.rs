//! Storage: one diesel code base over SQLite (embedded, the default) and PostgreSQL.
//!
//! [`DbConnection`] is a diesel `MultiConnection` over both backends; the backend is chosen by
//! the URL scheme (`sqlite://PATH`, `postgres://…`) in [`Pool::connect`], never by trial.
//! SQLite connections are set up for a long-running daemon (WAL, busy timeout, foreign keys).
//! Migrations are embedded per backend (`migrations/sqlite`, `migrations/postgres`) and run at
//! start and by `tokend migrate`. Queries live in one module per table and take a connection.

pub mod accounts;
pub mod alerts;
pub mod daily;
pub mod history;
pub mod models;
pub mod retention;
pub mod schema;
pub mod statistics;
pub mod status;
pub mod tokens;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection};
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::{Error, Result};
use crate::vault::secret::{mask_pieces, redact_url, url_password_pieces};

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A connection to whichever database the URL named.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

/// Splits a database URL into its backend and what that backend's driver expects.
pub fn parse_url(url: &str) -> Result<(Backend, String)> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(Error::config("database.url", "sqlite:// needs a file path"));
        }
        Ok((Backend::Sqlite, path.to_string()))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((Backend::Postgres, with_connection_guards(url)))
    } else {
        Err(Error::config(
            "database.url",
            "must start with sqlite:// or postgres://",
        ))
    }
}

/// libpq parameters that keep a call from hanging on a dead connection (a half-open TCP
/// connection, a host gone away): a bound on connecting, TCP keepalives, and a bound on
/// unacknowledged data. A parameter the URL sets itself is left as it is.
const PG_CONNECTION_GUARDS: [(&str, &str); 6] = [
    ("connect_timeout", "5"),
    ("keepalives", "1"),
    ("keepalives_idle", "15"),
    ("keepalives_interval", "5"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "30000"),
];

/// The longest a PostgreSQL statement may run (`statement_timeout`), so that none holds a
/// connection for ever.
const PG_STATEMENT_TIMEOUT: &str = "60s";

/// `connect_timeout` of a URL that lists several hosts: libpq waits that long for each host
/// in turn, and one host that does not answer at all (a primary gone with its machine) must
/// leave time to reach the next within the pool's 3 s connection timeout.
const PG_MULTI_HOST_CONNECT_TIMEOUT: &str = "2";

/// `url` with the [`PG_CONNECTION_GUARDS`] it does not set itself. A URL that lists several
/// hosts (libpq's failover syntax, `postgres://h1,h2:5433/db`) waits
/// [`PG_MULTI_HOST_CONNECT_TIMEOUT`] for each, and gets `target_session_attrs=read-write`
/// unless it says otherwise: tokend writes, and without it libpq would settle on the first
/// host that answers, a standby as well as the primary.
fn with_connection_guards(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let sets =
        |params: &[String], key: &str| params.iter().any(|p| p.split('=').next() == Some(key));
    let several_hosts = pg_hosts(base, &params).len() > 1;
    for (key, value) in PG_CONNECTION_GUARDS {
        if !sets(&params, key) {
            let value = match key {
                "connect_timeout" if several_hosts => PG_MULTI_HOST_CONNECT_TIMEOUT,
                _ => value,
            };
            params.push(format!("{key}={value}"));
        }
    }
    if several_hosts && !sets(&params, "target_session_attrs") {
        params.push("target_session_attrs=read-write".into());
    }
    format!("{base}?{}", params.join("&"))
}

/// The hosts a PostgreSQL URL names, in the order libpq tries them: those of the authority
/// (`h1:5432,h2:5433`) or, when it names none, of a `host=` query parameter. `base` is the
/// URL without its query.
fn pg_hosts<'a>(base: &'a str, params: &'a [String]) -> Vec<&'a str> {
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    // The user information ends at the last `@` (a password may hold a `/`).
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    let authority = rest.split('/').next().unwrap_or_default();
    let listed = if authority.is_empty() {
        params
            .iter()
            .find_map(|p| p.strip_prefix("host="))
            .unwrap_or_default()
    } else {
        authority
    };
    listed.split(',').filter(|h| !h.is_empty()).collect()
}

/// Opens connections for r2d2, picking the backend from the URL scheme.
#[derive(Debug)]
pub struct ConnectionManager {
    backend: Backend,
    target: String,
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> std::result::Result<DbConnection, r2d2::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.target)
                    .map_err(r2d2::Error::ConnectionError)?;
                // WAL lets readers run beside the writer; busy_timeout makes a writer wait for
                // the lock instead of failing with SQLITE_BUSY. It comes first: switching to
                // WAL takes a lock too (a daemon and a CLI command starting at once).
                conn.batch_execute(
                    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
            Backend::Postgres => {
                let mut conn =
                    PgConnection::establish(&self.target).map_err(r2d2::Error::ConnectionError)?;
                conn.batch_execute(&format!("SET statement_timeout = '{PG_STATEMENT_TIMEOUT}'"))
                    .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Postgres(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> std::result::Result<(), r2d2::Error> {
        diesel::sql_query("SELECT 1")
            .execute(conn)
            .map(|_| ())
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut DbConnection) -> bool {
        false
    }
}

pub type PooledConnection = r2d2::PooledConnection<ConnectionManager>;

/// r2d2's connection errors at debug level only, with the pieces of the password masked:
/// [`Pool::get`] reports them as one error (no `[ERROR r2d2]` lines in CLI output), and the
/// daemon logs `event=database_unreachable` once.
#[derive(Debug)]
struct MaskingErrorHandler {
    pieces: Vec<String>,
}

impl r2d2::HandleError<r2d2::Error> for MaskingErrorHandler {
    fn handle_error(&self, error: r2d2::Error) {
        log::debug!(
            "event=database_connect_failed error=\"{}\"",
            mask_pieces(&error.to_string(), &self.pieces)
        );
    }
}

/// The r2d2 pool, with the backend it talks to. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: r2d2::Pool<ConnectionManager>,
    backend: Backend,
    /// The URL with its password hidden, for logs and health.
    display_url: String,
    /// Pieces of the URL's password, masked in the driver's error messages.
    password_pieces: Arc<Vec<String>>,
    /// Set while the database cannot be reached: callers then fail at once instead of each
    /// waiting for a connection (acquisitions go on without it, SPEC §10), and one
    /// background probe finds out when it is back.
    down: Arc<AtomicBool>,
    /// How many times the probe found the database back after an outage: the history's spool
    /// is replayed at once when this moves (a restart, a failover to a promoted standby).
    comebacks: Arc<AtomicU64>,
}

/// How often the background probe tries the database while it is down.
const PROBE_EVERY: Duration = Duration::from_millis(500);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({})", self.display_url)
    }
}

impl Pool {
    /// Builds the pool without waiting for the database: connections are made on demand, so
    /// that tokend can start (and serve cached tokens) while the database is down.
    pub fn connect(url: &str, size: u32) -> Result<Pool> {
        let (backend, target) = parse_url(url)?;
        // SQLite has one writer at a time; a few connections are plenty and avoid lock churn.
        let size = if backend == Backend::Sqlite {
            size.min(4)
        } else {
            size
        };
        let inner = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(3))
            // A connection cut by a database restart is found here and replaced, rather
            // than failing the next query.
            .test_on_check_out(true)
            .error_handler(Box::new(MaskingErrorHandler {
                pieces: url_password_pieces(url),
            }))
            .build_unchecked(ConnectionManager { backend, target });
        Ok(Pool {
            inner,
            backend,
            display_url: redact_url(url),
            password_pieces: Arc::new(url_password_pieces(url)),
            down: Arc::default(),
            comebacks: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// A connection, or [`Error::DatabaseUnavailable`] naming why none could be had.
    pub fn get(&self) -> Result<PooledConnection> {
        if self.down.load(Ordering::Acquire) {
            return Err(Error::DatabaseUnavailable(format!(
                "{}: unreachable (retrying in the background)",
                self.display_url
            )));
        }
        self.inner.get().map_err(|e| {
            // Every connection busy is a full pool, not a dead database.
            let full = self.inner.state().connections >= self.inner.max_size();
            if !full && !self.down.swap(true, Ordering::AcqRel) {
                log::warn!(
                    "event=database_unreachable url={} error=\"{}\"",
                    self.display_url,
                    mask_pieces(&e.to_string(), &self.password_pieces)
                );
                self.probe_until_back();
            }
            // libpq's messages end with a newline: one line, however it failed.
            let reason = e.to_string().trim_end().replace('\n', " ");
            let error = mask_pieces(&reason, &self.password_pieces);
            Error::DatabaseUnavailable(format!("{}: {error}", self.display_url))
        })
    }

    /// Tries the database every [`PROBE_EVERY`] on a thread of its own until it answers.
    fn probe_until_back(&self) {
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name("tokend-db-probe".into())
            .spawn(move || loop {
                std::thread::sleep(PROBE_EVERY);
                if let Ok(mut conn) = pool.inner.get() {
                    if diesel::sql_query("SELECT 1").execute(&mut *conn).is_ok() {
                        pool.down.store(false, Ordering::Release);
                        pool.comebacks.fetch_add(1, Ordering::AcqRel);
                        log::info!("event=database_reachable url={}", pool.display_url);
                        return;
                    }
                }
            });
        if spawned.is_err() {
            // Without a probe, let the next caller try again.
            self.down.store(false, Ordering::Release);
        }
    }

    /// How many times the database came back after being unreachable (0 until it first
    /// does): a change means it answers again, maybe on another host.
    pub fn comebacks(&self) -> u64 {
        self.comebacks.load(Ordering::Acquire)
    }

    pub fn max_size(&self) -> u32 {
        self.inner.max_size()
    }

    /// Connections open and idle, for resource reports.
    pub fn state(&self) -> (u32, u32) {
        let state = self.inner.state();
        (state.connections, state.idle_connections)
    }

    /// Runs `work` with a connection on the blocking thread pool, off the async threads.
    pub async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T> + Send + 'static,
    {
        let pool = self.clone();
        blocking(move || {
            let mut conn = pool.get()?;
            work(&mut conn)
        })
        .await
    }

    /// Runs the pending migrations of this backend; returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<String>> {
        let mut conn = self.get()?;
        run_migrations(&mut conn)
    }
}

/// Runs blocking work (a query, a file write and its fsync) on the blocking thread pool: the
/// one road for database and disk work, never the async threads or the arbiter of the actors.
/// A panic in `work` is an [`Error::Internal`] of this call.
pub async fn blocking<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    actix_web::web::block(work)
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))?
}

/// Runs the embedded migrations that match the connection's backend.
pub fn run_migrations(conn: &mut DbConnection) -> Result<Vec<String>> {
    let applied = match conn {
        DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS),
        DbConnection::Postgres(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS),
    }
    .map_err(|e| Error::Migration(e.to_string()))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// Whether a diesel error is a unique-constraint violation (an insert of an existing row).
pub fn is_unique_violation(err: &diesel::result::Error) -> bool {
    matches!(
        err,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_panic_in_database_work_fails_that_call_only() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::connect(&format!("sqlite://{}/h.db", dir.path().display()), 2).unwrap();
        let failed: Result<()> = pool.run(|_| panic!("a bug")).await;
        assert!(matches!(failed, Err(Error::Internal(_))), "{failed:?}");
        assert!(
            status::check(&pool).await.is_ok(),
            "the pool stopped serving"
        );
    }

    #[test]
    fn postgres_urls_get_connection_guards_unless_they_set_them() {
        let (_, target) = parse_url("postgres://u:p@db/tokend").unwrap();
        assert!(target.starts_with("postgres://u:p@db/tokend?connect_timeout=5&keepalives=1"));
        assert!(target.contains("tcp_user_timeout=30000"));
        let (_, target) =
            parse_url("postgres://db/tokend?sslmode=require&keepalives_idle=60").unwrap();
        assert!(target.contains("sslmode=require&keepalives_idle=60&"));
        assert_eq!(target.matches("keepalives_idle").count(), 1);
        assert!(
            !target.contains("target_session_attrs"),
            "one host: any session will do"
        );
    }

    #[test]
    fn multi_host_urls_are_taken_as_libpq_takes_them() {
        let url = "postgres://u:secret@h1:5432,h2:5433/db?target_session_attrs=read-write";
        let (backend, target) = parse_url(url).unwrap();
        assert_eq!(backend, Backend::Postgres);
        assert!(
            target.starts_with(&format!("{url}&connect_timeout=2&")),
            "{target}"
        );
        assert_eq!(target.matches("target_session_attrs").count(), 1);
        // Without it, a URL of several hosts asks for the primary; one that says otherwise
        // keeps its choice.
        for url in [
            "postgresql://h1,h2/db",
            "postgres://u:p/w@h1:5432,h2:5433",
            "postgres:///db?host=h1,h2&port=5432,5433",
        ] {
            let (_, target) = parse_url(url).unwrap();
            assert!(
                target.ends_with("&target_session_attrs=read-write"),
                "{target}"
            );
        }
        let (_, target) = parse_url("postgres://h1,h2/db?connect_timeout=10").unwrap();
        assert!(target.contains("?connect_timeout=10&"), "{target}");
        assert_eq!(target.matches("connect_timeout").count(), 1, "{target}");
        let (_, target) = parse_url("postgres://h1,h2/db?target_session_attrs=any").unwrap();
        assert!(target.contains("target_session_attrs=any&"), "{target}");
        assert!(!target.contains("read-write"), "{target}");
        assert_eq!(
            pg_hosts("postgres://u:a,b@h1:1,h2:2,[::1]:3/db", &[]),
            ["h1:1", "h2:2", "[::1]:3"]
        );
    }

    #[test]
    fn a_multi_host_pool_shows_every_host_and_no_password() {
        let url = "postgres://u:secret@h1:5432,h2:5433/db?target_session_attrs=read-write";
        let pool = Pool::connect(url, 2).unwrap();
        assert_eq!(
            pool.display_url(),
            "postgres://u:***@h1:5432,h2:5433/db?target_session_attrs=read-write"
        );
        assert!(!format!("{pool:?}").contains("secret"));
    }
}

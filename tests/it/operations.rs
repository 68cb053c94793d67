//! Operations (SPEC §10): SIGTERM answers running logins and exits 0; a database outage
//! loses no history (spooled, then written once each, also across a kill -9); a Redis
//! outage keeps tokens flowing and heals by itself; logs and files hold no secrets.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::json;

use crate::support::portal::{AccountBehaviour, Portal};
use crate::support::{self, proxy, write_config, Daemon};

fn site_config(portal: &Portal, database: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{database}\"\n{extra}\n\
         [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
        portal.login_url()
    )
}

#[test]
fn sigterm_answers_running_logins_and_exits_0() {
    let portal = Portal::start();
    *portal.state.latency.lock().unwrap() = Duration::from_millis(1500);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/tokend.db", dir.path().display());
    let config = write_config(dir.path(), &site_config(&portal, &db, ""));
    for account in ["a1", "a2", "a3"] {
        portal.state.set_account(
            account,
            AccountBehaviour {
                password: format!("pw-{account}"),
                ..Default::default()
            },
        );
        support::add_account(
            dir.path(),
            &config,
            "court_zxfw",
            account,
            &format!("pw-{account}"),
        );
    }
    let daemon = Daemon::start(dir.path(), &config);
    let addr = daemon.addr;
    let callers: Vec<_> = ["a1", "a2", "a3"]
        .into_iter()
        .map(|account| {
            std::thread::spawn(move || {
                support::acquire(addr, json!({"site_name": "court_zxfw", "account": account}))
            })
        })
        .collect();
    // Two logins at the portal (max_concurrent_per_site = 2), the third waiting for a slot.
    support::wait_until_blocking(
        "two logins running, one queued",
        Duration::from_secs(10),
        || {
            let (_, usage) =
                support::get(&daemon.url("/api/v1/automation/performance/resource-usage"));
            (portal
                .state
                .in_flight
                .load(std::sync::atomic::Ordering::SeqCst)
                == 2
                && usage["data"]["queue"]["size"] == 1)
                .then_some(())
        },
    );
    let exit = daemon.terminate();
    for caller in callers {
        let (status, body) = caller.join().unwrap();
        assert_eq!(status, 200, "a running login was cut by the stop: {body}");
    }
    assert_eq!(exit.code(), Some(0));
    // Their history was flushed before the exit.
    let pool = tokend::db::Pool::connect(&db, 1).unwrap();
    let rows = tokend::db::history::recent(&mut pool.get().unwrap(), None, 10).unwrap();
    assert_eq!(rows.len(), 3, "history rows after the stop");
}

fn history_count(admin_db_url: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        distinct_ids: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(admin_db_url).unwrap();
    // One statement, so that rows written meanwhile cannot make the two counts differ.
    let count: Count = diesel::sql_query(
        "SELECT COUNT(DISTINCT acquisition_id) AS distinct_ids, COUNT(*) AS n \
         FROM token_acquisition_history",
    )
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(
        count.distinct_ids, count.n,
        "an acquisition was recorded twice"
    );
    count.n
}

fn wait_for_rows(url: &str, expected: i64) {
    let started = Instant::now();
    loop {
        let n = history_count(url);
        if n == expected {
            return;
        }
        assert!(
            n < expected,
            "{n} rows, more than the {expected} acquisitions"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{n} of {expected} history rows reached the database"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_database_outage_loses_no_history() {
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let pg_addr = "127.0.0.1:5432".parse().unwrap();
    let proxy = proxy::Proxy::start(pg_addr);
    let through_proxy = pg.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    assert_ne!(
        through_proxy, pg.url,
        "the test database URL must name 127.0.0.1:5432"
    );

    let portal = Portal::start();
    portal.state.accept("alice", "pw-alice");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &site_config(&portal, &through_proxy, ""));
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let daemon = Daemon::start(dir.path(), &config);
    let forced = json!({"site_name": "court_zxfw", "account": "alice", "force_refresh": true});
    assert_eq!(support::acquire(daemon.addr, forced.clone()).0, 200);
    wait_for_rows(&pg.url, 1);

    // The database goes away: acquisitions are still served, their history is spooled.
    proxy.cut();
    for _ in 0..5 {
        let (status, body) = support::acquire(daemon.addr, forced.clone());
        assert_eq!(status, 200, "served without the database: {body}");
    }
    let (status, health) = support::get(&daemon.url("/api/v1/automation/performance/health"));
    assert_eq!(status, 503, "{health}");
    assert!(
        dir.path().join("tokend-history.spool").exists(),
        "rows wait in the spool"
    );
    // It comes back: every row is written, once.
    proxy.restore();
    wait_for_rows(&pg.url, 6);

    // Spooled rows survive a crash and are written at the next start.
    proxy.cut();
    for _ in 0..2 {
        assert_eq!(support::acquire(daemon.addr, forced.clone()).0, 200);
    }
    // Both rows are in the spool before the crash (the rows of the first outage were
    // written and the spool cleared before `wait_for_rows(6)` saw them).
    let spool = tokend::history::spool::Spool::new(dir.path().join("tokend-history.spool"));
    support::wait_until_blocking("two rows spooled", Duration::from_secs(15), || {
        (spool.load().unwrap().len() == 2).then_some(())
    });
    let mut daemon = daemon;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    proxy.restore();
    let _restarted = Daemon::start(dir.path(), &config);
    wait_for_rows(&pg.url, 8);
    let started = Instant::now();
    while dir.path().join("tokend-history.spool").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the spool was not emptied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private redis-server on `port`, killed when dropped.
struct PrivateRedis(Child);

impl PrivateRedis {
    fn start(port: u16) -> Option<PrivateRedis> {
        let child = Command::new(crate::support::redis_server::server_binary())
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(_) => {
                support::require("the redis-server program", false);
                return None;
            }
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(PrivateRedis(child))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_redis_outage_keeps_tokens_flowing_and_heals() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(redis) = PrivateRedis::start(port) else {
        return;
    };
    let portal = Portal::start();
    portal.state.accept("alice", "pw-alice");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/tokend.db", dir.path().display());
    let config = write_config(
        dir.path(),
        &site_config(
            &portal,
            &db,
            &format!("[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\n"),
        ),
    );
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let daemon = Daemon::start(dir.path(), &config);
    let plain = json!({"site_name": "court_zxfw"});
    assert_eq!(support::acquire(daemon.addr, plain.clone()).0, 200);

    drop(redis);
    let started = Instant::now();
    for _ in 0..10 {
        let (status, body) = support::acquire(daemon.addr, plain.clone());
        assert_eq!(
            (status, body["data"]["source"].as_str()),
            (200, Some("cache")),
            "{body}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests waited on the dead Redis"
    );
    assert_eq!(portal.state.issued(), 1);
    let health_url = daemon.url("/api/v1/automation/performance/health");
    // Found out by itself within seconds, though cached acquires no longer ask Redis.
    support::wait_until_blocking("the cache degraded", Duration::from_secs(5), || {
        let (_, health) = support::get(&health_url);
        (health["data"]["components"]["cache"]["status"] == "degraded").then_some(())
    });

    // Redis is back on the same address: tokend reconnects by itself.
    let _redis = PrivateRedis::start(port).unwrap();
    let started = Instant::now();
    loop {
        let (_, health) = support::get(&health_url);
        if health["data"]["components"]["cache"]["status"] == "up" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "tokend did not reconnect: {health}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = support::acquire(
        daemon.addr,
        json!({"site_name": "court_zxfw", "force_refresh": true}),
    );
    assert_eq!(status, 200);
    let keys: Vec<String> = actix_web::rt::System::new().block_on(async move {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::AsyncCommands::keys(&mut conn, "tokend:token:*")
            .await
            .unwrap()
    });
    assert!(!keys.is_empty(), "new tokens are cached in Redis again");
}

#[test]
fn trace_logs_and_files_hold_no_password_and_no_token() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/tokend.db", dir.path().display());
    let config = write_config(dir.path(), &site_config(&portal, &db, ""));
    let password = "Sup3r-S3cret-pw!";
    portal.state.accept("alice", password);
    support::add_account(dir.path(), &config, "court_zxfw", "alice", password);
    support::add_account(dir.path(), &config, "court_zxfw", "bob", "Wr0ng-Passw0rd-x");
    let mut daemon = Daemon::start_with_log(dir.path(), &config, "trace");
    let (_, body) = support::acquire(
        daemon.addr,
        json!({"site_name": "court_zxfw", "account": "alice"}),
    );
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let _ = support::acquire(
        daemon.addr,
        json!({"site_name": "court_zxfw", "account": "bob"}),
    );
    // Both logins are logged and in the history (the database file) before it is read.
    let mut log = Vec::new();
    support::wait_until_blocking("both logins logged", Duration::from_secs(10), || {
        log.extend(daemon.drain_log());
        log.iter()
            .any(|l| l.contains("event=login_failed") && l.contains("account=bob"))
            .then_some(())
    });
    support::wait_until_blocking(
        "both logins in the history",
        Duration::from_secs(10),
        || {
            let (_, history) = support::get(&daemon.url("/api/v1/automation/history"));
            (history["data"]["items"].as_array().map_or(0, Vec::len) == 2).then_some(())
        },
    );
    let log = log.join("\n");
    assert!(log.contains("event=login_succeeded"), "trace log captured");
    drop(daemon);
    for secret in [password, "Wr0ng-Passw0rd-x", token.as_str()] {
        assert!(!log.contains(secret), "{secret:?} is in the trace log");
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret:?} is in {}",
                path.display()
            );
        }
    }
}

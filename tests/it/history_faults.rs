//! History under database faults (SPEC §10), on the real binary and a real PostgreSQL: a write
//! that hangs is given up and its rows spooled (so the stop is not held and nothing is lost),
//! and a row the database refuses for its content goes to the dead-letter file instead of
//! blocking the spool.

use std::path::Path;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{json, Value};
use tokend::db::models::NewHistory;
use tokend::history::spool::Spool;

use crate::support::portal::Portal;
use crate::support::{self, write_config, Daemon};

fn config_text(portal: &Portal, database: &str, dir: &Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{database}\"\n\
         [history]\nspool_file = \"{}\"\n\
         [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
        dir.join("history.spool").display(),
        portal.login_url()
    )
}

fn stored_ids(url: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Text)]
        acquisition_id: String,
    }
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::sql_query("SELECT acquisition_id FROM token_acquisition_history ORDER BY id")
        .load::<Id>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|r| r.acquisition_id)
        .collect()
}

fn row(id: &str, error_message: Option<&str>) -> NewHistory {
    let now = chrono::Utc::now().naive_utc();
    NewHistory {
        status: "failed".into(),
        error_message: error_message.map(str::to_string),
        ..NewHistory::login(id, "court_zxfw", ("alice", 1), now)
    }
}

/// PostgreSQL refuses a NUL character in text: that row goes to the dead-letter file, and
/// the rows around it reach the database.
#[test]
fn a_row_the_database_refuses_does_not_block_the_spool() {
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(&portal, &pg.url, dir.path()));
    let spool = Spool::new(dir.path().join("history.spool"));
    let good: Vec<String> = (0..6).map(|i| format!("good-{i}")).collect();
    let mut rows: Vec<NewHistory> = good.iter().map(|id| row(id, None)).collect();
    rows.insert(3, row("poison", Some("the portal said \u{0} here")));
    spool.append(&rows).unwrap();

    let mut daemon = Daemon::start(dir.path(), &config);
    support::wait_until_blocking(
        "the spool to be written past the poison row",
        Duration::from_secs(20),
        || (stored_ids(&pg.url) == good).then_some(()),
    );
    let dead = dir.path().join("history.spool.dead-letter");
    let text = std::fs::read_to_string(&dead).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"poison\""), "{text}");

    let log = daemon.drain_log().join("\n");
    assert!(
        log.lines().any(|l| l.contains("event=history_dead_letter")
            && l.contains("acquisition_id=poison")
            && l.contains(&dead.display().to_string())),
        "no log line names the dead-letter file:\n{log}"
    );
    let health = support::block_on(async {
        reqwest::get(daemon.url("/api/v1/automation/performance/health"))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    let history = &health["data"]["components"]["history"];
    assert_eq!(history["dead_letter_rows"], 1, "{health}");
    assert_eq!(
        history["dead_letter_file"],
        dead.display().to_string(),
        "{health}"
    );
}

/// A history write hangs (another session holds the table locked, as a stuck write would):
/// it is given up after its timeout, the rows go to the spool, and SIGTERM exits in time
/// without losing them.
#[test]
fn a_hanging_history_write_is_spooled_and_does_not_hold_the_stop() {
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let portal = Portal::start();
    portal.state.accept("alice", "pw-alice");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(&portal, &pg.url, dir.path()));
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let daemon = Daemon::start(dir.path(), &config);
    let body = json!({"site_name": "court_zxfw", "account": "alice"});
    let (status, first) = support::acquire(daemon.addr, body);
    assert_eq!(status, 200, "{first}");
    support::wait_until_blocking("the first row written", Duration::from_secs(10), || {
        (stored_ids(&pg.url).len() == 1).then_some(())
    });

    let mut blocker = PgConnection::establish(&pg.url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut blocker).unwrap();
    diesel::sql_query("LOCK TABLE token_acquisition_history IN SHARE MODE")
        .execute(&mut blocker)
        .unwrap();
    let forced = json!({"site_name": "court_zxfw", "account": "alice", "force_refresh": true});
    let (status, second) = support::acquire(daemon.addr, forced);
    assert_eq!(status, 200, "{second}");
    let id = second["data"]["acquisition_id"]
        .as_str()
        .unwrap()
        .to_string();
    let exit = daemon.terminate();
    assert_eq!(exit.code(), Some(0));
    let spooled: Vec<String> = Spool::new(dir.path().join("history.spool"))
        .load()
        .unwrap()
        .into_iter()
        .map(|r| r.acquisition_id)
        .collect();
    assert!(
        spooled.contains(&id),
        "the row of the hanging write is lost (spool: {spooled:?})"
    );
    diesel::sql_query("ROLLBACK").execute(&mut blocker).unwrap();
}

/// The spool cannot be read or written (its path is a directory): rows the database did not
/// take are nowhere safe, and the stop says so instead of `history_flushed`.
#[test]
fn a_stop_with_stranded_rows_logs_the_failure() {
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let portal = Portal::start();
    portal.state.accept("alice", "pw-alice");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(&portal, &pg.url, dir.path()));
    std::fs::create_dir(dir.path().join("history.spool")).unwrap();
    std::fs::write(dir.path().join("history.spool/keeps-it-non-empty"), "").unwrap();
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let mut daemon = Daemon::start(dir.path(), &config);
    let (status, answer) = support::acquire(
        daemon.addr,
        json!({"site_name": "court_zxfw", "account": "alice"}),
    );
    assert_eq!(status, 200, "{answer}");

    let pid = daemon.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut log = daemon.drain_log();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log.iter().any(|l| l.contains("event=stopped")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match daemon.log.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => panic!("tokend did not stop; its log:\n{}", log.join("\n")),
        }
    }
    let log = log.join("\n");
    assert!(
        log.lines()
            .any(|l| l.contains("event=history_not_flushed") && l.contains("error=")),
        "the stop does not report the stranded rows:\n{log}"
    );
    assert!(
        !log.contains("event=history_flushed"),
        "the stop reports success while rows are stranded:\n{log}"
    );
}

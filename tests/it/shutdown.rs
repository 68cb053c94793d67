//! Stopping with a short grace: a login longer than `shutdown_grace` is cut, its caller gets
//! 503 `SHUTTING_DOWN` (not a closed connection), the cut is logged and recorded; a second
//! SIGINT forces the exit.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::portal::Portal;
use crate::support::{self, write_config, Daemon};

/// tokend with one account whose portal login takes 8 s.
fn slow_login_daemon(dir: &std::path::Path, grace: f64) -> (Portal, Daemon, String) {
    let portal = Portal::start();
    portal.state.accept("alice", "pw-alice");
    *portal.state.latency.lock().unwrap() = Duration::from_secs(8);
    let db = format!("sqlite://{}/tokend.db", dir.display());
    let config = write_config(
        dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = {grace}\n[database]\nurl = \"{db}\"\n\
             [retry]\nlogin_timeout = 30\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    );
    support::add_account(dir, &config, "court_zxfw", "alice", "pw-alice");
    let daemon = Daemon::start(dir, &config);
    (portal, daemon, db)
}

fn wait_for_login(portal: &Portal) {
    support::wait_until_blocking(
        "the login to reach the portal",
        Duration::from_secs(10),
        || (portal.state.in_flight.load(Ordering::SeqCst) > 0).then_some(()),
    );
}

fn signal(daemon: &Daemon, name: &str) {
    let pid = daemon.child.id().to_string();
    Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
}

#[test]
fn a_login_cut_by_the_stop_is_answered_logged_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (portal, mut daemon, db) = slow_login_daemon(dir.path(), 1.0);
    let addr = daemon.addr;
    let caller =
        std::thread::spawn(move || support::acquire(addr, json!({"site_name": "court_zxfw"})));
    wait_for_login(&portal);

    signal(&daemon, "TERM");
    let (status, body) = caller.join().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "SHUTTING_DOWN", "{body}");

    let exit = support::wait_until_blocking("tokend to exit", Duration::from_secs(15), || {
        daemon.child.try_wait().unwrap()
    });
    assert_eq!(exit.code(), Some(0));
    let log = daemon.drain_log().join("\n");
    assert!(
        log.contains("event=shutdown_waiting requests=1"),
        "the stop does not say what it waits for: {log}"
    );
    assert!(
        log.contains("event=login_abandoned site=court_zxfw account=alice"),
        "{log}"
    );

    let pool = tokend::db::Pool::connect(&db, 1).unwrap();
    let rows = tokend::db::history::recent(&mut pool.get().unwrap(), None, 10).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, "timeout");
    assert_eq!(rows[0].error_message.as_deref(), Some("shutdown"));
    assert_eq!(rows[0].account.as_deref(), Some("alice"));
}

#[test]
fn a_second_sigint_forces_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (portal, mut daemon, _db) = slow_login_daemon(dir.path(), 60.0);
    let addr = daemon.addr;
    let _caller = std::thread::spawn(move || {
        let _ =
            std::panic::catch_unwind(|| support::acquire(addr, json!({"site_name": "court_zxfw"})));
    });
    wait_for_login(&portal);
    signal(&daemon, "INT");
    // The stop is under way (it waits for the login) before the second signal.
    daemon.wait_for_log("event=shutdown ", Duration::from_secs(5), &mut Vec::new());
    let sent = Instant::now();
    signal(&daemon, "INT");
    let exit = loop {
        if let Some(exit) = daemon.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "a second SIGINT did not force the exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(exit.code(), Some(0));
}

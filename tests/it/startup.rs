//! Start-up: the port is taken before anything is written, and what would fail on the first
//! acquisition (a wrong secret key, a missing login program) stops `serve` at once; Redis's
//! state is in the first lines of the log.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, write_config, Daemon};

const KEY_A: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
const KEY_B: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=";

/// Runs `tokend serve` and waits (up to 20 s) for it to exit.
fn serve_expecting_exit(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Output {
    let mut child = support::tokend(dir)
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tokend serve did not exit: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn port_in_use_is_one_clear_line_before_any_migration() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = write_config(
        dir.path(),
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let out = serve_expecting_exit(dir.path(), &config, &[("RUST_LOG", "info")]);
    let err = support::stderr(&out);
    assert!(
        matches!(out.status.code(), Some(69) | Some(71)),
        "exit {:?}: {err}",
        out.status.code()
    );
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(
        lines[0].contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        !dir.path().join("tokend.db").exists(),
        "the database was touched before the port was taken"
    );
}

#[test]
fn a_key_that_does_not_open_the_accounts_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n");
    support::add_account_with_env(
        dir.path(),
        &config,
        ("court_zxfw", "alice", "pw"),
        &[("TOKEND_SECRET_KEY", KEY_A)],
    );

    let out = serve_expecting_exit(dir.path(), &config, &[("TOKEND_SECRET_KEY", KEY_B)]);
    assert_eq!(out.status.code(), Some(78), "{}", support::stderr(&out));
    assert!(
        support::stderr(&out).contains("the secret key does not match the stored accounts"),
        "{}",
        support::stderr(&out)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn health_is_unhealthy_when_the_key_stops_matching_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n");
    let daemon =
        Daemon::start_with_env(dir.path(), &config, "info", &[("TOKEND_SECRET_KEY", KEY_B)]);
    let health = daemon.url("/api/v1/automation/performance/health");
    let body: serde_json::Value = reqwest::get(&health).await.unwrap().json().await.unwrap();
    assert_eq!(body["data"]["status"], "healthy", "{body}");

    // An account sealed under another key reaches the database behind the daemon's back.
    support::add_account_with_env(
        dir.path(),
        &config,
        ("court_zxfw", "alice", "pw"),
        &[("TOKEND_SECRET_KEY", KEY_A)],
    );

    let body: serde_json::Value = reqwest::get(&health).await.unwrap().json().await.unwrap();
    assert_eq!(body["data"]["status"], "unhealthy", "{body}");
    assert!(
        body.to_string()
            .contains("the secret key does not match the stored accounts"),
        "{body}"
    );
}

/// A solver whose script is missing (only `sh` was checked before issue 21) stops `serve`
/// with 78, naming the key and the missing path.
#[test]
fn a_missing_solver_script_stops_serve_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[sites]]\nname = \"z\"\ndriver = \"court_zxfw\"\n\
         captcha_solver = [\"sh\", \"/nonexistent/solve.py\"]\n",
    );
    let out = serve_expecting_exit(dir.path(), &config, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", support::stderr(&out));
    for needle in ["sites[0].captcha_solver", "/nonexistent/solve.py"] {
        assert!(
            support::stderr(&out).contains(needle),
            "{}",
            support::stderr(&out)
        );
    }
}

#[test]
fn a_missing_login_program_stops_serve_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"http://127.0.0.1:1/login\"\n\
         [[sites]]\nname = \"court_baoquan\"\ndriver = \"command\"\n\
         command = [\"/nonexistent/baoquan-login\", \"--headless\"]\n",
    );
    let out = serve_expecting_exit(dir.path(), &config, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", support::stderr(&out));
    assert!(
        support::stderr(&out).contains("sites[1].command"),
        "{}",
        support::stderr(&out)
    );
    assert!(
        support::stderr(&out).contains("/nonexistent/baoquan-login"),
        "{}",
        support::stderr(&out)
    );

    // An existing program that may not be run is refused too.
    let script = dir.path().join("login.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[sites]]\nname = \"s\"\ndriver = \"command\"\n\
             command = [\"{}\"]\n",
            script.display()
        ),
    );
    let out = serve_expecting_exit(dir.path(), &config, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", support::stderr(&out));
    assert!(
        support::stderr(&out).contains("sites[0].command"),
        "{}",
        support::stderr(&out)
    );
}

#[test]
fn redis_state_is_logged_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[redis]\nurl = \"redis://127.0.0.1:1/0\"\n",
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    let log = daemon.drain_log().join("\n");
    assert!(
        log.contains("event=redis_state state=down"),
        "Redis being down is not said at start: {log}"
    );
    drop(daemon);

    if !support::redis_available() {
        return;
    }
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"tokend-test-{}\"\n",
            support::redis_url(),
            support::unique()
        ),
    );
    let mut daemon = Daemon::start(dir.path(), &config);
    let log = daemon.drain_log().join("\n");
    assert!(log.contains("event=redis_state state=up"), "{log}");
}

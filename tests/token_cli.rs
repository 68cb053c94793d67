//! `tokend token get` against a running daemon (a real child process) that logs in to a
//! real fake portal.

mod common;
#[path = "common/portal.rs"]
mod portal;

use common::{write_config, Daemon};
use portal::Portal;

#[actix_rt::test]
async fn token_get_prints_a_token_from_the_daemon() {
    let portal = Portal::start();
    portal.state.accept("alice", "pw-alice");
    let dir = tempfile::tempdir().unwrap();
    let admin = "admin-token-0123456789";
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{admin}\"\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    );
    common::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");

    let daemon = Daemon::start(dir.path(), &config);
    let url = format!("http://{}", daemon.addr);
    let get = |extra: &[&str]| {
        common::tokend(dir.path())
            .args(["token", "get", "court_zxfw", "--url", &url, "--config"])
            .arg(&config)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = get(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let token = String::from_utf8(first.stdout).unwrap();
    assert!(token.trim().starts_with("tok-alice-1-"), "{token}");
    assert!(String::from_utf8_lossy(&first.stderr).contains("source=login"));

    let cached = get(&["--account", "alice", "--json"]);
    let answer: serde_json::Value = serde_json::from_slice(&cached.stdout).unwrap();
    assert_eq!(answer["source"], "cache");
    assert_eq!(answer["token"].as_str().unwrap(), token.trim());

    let forced = get(&["--force-refresh"]);
    assert!(String::from_utf8_lossy(&forced.stdout).starts_with("tok-alice-2-"));
    assert_eq!(portal.state.issued(), 2);

    // Unknown account: a clear message and exit 1 (README: the account does not exist);
    // daemon unreachable: exit 69.
    let unknown = get(&["--account", "nobody"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("ACCOUNT_NOT_FOUND"));
    let down = common::tokend(dir.path())
        .args([
            "token",
            "get",
            "court_zxfw",
            "--url",
            "http://127.0.0.1:1",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(69));
}

//! `tokend token get` against a running daemon (a real child process) that logs in to a
//! real fake portal.

use crate::support::portal::Portal;
use crate::support::{self, write_config, Daemon};

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
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");

    let daemon = Daemon::start(dir.path(), &config);
    let url = format!("http://{}", daemon.addr);
    let get = |extra: &[&str]| {
        support::tokend(dir.path())
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
    let down = support::tokend(dir.path())
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

/// Issue 21: `token get --header` prints the header lines to send — `Authorization: Bearer …`
/// for a header token, `Cookie: SESSION=…` for a cookie session, never `Cookie SESSION=…` as
/// an `Authorization` value — and the answer's `headers` say the same.
#[actix_rt::test]
async fn token_get_header_prints_the_headers_to_send() {
    let bearer = Portal::start();
    bearer.state.accept("alice", "pw-alice");
    let cookies = Portal::start();
    cookies.state.accept("alice", "pw-alice");
    *cookies.state.cookie_max_age.lock().unwrap() = Some(1200);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n\
             [[sites]]\nname = \"cookie_portal\"\ndriver = \"http\"\nlogin_url = \"{}\"\n\
             token_from = \"cookies\"\n",
            bearer.login_url(),
            cookies.login_url()
        ),
    );
    for site in ["court_zxfw", "cookie_portal"] {
        support::add_account(dir.path(), &config, site, "alice", "pw-alice");
    }
    let daemon = Daemon::start(dir.path(), &config);
    let url = format!("http://{}", daemon.addr);
    let get = |site: &str, extra: &str| {
        let out = support::tokend(dir.path())
            .args(["token", "get", site, "--url", &url, extra, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };

    let line = get("cookie_portal", "--header");
    assert!(
        line.starts_with("Cookie: SESSION=tok-alice-1-") && line.ends_with("; uid=alice\n"),
        "{line:?}"
    );
    let answer: serde_json::Value = serde_json::from_str(&get("cookie_portal", "--json")).unwrap();
    assert_eq!(answer["source"], "cache");
    assert_eq!(answer["headers"]["Cookie"], answer["token"], "{answer}");
    assert_eq!(answer["headers"].as_object().unwrap().len(), 1, "{answer}");
    assert!(answer["authorization"].is_null(), "{answer}");

    let line = get("court_zxfw", "--header");
    assert!(
        line.starts_with("Authorization: Bearer tok-alice-1-"),
        "{line:?}"
    );
    let answer: serde_json::Value = serde_json::from_str(&get("court_zxfw", "--json")).unwrap();
    let bearer = format!("Bearer {}", answer["token"].as_str().unwrap());
    assert_eq!(answer["authorization"], bearer, "{answer}");
    assert_eq!(
        answer["headers"],
        serde_json::json!({ "Authorization": bearer })
    );
}

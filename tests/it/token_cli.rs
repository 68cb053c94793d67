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

/// A server that is not (this) tokend: answers each path with the canned status and body,
/// whatever is asked. Returns its base URL; it serves until the test ends.
fn foreign_daemon(answers: Vec<(&'static str, u16, &'static str)>) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            let (status, text) = answers
                .iter()
                .find(|(p, _, _)| *p == path)
                .map_or((404, "{}"), |(_, status, text)| (*status, *text));
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    format!("http://{addr}")
}

/// An answer the CLI cannot read as the type the API serializes (an older or foreign
/// server) is a daemon error (exit 69) that names the call, the type and the place in the
/// answer: never a panic, a `?` or a guessed default.
#[test]
fn answers_that_are_not_tokends_are_named_not_guessed() {
    let url = foreign_daemon(vec![
        (
            "/api/v1/automation/tokens/acquire",
            200,
            r#"{"success":true,"data":{"account":"alice","expires_at":"2026-01-01T00:00:00Z"}}"#,
        ),
        (
            "/api/v1/automation/tokens/checkouts",
            200,
            r#"{"success":true,"data":{"checkouts":[{"checkout_id":"c1","site_name":"s","accounts_site":"s","account":"a","credential_id":1,"job":null,"since":"yesterday","lease_until":"2026-01-01T00:00:00Z"}]}}"#,
        ),
        (
            "/api/v1/automation/accounts/unblock",
            404,
            r#"{"success":false,"message":"gone"}"#,
        ),
        (
            "/api/v1/automation/sites/court_zxfw/circuit/close",
            200,
            r#"{"ok":true}"#,
        ),
        (
            "/api/v1/automation/performance/health",
            200,
            r#"{"success":true,"data":{"status":"sleepy"}}"#,
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n");
    let run = |args: &[&str]| {
        let out = support::tokend(dir.path())
            .args(args)
            .args(["--url", &url, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            stderr,
        )
    };
    let (code, stdout, stderr) = run(&["token", "get", "court_zxfw"]);
    assert_eq!(code, Some(69), "{stderr}");
    assert_eq!(stdout, "", "no token is guessed");
    assert!(
        stderr.contains("POST /api/v1/automation/tokens/acquire")
            && stderr.contains("AcquiredToken")
            && stderr.contains("missing field `token`"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(&["checkout", "list"]);
    assert_eq!((code, stdout.as_str()), (Some(69), ""), "{stderr}");
    assert!(
        stderr.contains("CheckoutList") && stderr.contains("`checkouts[0].since`"),
        "{stderr}"
    );
    // An error answer without tokend's code: not taken as some code it did not say.
    let (code, _, stderr) = run(&["accounts", "unblock", "court_zxfw", "alice"]);
    assert_eq!(code, Some(69), "{stderr}");
    assert!(
        stderr.contains("(404)")
            && stderr.contains("ErrorBody")
            && stderr.contains("missing field `code`"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["sites", "close-circuit", "court_zxfw"]);
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("no `success`"), "{stderr}");
    // A health level this CLI does not know fails the step (exit 1: a step failed), named.
    let (code, stdout, stderr) = run(&["optimize", "--health-check"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("FAILED  health check")
            && stdout.contains("HealthReport")
            && stdout.contains("`status`")
            && stdout.contains("sleepy"),
        "{stdout}"
    );
}

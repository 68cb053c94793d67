//! The small things of issue 15, each as a user meets it: zoned times, case-insensitive
//! `Bearer`, `--url` without a scheme, `listen = "localhost:…"`, messages without repeated
//! prefixes, a checked log format with JSON numbers, CSV lines and booleans, `credential_id`
//! against `account`, one clear database error, `accounts list` aligned for Chinese names,
//! and `token invalidate`.

use crate::support as common;
use crate::support::portal;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{write_config, Daemon};
use portal::Portal;
use serde_json::{json, Value};

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = common::tokend(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let (method, url) = (method.to_string(), url.to_string());
    actix_web::rt::System::new().block_on(async move {
        let client = reqwest::Client::new();
        let mut request = client.request(method.parse().unwrap(), url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    })
}

/// A daemon on `listen` with alice and harry on the fake portal.
fn daemon_with_accounts(
    dir: &Path,
    portal: &Portal,
    listen: &str,
    extra_env: &[(&str, &str)],
) -> (Daemon, std::path::PathBuf) {
    portal.state.accept("alice", "pw-alice");
    portal.state.accept("harry", "pw-harry");
    let config = write_config(
        dir,
        &format!(
            "[server]\nlisten = \"{listen}\"\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    );
    common::add_account(dir, &config, "court_zxfw", "alice", "pw-alice");
    common::add_account(dir, &config, "court_zxfw", "harry", "pw-harry");
    let daemon = Daemon::start_with_env(dir, &config, "info", extra_env);
    (daemon, config)
}

fn ends_with_z(value: &Value, what: &str) {
    let text = value.as_str().unwrap_or_else(|| panic!("{what}: {value}"));
    assert!(
        text.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "{what} is not RFC 3339 with Z: {text}"
    );
}

/// `tokend token get court_zxfw --account ACCOUNT --url URL`.
fn token_get(dir: &Path, account: &str, url: &str) -> Output {
    run(
        dir,
        &[
            "token",
            "get",
            "court_zxfw",
            "--account",
            account,
            "--url",
            url,
        ],
        &[],
        "",
    )
}

#[test]
fn listen_may_name_a_host() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _) = daemon_with_accounts(dir.path(), &portal, "localhost:0", &[]);
    assert!(
        daemon.addr.ip().is_loopback(),
        "localhost resolved to {}",
        daemon.addr
    );
    let (status, _) = call("GET", &daemon.url("/healthz"), None);
    assert_eq!(status, 200);
}

#[test]
fn url_without_a_scheme_is_http() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _) = daemon_with_accounts(dir.path(), &portal, "127.0.0.1:0", &[]);
    let got = token_get(dir.path(), "alice", &daemon.addr.to_string());
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(stdout(&got).starts_with("tok-alice-"));
}

#[test]
fn api_times_are_rfc3339_with_z() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, config) = daemon_with_accounts(dir.path(), &portal, "127.0.0.1:0", &[]);
    let got = token_get(dir.path(), "alice", &daemon.url(""));
    assert!(got.status.success(), "{}", stderr(&got));

    // History is written in batches: wait for the row.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let history = loop {
        let (status, history) = call("GET", &daemon.url("/api/v1/automation/history"), None);
        assert_eq!(status, 200, "{history}");
        if history["data"]["items"][0].is_object() {
            break history;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no history row: {history}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let row = &history["data"]["items"][0];
    for field in ["created_at", "started_at", "finished_at"] {
        ends_with_z(&row[field], field);
    }
    let (_, stats) = call(
        "GET",
        &daemon.url("/api/v1/automation/performance/statistics?days=1"),
        None,
    );
    ends_with_z(&stats["data"]["period"]["start"], "period.start");
    ends_with_z(&stats["data"]["period"]["end"], "period.end");
    let list = run(
        dir.path(),
        &[
            "accounts",
            "list",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
        "",
    );
    let first: Value = serde_json::from_str(stdout(&list).lines().next().unwrap()).unwrap();
    ends_with_z(&first["created_at"], "accounts created_at");
}

#[test]
fn credential_id_and_account_that_disagree_are_refused() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, config) = daemon_with_accounts(dir.path(), &portal, "127.0.0.1:0", &[]);
    let list = run(
        dir.path(),
        &[
            "accounts",
            "list",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
        "",
    );
    let alice: Value = serde_json::from_str(stdout(&list).lines().next().unwrap()).unwrap();
    assert_eq!(alice["account"], "alice");
    let alice_id = alice["id"].as_i64().unwrap();
    let (status, body) = call(
        "POST",
        &daemon.url("/api/v1/automation/tokens/acquire"),
        Some(json!({"site_name": "court_zxfw", "credential_id": alice_id, "account": "harry"})),
    );
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("harry") && message.contains(&alice_id.to_string()),
        "{message}"
    );
    assert_eq!(portal.state.issued(), 0, "a token was handed out anyway");
    // When they agree, it works.
    let (status, body) = call(
        "POST",
        &daemon.url("/api/v1/automation/tokens/acquire"),
        Some(json!({"site_name": "court_zxfw", "credential_id": alice_id, "account": "alice"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["account"], "alice");
}

#[test]
fn token_invalidate_goes_through_the_daemon() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _) = daemon_with_accounts(dir.path(), &portal, "127.0.0.1:0", &[]);
    let url = daemon.url("");
    assert!(token_get(dir.path(), "alice", &url).status.success());
    assert!(token_get(dir.path(), "alice", &url).status.success());
    assert_eq!(
        portal.state.issued(),
        1,
        "the second get is served from the cache"
    );
    let out = run(
        dir.path(),
        &["token", "invalidate", "court_zxfw", "alice", "--url", &url],
        &[],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let again = token_get(dir.path(), "alice", &url);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(portal.state.issued(), 2, "no new login after invalidate");
}

#[test]
fn json_logs_write_numbers_as_numbers() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, _) = daemon_with_accounts(
        dir.path(),
        &portal,
        "127.0.0.1:0",
        &[("TOKEND_LOG_FORMAT", "json")],
    );
    let lines = daemon.drain_log();
    let listening: Value = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "listening")
        .expect("a JSON listening line");
    assert_eq!(listening["sites"], json!(1), "{listening}");
}

#[test]
fn messages_do_not_repeat_their_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "admin-token-0123456789";
    let config = write_config(
        dir.path(),
        &format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{admin}\"\n"),
    );
    let daemon = Daemon::start(dir.path(), &config);
    let out = run(
        dir.path(),
        &[
            "token",
            "get",
            "court_zxfw",
            "--url",
            &daemon.addr.to_string(),
        ],
        &[("TOKEND_ADMIN_TOKEN", "wrong-token-0123456789")],
        "",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert_eq!(err.matches("authentication required").count(), 1, "{err}");
}

#[test]
fn an_unknown_log_format_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["accounts", "list"],
        &[("TOKEND_LOG_FORMAT", "xml")],
        "",
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("TOKEND_LOG_FORMAT"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn csv_import_names_physical_lines_and_reads_booleans_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "\n# accounts of the firm\n\ncourt_zxfw,alice,pw-a,TRUE\nbad site,bob,pw-b\n";
    let out = run(dir.path(), &["accounts", "import", "-"], &[], bad);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 5"), "{}", stderr(&out));

    let good = "# header comes later\n\nsite_name,account,password,preferred\ncourt_zxfw,alice,pw-a,TRUE\ncourt_zxfw,bob,pw-b,No\ncourt_zxfw,carol,pw-c,Yes\n";
    let out = run(dir.path(), &["accounts", "import", "-"], &[], good);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = run(dir.path(), &["accounts", "list", "--json"], &[], "");
    let preferred: Vec<(String, bool)> = stdout(&list)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                v["account"].as_str().unwrap().to_string(),
                v["is_preferred"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        preferred,
        [
            ("alice".into(), true),
            ("bob".into(), false),
            ("carol".into(), true)
        ]
    );
}

#[test]
fn accounts_list_is_aligned_for_chinese_names() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "court_zxfw,张三丰,pw-1\ncourt_zxfw,bob,pw-2\n";
    let out = run(dir.path(), &["accounts", "import", "-"], &[], csv);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = run(dir.path(), &["accounts", "list"], &[], "");
    let text = stdout(&list);
    // Where the PREFERRED column starts, in terminal columns, on every line.
    let starts: Vec<usize> = text
        .lines()
        .map(|line| {
            let at = line
                .find(" false ")
                .or_else(|| line.find(" PREFERRED"))
                .unwrap_or_else(|| panic!("{line}"));
            unicode_width::UnicodeWidthStr::width(&line[..at])
        })
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] == w[1]),
        "misaligned:\n{text}"
    );
}

#[test]
fn database_errors_are_one_clear_line() {
    let Some(pg) = common::PgDatabase::create() else {
        return;
    };
    let missing = format!("{}_missing", pg.url);
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["accounts", "list"],
        &[("DATABASE_URL", &missing), ("RUST_LOG", "")],
        "",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(!err.contains("[ERROR") && !err.contains("r2d2"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn a_locked_sqlite_database_is_waited_for() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokend.db");
    // A fresh file (not yet in WAL mode) under an exclusive lock, as while another process
    // creates it.
    let mut holder = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    holder
        .batch_execute("BEGIN EXCLUSIVE; CREATE TABLE busy (x INTEGER);")
        .unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        holder.batch_execute("COMMIT;").unwrap();
    });
    let out = run(dir.path(), &["accounts", "list"], &[], "");
    release.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("locked"), "{}", stderr(&out));
}

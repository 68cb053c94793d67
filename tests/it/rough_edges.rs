//! The small things of issue 15, each as a user meets it: zoned times, case-insensitive
//! `Bearer`, `--url` without a scheme, `listen = "localhost:…"`, messages without repeated
//! prefixes, a checked log format with JSON numbers, CSV lines and booleans, `credential_id`
//! against `account`, one clear database error, `accounts list` aligned for Chinese names,
//! and `token invalidate`.

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::{json, Value};

use crate::support::portal::Portal;
use crate::support::{self, write_config, Daemon};

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
    support::add_account(dir, &config, "court_zxfw", "alice", "pw-alice");
    support::add_account(dir, &config, "court_zxfw", "harry", "pw-harry");
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
    support::run_cli(
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
    let (status, _) = support::call("GET", &daemon.url("/healthz"), None);
    assert_eq!(status, 200);
}

#[test]
fn url_without_a_scheme_is_http() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _) = daemon_with_accounts(dir.path(), &portal, "127.0.0.1:0", &[]);
    let got = token_get(dir.path(), "alice", &daemon.addr.to_string());
    assert!(got.status.success(), "{}", support::stderr(&got));
    assert!(support::stdout(&got).starts_with("tok-alice-"));
}

#[test]
fn api_times_are_rfc3339_with_z() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, config) = daemon_with_accounts(dir.path(), &portal, "127.0.0.1:0", &[]);
    let got = token_get(dir.path(), "alice", &daemon.url(""));
    assert!(got.status.success(), "{}", support::stderr(&got));

    // History is written in batches: wait for the row.
    let history =
        support::wait_until_blocking("a history row", std::time::Duration::from_secs(10), || {
            let (status, history) =
                support::call("GET", &daemon.url("/api/v1/automation/history"), None);
            assert_eq!(status, 200, "{history}");
            history["data"]["items"][0].is_object().then_some(history)
        });
    let row = &history["data"]["items"][0];
    for field in ["created_at", "started_at", "finished_at"] {
        ends_with_z(&row[field], field);
    }
    let (_, stats) = support::call(
        "GET",
        &daemon.url("/api/v1/automation/performance/statistics?days=1"),
        None,
    );
    ends_with_z(&stats["data"]["period"]["start"], "period.start");
    ends_with_z(&stats["data"]["period"]["end"], "period.end");
    let list = support::run_cli(
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
    let first: Value =
        serde_json::from_str(support::stdout(&list).lines().next().unwrap()).unwrap();
    ends_with_z(&first["created_at"], "accounts created_at");
}

#[test]
fn credential_id_and_account_that_disagree_are_refused() {
    let portal = Portal::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, config) = daemon_with_accounts(dir.path(), &portal, "127.0.0.1:0", &[]);
    let list = support::run_cli(
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
    let alice: Value =
        serde_json::from_str(support::stdout(&list).lines().next().unwrap()).unwrap();
    assert_eq!(alice["account"], "alice");
    let alice_id = alice["id"].as_i64().unwrap();
    let (status, body) = support::call(
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
    let (status, body) = support::call(
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
    let out = support::run_cli(
        dir.path(),
        &["token", "invalidate", "court_zxfw", "alice", "--url", &url],
        &[],
        "",
    );
    assert!(out.status.success(), "{}", support::stderr(&out));
    let again = token_get(dir.path(), "alice", &url);
    assert!(again.status.success(), "{}", support::stderr(&again));
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
    let out = support::run_cli(
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
    let err = support::stderr(&out);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert_eq!(err.matches("authentication required").count(), 1, "{err}");
}

#[test]
fn an_unknown_log_format_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_cli(
        dir.path(),
        &["accounts", "list"],
        &[("TOKEND_LOG_FORMAT", "xml")],
        "",
    );
    assert_eq!(out.status.code(), Some(78), "{}", support::stderr(&out));
    assert!(
        support::stderr(&out).contains("TOKEND_LOG_FORMAT"),
        "{}",
        support::stderr(&out)
    );
}

#[test]
fn csv_import_names_physical_lines_and_reads_booleans_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "\n# accounts of the firm\n\ncourt_zxfw,alice,pw-a,TRUE\nbad site,bob,pw-b\n";
    let out = support::run_cli(dir.path(), &["accounts", "import", "-"], &[], bad);
    assert_eq!(out.status.code(), Some(65), "{}", support::stderr(&out));
    assert!(
        support::stderr(&out).contains("line 5"),
        "{}",
        support::stderr(&out)
    );

    let good = "# header comes later\n\nsite_name,account,password,preferred\ncourt_zxfw,alice,pw-a,TRUE\ncourt_zxfw,bob,pw-b,No\ncourt_zxfw,carol,pw-c,Yes\n";
    let out = support::run_cli(dir.path(), &["accounts", "import", "-"], &[], good);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let list = support::run_cli(dir.path(), &["accounts", "list", "--json"], &[], "");
    let preferred: Vec<(String, bool)> = support::stdout(&list)
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
    let out = support::run_cli(dir.path(), &["accounts", "import", "-"], &[], csv);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let list = support::run_cli(dir.path(), &["accounts", "list"], &[], "");
    let text = support::stdout(&list);
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
    let Some(pg) = support::PgDatabase::create() else {
        return;
    };
    let missing = format!("{}_missing", pg.url);
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_cli(
        dir.path(),
        &["accounts", "list"],
        &[("DATABASE_URL", &missing), ("RUST_LOG", "")],
        "",
    );
    let err = support::stderr(&out);
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
    let mut cli = support::tokend(dir.path())
        .args(["accounts", "list"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The lock goes only once the command is seen waiting for it: still running, with the
    // database open and a thread asleep between two tries for the lock.
    let database = path.canonicalize().unwrap();
    support::wait_until_blocking(
        "`accounts list` waiting for the lock",
        std::time::Duration::from_secs(15),
        || {
            if let Some(status) = cli.try_wait().unwrap() {
                panic!("`accounts list` ended ({status}) instead of waiting for the lock");
            }
            waits_with_open(cli.id(), &database).then_some(())
        },
    );
    holder.batch_execute("COMMIT;").unwrap();
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(
        !support::stderr(&out).contains("locked"),
        "{}",
        support::stderr(&out)
    );
}

/// The numbers of the sleeping system calls (`nanosleep`, `clock_nanosleep`), for a kernel
/// that shows no `wchan`.
#[cfg(target_arch = "x86_64")]
const SLEEP_CALLS: [&str; 2] = ["35", "230"];
#[cfg(target_arch = "aarch64")]
const SLEEP_CALLS: [&str; 2] = ["101", "115"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SLEEP_CALLS: [&str; 0] = [];

/// Whether process `pid` has `file` open and one of its threads asleep in a timed sleep, as
/// `/proc` shows it: SQLite's busy handler sleeps between its tries for a lock.
fn waits_with_open(pid: u32, file: &Path) -> bool {
    let entries = |dir: String| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
    };
    let open = entries(format!("/proc/{pid}/fd"))
        .any(|fd| std::fs::read_link(fd).is_ok_and(|target| target == file));
    let asleep = entries(format!("/proc/{pid}/task")).any(|task| {
        let read = |name: &str| std::fs::read_to_string(task.join(name)).unwrap_or_default();
        let call = read("syscall");
        read("wchan").contains("nanosleep")
            || SLEEP_CALLS.contains(&call.split(' ').next().unwrap_or(""))
    });
    open && asleep
}

//! The small things a newcomer met (issue 21 §8), through the real `tokend` binary and a
//! running daemon: exit codes that follow README's table (a paused site and a spent login
//! budget are temporary, 75; an unknown account or captcha, or one answered already, is 1),
//! `sites close-circuit`, `accounts set-preferred`, `captcha show --save`, the proxy column
//! of `accounts list`, and commands that name the database they wrote.

use std::process::Stdio;
use std::time::Duration;

use crate::support::portal::Portal;
use crate::support::{self, write_config, Daemon};

/// A site whose login budget is spent and a site whose circuit is open answer with exit 75
/// and say what to wait for; `sites close-circuit` lets logins try again; `accounts unblock`
/// of an unknown account is 1.
#[test]
fn temporary_refusals_exit_75_and_a_closed_circuit_tries_again() {
    let portal = Portal::start();
    portal.state.accept("alice", "pw-alice");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [retry]\nnetwork_retry_delay_base = 0.05\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n\
             login_budget_per_site_per_hour = 1\n\
             [[sites]]\nname = \"gone\"\ndriver = \"http\"\nlogin_url = \"http://127.0.0.1:1/login\"\n\
             circuit_failure_threshold = 1\ncircuit_open_seconds = 600\n",
            portal.login_url()
        ),
    );
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    support::add_account(dir.path(), &config, "gone", "bob", "pw-bob");
    let daemon = Daemon::start(dir.path(), &config);
    let url = daemon.url("");
    let get = |site: &str, extra: &[&str]| {
        let mut args = vec!["token", "get", site, "--url", &url];
        args.extend_from_slice(extra);
        support::run_cli_with_config(dir.path(), &config, &args, "")
    };

    assert!(get("court_zxfw", &[]).status.success());
    let spent = get("court_zxfw", &["--force-refresh"]);
    let said = support::text(&spent);
    assert_eq!(spent.status.code(), Some(75), "{said}");
    assert!(
        said.contains("login budget spent") && said.contains("retry in"),
        "{said}"
    );
    assert!(!said.contains("timed out"), "{said}");

    // The portal of `gone` refuses connections: one failed login opens its circuit.
    let refused = get("gone", &[]);
    assert_eq!(
        refused.status.code(),
        Some(69),
        "{}",
        support::text(&refused)
    );
    let paused = get("gone", &[]);
    assert_eq!(paused.status.code(), Some(75), "{}", support::text(&paused));
    assert!(
        support::text(&paused).contains("SITE_UNAVAILABLE"),
        "{}",
        support::text(&paused)
    );

    let closed = support::run_cli_with_config(
        dir.path(),
        &config,
        &["sites", "close-circuit", "gone", "--url", &url],
        "",
    );
    assert!(closed.status.success(), "{}", support::text(&closed));
    assert!(
        support::text(&closed).contains("circuit of site `gone` is closed"),
        "{}",
        support::text(&closed)
    );
    // A login is tried again (and fails again: the portal is still away), not refused.
    let tried = get("gone", &[]);
    assert_eq!(tried.status.code(), Some(69), "{}", support::text(&tried));
    assert!(
        !support::text(&tried).contains("SITE_UNAVAILABLE"),
        "{}",
        support::text(&tried)
    );

    let unknown = support::run_cli_with_config(
        dir.path(),
        &config,
        &["accounts", "unblock", "court_zxfw", "nobody", "--url", &url],
        "",
    );
    assert_eq!(
        unknown.status.code(),
        Some(1),
        "{}",
        support::text(&unknown)
    );
    assert!(
        support::text(&unknown).contains("ACCOUNT_NOT_FOUND"),
        "{}",
        support::text(&unknown)
    );
}

/// `set-preferred`, `set-password` and `set-proxy` name the database they wrote; the table
/// of `accounts list` shows the proxy's host, never its password; `import --help` names the
/// proxy column.
#[test]
fn account_commands_name_the_database_and_the_proxy_host() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let config = write_config(
        dir.path(),
        &format!("[database]\nurl = \"sqlite://{}\"\n", db.display()),
    );
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");
    let named_db = format!("sqlite://{}", db.display());

    let preferred = support::run_cli_with_config(
        dir.path(),
        &config,
        &["accounts", "set-preferred", "court_zxfw", "alice", "true"],
        "",
    );
    assert!(preferred.status.success(), "{}", support::text(&preferred));
    assert!(
        support::text(&preferred).contains(&named_db),
        "{}",
        support::text(&preferred)
    );
    let listed =
        support::run_cli_with_config(dir.path(), &config, &["accounts", "list", "--json"], "");
    let row: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(row["is_preferred"], true, "{row}");
    let missing = support::run_cli_with_config(
        dir.path(),
        &config,
        &["accounts", "set-preferred", "court_zxfw", "nobody", "false"],
        "",
    );
    assert_eq!(
        missing.status.code(),
        Some(1),
        "{}",
        support::text(&missing)
    );

    let password = support::run_cli_with_config(
        dir.path(),
        &config,
        &[
            "accounts",
            "set-password",
            "court_zxfw",
            "alice",
            "--password-stdin",
        ],
        "pw-new\n",
    );
    assert!(password.status.success(), "{}", support::text(&password));
    assert!(
        support::text(&password).contains(&named_db),
        "{}",
        support::text(&password)
    );
    let proxy = support::run_cli_with_config(
        dir.path(),
        &config,
        &[
            "accounts",
            "set-proxy",
            "court_zxfw",
            "alice",
            "http://user:proxy-secret@proxy.example:3128",
        ],
        "",
    );
    assert!(proxy.status.success(), "{}", support::text(&proxy));
    assert!(
        support::text(&proxy).contains(&named_db),
        "{}",
        support::text(&proxy)
    );

    let table = support::run_cli_with_config(dir.path(), &config, &["accounts", "list"], "");
    let table = support::text(&table);
    let header = table.lines().next().unwrap();
    assert!(header.ends_with("PROXY"), "{table}");
    let line = table.lines().find(|l| l.contains("alice")).unwrap();
    assert!(line.ends_with("proxy.example:3128"), "{table}");
    assert!(
        !table.contains("proxy-secret") && !table.contains("user:"),
        "{table}"
    );

    let help =
        support::run_cli_with_config(dir.path(), &config, &["accounts", "import", "--help"], "");
    assert!(
        support::text(&help).contains("[,preferred[,proxy]]"),
        "{}",
        support::text(&help)
    );
}

/// A captcha handed to a person: `captcha show ID --save FILE` writes its image; an answer
/// to an unknown id, and a second answer, exit 1 as README's table says.
#[test]
fn captcha_show_saves_the_image_and_answers_follow_the_exit_table() {
    let portal = Portal::start();
    *portal.state.captcha_text.lock().unwrap() = Some("x7k2".into());
    portal.state.accept("alice", "pw-a");
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/captcha_handoff_login.py"
    );
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [retry]\nlogin_timeout = 20\ncaptcha_answer_timeout = 60\n\
             [[sites]]\nname = \"court_captcha\"\ndriver = \"command\"\n\
             command = [\"{script}\", \"--captcha-url\", \"{}\", \"--login-url\", \"{}\"]\n",
            portal.url("/captcha"),
            portal.login_url()
        ),
    );
    support::add_account(dir.path(), &config, "court_captcha", "alice", "pw-a");
    let daemon = Daemon::start(dir.path(), &config);
    let url = daemon.url("");
    let login = support::tokend(dir.path())
        .args(["token", "get", "court_captcha", "--url", &url, "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let id = actix_web::rt::System::new().block_on(support::wait_until(
        "a pending captcha",
        Duration::from_secs(20),
        || async {
            let out = support::run_cli_with_config(
                dir.path(),
                &config,
                &["captcha", "list", "--json", "--url", &url],
                "",
            );
            let listed: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            listed["captchas"][0]["id"].as_str().map(str::to_string)
        },
    ));

    let image = dir.path().join("captcha.png");
    let image_arg = image.to_string_lossy().into_owned();
    let shown = support::run_cli_with_config(
        dir.path(),
        &config,
        &["captcha", "show", &id, "--save", &image_arg, "--url", &url],
        "",
    );
    assert!(shown.status.success(), "{}", support::text(&shown));
    let bytes = std::fs::read(&image).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "not the PNG: {bytes:?}");
    // Not a terminal: the path as it is, no escape sequence.
    assert!(support::text(&shown).contains(&image_arg) && !support::text(&shown).contains('\x1b'));

    let answer = |id: &str, answer: &str| {
        support::run_cli_with_config(
            dir.path(),
            &config,
            &["captcha", "answer", id, answer, "--url", &url],
            "",
        )
    };
    let unknown = answer("no-such-captcha", "x");
    assert_eq!(
        unknown.status.code(),
        Some(1),
        "{}",
        support::text(&unknown)
    );
    assert!(
        support::text(&unknown).contains("CAPTCHA_NOT_FOUND"),
        "{}",
        support::text(&unknown)
    );
    let missing = support::run_cli_with_config(
        dir.path(),
        &config,
        &[
            "captcha",
            "show",
            "no-such-captcha",
            "--save",
            &image_arg,
            "--url",
            &url,
        ],
        "",
    );
    assert_eq!(
        missing.status.code(),
        Some(1),
        "{}",
        support::text(&missing)
    );

    let answered = answer(&id, "x7k2");
    assert!(answered.status.success(), "{}", support::text(&answered));
    let again = answer(&id, "x7k2");
    assert_eq!(again.status.code(), Some(1), "{}", support::text(&again));
    assert!(
        support::text(&again).contains("CAPTCHA_ALREADY_ANSWERED"),
        "{}",
        support::text(&again)
    );
    let login = login.wait_with_output().unwrap();
    assert!(login.status.success(), "{}", support::text(&login));
}

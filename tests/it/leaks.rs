//! What tokend guards never leaks (issue 20), each against the real binary: opaque court
//! tokens and OAuth codes never reach a debug log; a password a portal echoes in any form
//! reaches neither the caller, the history nor the log; login programs and captcha solvers
//! see none of tokend's secrets, and the daemon is not dumpable; a failing captcha solver's
//! stderr is logged with the password masked (issue 21); a webhook is not redirected, and
//! its URL's key is never logged; config and import errors never quote a secret; the CLI
//! never prints a portal's terminal escapes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::court_portal::CourtPortal;
use crate::support::portal::{AccountBehaviour, Portal};
use crate::support::{self, write_config, Daemon};

const ADMIN: &str = "admin-SECRET-token-0123456789";
/// tokend's secrets in its environment; none may reach a login program.
const SECRET_ENV: [(&str, &str); 5] = [
    ("TOKEND_ADMIN_TOKEN", ADMIN),
    ("TOKEND_METRICS_TOKEN", "metrics-SECRET-token-0123456789"),
    ("TOKEND_WEBHOOK_SECRET", "webhook-SECRET-0123456789"),
    (
        "TOKEND_SECRET_KEY",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    ),
    ("REDIS_PASSWORD", "redis-SECRET-0123456789"),
];

fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    support::call_as(method, url, Some(ADMIN), body)
}

fn acquire(daemon: &Daemon, site: &str) -> (u16, Value) {
    call(
        "POST",
        &daemon.url("/api/v1/automation/tokens/acquire"),
        Some(json!({ "site_name": site })),
    )
}

/// The environment a program saw, as it wrote it to `file` (one `NAME=value` a line).
fn environment_in(file: &Path) -> String {
    support::wait_until_blocking(
        &format!("{} to be written", file.display()),
        Duration::from_secs(15),
        || {
            std::fs::read_to_string(file)
                .ok()
                .filter(|text| text.ends_with("END\n"))
        },
    )
}

fn assert_no_secret_env(environment: &str, who: &str) {
    assert!(environment.contains("PATH="), "{who}: {environment}");
    for (name, value) in SECRET_ENV {
        assert!(
            !environment.contains(value) && !environment.contains(&format!("{name}=")),
            "{who} saw {name}"
        );
    }
}

/// The court sites on `court` (zxfw with `solver`, baoquan, a derived site), alice on zxfw.
fn court_daemon(dir: &Path, court: &CourtPortal, solver: &str, level: &str) -> Daemon {
    let config = write_config(
        dir,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
             [[sites]]\nname = \"zxfw\"\ndriver = \"court_zxfw\"\nbase_url = \"{}\"\n\
             captcha_solver = {solver}\ncaptcha_solver_timeout = 5\n\
             [[sites]]\nname = \"baoquan\"\ndriver = \"court_baoquan\"\nfrom_site = \"zxfw\"\n\
             base_url = \"{}\"\n\
             [[sites]]\nname = \"derived\"\ndriver = \"derived\"\nfrom_site = \"zxfw\"\n\
             exchange_url = \"{}\"\nexchange_header = \"X-Parent-Token: {{token}}\"\n\
             token_pointer = \"/access_token\"\nexpires_in_pointer = \"/expires_in\"\n",
            court.zxfw_base(),
            court.baoquan_base(),
            court.url("/exchange")
        ),
    );
    court.accept("alice", "pw-alice-0123");
    support::add_account_with_env(
        dir,
        &config,
        ("zxfw", "alice", "pw-alice-0123"),
        &SECRET_ENV,
    );
    Daemon::start_with_env(dir, &config, level, &SECRET_ENV)
}

/// A portal that answers opaque tokens (no JWT shape) for the zxfw login, the baoquan
/// authorization and the derived exchange: none of them, nor the OAuth code, is ever logged in
/// full, at debug level; the answers are logged as JSON. The captcha solver saw none of
/// tokend's secrets.
#[test]
fn opaque_court_tokens_and_codes_never_reach_the_debug_log() {
    let court = CourtPortal::start();
    court.state.opaque.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("solver.env");
    let solver = dir.path().join("solve.py");
    std::fs::write(
        &solver,
        format!(
            "import os, re, sys\n\
             with open({:?}, 'w') as f:\n    \
                 f.write(''.join(f'{{k}}={{v}}\\n' for k, v in os.environ.items()) + 'END\\n')\n\
             m = re.search(rb'answer=(\\w+)', sys.stdin.buffer.read())\n\
             print(m.group(1).decode() if m else '')\n",
            env_file.display().to_string()
        ),
    )
    .unwrap();
    let solver = format!("[\"python3\", \"{}\"]", solver.display());
    let mut daemon = court_daemon(dir.path(), &court, &solver, "debug");

    let mut tokens = Vec::new();
    for site in ["baoquan", "derived", "zxfw"] {
        let (status, body) = acquire(&daemon, site);
        assert_eq!(status, 200, "{site}: {body}");
        tokens.push(body["data"]["token"].as_str().unwrap().to_string());
    }
    assert!(tokens[0].starts_with("bqOPAQUE") && tokens[1].starts_with("dxOPAQUE"));
    let mut log = Vec::new();
    daemon.wait_for_log("step=exchange", Duration::from_secs(15), &mut log);
    let issued = court.state.issued.lock().unwrap().clone();
    assert!(issued.len() >= 4, "{issued:?}");
    for secret in issued.iter().chain(&tokens) {
        for line in &log {
            assert!(!line.contains(secret.as_str()), "{secret} logged: {line}");
        }
    }
    // Each answer is logged as JSON: its keys and code, not its values.
    let steps: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("event=court_step"))
        .collect();
    for step in ["login", "oauth/code", "getauthorization", "exchange"] {
        let line = steps
            .iter()
            .find(|l| l.contains(&format!("step={step} ")))
            .unwrap_or_else(|| panic!("no court_step for {step}: {steps:?}"));
        let answer = line.split_once("answer=").unwrap().1;
        let json: Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(json.is_object(), "{line}");
    }
    assert_no_secret_env(&environment_in(&env_file), "the captcha solver");
}

/// A portal that echoes the login request in a 401, in every form: the password (spaces,
/// quotes, `<>&`, non-ASCII) appears in none of them in the caller's answer, the history or
/// the log. And a quoted CSV field is imported as is (spaces kept).
#[test]
fn an_echoed_password_shows_in_no_form() {
    const PASSWORD: &str = "my \"pa ss\" <w>&'ö 42";
    const SPACED: &str = "  spaced pw  ";
    let portal = Portal::start();
    portal.state.echo_failures.store(true, Ordering::SeqCst);
    portal.state.set_account(
        "alice",
        AccountBehaviour {
            password: "not-what-tokend-sends".into(),
            ..Default::default()
        },
    );
    portal.state.accept("bob", SPACED);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
             [retry]\nmax_network_retries = 0\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    );
    let csv = format!(
        "court_zxfw,alice,\"{}\"\ncourt_zxfw,bob,\"{SPACED}\"\n",
        PASSWORD.replace('"', "\"\"")
    );
    let out = run(
        dir.path(),
        &["accounts", "import", "-", "--config"],
        &config,
        &csv,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut daemon = Daemon::start_with_log(dir.path(), &config, "debug");

    let (status, body) = call(
        "POST",
        &daemon.url("/api/v1/automation/tokens/acquire"),
        Some(json!({"site_name": "court_zxfw", "account": "bob"})),
    );
    assert_eq!(status, 200, "the quoted password was changed: {body}");
    let (status, answer) = call(
        "POST",
        &daemon.url("/api/v1/automation/tokens/acquire"),
        Some(json!({"site_name": "court_zxfw", "account": "alice"})),
    );
    assert_eq!(status, 502, "{answer}");
    assert!(answer.to_string().contains("bad login"), "{answer}");
    let history =
        support::wait_until_blocking("alice's history row", Duration::from_secs(15), || {
            let (_, history) = call("GET", &daemon.url("/api/v1/automation/history"), None);
            history.to_string().contains("bad login").then_some(history)
        });
    let mut log = Vec::new();
    daemon.wait_for_log("event=login_failed", Duration::from_secs(15), &mut log);
    let pieces = ["pa ss", "<w>", "pa+ss", "pa%20ss", "&lt;w&gt;", "ö 42"];
    for (what, text) in [
        ("answer", answer.to_string()),
        ("history", history.to_string()),
        ("log", log.join("\n")),
    ] {
        for piece in pieces {
            assert!(!text.contains(piece), "{what} shows `{piece}`: {text}");
        }
        let base64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(PASSWORD)
        };
        assert!(
            !text.contains(&base64),
            "{what} shows the base64 form: {text}"
        );
    }
}

/// A captcha solver that reads the image, says why it failed on stderr (with alice's
/// password in it, as a careless script might) and exits 3.
fn failing_solver(dir: &Path) -> String {
    let solver = dir.join("solve.sh");
    std::fs::write(
        &solver,
        "#!/bin/sh\ncat >/dev/null\n\
         echo 'ocr model broke: SOLVER-MARK for alice/pw-alice-0123' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&solver, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("[\"{}\"]", solver.display())
}

/// The `event=captcha_solver_failed` line of a daemon's log: it carries the solver's stderr,
/// with the password masked; and no line carries the password.
fn solver_failure_logged(daemon: &mut Daemon) {
    let mut log = Vec::new();
    daemon.wait_for_log(
        "event=captcha_solver_failed",
        Duration::from_secs(15),
        &mut log,
    );
    let line = log
        .iter()
        .find(|l| l.contains("event=captcha_solver_failed"))
        .unwrap();
    assert!(line.contains("SOLVER-MARK for alice/"), "{line}");
    for line in &log {
        assert!(!line.contains("pw-alice-0123"), "{line}");
    }
}

/// A captcha solver that fails: its stderr is logged (`event=captcha_solver_failed`) with
/// the password masked, whether the login then fails or a person takes over
/// (`captcha_fallback = "human"`).
#[test]
fn a_failing_solver_logs_its_stderr_masked() {
    let court = CourtPortal::start();
    // The login fails on the solver's captcha error.
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = court_daemon(dir.path(), &court, &failing_solver(dir.path()), "info");
    let (status, body) = acquire(&daemon, "zxfw");
    assert_ne!(status, 200, "{body}");
    assert!(!body.to_string().contains("pw-alice-0123"), "{body}");
    solver_failure_logged(&mut daemon);
    drop(daemon);

    // A person takes over: the failure is logged before the captcha waits for them.
    let dir = tempfile::tempdir().unwrap();
    let solver = format!(
        "{}\ncaptcha_fallback = \"human\"",
        failing_solver(dir.path())
    );
    let mut daemon = court_daemon(dir.path(), &court, &solver, "info");
    let acquire_url = daemon.url("/api/v1/automation/tokens/acquire");
    // Waits for the captcha's answer until the daemon stops: its answer does not matter.
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let request = reqwest::Client::new()
                .post(acquire_url)
                .bearer_auth(ADMIN)
                .json(&json!({"site_name": "zxfw"}));
            let _ = request.send().await;
        })
    });
    let captchas = daemon.url("/api/v1/automation/captchas");
    support::wait_until_blocking("a captcha for a person", Duration::from_secs(15), || {
        let (_, body) = call("GET", &captchas, None);
        (body["data"]["captchas"][0]["account"] == "alice").then_some(())
    });
    solver_failure_logged(&mut daemon);
}

/// `tokend ARGS CONFIG`: `args` end with `--config`.
fn run(dir: &Path, args: &[&str], config: &Path, stdin: &str) -> Output {
    let mut all = args.to_vec();
    all.push(config.to_str().unwrap());
    support::run_cli(dir, &all, &[], stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A receiver on 127.0.0.1:0 that answers every request with `answer` and counts them.
struct Receiver {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicU32>,
}

impl Receiver {
    fn start(redirect_to: Option<String>) -> Receiver {
        use actix_web::{web, App, HttpResponse};
        let hits = Arc::new(AtomicU32::new(0));
        let counted = hits.clone();
        let addr = crate::support::serve_on_thread!(1, move || {
            let (hits, to) = (counted.clone(), redirect_to.clone());
            App::new().default_service(web::to(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                let answer = match &to {
                    Some(to) => HttpResponse::TemporaryRedirect()
                        .insert_header(("Location", to.clone()))
                        .finish(),
                    None => HttpResponse::NoContent().finish(),
                };
                async move { answer }
            }))
        });
        Receiver { addr, hits }
    }

    fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A `command` login program that writes its environment to `env_file`, then hands a
/// captcha whose prompt holds terminal escapes to a person, and logs in once answered.
fn handoff_program(dir: &Path, env_file: &Path) -> std::path::PathBuf {
    let program = dir.join("login.py");
    std::fs::write(
        &program,
        format!(
            "#!/usr/bin/env python3\nimport json, os, sys\n\
             with open({:?}, 'w') as f:\n    \
                 f.write(''.join(f'{{k}}={{v}}\\n' for k, v in os.environ.items()) + 'END\\n')\n\
             sys.stdin.readline()\n\
             prompt = '\\x1b]0;pwned\\x07\\x1b[2JType the code'\n\
             print(json.dumps({{'captcha': {{'image_base64': 'aGVsbG8=', 'prompt': prompt}}}}), flush=True)\n\
             sys.stdin.readline()\n\
             print(json.dumps({{'token': 'tok-0123456789abcdef', 'expires_in': 600}}))\n",
            env_file.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program
}

/// A login program asks a person for a captcha whose prompt holds terminal escapes: the
/// CLI prints it without them. The webhook that hears of it answers 307 to another receiver:
/// not followed, nor sent through the environment's proxy; the key and the user
/// information in its URL are never logged. The login program saw none of tokend's secrets.
#[test]
fn captcha_prompts_webhooks_and_login_programs_keep_their_place() {
    let elsewhere = Receiver::start(None);
    let hook = Receiver::start(Some(format!("http://{}/stolen", elsewhere.addr)));
    let proxy = Receiver::start(None);
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("program.env");
    let program = handoff_program(dir.path(), &env_file);
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
             [retry]\nlogin_timeout = 5\ncaptcha_answer_timeout = 60\n\
             [notify]\nwebhook_url = \"http://hookuser:HOOKPASS0123@{}/hook?key=HOOKKEY0123456789\"\n\
             [[sites]]\nname = \"captcha_site\"\ndriver = \"command\"\ncommand = [\"{}\"]\n",
            hook.addr,
            program.display()
        ),
    );
    support::add_account_with_env(
        dir.path(),
        &config,
        ("captcha_site", "alice", "pw-a"),
        &SECRET_ENV,
    );
    let proxy_url = format!("http://{}", proxy.addr);
    let mut env = SECRET_ENV.to_vec();
    env.extend([
        ("HTTP_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
    ]);
    env.push(("ALL_PROXY", proxy_url.as_str()));
    // Without NO_PROXY: one naming 127.0.0.1 in the test's environment would send the
    // webhook direct even through a client that honours the proxy variables.
    let mut command = support::tokend(dir.path());
    command
        .args(["serve", "--config"])
        .arg(&config)
        .envs(env.iter().copied())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    let mut daemon = Daemon::spawn(command, "debug");
    let acquire_url = daemon.url("/api/v1/automation/tokens/acquire");
    // Waits for the captcha's answer until the daemon stops: its answer does not matter.
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let request = reqwest::Client::new()
                .post(acquire_url)
                .bearer_auth(ADMIN)
                .json(&json!({"site_name": "captcha_site"}));
            let _ = request.send().await;
        })
    });

    let out = support::wait_until_blocking(
        "`tokend captcha list` to show it",
        Duration::from_secs(15),
        || {
            let out = run(
                dir.path(),
                &["captcha", "list", "--url", &daemon.url(""), "--config"],
                &config,
                "",
            );
            text(&out.stdout).contains("Type the code").then_some(out)
        },
    );
    let shown = text(&out.stdout);
    assert!(
        !shown.contains(['\u{1b}', '\u{7}']),
        "escapes reached the terminal: {shown:?}"
    );
    // The webhook: tried again after the 307, never at the place it pointed to.
    support::wait_until_blocking(
        "a second webhook delivery, or one elsewhere",
        Duration::from_secs(15),
        || (hook.hits() >= 2 || elsewhere.hits() + proxy.hits() > 0).then_some(()),
    );
    assert_eq!(elsewhere.hits(), 0, "the webhook followed a redirect");
    assert_eq!(
        proxy.hits(),
        0,
        "the webhook went through the environment's proxy"
    );
    let mut log = Vec::new();
    daemon.wait_for_log("event=webhook_retry", Duration::from_secs(15), &mut log);
    for line in &log {
        for secret in ["HOOKKEY0123456789", "HOOKPASS0123", "hookuser"] {
            assert!(!line.contains(secret), "{line}");
        }
    }
    assert_no_secret_env(&environment_in(&env_file), "the login program");
}

/// The daemon is not dumpable: run as an ordinary user, its `/proc/<pid>/environ` (where the
/// secret key and the admin token are) belongs to root, so that no other process of that
/// user (a login program above all) can read it.
#[test]
fn the_daemon_is_not_dumpable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let uid = 65534;
    // As root, run it as `nobody`; as anyone else, as itself.
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    let mut command = if me == 0 {
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            support::BIN,
        ]);
        command
    } else {
        Command::new(support::BIN)
    };
    command
        .current_dir(dir.path())
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TOKEND_CONFIG");
    let daemon = Daemon::spawn(command, "info");
    let owner = std::fs::metadata(format!("/proc/{}/environ", daemon.child.id()))
        .unwrap()
        .uid();
    let runs_as = if me == 0 { uid } else { me };
    assert_ne!(
        owner, runs_as,
        "/proc/<tokend>/environ is readable by its user"
    );
}

/// Config errors on secret keys name the key and the problem, never the value; an import
/// line with an unquoted comma in the password prints no piece of it.
#[test]
fn config_and_import_errors_never_quote_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[server]\nadmin_token = \"SUPERSECRET0123456789\n",
            "admin_token",
            "SUPERSECRET",
        ),
        (
            "[server]\nclient_tokens = \"CLIENTSECRET0123\"\n",
            "client_tokens",
            "CLIENTSECRET",
        ),
        (
            "[server]\nmetrics_tokens = [\"METRICSECRET0123\", 7]\n",
            "metrics_tokens",
            "METRICSECRET",
        ),
        (
            "[database]\nurl = \"postgres://app:DSNSECRET0123@db.local/tokend\n",
            "url",
            "DSNSECRET",
        ),
        (
            "[notify]\nwebhook_secret = [\"HOOKSECRET0123\"]\n",
            "webhook_secret",
            "HOOKSECRET",
        ),
        (
            "[notify]\nwebhook_secret = 'HOOKSECRET0123' 'more'\n",
            "webhook_secret",
            "HOOKSECRET",
        ),
    ];
    for (toml, key, secret) in cases {
        let config = write_config(dir.path(), toml);
        let out = run(dir.path(), &["accounts", "list", "--config"], &config, "");
        let said = text(&out.stderr);
        assert!(!out.status.success(), "{toml}");
        assert!(said.contains(key), "{toml}: {said}");
        assert!(!said.contains(secret), "{toml}: {said}");
    }
    let config = write_config(
        dir.path(),
        "[[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"http://127.0.0.1:9/\"\n",
    );
    for line in [
        "court_zxfw,alice,Sup3r,S3cretPart\n",
        "court_zxfw,alice,Sup3r,true,S3cretPart\n",
        "court_zxfw,alice,Sup3r,S3cretPart,x,y\n",
    ] {
        let out = run(
            dir.path(),
            &["accounts", "import", "-", "--config"],
            &config,
            line,
        );
        let said = text(&out.stderr);
        assert!(
            !out.status.success() && said.contains("line 1"),
            "{line}: {said}"
        );
        assert!(!said.contains("S3cretPart"), "{line}: {said}");
    }
}

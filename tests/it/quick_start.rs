//! The first minutes of a new operator: `token get` right after `serve &` waits for the daemon
//! to listen (`--wait`), and the README's quick start works when pasted into a shell.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::support::portal::Portal;
use crate::support::{self, write_config};

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn token_get_right_after_serve_waits_for_the_daemon() {
    let portal = Portal::start();
    portal.state.accept("alice", "pw-alice");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    );
    support::add_account(dir.path(), &config, "court_zxfw", "alice", "pw-alice");

    let mut serve = support::tokend(dir.path())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // At once, as `tokend serve … & tokend token get …` does.
    let got = support::tokend(dir.path())
        .args(["token", "get", "court_zxfw", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(
        got.status.success(),
        "token get failed: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(String::from_utf8_lossy(&got.stdout).starts_with("tok-alice-"));
}

#[test]
fn without_waiting_an_absent_daemon_fails_at_once_with_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let url = format!("127.0.0.1:{}", free_port());
    let out = support::tokend(dir.path())
        .args(["token", "get", "court_zxfw", "--wait", "0", "--url", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("cannot reach tokend"), "{err}");
    assert!(!err.contains("builder error"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));

    // With a wait, it tries for about that long.
    let started = std::time::Instant::now();
    let out = support::tokend(dir.path())
        .args(["optimize", "--health-check", "--wait", "1", "--url", &url])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}

/// The fenced block after `<!-- quick-start -->` in the README.
fn quick_start_block() -> String {
    let readme = include_str!("../../README.md");
    let after = readme
        .split("<!-- quick-start -->")
        .nth(1)
        .expect("the README marks its quick start with <!-- quick-start -->");
    let body = after
        .split_once("```sh\n")
        .expect("a ```sh block follows the marker")
        .1;
    body.split_once("\n```")
        .expect("the block is closed")
        .0
        .to_string()
}

#[test]
fn the_readme_quick_start_works_when_pasted() {
    let portal = Portal::start();
    portal.state.accept("alice", "my-portal-password");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let block = quick_start_block();
    assert!(
        block.contains("https://portal.example.com/api/login"),
        "{block}"
    );
    let script: String = block
        .lines()
        .filter(|line| !line.starts_with("cargo build"))
        .map(|line| {
            line.replace("./target/debug/tokend", support::BIN)
                .replace("https://portal.example.com/api/login", &portal.login_url())
                .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut child = Command::new("bash");
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "REDIS_HOST",
        "TOKEND_CONFIG",
        "TOKEND_ADMIN_TOKEN",
        "TOKEND_SECRET_KEY",
    ] {
        child.env_remove(var);
    }
    // Output to files, not pipes: a `serve &` left running by a failed script would hold a
    // pipe open and the test would wait for ever.
    let out_path = dir.path().join("quick-start.out");
    let err_path = dir.path().join("quick-start.err");
    let mut child = child
        .args(["-e", "-c", &script])
        .current_dir(dir.path())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let pgid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Whatever happened, nothing the script started outlives the test.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let out_ok = status.is_some_and(|s| s.success());
    assert!(
        out_ok,
        "the quick start failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("tok-alice-"), "no token printed: {stdout}");
    assert!(
        stdout.contains("\"success\":true"),
        "curl got no token: {stdout}"
    );
}

/// A site of the quick start (and of the systemd config's example) is named for the reader's
/// portal, not after a built-in driver it does not use: `name = "court_zxfw"` with
/// `driver = "http"` reads as if the court driver were in play.
#[test]
fn example_sites_are_not_named_after_another_driver() {
    let quick_start = quick_start_block();
    let quick_start_toml = quick_start
        .split_once("<<'EOF'\n")
        .and_then(|(_, rest)| rest.split_once("\nEOF"))
        .expect("the quick start writes tokend.toml with a heredoc")
        .0
        .to_string();
    let systemd = include_str!("../../systemd/tokend.toml")
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, text) in [
        ("README quick start", quick_start_toml),
        ("systemd/tokend.toml", systemd),
    ] {
        let sites = text
            .split("[[sites]]")
            .skip(1)
            .map(|site| site.split("\n[").next().unwrap_or(site).to_string())
            .collect::<Vec<_>>();
        assert!(!sites.is_empty(), "{what} shows no site");
        for site in sites {
            let table: toml::Table = toml::from_str(&site).unwrap();
            let name = table["name"].as_str().unwrap();
            let driver = table["driver"].as_str().unwrap();
            let name_is_a_driver =
                tokend::config::DriverKind::deserialize(toml::Value::String(name.into())).is_ok();
            assert!(
                name == driver || !name_is_a_driver,
                "{what}: site `{name}` is named after a built-in driver but uses `{driver}`"
            );
        }
    }
}

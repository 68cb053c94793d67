//! `accounts add --password-stdin` at a terminal prompts twice without echo (run under a
//! pseudo-terminal with `script`); piped standard input is read as one line, as before.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{self, write_config};

const PASSWORD: &str = "Typed-At-A-Tty-42";

/// Reads the child's output until `wanted` has appeared (or the deadline passes).
fn read_until(rx: &mpsc::Receiver<Vec<u8>>, seen: &mut String, wanted: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.matches(wanted).count() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => panic!("no {wanted:?} (x{count}) in the terminal: {seen:?}"),
        }
    }
}

#[test]
fn at_a_terminal_the_password_is_asked_twice_without_echo() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `script` (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n");
    let command = format!(
        "{} accounts add court_zxfw alice --password-stdin --config {}",
        support::BIN,
        config.display()
    );
    let mut script = Command::new("script");
    for var in [
        "DATABASE_URL",
        "TOKEND_CONFIG",
        "TOKEND_SECRET_KEY",
        "REDIS_URL",
    ] {
        script.env_remove(var);
    }
    let mut child = script
        .args(["-qefc", &command, "/dev/null"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = String::new();
    read_until(&rx, &mut seen, "Password", 1);
    stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    read_until(&rx, &mut seen, "Password", 2);
    stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    read_until(&rx, &mut seen, "added account", 1);
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}");
    assert!(
        !seen.contains(PASSWORD),
        "the password was echoed to the terminal: {seen:?}"
    );

    // It was stored: the listing shows alice.
    let list = support::tokend(dir.path())
        .args(["accounts", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("alice"));
}

#[test]
fn piped_standard_input_is_one_line_without_a_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n");
    let mut child = support::tokend(dir.path())
        .args([
            "accounts",
            "add",
            "court_zxfw",
            "bob",
            "--password-stdin",
            "--config",
        ])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped-pw\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("Password"),
        "a prompt on piped input: {text}"
    );
}

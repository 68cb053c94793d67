//! The real `tokend` binary (release): time from start to answering `/healthz` (target
//! 150 ms), idle RSS (target 12 MB), and RSS with 10k accounts and 10k cached tokens
//! (target 40 MB). Each RSS is also split into what is the process's own (anonymous: heap,
//! stacks) and what is the mapped binary and libraries (file-backed, shared and clean).
//!
//! Run: `cargo bench --bench footprint`. With `FOOTPRINT_WRAP=heaptrack` (any command
//! taking the program as its arguments) the loaded daemon runs under it, for a heap profile.

#[path = "../tests/it/support/portal.rs"]
mod portal;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use portal::{AccountBehaviour, Portal};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_tokend");
const ACCOUNTS: usize = 10_000;

fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS:")
}

/// What the RSS is made of: anonymous (heap, stacks) and file-backed (the mapped binary and
/// libraries), and the threads.
fn breakdown(pid: u32) -> String {
    format!(
        "[anon {:.1} MB, file {:.1} MB, {} threads]",
        status_mb(pid, "RssAnon:"),
        status_mb(pid, "RssFile:"),
        status_mb(pid, "Threads:") * 1024.0
    )
}

/// Starts the daemon and returns it with the time until `/healthz` answered; the caller
/// kills and waits for it.
#[allow(clippy::zombie_processes)]
fn start(dir: &Path, config: &Path, wrap: Option<&str>) -> (Child, std::net::SocketAddr, Duration) {
    let started = Instant::now();
    let mut command = match wrap {
        Some(wrap) => {
            let mut command = Command::new(wrap);
            command.arg(BIN);
            command
        }
        None => Command::new(BIN),
    };
    let mut child = command
        .current_dir(dir)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env(
            "TOKEND_SECRET_KEY",
            "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
        )
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tokend");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("tokend exited").unwrap();
        if let Some(rest) = line.split("event=listening addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
            let mut answer = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut answer);
            if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                return (child, addr, started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "OK"
    } else {
        "BELOW TARGET"
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let portal = Portal::start();
    *portal.state.latency.lock().unwrap() = Duration::ZERO;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tokend.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[concurrency]\nmax_concurrent_acquisitions = 16\nmax_concurrent_per_site = 16\n\
             [cache]\nbackground_refresh = false\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
            portal.login_url()
        ),
    )
    .unwrap();

    // First start creates the database and runs the migrations; the second is a restart.
    let (mut child, _, cold) = start(dir.path(), &config, None);
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, addr, warm) = start(dir.path(), &config, None);
    println!(
        "ready (answers /healthz), first start  {:>7.1} ms (target 150 ms) {}",
        cold.as_secs_f64() * 1000.0,
        verdict(cold.as_millis() <= 150)
    );
    println!(
        "ready (answers /healthz), restart      {:>7.1} ms (target 150 ms) {}",
        warm.as_secs_f64() * 1000.0,
        verdict(warm.as_millis() <= 150)
    );
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_mb(child.id());
    println!(
        "idle RSS                               {idle:>7.1} MB (target 12 MB) {}  {}",
        verdict(idle <= 12.0),
        breakdown(child.id())
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // 10k accounts, imported in one transaction, and a cached token for each.
    let mut csv = String::from("site_name,account,password\n");
    for i in 0..ACCOUNTS {
        portal.state.set_account(
            &format!("acct{i}"),
            AccountBehaviour {
                password: format!("pw{i}"),
                ..Default::default()
            },
        );
        csv += &format!("court_zxfw,acct{i},pw{i}\n");
    }
    let mut import = Command::new(BIN)
        .current_dir(dir.path())
        .args(["accounts", "import", "-", "--config"])
        .arg(&config)
        .env(
            "TOKEND_SECRET_KEY",
            "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    import
        .stdin
        .take()
        .unwrap()
        .write_all(csv.as_bytes())
        .unwrap();
    assert!(import.wait().unwrap().success());
    let wrap = std::env::var("FOOTPRINT_WRAP").ok();
    let (mut child, addr2, _) = start(dir.path(), &config, wrap.as_deref());
    let _ = addr;
    let started = Instant::now();
    actix_web::rt::System::new().block_on(async move {
        let client = reqwest::Client::new();
        stream::iter(1..=ACCOUNTS as i64)
            .for_each_concurrent(16, |id| {
                let client = client.clone();
                async move {
                    let r = client
                        .post(format!("http://{addr2}/api/v1/automation/tokens/acquire"))
                        .json(&json!({"site_name": "court_zxfw", "credential_id": id}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                }
            })
            .await;
    });
    let loaded = rss_mb(child.id());
    println!(
        "RSS with {ACCOUNTS} accounts and {ACCOUNTS} cached tokens {loaded:>5.1} MB (target 40 MB) {}  {}  [{} logins in {:.1} s]",
        verdict(loaded <= 40.0),
        breakdown(child.id()),
        portal.state.issued(),
        started.elapsed().as_secs_f64()
    );
    if wrap.is_some() {
        // Stop the daemon (the wrapper's child) gracefully, so that the wrapper writes its
        // profile.
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1));
            if ppid == Some(child.id().to_string().as_str()) {
                if let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        }
    } else {
        child.kill().unwrap();
    }
    child.wait().unwrap();
}

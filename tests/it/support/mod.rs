//! Helpers shared by the integration tests: real services (PostgreSQL, Redis) with the
//! skip-outside-CI / fail-in-CI rule, and the real `tokend` binary as a child process.

pub mod browser;
mod cli;
pub mod court_portal;
pub mod edelivery_portal;
pub mod forward_proxy;
pub mod harness;
mod http;
pub mod logs;
pub mod pg_server;
pub mod portal;
pub mod proxy;
pub mod redis_server;
pub mod redis_topology;
mod serve;
mod wait;

pub use cli::{run_cli, run_cli_with_config, stderr, stdout, text};
pub use http::{acquire, block_on, call, call_as, get};
pub(crate) use serve::serve_on_thread;
pub use wait::{wait_until, wait_until_blocking};

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use diesel::{Connection, PgConnection, RunQueryDsl};

pub const BIN: &str = env!("CARGO_BIN_EXE_tokend");

/// Whether a service the test needs is there. Outside CI a missing service skips the test
/// (with a message); in CI (`CI=true`) it fails it.
pub fn require(service: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{service} is required in CI but is not reachable");
    }
    eprintln!("SKIPPED: {service} is not reachable; start it to run this test");
    false
}

pub fn pg_admin_url() -> String {
    std::env::var("TOKEND_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("TOKEND_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn tcp_open(url: &str, default_port: u16) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:{default_port}")
    };
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport
        .parse::<SocketAddr>()
        .ok()
        .and_then(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
        .is_some()
}

pub fn redis_available() -> bool {
    require("Redis", tcp_open(&redis_url(), 6379))
}

/// A PostgreSQL database of its own for one test, dropped afterwards.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    /// `None` when PostgreSQL is absent outside CI (the test then returns early).
    pub fn create() -> Option<PgDatabase> {
        let admin = pg_admin_url();
        if !require("PostgreSQL", tcp_open(&admin, 5432)) {
            return None;
        }
        let mut conn =
            PgConnection::establish(&admin).expect("connect to PostgreSQL admin database");
        let name = format!("tokend_test_{}_{}", std::process::id(), unique());
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .expect("create test database");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(b, _)| b)
            .to_string();
        Some(PgDatabase {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&pg_admin_url()) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

/// A number unique across the test processes running at once (names of test databases and
/// Redis key prefixes): the process id, a counter, and the clock.
/// A port for a server a test starts, free when asked: below the kernel's ephemeral range
/// (32768 and up here), so that no outgoing connection of a parallel test can take it before
/// the server binds it (a port from `:0` can be, "Address already in use"). 12000–21999, so
/// that a cluster node's bus port (+10000) stays below the range too.
pub fn server_port() -> u16 {
    loop {
        let port = fastrand::u16(12_000..22_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (u64::from(std::process::id()) << 32)
        | ((NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff) << 16)
        | u64::from(nanos & 0xffff)
}

/// The `tokend` command, run in `dir` with a clean environment for tokend's variables.
pub fn tokend(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "REDIS_HOST",
        "TOKEND_CONFIG",
        "TOKEND_ADMIN_TOKEN",
        "TOKEND_SECRET_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A running `tokend serve`, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: mpsc::Receiver<String>,
    /// Lines printed before it listened.
    startup_log: Vec<String>,
}

impl Daemon {
    /// Starts `tokend serve --config CONFIG` in `dir` and waits until it listens.
    pub fn start(dir: &Path, config: &Path) -> Daemon {
        Daemon::start_with_log(dir, config, "info")
    }

    /// The same, with `RUST_LOG` set to `level`.
    pub fn start_with_log(dir: &Path, config: &Path, level: &str) -> Daemon {
        Daemon::start_with_env(dir, config, level, &[])
    }

    /// The same, with more environment variables.
    pub fn start_with_env(dir: &Path, config: &Path, level: &str, env: &[(&str, &str)]) -> Daemon {
        let mut command = tokend(dir);
        command
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied());
        Daemon::spawn(command, level)
    }

    /// Runs `command` (a `tokend serve`, maybe behind a wrapper such as `setpriv`) with
    /// `RUST_LOG` set to `level`, and waits until it listens.
    pub fn spawn(mut command: Command, level: &str) -> Daemon {
        let mut child = command
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokend serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let addr = line
                        .split("event=listening addr=")
                        .nth(1)
                        .map(|a| a.split_whitespace().next().unwrap().parse().unwrap());
                    seen.push(line);
                    if let Some(addr) = addr {
                        break addr;
                    }
                }
                Err(_) => panic!(
                    "tokend did not start listening; its log:\n{}",
                    seen.join("\n")
                ),
            }
        };
        Daemon {
            child,
            addr,
            log: rx,
            startup_log: seen,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = self.drain_log();
        let tail = &log[log.len().saturating_sub(30)..];
        panic!(
            "tokend did not exit within 10 s of SIGTERM; the end of its log:\n{}",
            tail.join("\n")
        );
    }

    /// Drains the log into `seen` until a line there holds `needle`, failing the test (with
    /// the log) after `within`.
    pub fn wait_for_log(&mut self, needle: &str, within: Duration, seen: &mut Vec<String>) {
        let deadline = std::time::Instant::now() + within;
        loop {
            seen.extend(self.drain_log());
            if seen.iter().any(|l| l.contains(needle)) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?} within {within:?}; log:\n{}",
                seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines printed so far (the start-up lines, then every line not yet drained).
    pub fn drain_log(&mut self) -> Vec<String> {
        let mut lines = std::mem::take(&mut self.startup_log);
        lines.extend(self.log.try_iter());
        lines
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tokend accounts add SITE ACCOUNT --password-stdin --config CONFIG`, run in `dir`.
pub fn add_account(dir: &Path, config: &Path, site: &str, account: &str, password: &str) {
    add_account_with_env(dir, config, (site, account, password), &[]);
}

/// [`add_account`] with extra environment variables (another `TOKEND_SECRET_KEY`, say).
pub fn add_account_with_env(
    dir: &Path,
    config: &Path,
    (site, account, password): (&str, &str, &str),
    env: &[(&str, &str)],
) {
    use std::io::Write;
    let mut add = tokend(dir)
        .args([
            "accounts",
            "add",
            site,
            account,
            "--password-stdin",
            "--config",
        ])
        .arg(config)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(
        add.wait().unwrap().success(),
        "accounts add {site} {account} failed"
    );
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tokend.toml");
    std::fs::write(&path, text).unwrap();
    path
}

//! A private `redis-server` for one test, on a port of its own, without persistence: it can be
//! restarted empty (the "Redis lost its keys" fault) without touching the shared Redis, and
//! run with its clock set off from the host's (a preloaded shim shifts `gettimeofday` and
//! `clock_gettime(CLOCK_REALTIME)`, which Redis's `TIME` reads), like a Redis host whose clock
//! differs from tokend's.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    /// The clock shim and its offset in seconds, when the clock is set off.
    clock: Option<(tempfile::TempDir, i64)>,
}

const CLOCK_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
static long offset(void) {
    const char *s = getenv("FAKE_CLOCK_OFFSET_SECONDS");
    return s ? atol(s) : 0;
}
int gettimeofday(struct timeval *tv, void *tz) {
    static int (*real)(struct timeval *, void *);
    if (!real) real = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
    int r = real(tv, tz);
    if (r == 0 && tv) tv->tv_sec += offset();
    return r;
}
int clock_gettime(clockid_t clk, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(clk, ts);
    if (r == 0 && ts && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE)) ts->tv_sec += offset();
    return r;
}
"#;

/// The server binary the tests start: `redis-server`, or `TOKEND_TEST_REDIS_SERVER`
/// (`valkey-server`: CI runs the Redis tests on Valkey too).
pub fn server_binary() -> String {
    std::env::var("TOKEND_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// The command-line client to go with it: `redis-cli`, or `TOKEND_TEST_REDIS_CLI`.
pub fn cli_binary() -> String {
    std::env::var("TOKEND_TEST_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into())
}

/// Whether the server binary can be run here (skip outside CI, fail in CI).
pub fn available() -> bool {
    let found = Command::new(server_binary())
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    super::require("redis-server", found)
}

impl RedisServer {
    /// Starts `redis-server` with `extra` arguments (`--requirepass …`); `None` when it is
    /// not installed outside CI.
    pub fn start(extra: &[&str]) -> Option<RedisServer> {
        RedisServer::start_with_clock(extra, 0)
    }

    /// The same, with Redis's clock `offset` seconds off the host's (needs a C compiler,
    /// which building tokend needs anyway).
    pub fn start_with_clock(extra: &[&str], offset: i64) -> Option<RedisServer> {
        if !available() {
            return None;
        }
        let clock = (offset != 0).then(|| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("clock.c"), CLOCK_SHIM).unwrap();
            let built = Command::new("cc")
                .args(["-shared", "-fPIC", "-o"])
                .arg(dir.path().join("clock.so"))
                .arg(dir.path().join("clock.c"))
                .arg("-ldl")
                .status()
                .expect("run cc");
            assert!(built.success(), "the clock shim did not build");
            (dir, offset)
        });
        let port = super::server_port();
        let mut server = RedisServer {
            port,
            args: extra.iter().map(|a| a.to_string()).collect(),
            child: None,
            clock,
        };
        server.spawn();
        Some(server)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new(server_binary());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((dir, offset)) = &self.clock {
            command
                .env("LD_PRELOAD", dir.path().join("clock.so"))
                .env("FAKE_CLOCK_OFFSET_SECONDS", offset.to_string());
        }
        let child = command.spawn().expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a new one on the same port, with no keys.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

//! The hot path measured honestly: the real release binary (`tokend serve`) in its own
//! process, loaded by an external generator (`wrk`, installed with apt-get when missing) in
//! another, with a fixed connection count. Each figure is paired with its baseline in the
//! same run, A B A B, and the medians and the median ratio are printed:
//!
//! - a cached acquire vs `GET /healthz` of the same binary (target ≥ 0.8×);
//! - a cached acquire on the Redis backend vs a minimal actix-web server doing one Redis GET
//!   per request, run as a process of its own (this benchmark re-executed; target ≥ 1.0×).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// Connections kept open by the generator, and how long each run lasts.
const CONNECTIONS: u32 = 64;
const RUN: &str = "4s";
const ROUNDS: usize = 3;

/// The length of the token the fake portal issues: a court portal's JWT, about 200 characters.
pub const TOKEN_LEN: usize = 200;
/// What a cached acquire must reach, as a share of `/healthz` (issue 23).
const HOT_PATH_TARGET: f64 = 0.8;

/// The headers the Python client (httpx) sends with every request, beside the body's type.
const CLIENT_HEADERS: &[(&str, &str)] = &[
    ("User-Agent", "python-httpx/0.28.1"),
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip, deflate"),
];

/// The environment variable that makes this benchmark the baseline Redis server.
pub const BASELINE_ROLE: &str = "TOKEND_BENCH_REDIS_GET_SERVER";

/// `wrk`, installed from Debian's packages if missing; `None` when it cannot be had.
fn wrk() -> Option<&'static str> {
    let works = || Command::new("wrk").arg("--version").output().is_ok();
    if works() {
        return Some("wrk");
    }
    eprintln!("installing wrk (apt-get) for the external load generator…");
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "wrk"])
        .status();
    works().then_some("wrk")
}

/// Requests per second of one `wrk` run against `url` (a POST with `body` when given).
fn requests_per_second(url: &str, body: Option<&str>, script_dir: &std::path::Path) -> f64 {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{RUN}"),
        "--latency",
    ]);
    if let Some(body) = body {
        let script = script_dir.join("post.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n{}",
                CLIENT_HEADERS
                    .iter()
                    .map(|(name, value)| format!("wrk.headers[\"{name}\"] = \"{value}\"\n"))
                    .collect::<String>()
            ),
        )
        .expect("write the wrk script");
        command.arg("-s").arg(&script);
    }
    let out = command.arg(url).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let non_2xx = text.lines().any(|l| l.contains("Non-2xx"));
    assert!(!non_2xx, "wrk saw failed answers from {url}:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A B A B: the medians of both and the median of the ratios.
fn paired(mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> (f64, f64, f64) {
    let (mut xs, mut ys, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let x = a();
        let y = b();
        ratios.push(x / y);
        xs.push(x);
        ys.push(y);
    }
    (median(xs), median(ys), median(ratios))
}

/// A running child process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tokend serve` (the release binary) on `config` and waits for its address.
fn serve(dir: &std::path::Path, config: &std::path::Path) -> (Process, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(["serve", "--config"])
        .arg(config)
        .current_dir(dir)
        // The default log level, as a user runs it.
        .env_remove("RUST_LOG")
        .env(
            "TOKEND_SECRET_KEY",
            "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tokend serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("tokend exited").expect("read log");
        if let Some(rest) = line.split("event=listening addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining the log so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Process(child), addr)
}

fn add_account(dir: &std::path::Path, config: &std::path::Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args([
            "accounts",
            "add",
            "court_zxfw",
            "alice",
            "--password-stdin",
            "--config",
        ])
        .arg(config)
        .current_dir(dir)
        .env(
            "TOKEND_SECRET_KEY",
            "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("tokend accounts add");
    child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    assert!(child.wait().unwrap().success(), "accounts add failed");
}

/// One instance of the release binary with a warm token.
fn instance(login_url: &str, redis: Option<&str>) -> (tempfile::TempDir, Process, SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = redis.map_or(String::new(), |url| {
        format!(
            "[redis]\nurl = \"{url}\"\nkey_prefix = \"tokend-bench-hot-{}\"\n",
            std::process::id()
        )
    });
    let config = dir.path().join("tokend.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://tokend.db\"\n{redis}\
             [cache]\nbackground_refresh = false\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{login_url}\"\n"
        ),
    )
    .expect("write config");
    add_account(dir.path(), &config);
    let (process, addr) = serve(dir.path(), &config);
    let warm = acquire_once(addr);
    assert!(warm, "the first acquire (a login) failed");
    (dir, process, addr)
}

/// One acquire with std only (the benchmark's own process stays out of the load).
fn acquire_once(addr: SocketAddr) -> bool {
    use std::io::Read;
    {
        let body = r#"{"site_name":"court_zxfw"}"#;
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let request = format!(
            "POST /api/v1/automation/tokens/acquire HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    }
}

/// Runs the external comparisons; `login_url` is a running fake portal's.
pub fn run(login_url: &str, redis: Option<&str>) {
    if wrk().is_none() {
        println!("hot path (external generator): skipped, wrk cannot be installed here");
        return;
    }
    let body = r#"{"site_name":"court_zxfw"}"#;
    let (_dir, _tokend, addr) = instance(login_url, None);
    let scripts = tempfile::tempdir().expect("tempdir");
    let acquire = format!("http://{addr}/api/v1/automation/tokens/acquire");
    let healthz = format!("http://{addr}/healthz");
    let (cached, health, ratio) = paired(
        || requests_per_second(&acquire, Some(body), scripts.path()),
        || requests_per_second(&healthz, None, scripts.path()),
    );
    println!(
        "cached acquire (memory), wrk -c{CONNECTIONS}: {cached:>9.0} req/s | GET /healthz {health:>9.0} req/s | median ratio {ratio:.2} (target ≥ {HOT_PATH_TARGET}) {}",
        if ratio >= HOT_PATH_TARGET { "OK" } else { "BELOW TARGET" }
    );
    let Some(redis) = redis else {
        println!("cached acquire (redis): skipped, Redis not reachable");
        return;
    };
    let (_rdir, _rtokend, raddr) = instance(login_url, Some(redis));
    let baseline = baseline_server(redis);
    let racquire = format!("http://{raddr}/api/v1/automation/tokens/acquire");
    let get = format!("http://{}/get", baseline.1);
    let (cached, one_get, ratio) = paired(
        || requests_per_second(&racquire, Some(body), scripts.path()),
        || requests_per_second(&get, None, scripts.path()),
    );
    println!(
        "cached acquire (redis), wrk -c{CONNECTIONS}: {cached:>9.0} req/s | actix + one Redis GET {one_get:>9.0} req/s | median ratio {ratio:.2} (target ≥ 1.0) {}",
        if ratio >= 1.0 { "OK" } else { "BELOW TARGET" }
    );
}

/// The baseline server as a process of its own: this benchmark, re-executed in that role.
fn baseline_server(redis: &str) -> (Process, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(BASELINE_ROLE, redis)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the baseline server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("baseline address");
    let addr = line.trim().parse().expect("baseline address");
    (Process(child), addr)
}

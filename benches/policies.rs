//! What site policies cost per login (SPEC §12): the same forced logins against a fast local
//! portal, with and without login budgets and round-robin rotation, in process and on Redis,
//! measured A B A B in one run and printed as time per login and the ratio to the plain site.
//!
//! Run: `cargo bench --bench policies` (Redis at `TOKEND_TEST_REDIS_URL` or 127.0.0.1:6379 is
//! used when reachable).

#[path = "../tests/it/support/portal.rs"]
mod portal;

use std::sync::Arc;
use std::time::{Duration, Instant};

use portal::Portal;
use serde_json::json;
use tokend::accounts::NewAccount;
use tokend::vault::secret::Secret;
use tokend::Config;

const LOGINS: usize = 300;
const ACCOUNTS: usize = 3;

async fn start(
    portal: &Portal,
    redis: Option<&str>,
    dir: &std::path::Path,
    policies: bool,
) -> tokend::daemon::server::RunningServer {
    let redis = redis.map_or(String::new(), |url| {
        format!(
            "[redis]\nurl = \"{url}\"\nkey_prefix = \"tokend-bench-policies-{}-{policies}\"\n",
            std::process::id()
        )
    });
    let site_keys = if policies {
        "login_budget_per_account_per_hour = 1000000\nlogin_budget_per_site_per_hour = 1000000\nselection = \"round_robin\"\n"
    } else {
        ""
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{}\"\n{redis}\
         [cache]\nbackground_refresh = false\n\
         [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n{site_keys}",
        dir.join(format!("bench-{policies}.db")).display(),
        portal.login_url()
    );
    let env = |name: &str| {
        (name == "TOKEND_SECRET_KEY")
            .then(|| "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=".to_string())
    };
    let config = Config::from_sources(Some(&text), &env).expect("bench config");
    let server = tokend::daemon::server::start(Arc::new(config))
        .await
        .expect("start tokend");
    for n in 0..ACCOUNTS {
        let account = format!("a{n}");
        portal.state.accept(&account, "pw");
        tokend::accounts::add(
            &server.state.pool,
            &server.state.key,
            &NewAccount {
                site_name: "court_zxfw".into(),
                account,
                password: Secret::new("pw"),
                preferred: false,
                proxy: None,
            },
        )
        .expect("add account");
    }
    server
}

/// Microseconds per forced login (each acquisition logs in), one caller after another.
async fn per_login(server: &tokend::daemon::server::RunningServer) -> f64 {
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/v1/automation/tokens/acquire", server.addr);
    let started = Instant::now();
    for _ in 0..LOGINS {
        let answer = client
            .post(&url)
            .json(&json!({"site_name": "court_zxfw", "force_refresh": true}))
            .send()
            .await
            .expect("acquire");
        assert!(answer.status().is_success(), "{}", answer.status());
    }
    started.elapsed().as_secs_f64() * 1e6 / LOGINS as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn compare(redis: Option<&str>) {
    let portal = Portal::start();
    *portal.state.latency.lock().unwrap() = Duration::ZERO;
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = start(&portal, redis, dir.path(), false).await;
    let policies = start(&portal, redis, dir.path(), true).await;
    per_login(&plain).await; // warm-up
    per_login(&policies).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        a.push(per_login(&plain).await);
        b.push(per_login(&policies).await);
    }
    let (a, b) = (median(a), median(b));
    println!(
        "login with budgets + round robin ({}): {b:.0} µs/login vs {a:.0} µs plain: +{:.0} µs ({:.2}×)",
        if redis.is_some() { "redis" } else { "in process" },
        b - a,
        b / a
    );
    drop(plain.handle.stop(false));
    drop(policies.handle.stop(false));
}

fn redis_url() -> Option<String> {
    let url = std::env::var("TOKEND_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let reachable = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().ok()?,
        Duration::from_secs(1),
    )
    .is_ok();
    reachable.then_some(url)
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        compare(None).await;
        match redis_url() {
            Some(url) => compare(Some(&url)).await,
            None => {
                println!("login with budgets + round robin (redis): skipped, Redis not reachable")
            }
        }
    });
}

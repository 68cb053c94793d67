//! Benchmarks of the acquisition path, each printed next to a baseline measured in the same
//! run (so the ratio holds on any machine):
//!
//! 1. the hot path with an external load generator against the release binary
//!    ([`hot_path`]): a cached acquire vs `GET /healthz` (target ≥ 0.8×), and on Redis vs a
//!    minimal actix-web server doing one Redis GET (target ≥ 1×). These are the figures that
//!    count; the in-process ones below share the server's cores with their client and only
//!    serve as a secondary line;
//! 2. the same two comparisons driven from inside this process (secondary);
//! 3. a burst of 200 cold callers: logins made, and the slowest answer minus the login's own
//!    latency (target: one login, ≤ 50 ms);
//! 4. in-process slot grant + release per second (target ≥ 500k/s).
//!
//! Run: `cargo bench --bench acquire` (Redis at `TOKEND_TEST_REDIS_URL` or 127.0.0.1:6379 is
//! used when reachable).

#[path = "support/hot_path.rs"]
mod hot_path;
#[path = "../tests/it/support/portal.rs"]
mod portal;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use portal::Portal;
use serde_json::json;
use tokend::accounts::NewAccount;
use tokend::vault::secret::Secret;
use tokend::Config;

const CONCURRENCY: usize = 32;
const REQUESTS: usize = 20_000;
const LOGIN_LATENCY: Duration = Duration::from_millis(300);

struct Figures {
    per_second: f64,
    p99_ms: f64,
}

/// Runs `REQUESTS` calls of `call` from `CONCURRENCY` concurrent tasks.
async fn measure<F, Fut>(call: F) -> Figures
where
    F: Fn() -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let per_task = REQUESTS / CONCURRENCY;
    let tasks = (0..CONCURRENCY).map(|_| {
        let call = call.clone();
        async move {
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                call().await;
                latencies.push(t.elapsed());
            }
            latencies
        }
    });
    let mut all: Vec<Duration> = join_all(tasks).await.into_iter().flatten().collect();
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Figures {
        per_second: all.len() as f64 / elapsed,
        p99_ms: all[all.len() * 99 / 100].as_secs_f64() * 1000.0,
    }
}

async fn start_tokend(
    portal: &Portal,
    redis: Option<&str>,
    dir: &std::path::Path,
) -> tokend::daemon::server::RunningServer {
    let redis = redis.map_or(String::new(), |url| {
        format!(
            "[redis]\nurl = \"{url}\"\nkey_prefix = \"tokend-bench-{}\"\n",
            std::process::id()
        )
    });
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{}\"\n{redis}\
         [cache]\nbackground_refresh = false\n\
         [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
        dir.join("bench.db").display(),
        portal.login_url()
    );
    let env = |name: &str| {
        (name == "TOKEND_SECRET_KEY")
            .then(|| "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=".to_string())
    };
    let config = Config::from_sources(Some(&text), &env).expect("bench config");
    let running = tokend::daemon::server::start(Arc::new(config))
        .await
        .expect("start tokend");
    let state = &running.state;
    tokend::accounts::add(
        &state.pool,
        &state.key,
        &NewAccount {
            site_name: "court_zxfw".into(),
            account: "alice".into(),
            password: Secret::new("pw"),
            preferred: false,
            proxy: None,
        },
    )
    .expect("add account");
    running
}

fn print_ratio(
    name: &str,
    subject: &Figures,
    baseline_name: &str,
    baseline: &Figures,
    target: f64,
) {
    let ratio = subject.per_second / baseline.per_second;
    println!(
        "{name:<32} {:>10.0} req/s  p99 {:>7.2} ms | {baseline_name:<24} {:>10.0} req/s  p99 {:>7.2} ms | ratio {ratio:.2} (target ≥ {target}) {}",
        subject.per_second,
        subject.p99_ms,
        baseline.per_second,
        baseline.p99_ms,
        if ratio >= target { "OK" } else { "BELOW TARGET" }
    );
}

async fn cached_acquire(redis: Option<String>) {
    let portal = Portal::start();
    portal.state.accept("alice", "pw");
    let dir = tempfile::tempdir().unwrap();
    let tokend = start_tokend(&portal, redis.as_deref(), dir.path()).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let acquire_url = format!("http://{}/api/v1/automation/tokens/acquire", tokend.addr);
    let health_url = format!("http://{}/healthz", tokend.addr);
    let body = json!({"site_name": "court_zxfw"});
    let warm = client.post(&acquire_url).json(&body).send().await.unwrap();
    assert!(warm.status().is_success());

    let trivial = {
        let (client, url) = (client.clone(), health_url.clone());
        measure(move || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r = client.get(url).send().await.unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().await;
            }
        })
        .await
    };
    let cached = {
        let (client, url, body) = (client.clone(), acquire_url.clone(), body.clone());
        measure(move || {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            async move {
                let r = client.post(url).json(&body).send().await.unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().await;
            }
        })
        .await
    };
    let backend = if redis.is_some() { "redis" } else { "memory" };
    print_ratio(
        &format!("cached acquire ({backend})"),
        &cached,
        "GET /healthz",
        &trivial,
        0.6,
    );

    if let Some(url) = redis {
        // The baseline: an actix-web endpoint, like tokend's, that does one Redis GET.
        let addr = redis_get_server(&url).await;
        let (client, url) = (client.clone(), format!("http://{addr}/get"));
        let one_get = measure(move || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r = client.get(url).send().await.unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().await;
            }
        })
        .await;
        print_ratio(
            "cached acquire (redis)",
            &cached,
            "HTTP + one Redis GET",
            &one_get,
            1.0,
        );
    }
    assert_eq!(
        portal.state.issued(),
        1,
        "the benchmark must run on cache hits only"
    );
    tokend.handle.stop(false).await;
}

/// A two-worker actix-web server whose one endpoint answers with one Redis GET.
async fn redis_get_server(url: &str) -> std::net::SocketAddr {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let conn = redis::Client::open(url)
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let server = HttpServer::new(move || {
        App::new().app_data(web::Data::new(conn.clone())).route(
            "/get",
            web::get().to(
                |conn: web::Data<redis::aio::ConnectionManager>| async move {
                    let mut conn = conn.get_ref().clone();
                    let value: Option<String> =
                        redis::AsyncCommands::get(&mut conn, "tokend-bench-probe")
                            .await
                            .unwrap();
                    HttpResponse::Ok().json(json!({"success": true, "data": value}))
                },
            ),
        )
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    addr
}

async fn cold_burst() {
    let portal = Portal::start();
    portal.state.accept("alice", "pw");
    *portal.state.latency.lock().unwrap() = LOGIN_LATENCY;
    let dir = tempfile::tempdir().unwrap();
    let tokend = start_tokend(&portal, None, dir.path()).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(200)
        .build()
        .unwrap();
    let url = format!("http://{}/api/v1/automation/tokens/acquire", tokend.addr);
    let started = Instant::now();
    let answers = join_all((0..200).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client
                .post(url)
                .json(&json!({"site_name": "court_zxfw"}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            started.elapsed()
        }
    }))
    .await;
    let slowest = answers.iter().max().unwrap();
    let over = slowest.saturating_sub(LOGIN_LATENCY).as_secs_f64() * 1000.0;
    println!(
        "cold burst of 200 callers         logins {} (target 1) | slowest answer {:.1} ms = login {} ms + {over:.1} ms (target ≤ 50 ms) {}",
        portal.state.issued(),
        slowest.as_secs_f64() * 1000.0,
        LOGIN_LATENCY.as_millis(),
        if portal.state.issued() == 1 && over <= 50.0 { "OK" } else { "BELOW TARGET" }
    );
    tokend.handle.stop(false).await;
}

async fn slots() {
    use actix::Actor;
    use tokend::slots::concurrency::{acquire_slot, ConcurrencyActor, Usage};
    let config = tokend::config::ConcurrencyConfig {
        max_concurrent_acquisitions: 1000,
        max_concurrent_per_site: 1000,
        max_concurrent_per_account: 1000,
        ..Default::default()
    };
    let actor = ConcurrencyActor::new(&config).start();
    let rounds = 200_000;
    let started = Instant::now();
    for i in 0..rounds {
        let account = if i % 2 == 0 { "a" } else { "b" };
        let guard = acquire_slot(&actor, "court_zxfw", account, Duration::from_secs(1))
            .await
            .unwrap();
        drop(guard);
    }
    let _ = actor.send(Usage).await;
    let per_second = rounds as f64 / started.elapsed().as_secs_f64();
    println!(
        "slot grant + release (in-process) {per_second:>10.0} /s (target ≥ 500000) {}",
        if per_second >= 500_000.0 {
            "OK"
        } else {
            "BELOW TARGET"
        }
    );
}

/// Grant + release through Redis from 32 concurrent callers on distinct accounts.
async fn redis_slots(url: &str) {
    use tokend::slots::redis::{RedisSlots, SlotRequest};
    use tokend::slots::SlotLimits;
    let prefix = format!("tokend-bench-slots-{}", std::process::id());
    let slots = RedisSlots::new(tokend::redis::RedisLink::open(url, &prefix).unwrap());
    let wake = Arc::new(tokio::sync::Notify::new());
    let limits = SlotLimits {
        global: 10_000,
        per_site: 10_000,
        per_account: 10,
    };
    let rounds_per_task = 1_500;
    let started = Instant::now();
    join_all((0..CONCURRENCY).map(|task| {
        let (slots, wake) = (slots.clone(), wake.clone());
        async move {
            let account = format!("acct{task}");
            for _ in 0..rounds_per_task {
                let ask = SlotRequest {
                    site: "court_zxfw",
                    account: &account,
                    limits,
                    lease: Duration::from_secs(30),
                    wait: Duration::from_secs(5),
                    max_queue: 1000,
                };
                let lease = slots.acquire(&ask, &wake).await.unwrap();
                slots.release(&lease).await.unwrap();
            }
        }
    }))
    .await;
    let per_second = (CONCURRENCY * rounds_per_task) as f64 / started.elapsed().as_secs_f64();
    println!(
        "slot grant + release (redis)      {per_second:>10.0} /s (target ≥ 30000) {}",
        if per_second >= 30_000.0 {
            "OK"
        } else {
            "BELOW TARGET"
        }
    );
}

fn redis_url() -> Option<String> {
    let url = std::env::var("TOKEND_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().unwrap(),
        Duration::from_millis(300),
    )
    .ok()
    .map(|_| url)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Ok(url) = std::env::var(hot_path::BASELINE_ROLE) {
        // Re-executed as the baseline server of the Redis comparison: serve until killed.
        actix_web::rt::System::new().block_on(async {
            let addr = redis_get_server(&url).await;
            println!("{addr}");
            std::future::pending::<()>().await;
        });
        return;
    }
    if std::env::args().any(|a| a == "slots") {
        // `cargo bench --bench acquire -- slots`: the slot figures alone.
        actix_web::rt::System::new().block_on(async {
            slots().await;
            if let Some(url) = redis_url() {
                redis_slots(&url).await;
            }
        });
        return;
    }
    let portal = Portal::start();
    portal.state.accept("alice", "pw");
    // A realistic token: a court portal's JWT is about 200 characters.
    portal
        .state
        .token_len
        .store(hot_path::TOKEN_LEN, std::sync::atomic::Ordering::SeqCst);
    hot_path::run(&portal.login_url(), redis_url().as_deref());
    println!("-- secondary: load generated inside this process --");
    actix_web::rt::System::new().block_on(async {
        cached_acquire(None).await;
        if let Some(url) = redis_url() {
            cached_acquire(Some(url)).await;
        }
        cold_burst().await;
        slots().await;
        if let Some(url) = redis_url() {
            redis_slots(&url).await;
        }
    });
}

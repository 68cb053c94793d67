//! Redis faults put in for real (SPEC §9–§10): a password with URL characters, a blackholed
//! connection (the breaker sends one probe per pause, and a background probe ends the outage
//! in `/health`), and lease expiry judged on Redis's clock.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::harness::Harness;
use crate::support::proxy::Proxy;
use crate::support::redis_server::RedisServer;
use crate::support::{self, write_config, Daemon};

const PASSWORD: &str = "aB/c+d=e@f:g?h#i";
/// Pieces of [`PASSWORD`] that must show nowhere.
const PIECES: [&str; 4] = ["aB/c", "c+d=e", "g?h", "h#i"];

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// `REDIS_PASSWORD` as `openssl rand -base64` makes them: tokend starts, reaches the Redis
/// that requires it, and prints no piece of it.
#[actix_rt::test]
async fn a_redis_password_with_url_characters_works_and_never_shows() {
    let Some(redis) = RedisServer::start(&["--requirepass", PASSWORD]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{}/t.db\"\n",
            dir.path().display()
        ),
    );
    let port = redis.port.to_string();
    let env = [
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", port.as_str()),
        ("REDIS_PASSWORD", PASSWORD),
    ];
    let mut daemon = Daemon::start_with_env(dir.path(), &config, "debug", &env);
    let (status, health) = get(daemon.url("/api/v1/automation/performance/health")).await;
    assert_eq!(status, 200, "{health}");
    let cache = &health["data"]["components"]["cache"];
    assert_eq!(cache["status"], "up", "{cache}");
    assert_eq!(cache["details"]["backend"], "redis", "{cache}");
    let text = format!("{health} {}", daemon.drain_log().join("\n"));
    for piece in PIECES {
        assert!(
            !text.contains(piece),
            "`{piece}` of the password shows: {text}"
        );
    }

    // Pasted unencoded into REDIS_URL, the URL does not parse: the message names the key and
    // hides the password.
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}/0");
    let out = support::tokend(dir.path())
        .args(["serve", "--config"])
        .arg(&config)
        .env("REDIS_URL", &url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(stderr.contains("redis.url"), "{stderr}");
    }
    for piece in PIECES {
        assert!(
            !stderr.contains(piece),
            "`{piece}` of the password shows: {stderr}"
        );
    }
}

/// With Redis blackholed, the breaker lets one request at a time find out whether it is back,
/// with a pause that doubles: requests do not each wait the command timeout.
#[actix_rt::test]
async fn a_blackholed_redis_costs_one_wait_per_pause() {
    if !support::redis_available() {
        return;
    }
    let (proxy, url) = Proxy::for_url(&support::redis_url());
    let h = Harness::start(Some(&url), "").await;
    h.add_account("alice", "pw-alice", true);
    assert_eq!(h.acquire(json!({"site_name": "court_zxfw"})).await.0, 200);

    proxy.blackhole();
    // Requests find the outage (the first ones wait the command timeout: nobody knew yet).
    let cache = h.tokend.state.cache.clone();
    support::wait_until("the breaker opens", Duration::from_secs(15), || async {
        let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200, "the near cache serves while Redis is away");
        (!cache.backend_up()).then_some(())
    })
    .await;

    // From now on, 10 callers for 6 s: only probes may wait on Redis.
    let until = Instant::now() + Duration::from_secs(6);
    let callers = (0..10).map(|_| async {
        let mut slow = 0;
        let mut served = 0;
        while Instant::now() < until {
            let started = Instant::now();
            let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
            assert_eq!(status, 200, "{body}");
            served += 1;
            if started.elapsed() >= Duration::from_secs(1) {
                slow += 1;
            }
        }
        (slow, served)
    });
    let results = futures_util::future::join_all(callers).await;
    let slow: u32 = results.iter().map(|r| r.0).sum();
    let served: u32 = results.iter().map(|r| r.1).sum();
    // Pauses of 1, 2, 4 s (the background probe takes some of the probes): at most one slow
    // request per pause.
    assert!(
        slow <= 3,
        "{slow} of {served} requests waited on the blackholed Redis"
    );
    proxy.restore();
}

/// Redis comes back while nobody asks for a token: `/health` says so by itself.
#[actix_rt::test]
async fn health_sees_redis_back_without_a_request() {
    if !support::redis_available() {
        return;
    }
    let (proxy, url) = Proxy::for_url(&support::redis_url());
    let h = Harness::start(Some(&url), "").await;
    h.add_account("alice", "pw-alice", true);
    assert_eq!(h.acquire(json!({"site_name": "court_zxfw"})).await.0, 200);
    let health_url = format!(
        "http://{}/api/v1/automation/performance/health",
        h.tokend.addr
    );

    proxy.cut();
    // A login while Redis is away: the slots fall back to in-process limits.
    let (status, body) = h
        .acquire(json!({"site_name": "court_zxfw", "force_refresh": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, health) = get(health_url.clone()).await;
    let components = &health["data"]["components"];
    assert_eq!(components["slots"]["status"], "degraded", "{components}");

    proxy.restore();
    // No acquisition from here on: only the background probe can find Redis back.
    support::wait_until("health sees Redis back", Duration::from_secs(15), || {
        let url = health_url.clone();
        async move {
            let (_, health) = get(url).await;
            let c = &health["data"]["components"];
            (c["slots"]["status"] == "up" && c["cache"]["status"] == "up").then_some(())
        }
    })
    .await;
}

/// Redis cut while tokens are served from the cache: the cache finds it unreachable, and the
/// login slots, which use the same Redis, report the fallback they are in, not `redis`/`up`.
#[actix_rt::test]
async fn every_component_reports_the_redis_it_really_uses() {
    if !support::redis_available() {
        return;
    }
    let (proxy, url) = Proxy::for_url(&support::redis_url());
    let h = Harness::start(Some(&url), "").await;
    h.add_account("alice", "pw-alice", true);
    assert_eq!(h.acquire(json!({"site_name": "court_zxfw"})).await.0, 200);
    let health_url = format!(
        "http://{}/api/v1/automation/performance/health",
        h.tokend.addr
    );
    let (_, health) = get(health_url.clone()).await;
    let components = &health["data"]["components"];
    assert_eq!(components["slots"]["mode"], "redis", "{components}");

    proxy.cut();
    // Cached tokens only: no login, so no slot is asked for while Redis is away.
    let components = support::wait_until("the cache degraded", Duration::from_secs(10), || {
        let (h, url) = (&h, health_url.clone());
        async move {
            let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
            assert_eq!(status, 200);
            let (_, health) = get(url).await;
            let components = health["data"]["components"].clone();
            (components["cache"]["status"] == "degraded").then_some(components)
        }
    })
    .await;
    assert_eq!(components["slots"]["status"], "degraded", "{components}");
    assert_eq!(
        components["slots"]["mode"], "memory (redis unreachable)",
        "{components}"
    );

    proxy.restore();
    support::wait_until("both back on Redis", Duration::from_secs(15), || {
        let url = health_url.clone();
        async move {
            let (_, health) = get(url).await;
            let c = &health["data"]["components"];
            (c["slots"]["mode"] == "redis" && c["cache"]["status"] == "up").then_some(())
        }
    })
    .await;
}

/// Leases are judged on Redis's clock: with tokend's clock an hour ahead of Redis's,
/// `/resource-usage` and `/resources/cleanup` must not free a lease a login still holds.
#[actix_rt::test]
async fn a_clock_ahead_of_redis_frees_no_live_lease() {
    let Some(redis) = RedisServer::start_with_clock(&[], -3600) else {
        return;
    };
    let h = Harness::start(Some(&redis.url()), "").await;
    h.add_account("alice", "pw-alice", true);
    *h.portal.state.latency.lock().unwrap() = Duration::from_secs(3);
    let login = h.acquire(json!({"site_name": "court_zxfw"}));
    let observe = async {
        let state = &h.portal.state;
        support::wait_until(
            "the login reaches the portal",
            Duration::from_secs(10),
            || async {
                (state.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
            },
        )
        .await;
        let base = format!("http://{}/api/v1/automation/performance", h.tokend.addr);
        let (_, usage) = get(format!("{base}/resource-usage")).await;
        let cleanup = h
            .client
            .post(format!("{base}/resources/cleanup"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let (_, after) = get(format!("{base}/resource-usage")).await;
        (usage, cleanup, after)
    };
    let ((status, body), (usage, cleanup, after)) = tokio::join!(login, observe);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        usage["data"]["shared_slots"]["active_total"], 1,
        "the running login's lease: {usage}"
    );
    assert_eq!(
        cleanup["data"]["shared_slots"]["expired_leases_freed"], 0,
        "a live lease was freed: {cleanup}"
    );
    assert_eq!(after["data"]["shared_slots"]["active_total"], 1, "{after}");
}

/// Issue 27 item 4: at the start of a blackhole, a token the near cache holds is served
/// without waiting on Redis for the command timeout (2 s).
#[actix_rt::test]
async fn a_near_cached_token_never_waits_on_a_blackholed_redis() {
    if !support::redis_available() {
        return;
    }
    let (proxy, url) = Proxy::for_url(&support::redis_url());
    let h = Harness::start(Some(&url), "").await;
    h.add_account("alice", "pw-alice", true);
    assert_eq!(h.acquire(json!({"site_name": "court_zxfw"})).await.0, 200);
    proxy.blackhole();
    // Past the near cache's window (1 s) every hit asks Redis: none may wait for it.
    let until = Instant::now() + Duration::from_secs(3);
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let started = Instant::now();
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(started.elapsed());
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.restore();
    assert!(
        slowest < Duration::from_millis(500),
        "a cached acquire waited {slowest:?} on the blackholed Redis"
    );
}

/// Issue 27 item 4, not done: `/health` at the start of a blackhole still waits for the Redis
/// command timeout (the cache's ping and the sites' account lists read through Redis until the
/// breaker opens). Shows the current behaviour; run with `--ignored`.
#[actix_rt::test]
#[ignore = "issue 27 item 4: /health waits up to the Redis command timeout (2 s) at the start of a blackhole"]
async fn health_answers_quickly_during_a_blackhole() {
    if !support::redis_available() {
        return;
    }
    let (proxy, url) = Proxy::for_url(&support::redis_url());
    let h = Harness::start(Some(&url), "").await;
    h.add_account("alice", "pw-alice", true);
    assert_eq!(h.acquire(json!({"site_name": "court_zxfw"})).await.0, 200);
    proxy.blackhole();
    let started = Instant::now();
    h.health().await;
    let took = started.elapsed();
    proxy.restore();
    assert!(took < Duration::from_millis(500), "/health took {took:?}");
}

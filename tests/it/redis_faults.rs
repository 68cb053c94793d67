//! Redis faults put in for real (SPEC §9–§10): a password with URL characters, a blackholed
//! connection (the one Redis link finds a silent Redis out once, every policy falls back
//! together, and the link's background probe ends the outage by itself), and lease expiry
//! judged on Redis's clock.

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

/// With Redis blackholed, once the link's breaker is open no request waits on Redis: only the
/// link's own background probe asks it (with a pause that doubles), never a request.
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

    // From now on, 10 callers for 6 s: none may wait on Redis (the probes are the link's).
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
    assert!(
        slow == 0,
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

/// Issue 27 item 4: `/health` at the start of a blackhole answers within 500 ms: the cache's
/// ping is bounded by its health wait, a Redis silent that long is taken for down by the one
/// Redis link, and the sites' reads that follow are refused at once instead of waiting.
#[actix_rt::test]
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

/// Issue 22 (a silent Redis cost 18–20 s per login): with Redis blackholed (connections open,
/// nothing passes), the first acquire that needs a login answers within one command timeout
/// plus the login's own time; the next ones as fast as without Redis; and when Redis answers
/// again tokend goes back to it by itself (health up, slots on Redis), without a request.
#[actix_rt::test]
async fn a_silent_redis_is_found_out_once_and_left_by_itself() {
    if !support::redis_available() {
        return;
    }
    /// The Redis command timeout (`tokend::redis::COMMAND_TIMEOUT`).
    const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
    let refresh = json!({"site_name": "court_zxfw", "force_refresh": true});
    let (proxy, url) = Proxy::for_url(&support::redis_url());
    let h = Harness::start(Some(&url), "").await;
    h.add_account("alice", "pw-alice", true);
    assert_eq!(h.acquire(json!({"site_name": "court_zxfw"})).await.0, 200);
    // The login's own time, with Redis answering (the slowest of three).
    let mut login = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = h.acquire(refresh.clone()).await;
        assert_eq!(status, 200, "{body}");
        login = login.max(started.elapsed());
    }
    // The last login's slot is released in Redis (after its answer) before the blackhole.
    let usage = "/api/v1/automation/performance/resource-usage";
    support::wait_until("the slots released", Duration::from_secs(5), || async {
        let (_, body) = h.api_get(usage).await;
        (body["data"]["shared_slots"]["active_total"] == 0).then_some(())
    })
    .await;

    proxy.blackhole();
    let started = Instant::now();
    let (status, body) = h.acquire(refresh.clone()).await;
    let first = started.elapsed();
    assert_eq!(status, 200, "{body}");
    let margin = Duration::from_millis(700);
    assert!(
        first <= COMMAND_TIMEOUT + login + margin,
        "the first login with Redis silent took {first:?} (a login takes {login:?})"
    );
    // Every policy fell back at once: the next logins do not wait on Redis.
    for n in 0..3 {
        let started = Instant::now();
        let (status, body) = h.acquire(refresh.clone()).await;
        let took = started.elapsed();
        assert_eq!(status, 200, "{body}");
        assert!(
            took <= login + Duration::from_millis(500),
            "login {n} after the first took {took:?} (a login takes {login:?})"
        );
    }
    let health = h.health().await;
    assert_eq!(
        health["components"]["slots"]["mode"], "memory (redis unreachable)",
        "{health}"
    );

    proxy.restore();
    // No request from here on: the link's own probe finds Redis back.
    support::wait_until(
        "health sees Redis back",
        Duration::from_secs(15),
        || async {
            let health = h.health().await;
            let c = &health["components"];
            (c["cache"]["status"] == "up"
                && c["slots"]["status"] == "up"
                && c["slots"]["mode"] == "redis")
                .then_some(())
        },
    )
    .await;
    let (status, body) = h.acquire(refresh).await;
    assert_eq!(status, 200, "{body}");
}

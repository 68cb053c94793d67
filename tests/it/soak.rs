//! Issue 27's soak, bounded: two instances on one Redis, each through its own fault proxy
//! (resets, blackholes, stalls, and once every key of theirs deleted), with callers forcing
//! logins, invalidating and reading a cached token on both. What must hold, as the portal and
//! the history see it: never two logins of one account at once, every portal login with its
//! history row, every cached read answered, and no account locked out once the faults end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::harness::Harness;
use crate::support::portal::Portal;
use crate::support::proxy::Proxy;
use crate::support::{self};

const ACCOUNTS: usize = 6;
const SOAK: Duration = Duration::from_secs(24);

async fn instance(portal: &Portal, url: &str, prefix: &str) -> Harness {
    let h = Harness::builder()
        .redis(Some(url))
        .prefix(prefix)
        .portal(portal.clone())
        .retry("[retry]\nmax_network_retries = 0\nlogin_timeout = 10\n")
        .extra(
            "[concurrency]\nacquisition_timeout = 8\nqueue_timeout = 8\n\
             [circuit]\nfailure_threshold = 1000\n",
        )
        .start()
        .await;
    // The same accounts in the same order on both: the same credential ids, so the same locks.
    for i in 0..ACCOUNTS {
        h.add_account(&format!("u{i}"), &format!("pw-{i}"), false);
    }
    h
}

/// The successful logins in `h`'s history, all of them.
async fn logins_recorded(h: &Harness) -> usize {
    assert_eq!(h.tokend.state.broker.flush_history().await.unwrap(), 0);
    let pool = h.tokend.state.pool.clone();
    let rows = pool
        .run(|conn| tokend::db::history::recent(conn, None, 1_000_000))
        .await
        .unwrap();
    rows.iter().filter(|r| r.status == "success").count()
}

/// Deletes every key under `prefix` (both tag forms): a Redis that lost its data.
fn flush(prefix: &str) {
    let client = redis::Client::open(support::redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    for pattern in [format!("{prefix}:*"), format!("{{{prefix}}}:*")] {
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn).unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query(&mut conn).unwrap();
        }
    }
}

#[actix_rt::test]
async fn two_instances_through_redis_faults_log_each_account_in_once_at_a_time() {
    if !support::redis_available() {
        return;
    }
    let portal = Portal::start();
    *portal.state.latency.lock().unwrap() = Duration::from_millis(40);
    let prefix = format!("tokend-soak-{}", support::unique());
    let (proxy_a, url_a) = Proxy::for_url(&support::redis_url());
    let (proxy_b, url_b) = Proxy::for_url(&support::redis_url());
    let a = Arc::new(instance(&portal, &url_a, &prefix).await);
    let b = Arc::new(instance(&portal, &url_b, &prefix).await);
    // u0's token is cached before the faults start and only ever read.
    for h in [&a, &b] {
        let (status, body) = h
            .acquire(json!({"site_name": "court_zxfw", "account": "u0"}))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let left_behind: Arc<Mutex<Vec<String>>> = Arc::default();
    let cached_failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for n in 0..6u64 {
        let (a, b, stop, statuses) = (a.clone(), b.clone(), stop.clone(), statuses.clone());
        let left_behind = left_behind.clone();
        tasks.push(actix_web::rt::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(n);
            while !stop.load(Ordering::SeqCst) {
                let h = if rng.bool() { &a } else { &b };
                let account = format!("u{}", rng.usize(1..ACCOUNTS));
                let (kind, (status, answer)) = if rng.u8(0..10) < 8 {
                    let body = json!({"site_name": "court_zxfw", "account": account, "force_refresh": true});
                    ("refresh", h.acquire(body).await)
                } else {
                    let body = json!({"site_name": "court_zxfw", "account": account});
                    ("invalidate", h.post("invalidate", body).await)
                };
                *statuses.lock().unwrap().entry(format!("{kind} {status}")).or_default() += 1;
                // A wait on another instance's login that never came: a lock left behind.
                let message = answer["message"].as_str().unwrap_or_default();
                if status != 200 {
                    eprintln!("soak: {kind} {status}: {message}");
                }
                if message.contains("did not finish") {
                    left_behind.lock().unwrap().push(format!("{status} {message}"));
                }
            }
        }));
    }
    for h in [a.clone(), b.clone()] {
        let (stop, failures) = (stop.clone(), cached_failures.clone());
        tasks.push(actix_web::rt::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = h
                    .acquire(json!({"site_name": "court_zxfw", "account": "u0"}))
                    .await;
                if status != 200 {
                    failures.lock().unwrap().push(format!("{status} {body}"));
                }
                actix_web::rt::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    // A fault every 2–3 s, on one side or the other; Redis loses its data once.
    let mut rng = fastrand::Rng::with_seed(27);
    let started = Instant::now();
    let mut flushed = false;
    while started.elapsed() < SOAK {
        actix_web::rt::time::sleep(Duration::from_millis(rng.u64(1000..2000))).await;
        let proxy = if rng.bool() { &proxy_a } else { &proxy_b };
        match rng.u8(0..3) {
            0 => proxy.cut(),
            1 => proxy.blackhole(),
            _ => proxy.stall(),
        }
        actix_web::rt::time::sleep(Duration::from_millis(rng.u64(200..1500))).await;
        proxy.restore();
        if !flushed && started.elapsed() > SOAK / 2 {
            flush(&prefix);
            flushed = true;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    eprintln!(
        "soak: {statuses:?}, portal logins {}",
        portal.state.issued()
    );

    // Back on Redis by themselves.
    for h in [&a, &b] {
        support::wait_until("slots back on Redis", Duration::from_secs(15), || async {
            let health = h.health().await;
            (health["components"]["slots"]["mode"] == "redis").then_some(())
        })
        .await;
    }
    // No lock left behind: every account logs in at once, on either instance.
    for i in 1..ACCOUNTS {
        for h in [&a, &b] {
            let body = json!({"site_name": "court_zxfw", "account": format!("u{i}"), "force_refresh": true});
            let begun = Instant::now();
            let (status, answer) = h.acquire(body).await;
            assert_eq!(status, 200, "u{i} after the faults: {answer}");
            assert!(
                begun.elapsed() < Duration::from_secs(3),
                "u{i} waited {:?}",
                begun.elapsed()
            );
        }
    }

    let failures = cached_failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "cached reads failed: {failures:?}");
    let left_behind = left_behind.lock().unwrap().clone();
    assert!(
        left_behind.is_empty(),
        "callers failed on a lock left behind: {left_behind:?}"
    );
    let overlaps: Vec<(String, u32)> = portal
        .state
        .max_in_flight_per_account
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(account, n)| (account.clone(), *n))
        .collect();
    assert!(
        overlaps.is_empty(),
        "accounts logged in twice at once: {overlaps:?}"
    );
    let mut successes = 0;
    for h in [&a, &b] {
        successes += logins_recorded(h).await;
    }
    assert_eq!(
        successes as u32,
        portal.state.issued(),
        "every portal login has its history row"
    );
}

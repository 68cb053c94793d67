//! The single-flight lock across instances under Redis faults (SPEC §9): a Redis error while
//! waiting for a lock another instance holds never lets this instance log in beside it.
//! Faults are real: a TCP proxy between one instance and Redis that resets its connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Actor;
use serde_json::json;
use tokend::config::ConcurrencyConfig;
use tokend::redis::RedisLink;
use tokend::slots::concurrency::ConcurrencyActor;
use tokend::slots::redis::RedisSlots;
use tokend::slots::Slots;

use crate::support;
use crate::support::harness::Harness;
use crate::support::proxy::Proxy;

fn redis_addr() -> SocketAddr {
    let url = support::redis_url();
    let rest = url.trim_start_matches("redis://");
    let hostport = rest.split('/').next().unwrap();
    hostport.replace("localhost", "127.0.0.1").parse().unwrap()
}

#[actix_rt::test]
async fn connection_resets_while_waiting_for_a_lock_never_make_two_logins() {
    if !support::redis_available() {
        return;
    }
    let proxy = Proxy::start(redis_addr());
    let prefix = format!("tokend-test-{}", support::unique());
    let retry = "[retry]\nlogin_timeout = 10\n";
    let b = Harness::builder()
        .redis(Some(&support::redis_url()))
        .prefix(&prefix)
        .retry(retry)
        .start()
        .await;
    let through_proxy = format!("redis://{}/0", proxy.addr);
    let a = Harness::builder()
        .redis(Some(&through_proxy))
        .prefix(&prefix)
        .portal(b.portal.clone())
        .retry(retry)
        .start()
        .await;
    a.add_account("alice", "pw-a", false);
    b.add_account("alice", "pw-a", false);
    *b.portal.state.latency.lock().unwrap() = Duration::from_millis(2000);

    let b_call = b.acquire(json!({"site_name": "court_zxfw", "account": "alice"}));
    let a_call = async {
        support::wait_until("B logging in", Duration::from_secs(5), || async {
            (b.portal.state.attempts_of("alice") > 0).then_some(())
        })
        .await;
        let faults = async {
            // Resets while A polls for the lock B holds.
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(60)).await;
                proxy.restore();
            }
        };
        let (answer, ()) = tokio::join!(
            a.acquire(json!({"site_name": "court_zxfw", "account": "alice"})),
            faults
        );
        answer
    };
    let ((status_b, body_b), (status_a, body_a)) = tokio::join!(b_call, a_call);
    assert_eq!(status_b, 200, "{body_b}");
    assert_eq!(status_a, 200, "{body_a}");
    let most = b.portal.state.max_in_flight_per_account.lock().unwrap()["alice"];
    assert_eq!(most, 1, "two logins of one account at once");
}

/// Random schedules of two instances taking the locks of two accounts, with connection
/// resets and stalls (late requests) injected under each at random: at most one instance holds an account's lock at
/// any moment, and every lock granted is a real one (no fallback for a passing error).
#[actix_rt::test]
async fn random_schedules_with_redis_errors_keep_one_holder_per_account() {
    if !support::redis_available() {
        return;
    }
    for seed in 0..4u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let prefix = format!("tokend-prop-{}", support::unique());
        let config = ConcurrencyConfig {
            lock_timeout: 2.0,
            ..ConcurrencyConfig::default()
        };
        let (proxies, instances) = proxied_instances(&prefix, &config);
        let holders: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = Vec::new();
        for n in 0..16 {
            let slots = instances[rng.usize(0..2)].clone();
            let id = rng.i64(1..=2);
            let start = Duration::from_millis(rng.u64(0..400));
            let hold = Duration::from_millis(rng.u64(5..60));
            let (holders, violations) = (holders.clone(), violations.clone());
            tasks.push(actix_web::rt::spawn(async move {
                tokio::time::sleep(start).await;
                let lock = slots
                    .lock("court_zxfw", id, "acct", Duration::from_secs(20))
                    .await
                    .map_err(|e| format!("task {n}: {e}"))?;
                if !lock.is_shared() {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("task {n}: fell back for one error"));
                }
                {
                    let mut held = holders.lock().unwrap();
                    let count = held.entry(id).or_default();
                    *count += 1;
                    if *count > 1 {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("task {n}: account {id} held twice"));
                    }
                }
                tokio::time::sleep(hold).await;
                *holders.lock().unwrap().get_mut(&id).unwrap() -= 1;
                drop(lock);
                Ok::<(), String>(())
            }));
        }
        // Resets, and stalls: requests held in the network that still run late.
        let cuts = (0..6)
            .map(|_| {
                (
                    rng.usize(0..2),
                    rng.u64(0..500),
                    rng.u64(20..200),
                    rng.bool(),
                )
            })
            .collect::<Vec<_>>();
        let faults = async {
            for (which, at, length, stall) in cuts {
                tokio::time::sleep(Duration::from_millis(at / 6)).await;
                if stall {
                    proxies[which].stall();
                } else {
                    proxies[which].cut();
                }
                tokio::time::sleep(Duration::from_millis(length)).await;
                proxies[which].restore();
            }
        };
        let (results, ()) = tokio::join!(futures_util::future::join_all(tasks), faults);
        for result in results {
            result.unwrap().unwrap();
        }
        let violations = violations.lock().unwrap();
        assert!(violations.is_empty(), "seed {seed}: {violations:?}");
    }
}

/// Two instances on one Redis under `prefix`, each through a fault proxy of its own.
fn proxied_instances(prefix: &str, config: &ConcurrencyConfig) -> (Vec<Proxy>, Vec<Slots>) {
    let proxies: Vec<Proxy> = (0..2).map(|_| Proxy::start(redis_addr())).collect();
    let instances = proxies
        .iter()
        .map(|p| {
            let link = RedisLink::open(&format!("redis://{}/0", p.addr), prefix).unwrap();
            let redis = RedisSlots::new(link);
            Slots::new(ConcurrencyActor::new(config).start(), Some(redis), config)
        })
        .collect();
    (proxies, instances)
}

/// Slots of one instance on the Redis at `url` under `prefix`, with locks that last `ttl_s`.
fn slots_on(url: &str, prefix: &str, ttl_s: f64) -> Slots {
    let config = ConcurrencyConfig {
        lock_timeout: ttl_s,
        ..ConcurrencyConfig::default()
    };
    let redis = RedisSlots::new(RedisLink::open(url, prefix).unwrap());
    Slots::new(ConcurrencyActor::new(&config).start(), Some(redis), &config)
}

const SITE: &str = "court_zxfw";

/// Issue 27 item 2: a lock request that timed out at the client and ran on the server when
/// the partition healed leaves no lock behind that locks the account out for lock_timeout.
#[actix_rt::test]
async fn a_lock_request_that_ran_late_leaves_no_lock_behind() {
    if !support::redis_available() {
        return;
    }
    let (proxy, through) = Proxy::for_url(&support::redis_url());
    let prefix = format!("tokend-test-{}", support::unique());
    let a = slots_on(&through, &prefix, 30.0);
    let b = slots_on(&support::redis_url(), &prefix, 30.0);
    // A's connection is up; then its lock request is held in the network: it times out at
    // A, and A gives the wait up.
    a.usage_shared().await.unwrap().unwrap();
    proxy.stall();
    let waited = a.lock(SITE, 1, "acct", Duration::from_millis(500)).await;
    assert!(
        matches!(waited, Err(tokend::Error::Timeout(_))),
        "{:?}",
        waited.map(|l| l.is_shared())
    );
    // The partition heals: the request runs on the server, late (before A's next answer).
    proxy.restore();
    support::wait_until("A's connection back", Duration::from_secs(5), || async {
        a.usage_shared().await.unwrap().ok()
    })
    .await;
    let lock = b.lock(SITE, 1, "acct", Duration::from_secs(5)).await;
    assert!(
        lock.as_ref().is_ok_and(|l| l.is_shared()),
        "the account stayed locked by a request no one waits for: {:?}",
        lock.err()
    );
}

/// Issue 27 item 2: an unlock lost to a reset is retried, so the account is free again once
/// Redis answers, not after lock_timeout.
#[actix_rt::test]
async fn an_unlock_lost_to_a_reset_is_retried() {
    if !support::redis_available() {
        return;
    }
    let (proxy, through) = Proxy::for_url(&support::redis_url());
    let prefix = format!("tokend-test-{}", support::unique());
    let a = slots_on(&through, &prefix, 30.0);
    let b = slots_on(&support::redis_url(), &prefix, 30.0);
    let lock = a
        .lock(SITE, 1, "acct", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(lock.is_shared());
    // The login ends while A's connection is down: the unlock fails.
    proxy.cut();
    support::wait_until("A's connection broken", Duration::from_secs(5), || async {
        a.usage_shared().await.unwrap().err()
    })
    .await;
    drop(lock);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    let lock = b.lock(SITE, 1, "acct", Duration::from_secs(5)).await;
    assert!(
        lock.as_ref().is_ok_and(|l| l.is_shared()),
        "the lost unlock was not retried: {:?}",
        lock.err()
    );
}

/// Issue 27 item 1: a lock taken in process while Redis was thought unreachable is asked for
/// in Redis before the login starts; while another instance holds it there, no login starts.
#[actix_rt::test]
async fn a_lock_taken_in_process_is_confirmed_in_redis_before_the_login() {
    if !support::redis_available() {
        return;
    }
    let prefix = format!("tokend-test-{}", support::unique());
    let a = slots_on(&support::redis_url(), &prefix, 30.0);
    let b = slots_on(&support::redis_url(), &prefix, 30.0);
    let held = b
        .lock(SITE, 1, "acct", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(held.is_shared());
    // A found Redis unreachable a moment ago (its link's breaker opened); Redis is back.
    a.link()
        .unwrap()
        .found_unreachable("test", "a command timed out");
    assert!(a.is_degraded());
    let local = a
        .lock(SITE, 1, "acct", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!local.is_shared(), "taken in process");
    let confirmed = a.confirm(&local, "acct", Duration::from_millis(300)).await;
    assert!(
        matches!(confirmed, Err(tokend::Error::Timeout(_))),
        "a login would start beside B's: {confirmed:?}"
    );
    // B's login ends: A gets the lock in Redis, and says it waited for another's login.
    drop(held);
    let confirmed = a.confirm(&local, "acct", Duration::from_secs(5)).await;
    assert!(matches!(confirmed, Ok(true)), "{confirmed:?}");
    assert!(local.is_shared());
    assert!(!a.is_degraded(), "Redis answered: the fallback is over");
    let other = b.lock(SITE, 1, "acct", Duration::from_millis(200)).await;
    assert!(other.is_err(), "A's lock is held in Redis");
}

/// Issue 27 item 3: a caller waiting on another instance's lock when Redis goes away gets
/// 503 CACHE_UNAVAILABLE with Retry-After, counted as a rejection, not a login failure.
#[actix_rt::test]
async fn a_redis_fault_while_waiting_for_a_lock_is_a_counted_503() {
    if !support::redis_available() {
        return;
    }
    let proxy = Proxy::start(redis_addr());
    let prefix = format!("tokend-test-{}", support::unique());
    let retry = "[retry]\nlogin_timeout = 10\n";
    let b = Harness::builder()
        .redis(Some(&support::redis_url()))
        .prefix(&prefix)
        .retry(retry)
        .start()
        .await;
    let through_proxy = format!("redis://{}/0", proxy.addr);
    let a = Harness::builder()
        .redis(Some(&through_proxy))
        .prefix(&prefix)
        .portal(b.portal.clone())
        .retry(retry)
        .start()
        .await;
    a.add_account("alice", "pw-a", false);
    b.add_account("alice", "pw-a", false);
    *b.portal.state.latency.lock().unwrap() = Duration::from_millis(6000);
    let body = json!({"site_name": "court_zxfw", "account": "alice"});
    let b_call = b.acquire(body.clone());
    let a_call = async {
        support::wait_until("B logging in", Duration::from_secs(5), || async {
            (b.portal.state.attempts_of("alice") > 0).then_some(())
        })
        .await;
        let a_waits = a.api_call(
            reqwest::Method::POST,
            "/api/v1/automation/tokens/acquire",
            Some(body.clone()),
        );
        let fault = async {
            // A waits on B's lock (its own single-flight lock is taken) before Redis goes
            // away for good.
            support::wait_until("A waiting for B's lock", Duration::from_secs(5), || async {
                (a.tokend.state.broker.active_locks() > 0).then_some(())
            })
            .await;
            proxy.cut();
        };
        tokio::join!(a_waits, fault).0
    };
    let ((status_b, body_b), (status_a, retry_after, body_a)) = tokio::join!(b_call, a_call);
    assert_eq!(status_b, 200, "{body_b}");
    assert_eq!(
        (status_a, body_a["code"].as_str()),
        (503, Some("CACHE_UNAVAILABLE")),
        "{body_a}"
    );
    assert!(retry_after.is_some(), "no Retry-After");
    assert_eq!(b.portal.state.attempts_of("alice"), 1, "A logged in");
    let metrics = a.api_get("/api/v1/automation/performance/metrics").await.1;
    assert_eq!(
        metrics["data"]["rejections"]["cache_unavailable"], 1,
        "{metrics}"
    );
    let text = a.prometheus_text().await;
    assert!(
        text.contains(r#"tokend_rejections_total{site="court_zxfw",reason="cache_unavailable"} 1"#),
        "{text}"
    );
    assert!(
        a.history().await.is_empty(),
        "recorded as an acquisition that failed"
    );
}

/// Issue 27: a holder cut off from Redis takes its lock for lost before the lock's life in
/// Redis ends (its login stops then), so another instance that takes the lock after it
/// lapsed never logs in beside it.
#[actix_rt::test]
async fn a_lock_that_cannot_be_renewed_is_lost_before_another_can_take_it() {
    if !support::redis_available() {
        return;
    }
    let (proxy, through) = Proxy::for_url(&support::redis_url());
    let prefix = format!("tokend-test-{}", support::unique());
    let a = slots_on(&through, &prefix, 2.0);
    let b = slots_on(&support::redis_url(), &prefix, 2.0);
    let lock = a
        .lock(SITE, 1, "acct", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(lock.is_shared());
    lock.login_starts();
    proxy.blackhole();
    let cut = std::time::Instant::now();
    let lost = async {
        lock.lost().await;
        std::time::Instant::now()
    };
    let taken = async {
        let taken = b.lock(SITE, 1, "acct", Duration::from_secs(6)).await;
        assert!(
            taken.as_ref().is_ok_and(|l| l.is_shared()),
            "B never got the lapsed lock: {:?}",
            taken.err()
        );
        std::time::Instant::now()
    };
    let (lost_at, taken_at) =
        tokio::time::timeout(Duration::from_secs(8), async { tokio::join!(lost, taken) })
            .await
            .expect("the lock was never taken for lost, or never taken by B");
    proxy.restore();
    assert!(
        lost_at < taken_at,
        "A still held its lock (and would log in) {:?} after B took it",
        lost_at - taken_at
    );
    assert!(
        lost_at - cut < Duration::from_secs(2),
        "lost {:?} after the cut: past the lock's life",
        lost_at - cut
    );
}

/// Issue 27: a lock that another owner holds in Redis (it lapsed during a pause of its
/// holder) is lost at the holder's next renewal.
#[actix_rt::test]
async fn a_lock_taken_by_another_owner_is_lost_at_the_next_renewal() {
    if !support::redis_available() {
        return;
    }
    let prefix = format!("tokend-test-{}", support::unique());
    let a = slots_on(&support::redis_url(), &prefix, 1.5);
    let lock = a
        .lock(SITE, 1, "acct", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(lock.is_shared());
    let client = redis::Client::open(support::redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let key = format!("{{{prefix}}}:lock:{SITE}:1");
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    assert!(exists, "the lock is not under {key}");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("another-owner")
        .arg("PX")
        .arg(5000)
        .query(&mut conn)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), lock.lost())
        .await
        .expect("a lock another owner holds was not taken for lost");
}

/// Issue 27 item 1: a login running on a lock taken in process while Redis was unreachable
/// stops when Redis answers that another instance holds the account's lock.
#[actix_rt::test]
async fn a_login_on_an_in_process_lock_stops_when_redis_shows_another_holder() {
    if !support::redis_available() {
        return;
    }
    let prefix = format!("tokend-test-{}", support::unique());
    let a = slots_on(&support::redis_url(), &prefix, 30.0);
    let b = slots_on(&support::redis_url(), &prefix, 30.0);
    a.link()
        .unwrap()
        .found_unreachable("test", "a command timed out");
    let local = a
        .lock(SITE, 1, "acct", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!local.is_shared(), "taken in process");
    // Before A's background try reached Redis, B (which reached it) took the lock.
    let held = b.lock(SITE, 1, "acct", Duration::from_secs(1)).await;
    if !held.as_ref().is_ok_and(|l| l.is_shared()) {
        // A's background try was first: its lock is confirmed, nothing to stop.
        assert!(local.is_shared(), "neither holds the lock");
        return;
    }
    local.login_starts();
    tokio::time::timeout(Duration::from_secs(3), local.lost())
        .await
        .expect("a login on the in-process lock ran on beside B's lock");
}

/// Issue 27, end to end: an instance cut off from Redis while it logs an account in stops
/// that login once its lock could lapse, and says why, instead of finishing it beside a
/// login another instance may have started.
#[actix_rt::test]
async fn a_login_whose_lock_is_lost_is_stopped_and_its_caller_told() {
    if !support::redis_available() {
        return;
    }
    let (proxy, url) = Proxy::for_url(&support::redis_url());
    let h = Harness::start(Some(&url), "[concurrency]\nlock_timeout = 2\n").await;
    h.add_account("alice", "pw-alice", true);
    *h.portal.state.latency.lock().unwrap() = Duration::from_secs(6);
    let portal = h.portal.state.clone();
    let started = std::time::Instant::now();
    let (answer, ()) = tokio::join!(
        h.acquire(json!({"site_name": SITE, "force_refresh": true})),
        async {
            support::wait_until(
                "alice's login at the portal",
                Duration::from_secs(5),
                || async { (portal.attempts_of("alice") > 0).then_some(()) },
            )
            .await;
            proxy.blackhole();
        }
    );
    let took = started.elapsed();
    proxy.restore();
    let (status, body) = answer;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errors"]["error_type"], "timeout", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("lock"),
        "{body}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the login ran on for {took:?} after its lock could lapse"
    );
    assert_eq!(portal.issued(), 0, "the portal finished the login");
}

/// Issue 27's property test with timeouts that still execute on the server: stalls longer
/// than the Redis command timeout (2 s) under each of two instances, so that lock requests,
/// renewals and unlocks time out at tokend and run on Redis when the stall ends. Each task
/// does what the pipeline does: takes the lock (waiting up to 20 s), confirms a lock taken in
/// process before it "logs in", and holds it while it logs in — ending its login early when
/// the lock is lost. At any moment at most one login per account runs.
#[actix_rt::test]
async fn random_long_stalls_past_the_command_timeout_keep_one_login_per_account() {
    if !support::redis_available() {
        return;
    }
    for seed in 0..2u64 {
        let mut rng = fastrand::Rng::with_seed(100 + seed);
        let prefix = format!("tokend-prop-{}", support::unique());
        let config = ConcurrencyConfig {
            lock_timeout: 2.0,
            ..ConcurrencyConfig::default()
        };
        let (proxies, instances) = proxied_instances(&prefix, &config);
        let logins: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = Vec::new();
        for n in 0..12 {
            let slots = instances[rng.usize(0..2)].clone();
            let id = rng.i64(1..=2);
            let start = Duration::from_millis(rng.u64(0..3000));
            // Some logins outlast the lock's life: their holder must renew it through the stalls.
            let login = Duration::from_millis(rng.u64(100..4000));
            let (logins, violations) = (logins.clone(), violations.clone());
            tasks.push(actix_web::rt::spawn(async move {
                tokio::time::sleep(start).await;
                let Ok(lock) = slots
                    .lock("court_zxfw", id, "acct", Duration::from_secs(20))
                    .await
                else {
                    return; // gave the account up: no login
                };
                if !lock.is_shared()
                    && slots
                        .confirm(&lock, "acct", Duration::from_secs(20))
                        .await
                        .is_err()
                {
                    return;
                }
                lock.login_starts();
                {
                    let mut running = logins.lock().unwrap();
                    let count = running.entry(id).or_default();
                    *count += 1;
                    if *count > 1 {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("task {n}: account {id} logged in twice at once"));
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(login) => {}
                    () = lock.lost() => {}
                }
                *logins.lock().unwrap().get_mut(&id).unwrap() -= 1;
                drop(lock);
            }));
        }
        let stalls = (0..3)
            .map(|_| (rng.usize(0..2), rng.u64(0..1500), rng.u64(2200..2800)))
            .collect::<Vec<_>>();
        let faults = async {
            for (which, pause, length) in stalls {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                proxies[which].stall();
                tokio::time::sleep(Duration::from_millis(length)).await;
                proxies[which].restore();
            }
        };
        let (results, ()) = tokio::join!(futures_util::future::join_all(tasks), faults);
        for result in results {
            result.unwrap();
        }
        let violations = violations.lock().unwrap();
        assert!(violations.is_empty(), "seed {seed}: {violations:?}");
    }
}

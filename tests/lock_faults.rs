//! The single-flight lock across instances under Redis faults (SPEC §9): a Redis error while
//! waiting for a lock another instance holds never lets this instance log in beside it.
//! Faults are real: a TCP proxy between one instance and Redis that resets its connections.

mod common;
#[path = "common/harness.rs"]
mod harness;
#[path = "common/portal.rs"]
mod portal;
#[path = "common/proxy.rs"]
mod proxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Actor;
use harness::Harness;
use proxy::Proxy;
use serde_json::json;
use tokend::actors::ConcurrencyActor;
use tokend::cache::RedisStore;
use tokend::config::ConcurrencyConfig;
use tokend::slots::redis::RedisSlots;
use tokend::slots::Slots;

fn redis_addr() -> SocketAddr {
    let url = common::redis_url();
    let rest = url.trim_start_matches("redis://");
    let hostport = rest.split('/').next().unwrap();
    hostport.replace("localhost", "127.0.0.1").parse().unwrap()
}

#[actix_rt::test]
async fn connection_resets_while_waiting_for_a_lock_never_make_two_logins() {
    if !common::redis_available() {
        return;
    }
    let proxy = Proxy::start(redis_addr());
    let prefix = format!("tokend-test-{}", common::unique());
    let retry = "[retry]\nlogin_timeout = 10\n";
    let b = Harness::start_shared(Some(&common::redis_url()), &prefix, None, retry, "").await;
    let through_proxy = format!("redis://{}/0", proxy.addr);
    let a = Harness::start_shared(
        Some(&through_proxy),
        &prefix,
        Some(b.portal.clone()),
        retry,
        "",
    )
    .await;
    a.add_account("alice", "pw-a", false);
    b.add_account("alice", "pw-a", false);
    *b.portal.state.latency.lock().unwrap() = Duration::from_millis(2000);

    let b_call = b.acquire(json!({"site_name": "court_zxfw", "account": "alice"}));
    let a_call = async {
        common::eventually("B logging in", Duration::from_secs(5), || async {
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
/// resets injected under each at random: at most one instance holds an account's lock at
/// any moment, and every lock granted is a real one (no fallback for a passing error).
#[actix_rt::test]
async fn random_schedules_with_redis_errors_keep_one_holder_per_account() {
    if !common::redis_available() {
        return;
    }
    for seed in 0..4u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let prefix = format!("tokend-prop-{}", common::unique());
        let config = ConcurrencyConfig {
            lock_timeout: 2.0,
            ..ConcurrencyConfig::default()
        };
        let proxies: Vec<Proxy> = (0..2).map(|_| Proxy::start(redis_addr())).collect();
        let instances: Vec<Slots> = proxies
            .iter()
            .map(|p| {
                let store = RedisStore::connect(&format!("redis://{}/0", p.addr)).unwrap();
                let redis = RedisSlots::new(store.connection(), &prefix);
                Slots::new(ConcurrencyActor::new(&config).start(), Some(redis), &config)
            })
            .collect();
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
        let cuts = (0..6)
            .map(|_| (rng.usize(0..2), rng.u64(0..500), rng.u64(20..200)))
            .collect::<Vec<_>>();
        let faults = async {
            for (which, at, length) in cuts {
                tokio::time::sleep(Duration::from_millis(at / 6)).await;
                proxies[which].cut();
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

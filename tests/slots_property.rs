//! Random schedules against the in-process `ConcurrencyActor`: whatever the limits, arrival
//! times and hold times, no level ever exceeds its limit, every waiter is served (or, with a
//! short queue_timeout, times out — never hangs), and waiters for the same account are served
//! in arrival order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Actor;
use tokend::actors::concurrency::{acquire_slot, ConcurrencyActor, SlotLimits, Usage};
use tokend::config::ConcurrencyConfig;
use tokend::Error;

#[derive(Default)]
struct Held {
    global: u32,
    per_site: HashMap<String, u32>,
    per_account: HashMap<String, u32>,
    violations: Vec<String>,
    /// Grant order per account, by arrival number.
    grants: HashMap<String, Vec<usize>>,
}

async fn run_schedule(
    seed: u64,
    queue_timeout: Duration,
) -> (Vec<Result<(), String>>, Held, SlotLimits) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let limits = SlotLimits {
        global: rng.u32(1..=4),
        per_site: rng.u32(1..=3),
        per_account: rng.u32(1..=2),
    };
    let config = ConcurrencyConfig {
        max_concurrent_acquisitions: limits.global,
        max_concurrent_per_site: limits.per_site,
        max_concurrent_per_account: limits.per_account,
        ..ConcurrencyConfig::default()
    };
    let actor = ConcurrencyActor::new(&config).start();
    let held = Arc::new(Mutex::new(Held::default()));
    let mut tasks = Vec::new();
    let mut arrival = 0;
    for _ in 0..25 {
        let site = format!("s{}", rng.u32(0..2));
        let account = format!("a{}", rng.u32(0..3));
        let hold = Duration::from_millis(rng.u64(0..8));
        // Arrivals in order, a millisecond or more apart, so arrival order is known.
        arrival += 1;
        let start = Duration::from_millis(arrival as u64 * 2);
        let (actor, held) = (actor.clone(), held.clone());
        let number = arrival;
        tasks.push(actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(start).await;
            let guard = match acquire_slot(&actor, &site, &account, queue_timeout).await {
                Ok(guard) => guard,
                Err(Error::QueueTimeout(_)) => return Err("timeout".to_string()),
                Err(e) => return Err(e.to_string()),
            };
            {
                let mut h = held.lock().unwrap();
                h.global += 1;
                let key = format!("{site}:{account}");
                let s = *h
                    .per_site
                    .entry(site.clone())
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                let a = *h
                    .per_account
                    .entry(key.clone())
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                if h.global > limits.global || s > limits.per_site || a > limits.per_account {
                    let message = format!(
                        "seed {seed}: {} / {s} / {a} held against {limits:?}",
                        h.global
                    );
                    h.violations.push(message);
                }
                h.grants.entry(key).or_default().push(number);
            }
            actix_web::rt::time::sleep(hold).await;
            {
                let mut h = held.lock().unwrap();
                h.global -= 1;
                *h.per_site.get_mut(&site).unwrap() -= 1;
                *h.per_account.get_mut(&format!("{site}:{account}")).unwrap() -= 1;
            }
            drop(guard);
            Ok(())
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    let usage = actor.send(Usage).await.unwrap();
    assert_eq!(
        (usage.active_total, usage.queue_size),
        (0, 0),
        "seed {seed}: slots left behind"
    );
    let held = Arc::try_unwrap(held).ok().unwrap().into_inner().unwrap();
    (results, held, limits)
}

#[actix_rt::test]
async fn limits_liveness_and_order_over_random_schedules() {
    for seed in 0..40 {
        let (results, held, limits) = run_schedule(seed, Duration::from_secs(10)).await;
        assert!(held.violations.is_empty(), "{:?}", held.violations);
        assert!(
            results.iter().all(Result::is_ok),
            "seed {seed}: a waiter was not served: {results:?}"
        );
        // Waiters for one account need the same three slots, so none may overtake another.
        // With a per-account limit of 1 grants are strictly one after the other, so the
        // recorded order is the grant order.
        if limits.per_account == 1 {
            for (account, order) in &held.grants {
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(
                    order, &sorted,
                    "seed {seed}: {account} served out of arrival order"
                );
            }
        }
    }
}

#[actix_rt::test]
async fn short_queue_timeouts_end_in_timeouts_not_hangs() {
    for seed in 100..120 {
        let (results, held, _) = run_schedule(seed, Duration::from_millis(3)).await;
        assert!(held.violations.is_empty(), "{:?}", held.violations);
        for result in &results {
            if let Err(e) = result {
                assert_eq!(e, "timeout", "seed {seed}: unexpected error");
            }
        }
        assert!(
            results.iter().any(Result::is_ok),
            "seed {seed}: nobody was served"
        );
    }
}

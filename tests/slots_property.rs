//! Random schedules against the in-process `ConcurrencyActor`: whatever the limits, arrival
//! orders and hold times, no level ever exceeds its limit, every waiter is served (or, with a
//! short queue_timeout, times out — never hangs), and waiters for the same account are served
//! in arrival order.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Actor;
use tokend::config::ConcurrencyConfig;
use tokend::slots::concurrency::{AcquireSlot, ConcurrencyActor, SlotGuard, SlotLimits, Usage};

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
    let finished = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for number in 1..=25 {
        let site = format!("s{}", rng.u32(0..2));
        let account = format!("a{}", rng.u32(0..3));
        let hold = Duration::from_millis(rng.u64(0..8));
        // Now and then, let some of the earlier waiters finish before the next arrives, so
        // that arrivals meet every state of the queue (a condition, not a pause).
        if rng.bool() {
            let at_least = rng.usize(0..=(number - 1) / 2);
            let finished = finished.clone();
            common::eventually("earlier waiters done", Duration::from_secs(20), || {
                let done = finished.load(Ordering::SeqCst);
                async move { (done >= at_least).then_some(()) }
            })
            .await;
        }
        // The arrival: the actor has queued (or granted) this waiter before the next one is
        // sent, so arrival order is known. The grant is then awaited as `acquire_slot` does.
        let arrived = actor
            .send(AcquireSlot {
                site: site.clone(),
                account: account.clone(),
            })
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("seed {seed}: refused at arrival: {e}"));
        let arrival = Arrival {
            site,
            account,
            number,
            hold,
        };
        let (held, finished) = (held.clone(), finished.clone());
        tasks.push(actix_web::rt::spawn(async move {
            let result = hold_slot(arrived, queue_timeout, &held, limits, arrival).await;
            finished.fetch_add(1, Ordering::SeqCst);
            result
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    // Releases go through the actor's mailbox: wait for the last of them (and for waiters
    // that gave up to leave the queue, at the latest at the lease check).
    common::eventually("every slot released", Duration::from_secs(5), || {
        let actor = actor.clone();
        async move {
            let usage = actor.send(Usage).await.unwrap();
            (usage.active_total == 0 && usage.queue_size == 0).then_some(())
        }
    })
    .await;
    let held = Arc::try_unwrap(held).ok().unwrap().into_inner().unwrap();
    (results, held, limits)
}

/// One waiter of a schedule.
struct Arrival {
    site: String,
    account: String,
    /// Its place in the arrival order.
    number: usize,
    /// How long it holds its slot once granted.
    hold: Duration,
}

/// Waits for the grant of one arrival, records what is held while it is held, releases.
async fn hold_slot(
    arrived: tokio::sync::oneshot::Receiver<SlotGuard>,
    queue_timeout: Duration,
    held: &Mutex<Held>,
    limits: SlotLimits,
    arrival: Arrival,
) -> Result<(), String> {
    let Arrival {
        site,
        account,
        number,
        hold,
    } = arrival;
    let guard = match tokio::time::timeout(queue_timeout, arrived).await {
        Ok(Ok(guard)) => guard,
        Ok(Err(_)) => return Err("the actor stopped".to_string()),
        Err(_) => return Err("timeout".to_string()),
    };
    let key = format!("{site}:{account}");
    {
        let mut h = held.lock().unwrap();
        h.global += 1;
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
            let message = format!("{number}: {} / {s} / {a} held against {limits:?}", h.global);
            h.violations.push(message);
        }
        h.grants.entry(key.clone()).or_default().push(number);
    }
    // The login that holds the slot (the random hold time is part of the schedule).
    actix_web::rt::time::sleep(hold).await;
    {
        let mut h = held.lock().unwrap();
        h.global -= 1;
        *h.per_site.get_mut(&site).unwrap() -= 1;
        *h.per_account.get_mut(&key).unwrap() -= 1;
    }
    drop(guard);
    Ok(())
}

#[actix_rt::test]
async fn limits_liveness_and_order_over_random_schedules() {
    for seed in 0..40 {
        let (results, held, limits) = run_schedule(seed, Duration::from_secs(10)).await;
        assert!(
            held.violations.is_empty(),
            "seed {seed}: {:?}",
            held.violations
        );
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
        assert!(
            held.violations.is_empty(),
            "seed {seed}: {:?}",
            held.violations
        );
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

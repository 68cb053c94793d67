//! Random schedules against both slot backends — the in-process `ConcurrencyActor` and the
//! Redis slots (`RedisSlots`, the grant script; on one Redis and on a three-master Redis
//! Cluster): whatever the limits, arrival orders and hold
//! times, no level ever exceeds its limit, every waiter is served (or, with a short
//! queue_timeout, times out — never hangs), and waiters for the same account are served in
//! arrival order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr};
use tokend::config::ConcurrencyConfig;
use tokend::redis::RedisLink;
use tokend::slots::concurrency::{AcquireSlot, ConcurrencyActor, SlotGuard, SlotLimits, Usage};
use tokend::slots::redis::{RedisSlots, RemoteLease, SlotRequest};
use tokio::sync::Notify;

use crate::support;
use crate::support::redis_topology::ClusterSet;

#[derive(Default)]
struct Held {
    global: u32,
    per_site: HashMap<String, u32>,
    per_account: HashMap<String, u32>,
    violations: Vec<String>,
    /// Grant order per account, by arrival number.
    grants: HashMap<String, Vec<usize>>,
}

/// Where the slots of a schedule live.
#[derive(Clone)]
enum Backend {
    Memory(Addr<ConcurrencyActor>),
    /// The Redis slots under a prefix of their own; `wake` is what this instance's releases
    /// notify, as `Slots` does.
    Redis(RedisSlots, Arc<Notify>),
}

/// Which backend a schedule runs on.
#[derive(Clone, Debug)]
enum Kind {
    Memory,
    Redis,
    /// A Redis Cluster with these nodes (`[redis] cluster`).
    Cluster(Vec<String>),
}

/// A granted slot, released after its hold.
enum Grant {
    Local(SlotGuard),
    Remote(RedisSlots, RemoteLease, Arc<Notify>),
}

impl Grant {
    async fn release(self) {
        match self {
            Grant::Local(guard) => drop(guard),
            Grant::Remote(slots, lease, wake) => {
                assert!(slots.release(&lease).await.unwrap(), "the lease was lost");
                wake.notify_waiters();
            }
        }
    }
}

/// Counts of the waiters of a schedule: sent, and done with (released or given up).
#[derive(Default)]
struct Counts {
    finished: AtomicUsize,
    /// Released in Redis, or given up (its waiter removed, or about to be).
    left: AtomicUsize,
}

impl Backend {
    fn start(kind: Kind, config: &ConcurrencyConfig) -> Backend {
        match kind {
            Kind::Memory => Backend::Memory(ConcurrencyActor::new(config).start()),
            Kind::Redis => {
                let prefix = format!("tokend-prop-slots-{}", support::unique());
                let link = RedisLink::open(&support::redis_url(), &prefix).unwrap();
                Backend::Redis(RedisSlots::new(link), Arc::default())
            }
            Kind::Cluster(nodes) => {
                let prefix = format!("tokend-prop-slots-{}", support::unique());
                let nodes: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
                // The `[redis]` table as an operator writes it, read by tokend's own parser.
                let text = format!(
                    "[redis]\ncluster = [{}]\nkey_prefix = \"{prefix}\"\n",
                    nodes.join(", ")
                );
                let config = tokend::Config::parse(&text).unwrap();
                let link = RedisLink::from_config(&config.redis)
                    .unwrap()
                    .expect("a Redis link for [redis] cluster");
                Backend::Redis(RedisSlots::new(link), Arc::default())
            }
        }
    }

    /// Sends a waiter and returns once it has arrived (queued or granted), so that arrival
    /// order is known; the returned task ends with its grant, or `timeout`.
    async fn arrive(
        &self,
        arrival: &Arrival,
        limits: SlotLimits,
        queue_timeout: Duration,
        sent: usize,
        counts: &Arc<Counts>,
    ) -> tokio::task::JoinHandle<Result<Grant, String>> {
        match self {
            Backend::Memory(actor) => {
                let arrived = actor
                    .send(AcquireSlot {
                        site: arrival.site.clone(),
                        account: arrival.account.clone(),
                    })
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("refused at arrival: {e}"));
                tokio::spawn(async move {
                    match tokio::time::timeout(queue_timeout, arrived).await {
                        Ok(Ok(guard)) => Ok(Grant::Local(guard)),
                        Ok(Err(_)) => Err("the actor stopped".to_string()),
                        Err(_) => Err("timeout".to_string()),
                    }
                })
            }
            Backend::Redis(slots, wake) => {
                let (slots2, wake2, counts2) = (slots.clone(), wake.clone(), counts.clone());
                let (site, account) = (arrival.site.clone(), arrival.account.clone());
                let task = tokio::spawn(async move {
                    let ask = SlotRequest {
                        site: &site,
                        account: &account,
                        limits,
                        lease: Duration::from_secs(30),
                        wait: queue_timeout,
                        max_queue: 100,
                    };
                    match slots2.acquire(&ask, &wake2).await {
                        Ok(lease) => Ok(Grant::Remote(slots2, lease, wake2)),
                        Err(tokend::Error::QueueTimeout(_)) => {
                            counts2.left.fetch_add(1, Ordering::SeqCst);
                            Err("timeout".to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                });
                // Arrived: every waiter sent and not yet gone holds a lease or a place in the
                // queue (a release is counted once it has landed, so this only waits).
                let slots = slots.clone();
                let counts = counts.clone();
                support::wait_until("the waiter arrived", Duration::from_secs(10), || {
                    let (slots, counts) = (slots.clone(), counts.clone());
                    async move {
                        let (held, queued) = slots.usage().await.unwrap();
                        let present = sent - counts.left.load(Ordering::SeqCst);
                        (held + queued >= present as u64).then_some(())
                    }
                })
                .await;
                task
            }
        }
    }

    /// Waits until nothing is held or queued.
    async fn drained(&self) {
        support::wait_until("every slot released", Duration::from_secs(5), || {
            let backend = self.clone();
            async move {
                let (held, queued) = match &backend {
                    Backend::Memory(actor) => {
                        let usage = actor.send(Usage).await.unwrap();
                        (usage.active_total as u64, usage.queue_size as u64)
                    }
                    Backend::Redis(slots, _) => slots.usage().await.unwrap(),
                };
                (held == 0 && queued == 0).then_some(())
            }
        })
        .await;
    }
}

async fn run_schedule(
    kind: Kind,
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
    let backend = Backend::start(kind, &config);
    let held = Arc::new(Mutex::new(Held::default()));
    let counts: Arc<Counts> = Arc::default();
    let mut tasks = Vec::new();
    for number in 1..=25 {
        let arrival = Arrival {
            site: format!("s{}", rng.u32(0..2)),
            account: format!("a{}", rng.u32(0..3)),
            number,
            hold: Duration::from_millis(rng.u64(0..8)),
        };
        // Now and then, let some of the earlier waiters finish before the next arrives, so
        // that arrivals meet every state of the queue (a condition, not a pause).
        if rng.bool() {
            let at_least = rng.usize(0..=(number - 1) / 2);
            let counts = counts.clone();
            support::wait_until("earlier waiters done", Duration::from_secs(20), || {
                let done = counts.finished.load(Ordering::SeqCst);
                async move { (done >= at_least).then_some(()) }
            })
            .await;
        }
        let granted = backend
            .arrive(&arrival, limits, queue_timeout, number, &counts)
            .await;
        let (held, counts) = (held.clone(), counts.clone());
        tasks.push(actix_web::rt::spawn(async move {
            let result = hold_slot(granted, &held, limits, arrival, &counts).await;
            counts.finished.fetch_add(1, Ordering::SeqCst);
            result
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    // Releases go through the actor's mailbox (or the waiters that gave up leave the Redis
    // queue a moment later): wait for the last of them.
    backend.drained().await;
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
    granted: tokio::task::JoinHandle<Result<Grant, String>>,
    held: &Mutex<Held>,
    limits: SlotLimits,
    arrival: Arrival,
    counts: &Counts,
) -> Result<(), String> {
    let Arrival {
        site,
        account,
        number,
        hold,
    } = arrival;
    let grant = granted.await.map_err(|e| e.to_string())??;
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
    grant.release().await;
    counts.left.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// The backends to run on: Redis is skipped (outside CI) when it is not there.
fn kinds() -> Vec<Kind> {
    let mut kinds = vec![Kind::Memory];
    if support::redis_available() {
        kinds.push(Kind::Redis);
    }
    kinds
}

async fn limits_liveness_and_order(kind: Kind, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let (results, held, limits) =
            run_schedule(kind.clone(), seed, Duration::from_secs(10)).await;
        assert!(
            held.violations.is_empty(),
            "{kind:?} seed {seed}: {:?}",
            held.violations
        );
        assert!(
            results.iter().all(Result::is_ok),
            "{kind:?} seed {seed}: a waiter was not served: {results:?}"
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
                    "{kind:?} seed {seed}: {account} served out of arrival order"
                );
            }
        }
    }
}

#[actix_rt::test]
async fn limits_liveness_and_order_over_random_schedules() {
    limits_liveness_and_order(Kind::Memory, 0..40).await;
}

#[actix_rt::test]
async fn limits_liveness_and_order_over_random_schedules_in_redis() {
    if kinds().len() < 2 {
        return;
    }
    limits_liveness_and_order(Kind::Redis, 0..40).await;
}

/// The same schedules, and the short queue timeouts, with the slots on a three-master Redis
/// Cluster (every slot key under one hash tag, so the grant script runs on one shard).
#[actix_rt::test]
async fn limits_liveness_and_order_over_random_schedules_on_a_redis_cluster() {
    let Some(cluster) = ClusterSet::start() else {
        return;
    };
    let kind = Kind::Cluster(cluster.addrs());
    limits_liveness_and_order(kind.clone(), 0..40).await;
    short_queue_timeouts(kind).await;
}

#[actix_rt::test]
async fn short_queue_timeouts_end_in_timeouts_not_hangs() {
    for kind in kinds() {
        short_queue_timeouts(kind).await;
    }
}

/// With a 3 ms queue timeout a waiter is served or times out, never anything else, and the
/// limits hold.
async fn short_queue_timeouts(kind: Kind) {
    for seed in 100..120 {
        let (results, held, _) = run_schedule(kind.clone(), seed, Duration::from_millis(3)).await;
        assert!(
            held.violations.is_empty(),
            "{kind:?} seed {seed}: {:?}",
            held.violations
        );
        for result in &results {
            if let Err(e) = result {
                assert_eq!(e, "timeout", "{kind:?} seed {seed}: unexpected error");
            }
        }
        assert!(
            results.iter().any(Result::is_ok),
            "{kind:?} seed {seed}: nobody was served"
        );
    }
}

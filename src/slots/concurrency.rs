//! `ConcurrencyActor`: owns the login slots — in total, per site, per (site, account) — the
//! wait queue and the leases.
//!
//! A slot is granted all or nothing (the three levels at once), so no two acquisitions can
//! deadlock. A waiter that cannot run joins the queue; whenever a slot frees, the queue is
//! walked oldest first and every waiter that can run now is granted (no head-of-line blocking:
//! a waiter for a busy account does not hold up one for a free account). A full queue is
//! refused at once (`QUEUE_FULL`).
//!
//! A grant is a [`SlotGuard`]: dropping it (success, error, panic, timeout, client gone)
//! releases the slot. It is also a lease: a slot not released within `acquisition_timeout` is
//! taken back by the timer, logged and counted as a recovered deadlock.
//!
//! A holder whose login is still running renews its lease ([`RenewLease`]), so a long login
//! (a person solving a captcha) never loses its slot; only a lease nobody renews expires.
//!
//! Messages: [`AcquireSlot`], [`ReleaseSlot`], [`RenewLease`], [`Usage`], [`ReclaimExpired`],
//! [`Limits`], [`SetLimits`], [`SetSiteLimit`].
//! Timers: every [`LEASE_CHECK`], expired leases are recovered and closed waiters dropped.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::{seconds, ConcurrencyConfig};
use crate::error::{Error, Result};

pub const LEASE_CHECK: Duration = Duration::from_secs(1);

/// The three limits on logins in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SlotLimits {
    pub global: u32,
    pub per_site: u32,
    pub per_account: u32,
}

struct Waiter {
    site: String,
    account: String,
    since: Instant,
    reply: oneshot::Sender<SlotGuard>,
}

struct Lease {
    site: String,
    account: String,
    granted: Instant,
    expires: Instant,
}

pub struct ConcurrencyActor {
    limits: SlotLimits,
    lease_duration: Duration,
    max_queue_len: usize,
    global: u32,
    per_site: HashMap<String, u32>,
    per_account: HashMap<(String, String), u32>,
    queue: VecDeque<Waiter>,
    /// Per-site limits set at run time (adaptive concurrency), below `limits.per_site`.
    site_limits: HashMap<String, u32>,
    leases: HashMap<u64, Lease>,
    next_lease: u64,
    recovered: u64,
}

impl ConcurrencyActor {
    pub fn new(config: &ConcurrencyConfig) -> ConcurrencyActor {
        ConcurrencyActor {
            limits: SlotLimits {
                global: config.max_concurrent_acquisitions,
                per_site: config.max_concurrent_per_site,
                per_account: config.max_concurrent_per_account,
            },
            lease_duration: seconds(config.acquisition_timeout),
            max_queue_len: config.max_queue_len as usize,
            global: 0,
            per_site: HashMap::new(),
            per_account: HashMap::new(),
            queue: VecDeque::new(),
            site_limits: HashMap::new(),
            leases: HashMap::new(),
            next_lease: 1,
            recovered: 0,
        }
    }

    /// The limit of one site: its adaptive limit if it has one, else `per_site`.
    fn site_limit(&self, site: &str) -> u32 {
        self.site_limits
            .get(site)
            .copied()
            .unwrap_or(self.limits.per_site)
            .min(self.limits.per_site)
    }

    fn can_run(&self, site: &str, account: &str) -> bool {
        self.global < self.limits.global
            && self.per_site.get(site).copied().unwrap_or(0) < self.site_limit(site)
            && self
                .per_account
                .get(&(site.to_string(), account.to_string()))
                .copied()
                .unwrap_or(0)
                < self.limits.per_account
    }

    fn take(&mut self, site: &str, account: &str, ctx: &Context<Self>) -> SlotGuard {
        self.global += 1;
        *self.per_site.entry(site.to_string()).or_default() += 1;
        *self
            .per_account
            .entry((site.to_string(), account.to_string()))
            .or_default() += 1;
        let lease = self.next_lease;
        self.next_lease += 1;
        let now = Instant::now();
        self.leases.insert(
            lease,
            Lease {
                site: site.to_string(),
                account: account.to_string(),
                granted: now,
                expires: now + self.lease_duration,
            },
        );
        SlotGuard {
            lease,
            actor: Some(ctx.address()),
        }
    }

    fn free(&mut self, lease: u64) -> Option<Lease> {
        let held = self.leases.remove(&lease)?;
        self.global = self.global.saturating_sub(1);
        decrement(&mut self.per_site, &held.site);
        decrement(
            &mut self.per_account,
            &(held.site.clone(), held.account.clone()),
        );
        Some(held)
    }

    /// Grants every queued waiter that can run now, oldest first.
    fn dispatch(&mut self, ctx: &Context<Self>) {
        let mut index = 0;
        while index < self.queue.len() {
            let waiter = &self.queue[index];
            if waiter.reply.is_closed() {
                self.queue.remove(index);
                continue;
            }
            if !self.can_run(&waiter.site, &waiter.account) {
                index += 1;
                continue;
            }
            let waiter = self.queue.remove(index).expect("index is in range");
            let guard = self.take(&waiter.site, &waiter.account, ctx);
            // If the waiter gave up meanwhile, the guard comes back and is dropped here,
            // which releases the slot again through the mailbox.
            drop(waiter.reply.send(guard));
        }
    }

    /// Takes back slots held past their lease; drops waiters that stopped waiting.
    fn recover(&mut self) -> (usize, usize) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for lease in &expired {
            if let Some(held) = self.free(*lease) {
                self.recovered += 1;
                log::warn!(
                    "event=lease_expired site={} account={} held={:.1}s action=slot_recovered recovered_total={}",
                    held.site,
                    held.account,
                    held.granted.elapsed().as_secs_f64(),
                    self.recovered
                );
            }
        }
        let before = self.queue.len();
        self.queue.retain(|w| !w.reply.is_closed());
        (expired.len(), before - self.queue.len())
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

impl Actor for ConcurrencyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(LEASE_CHECK, |actor, ctx| {
            let (leases, _) = actor.recover();
            if leases > 0 {
                actor.dispatch(ctx);
            }
        });
    }
}

/// A granted slot. Dropping it releases the slot.
pub struct SlotGuard {
    lease: u64,
    actor: Option<Addr<ConcurrencyActor>>,
}

impl SlotGuard {
    pub fn lease(&self) -> u64 {
        self.lease
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(actor) = self.actor.take() {
            actor.do_send(ReleaseSlot(self.lease));
        }
    }
}

/// Asks for a slot for (site, account). The answer comes at once: a receiver that yields the
/// guard when the slot is granted, or `QUEUE_FULL`.
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<SlotGuard>>")]
pub struct AcquireSlot {
    pub site: String,
    pub account: String,
}

impl Handler<AcquireSlot> for ConcurrencyActor {
    type Result = Result<oneshot::Receiver<SlotGuard>>;

    fn handle(&mut self, msg: AcquireSlot, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, receiver) = oneshot::channel();
        // Granted at once only if nobody older is waiting for the same chance.
        let blocked_by_older = self
            .queue
            .iter()
            .any(|w| !w.reply.is_closed() && w.site == msg.site && w.account == msg.account);
        if !blocked_by_older && self.can_run(&msg.site, &msg.account) {
            let guard = self.take(&msg.site, &msg.account, ctx);
            drop(reply.send(guard));
            return Ok(receiver);
        }
        if self.queue.len() >= self.max_queue_len {
            self.queue.retain(|w| !w.reply.is_closed());
            if self.queue.len() >= self.max_queue_len {
                return Err(Error::QueueFull(self.max_queue_len));
            }
        }
        self.queue.push_back(Waiter {
            site: msg.site,
            account: msg.account,
            since: Instant::now(),
            reply,
        });
        Ok(receiver)
    }
}

/// Waits for a slot for (site, account) at most `wait`; `QUEUE_FULL` or a timeout otherwise.
pub async fn acquire_slot(
    actor: &Addr<ConcurrencyActor>,
    site: &str,
    account: &str,
    wait: Duration,
) -> Result<SlotGuard> {
    let receiver = actor
        .send(AcquireSlot {
            site: site.to_string(),
            account: account.to_string(),
        })
        .await??;
    match tokio::time::timeout(wait, receiver).await {
        Ok(Ok(guard)) => Ok(guard),
        Ok(Err(_)) => Err(Error::Internal("the concurrency actor stopped".into())),
        Err(_) => Err(Error::QueueTimeout(format!(
            "no login slot for site `{site}` within {:.0}s (queue_timeout)",
            wait.as_secs_f64()
        ))),
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseSlot(pub u64);

impl Handler<ReleaseSlot> for ConcurrencyActor {
    type Result = ();

    fn handle(&mut self, ReleaseSlot(lease): ReleaseSlot, ctx: &mut Context<Self>) {
        if self.free(lease).is_some() {
            self.dispatch(ctx);
        }
    }
}

/// Extends a lease whose login still runs by another `acquisition_timeout`.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct RenewLease(pub u64);

impl Handler<RenewLease> for ConcurrencyActor {
    type Result = bool;

    fn handle(&mut self, RenewLease(lease): RenewLease, _: &mut Context<Self>) -> bool {
        let expires = Instant::now() + self.lease_duration;
        match self.leases.get_mut(&lease) {
            Some(held) => {
                held.expires = expires;
                true
            }
            None => false,
        }
    }
}

/// Sets one site's limit at run time (adaptive concurrency); `None` goes back to `per_site`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetSiteLimit {
    pub site: String,
    pub limit: Option<u32>,
}

impl Handler<SetSiteLimit> for ConcurrencyActor {
    type Result = ();

    fn handle(&mut self, msg: SetSiteLimit, ctx: &mut Context<Self>) {
        match msg.limit {
            Some(limit) => self.site_limits.insert(msg.site, limit.max(1)),
            None => self.site_limits.remove(&msg.site),
        };
        self.dispatch(ctx);
    }
}

/// The actor's state, for `/resource-usage`.
#[derive(Message)]
#[rtype(result = "SlotUsage")]
pub struct Usage;

#[derive(Debug, Clone, Serialize)]
pub struct SlotUsage {
    pub active_total: u32,
    pub active_per_site: HashMap<String, u32>,
    pub active_per_account: HashMap<String, u32>,
    pub queue_size: usize,
    pub oldest_wait_seconds: f64,
    pub limits: SlotLimits,
    pub recovered_deadlocks: u64,
}

impl Handler<Usage> for ConcurrencyActor {
    type Result = MessageResult<Usage>;

    fn handle(&mut self, _: Usage, _: &mut Context<Self>) -> Self::Result {
        MessageResult(SlotUsage {
            active_total: self.global,
            active_per_site: self.per_site.clone(),
            active_per_account: self
                .per_account
                .iter()
                .map(|((s, a), n)| (format!("{s}:{a}"), *n))
                .collect(),
            queue_size: self.queue.len(),
            oldest_wait_seconds: self
                .queue
                .front()
                .map_or(0.0, |w| w.since.elapsed().as_secs_f64()),
            limits: self.limits,
            recovered_deadlocks: self.recovered,
        })
    }
}

/// Frees slots held past their lease and drops waiters that gave up; says how many.
#[derive(Message)]
#[rtype(result = "(usize, usize)")]
pub struct ReclaimExpired;

impl Handler<ReclaimExpired> for ConcurrencyActor {
    type Result = MessageResult<ReclaimExpired>;

    fn handle(&mut self, _: ReclaimExpired, ctx: &mut Context<Self>) -> Self::Result {
        let freed = self.recover();
        self.dispatch(ctx);
        MessageResult(freed)
    }
}

#[derive(Message)]
#[rtype(result = "SlotLimits")]
pub struct Limits;

impl Handler<Limits> for ConcurrencyActor {
    type Result = MessageResult<Limits>;

    fn handle(&mut self, _: Limits, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.limits)
    }
}

/// Replaces the limits at run time; waiting and new requests see them at once.
#[derive(Message)]
#[rtype(result = "Result<SlotLimits>")]
pub struct SetLimits(pub SlotLimits);

impl Handler<SetLimits> for ConcurrencyActor {
    type Result = Result<SlotLimits>;

    fn handle(&mut self, SetLimits(limits): SetLimits, ctx: &mut Context<Self>) -> Self::Result {
        if limits.global == 0 || limits.per_site == 0 || limits.per_account == 0 {
            return Err(Error::invalid("limits", "every limit must be at least 1"));
        }
        log::info!(
            "event=limits_changed global={} per_site={} per_account={}",
            limits.global,
            limits.per_site,
            limits.per_account
        );
        self.limits = limits;
        self.dispatch(ctx);
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(global: u32, site: u32, account: u32) -> ConcurrencyConfig {
        ConcurrencyConfig {
            max_concurrent_acquisitions: global,
            max_concurrent_per_site: site,
            max_concurrent_per_account: account,
            acquisition_timeout: 0.5,
            max_queue_len: 3,
            ..ConcurrencyConfig::default()
        }
    }

    const WAIT: Duration = Duration::from_millis(100);

    /// Polls the actor's usage until `holds` is true of it, failing the test after 5 s.
    pub(super) async fn usage_until(
        actor: &Addr<ConcurrencyActor>,
        what: &str,
        holds: impl Fn(&SlotUsage) -> bool,
    ) -> SlotUsage {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let usage = actor.send(Usage).await.unwrap();
            if holds(&usage) {
                return usage;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {usage:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[actix_rt::test]
    async fn limits_hold_and_busy_accounts_do_not_block_others() {
        let actor = ConcurrencyActor::new(&config(3, 2, 1)).start();
        let a1 = acquire_slot(&actor, "s1", "a", WAIT).await.unwrap();
        // Same account: must wait.
        assert!(matches!(
            acquire_slot(&actor, "s1", "a", WAIT).await,
            Err(Error::QueueTimeout(_))
        ));
        // Another account of the same site: runs.
        let b1 = acquire_slot(&actor, "s1", "b", WAIT).await.unwrap();
        // Site full (2): a third account of s1 waits, but s2 runs (no head-of-line blocking).
        let waiting = tokio::spawn({
            let actor = actor.clone();
            async move { acquire_slot(&actor, "s1", "c", Duration::from_secs(2)).await }
        });
        usage_until(&actor, "s1/c queued", |u| u.queue_size == 1).await;
        let s2 = acquire_slot(&actor, "s2", "x", WAIT).await.unwrap();
        // Global full (3).
        assert!(acquire_slot(&actor, "s3", "y", WAIT).await.is_err());
        drop(a1);
        let c = waiting.await.unwrap().unwrap();
        let usage = actor.send(Usage).await.unwrap();
        assert_eq!(usage.active_total, 3);
        assert_eq!(usage.active_per_site["s1"], 2);
        drop((b1, c, s2));
        usage_until(&actor, "every slot released", |u| u.active_total == 0).await;
    }

    #[actix_rt::test]
    async fn full_queue_is_refused_and_leases_expire() {
        let actor = ConcurrencyActor::new(&config(1, 1, 1)).start();
        let held = acquire_slot(&actor, "s", "a", WAIT).await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let actor = actor.clone();
            waiters.push(tokio::spawn(async move {
                acquire_slot(&actor, "s", "a", Duration::from_secs(5)).await
            }));
        }
        usage_until(&actor, "three waiters queued", |u| u.queue_size == 3).await;
        assert!(matches!(
            acquire_slot(&actor, "s", "a", WAIT).await,
            Err(Error::QueueFull(3))
        ));
        // The holder never releases (hung driver): its lease (0.5 s) expires and the first
        // waiter gets the slot.
        std::mem::forget(held);
        let first = waiters.remove(0).await.unwrap().unwrap();
        let usage = actor.send(Usage).await.unwrap();
        assert_eq!(usage.recovered_deadlocks, 1);
        assert_eq!(usage.active_total, 1);
        drop(first);
    }

    #[actix_rt::test]
    async fn a_release_of_an_unknown_or_spent_lease_frees_nothing() {
        let actor = ConcurrencyActor::new(&config(1, 1, 1)).start();
        let first = acquire_slot(&actor, "s", "a", WAIT).await.unwrap();
        let spent = first.lease();
        drop(first);
        usage_until(&actor, "the first slot released", |u| u.active_total == 0).await;
        let second = acquire_slot(&actor, "s", "a", WAIT).await.unwrap();
        // A late second release of the first lease, and a lease that never existed.
        actor.send(ReleaseSlot(spent)).await.unwrap();
        actor.send(ReleaseSlot(9_999)).await.unwrap();
        let usage = actor.send(Usage).await.unwrap();
        assert_eq!(usage.active_total, 1, "another holder's slot was freed");
        assert!(
            matches!(
                acquire_slot(&actor, "s", "b", WAIT).await,
                Err(Error::QueueTimeout(_))
            ),
            "the global limit of 1 no longer held"
        );
        assert!(!actor.send(RenewLease(spent)).await.unwrap());
        assert!(actor.send(RenewLease(second.lease())).await.unwrap());
    }

    #[actix_rt::test]
    async fn a_renewed_lease_outlives_acquisition_timeout() {
        let actor = ConcurrencyActor::new(&config(1, 1, 1)).start();
        let held = acquire_slot(&actor, "s", "a", WAIT).await.unwrap();
        let granted = Instant::now();
        // Renewed well within each 0.5 s lease, for three leases' worth of time.
        while granted.elapsed() < Duration::from_millis(1500) {
            assert!(actor.send(RenewLease(held.lease())).await.unwrap());
            actor.send(ReclaimExpired).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let usage = actor.send(Usage).await.unwrap();
        assert_eq!((usage.active_total, usage.recovered_deadlocks), (1, 0));
        // Not renewed any more: the timer takes it back.
        std::mem::forget(held);
        usage_until(&actor, "the lease recovered", |u| {
            u.recovered_deadlocks == 1
        })
        .await;
    }

    #[actix_rt::test]
    async fn a_waiter_that_gave_up_takes_no_slot() {
        let actor = ConcurrencyActor::new(&config(1, 1, 1)).start();
        let held = acquire_slot(&actor, "s", "a", WAIT).await.unwrap();
        assert!(matches!(
            acquire_slot(&actor, "s", "b", Duration::from_millis(10)).await,
            Err(Error::QueueTimeout(_))
        ));
        drop(held);
        let usage = usage_until(&actor, "the slot released", |u| u.active_total == 0).await;
        assert_eq!(usage.queue_size, 0, "the waiter that left is still queued");
        // The freed slot goes to the next caller at once.
        acquire_slot(&actor, "s", "c", WAIT).await.unwrap();
    }

    #[actix_rt::test]
    async fn a_site_limit_set_at_run_time_holds_and_lifts() {
        let actor = ConcurrencyActor::new(&config(5, 3, 1)).start();
        actor
            .send(SetSiteLimit {
                site: "s".into(),
                limit: Some(1),
            })
            .await
            .unwrap();
        let a = acquire_slot(&actor, "s", "a", WAIT).await.unwrap();
        let waiting = tokio::spawn({
            let actor = actor.clone();
            async move { acquire_slot(&actor, "s", "b", Duration::from_secs(5)).await }
        });
        usage_until(&actor, "s/b queued", |u| u.queue_size == 1).await;
        // Another site keeps the configured per_site limit.
        let other = acquire_slot(&actor, "t", "a", WAIT).await.unwrap();
        actor
            .send(SetSiteLimit {
                site: "s".into(),
                limit: None,
            })
            .await
            .unwrap();
        let b = waiting.await.unwrap().unwrap();
        assert_eq!(actor.send(Usage).await.unwrap().active_per_site["s"], 2);
        drop((a, b, other));
    }
}

#[cfg(test)]
mod order_tests {
    use std::sync::Arc;

    use super::tests::usage_until;
    use super::*;

    #[actix_rt::test]
    async fn waiters_for_one_account_are_served_first_come_first_served() {
        let config = ConcurrencyConfig {
            max_concurrent_per_account: 1,
            ..ConcurrencyConfig::default()
        };
        let actor = ConcurrencyActor::new(&config).start();
        let held = acquire_slot(&actor, "s", "a", Duration::from_secs(1))
            .await
            .unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 0..4 {
            let (waiting, order) = (actor.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let guard = acquire_slot(&waiting, "s", "a", Duration::from_secs(5))
                    .await
                    .unwrap();
                order.lock().unwrap().push(n);
                drop(guard);
            }));
            // Arrive one after the other: each is in the queue before the next is sent.
            usage_until(&actor, "the waiter queued", |u| u.queue_size == n + 1).await;
        }
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }
}

#[cfg(test)]
mod limit_change_tests {
    use super::tests::usage_until;
    use super::*;

    #[actix_rt::test]
    async fn raising_the_limits_serves_the_waiters() {
        let config = ConcurrencyConfig {
            max_concurrent_acquisitions: 1,
            ..ConcurrencyConfig::default()
        };
        let actor = ConcurrencyActor::new(&config).start();
        let first = acquire_slot(&actor, "s1", "a", Duration::from_secs(1))
            .await
            .unwrap();
        let waiting: Vec<_> = ["b", "c"]
            .into_iter()
            .map(|account| {
                let actor = actor.clone();
                tokio::spawn(async move {
                    acquire_slot(&actor, "s2", account, Duration::from_secs(5)).await
                })
            })
            .collect();
        usage_until(&actor, "both waiters queued", |u| u.queue_size == 2).await;
        let raised = SlotLimits {
            global: 3,
            per_site: 2,
            per_account: 1,
        };
        actor.send(SetLimits(raised)).await.unwrap().unwrap();
        for waiter in waiting {
            assert!(
                waiter.await.unwrap().is_ok(),
                "a waiter was dropped by the limit change"
            );
        }
        assert_eq!(actor.send(Limits).await.unwrap(), raised);
        drop(first);
    }

    #[actix_rt::test]
    async fn limits_of_zero_are_refused() {
        let actor = ConcurrencyActor::new(&ConcurrencyConfig::default()).start();
        let before = actor.send(Limits).await.unwrap();
        let zero = SlotLimits {
            per_site: 0,
            ..before
        };
        assert!(actor.send(SetLimits(zero)).await.unwrap().is_err());
        assert_eq!(actor.send(Limits).await.unwrap(), before);
    }
}

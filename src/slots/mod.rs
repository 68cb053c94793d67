//! Login slots as the pipeline sees them: in-process (`ConcurrencyActor`) or shared by every
//! instance through Redis ([`redis::RedisSlots`]), with the same semantics (SPEC §1, §9).
//!
//! With Redis configured, slots, the queue order and the single-flight lock live in Redis; if
//! Redis cannot be reached, tokend falls back to in-process limits (logged, and shown in
//! `/health` and `/resource-usage`), and goes back to Redis by itself once it answers again.

pub mod redis;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use tokio::sync::Notify;

use self::redis::{RedisSlots, RemoteLease, SlotRequest};
use crate::actors::concurrency::{
    acquire_slot, Cleanup, ConcurrencyActor, RenewLease, SetLimits, SlotUsage, Usage,
};
pub use crate::actors::concurrency::{SlotGuard, SlotLimits};
use crate::config::{seconds, ConcurrencyConfig};
use crate::error::{Error, Result};

/// First and longest wait between two tries at a lock another instance holds.
const LOCK_POLL_MIN: Duration = Duration::from_millis(5);
const LOCK_POLL_MAX: Duration = Duration::from_millis(100);

/// After Redis failed, how long the in-process fallback is used before Redis is tried again.
const RETRY_REDIS_AFTER: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Slots {
    actor: Addr<ConcurrencyActor>,
    redis: Option<RedisSlots>,
    config: ConcurrencyConfig,
    /// The limits this instance offers as defaults to the Redis script (run-time changes
    /// are shared through Redis itself).
    limits: Arc<Mutex<SlotLimits>>,
    /// Set while Redis is unreachable and the in-process fallback is in use.
    degraded: Arc<AtomicBool>,
    last_failure: Arc<Mutex<Option<Instant>>>,
    /// Wakes this instance's queued waiters when it releases a slot.
    wake: Arc<Notify>,
}

/// A granted slot; dropping it releases the slot. While it is held its lease is renewed, so
/// a login that outlives `acquisition_timeout` keeps its slot; only a holder that stops
/// (crash, kill, partition longer than the lease) loses it.
pub struct Slot {
    held: Held,
    renewal: tokio::task::JoinHandle<()>,
}

enum Held {
    /// Held for its `Drop`, which releases the slot in the actor.
    #[allow(dead_code)]
    Local(SlotGuard),
    Remote(Box<RemoteSlot>),
}

/// A slot held in Redis, with what its release needs.
pub struct RemoteSlot {
    lease: RemoteLease,
    slots: RedisSlots,
    wake: Arc<Notify>,
}

impl Slot {
    fn local(guard: SlotGuard, actor: Addr<ConcurrencyActor>, lease: Duration) -> Slot {
        let id = guard.lease();
        let renewal = tokio::spawn(async move {
            let mut every = tokio::time::interval(lease / 3);
            every.tick().await;
            loop {
                every.tick().await;
                if !matches!(actor.send(RenewLease(id)).await, Ok(true)) {
                    return;
                }
            }
        });
        Slot {
            held: Held::Local(guard),
            renewal,
        }
    }

    fn remote(remote: RemoteSlot, lease: Duration) -> Slot {
        let (slots, held) = (remote.slots.clone(), remote.lease.clone());
        let renewal = tokio::spawn(async move {
            let mut every = tokio::time::interval(lease / 3);
            every.tick().await;
            loop {
                every.tick().await;
                match slots.renew(&held, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        log::warn!(
                            "event=slot_lease_lost site={} account={}",
                            held.site,
                            held.account
                        );
                        return;
                    }
                    Err(e) => log::warn!(
                        "event=slot_renewal_failed site={} error=\"{e}\" action=retry",
                        held.site
                    ),
                }
            }
        });
        Slot {
            held: Held::Remote(Box::new(remote)),
            renewal,
        }
    }

    /// The fencing number of the grant: a token write with an older one is discarded. In-process
    /// slots give 0 (unfenced): one process cannot race itself past a lease, and their
    /// numbers are not comparable with the shared ones.
    pub fn fence(&self) -> u64 {
        match &self.held {
            Held::Local(_) => 0,
            Held::Remote(remote) => remote.lease.fence,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.renewal.abort();
        if let Held::Remote(remote) = &self.held {
            let (lease, slots, wake) = (
                remote.lease.clone(),
                remote.slots.clone(),
                remote.wake.clone(),
            );
            // Outside a runtime (process exit) the lease simply expires.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = slots.release(&lease).await {
                        log::warn!("event=slot_release_failed site={} error=\"{e}\" action=lease_will_expire", lease.site);
                    }
                    wake.notify_waiters();
                });
            }
        }
    }
}

/// The single-flight lock of an account across instances; renewed while held (so a login
/// that outlives `lock_timeout` keeps it), unlocked when dropped.
pub struct FlightLock {
    held: Option<HeldLock>,
}

struct HeldLock {
    slots: RedisSlots,
    site: String,
    id: i64,
    owner: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl FlightLock {
    /// Whether the lock is held in Redis (not a no-op of the in-process fallback).
    pub fn is_shared(&self) -> bool {
        self.held.is_some()
    }

    fn held(slots: RedisSlots, site: &str, id: i64, owner: String, ttl: Duration) -> FlightLock {
        let renewal = tokio::spawn(renew_lock(
            slots.clone(),
            site.to_string(),
            id,
            owner.clone(),
            ttl,
        ));
        FlightLock {
            held: Some(HeldLock {
                slots,
                site: site.to_string(),
                id,
                owner,
                renewal,
            }),
        }
    }
}

/// Renews a held lock every third of its life until aborted. A failed renewal is retried at
/// the next tick; a lock found taken is reported (its holder's login runs on regardless).
async fn renew_lock(slots: RedisSlots, site: String, id: i64, owner: String, ttl: Duration) {
    let mut every = tokio::time::interval(ttl / 3);
    every.tick().await;
    loop {
        every.tick().await;
        match slots.renew_lock(&site, id, &owner, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                log::warn!("event=flight_lock_lost site={site} credential_id={id}");
                return;
            }
            Err(e) => log::warn!(
                "event=flight_lock_renewal_failed site={site} credential_id={id} error=\"{e}\""
            ),
        }
    }
}

impl Drop for FlightLock {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.renewal.abort();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = held.slots.unlock(&held.site, held.id, &held.owner).await {
                        log::warn!(
                            "event=flight_unlock_failed site={} credential_id={} error=\"{e}\" action=lock_will_expire",
                            held.site,
                            held.id
                        );
                    }
                });
            }
        }
    }
}

impl Slots {
    pub fn new(
        actor: Addr<ConcurrencyActor>,
        redis: Option<RedisSlots>,
        config: &ConcurrencyConfig,
    ) -> Slots {
        Slots {
            actor,
            redis,
            limits: Arc::new(Mutex::new(SlotLimits {
                global: config.max_concurrent_acquisitions,
                per_site: config.max_concurrent_per_site,
                per_account: config.max_concurrent_per_account,
            })),
            config: config.clone(),
            degraded: Arc::default(),
            last_failure: Arc::default(),
            wake: Arc::default(),
        }
    }

    pub fn actor(&self) -> &Addr<ConcurrencyActor> {
        &self.actor
    }

    /// The slots held and waited for in this process.
    pub async fn usage_here(&self) -> Result<SlotUsage> {
        Ok(self.actor.send(Usage).await?)
    }

    /// Slots held and waiters queued across instances (Redis); `None` in process.
    pub async fn usage_shared(&self) -> Option<Result<(u64, u64)>> {
        Some(self.redis.as_ref()?.usage().await)
    }

    /// Frees the slots held past their lease and drops the waiters that gave up, in this
    /// process: (leases, waiters).
    pub async fn cleanup_here(&self) -> Result<(usize, usize)> {
        Ok(self.actor.send(Cleanup).await?)
    }

    /// The same across instances (Redis); `None` in process.
    pub async fn cleanup_shared(&self) -> Option<Result<(u64, u64)>> {
        Some(self.redis.as_ref()?.cleanup().await)
    }

    /// "redis", "memory", or "memory (redis unreachable)".
    pub fn mode(&self) -> &'static str {
        match (&self.redis, self.degraded.load(Ordering::Relaxed)) {
            (None, _) => "memory",
            (Some(_), false) => "redis",
            (Some(_), true) => "memory (redis unreachable)",
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Redis, unless it failed less than [`RETRY_REDIS_AFTER`] ago.
    fn shared(&self) -> Option<&RedisSlots> {
        let redis = self.redis.as_ref()?;
        let last = *self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        match last {
            Some(at) if at.elapsed() < RETRY_REDIS_AFTER => None,
            _ => Some(redis),
        }
    }

    fn redis_failed(&self, e: &Error) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if !self.degraded.swap(true, Ordering::Relaxed) {
            log::warn!("event=slots_fallback mode=in_process error=\"{e}\"");
        }
    }

    fn redis_ok(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
            log::info!("event=slots_restored mode=redis");
        }
    }

    /// The cache found Redis unreachable (its breaker is open): the slots use the same Redis,
    /// so they take the in-process fallback now, and say so, rather than each login finding
    /// out by waiting on it. Nothing to do without Redis or when the cache reaches it; the
    /// cache's background probe ends the fallback ([`Slots::probe`]).
    pub fn follow_cache_backend(&self, cache_up: bool) {
        if self.redis.is_some() && !cache_up {
            self.redis_failed(&Error::CacheUnavailable(
                "the cache found Redis unreachable".into(),
            ));
        }
    }

    /// While in the fallback, asks Redis whether it is back and, if so, leaves the fallback
    /// (the background probe of `CacheActor`), so that health does not wait for an
    /// acquisition to find out.
    pub async fn probe(&self) {
        let Some(redis) = &self.redis else {
            return;
        };
        if !self.is_degraded() {
            return;
        }
        match redis.limits().await {
            Ok(_) => self.redis_ok(),
            Err(e) => self.redis_failed(&e),
        }
    }

    fn current_limits(&self) -> SlotLimits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for (site, account), waiting at most `queue_timeout`.
    pub async fn acquire(&self, site: &str, account: &str) -> Result<Slot> {
        let wait = seconds(self.config.queue_timeout);
        if let Some(redis) = self.shared() {
            let ask = SlotRequest {
                site,
                account,
                limits: self.current_limits(),
                lease: seconds(self.config.acquisition_timeout),
                wait,
                max_queue: self.config.max_queue_len as usize,
            };
            match redis.acquire(&ask, &self.wake).await {
                Ok(lease) => {
                    self.redis_ok();
                    let remote = RemoteSlot {
                        lease,
                        slots: redis.clone(),
                        wake: self.wake.clone(),
                    };
                    return Ok(Slot::remote(remote, ask.lease));
                }
                Err(e @ Error::CacheUnavailable(_)) => self.redis_failed(&e),
                Err(e) => return Err(e),
            }
        }
        let guard = acquire_slot(&self.actor, site, account, wait).await?;
        Ok(Slot::local(
            guard,
            self.actor.clone(),
            seconds(self.config.acquisition_timeout),
        ))
    }

    /// The single-flight lock of an account across instances (a no-op without Redis, where
    /// the in-process lock of the broker suffices), waiting at most `wait` for a holder's
    /// login to finish. Its holder renews it, so only a holder that is gone loses it, after
    /// `lock_timeout`. A Redis error while waiting is retried; errors that go on for
    /// [`redis::ERROR_GRACE`] end the wait with `CACHE_UNAVAILABLE` when another instance was
    /// seen holding the lock — never with a lock this instance does not hold. The in-process
    /// fallback is for a Redis that is down: known down before the wait, or silent throughout.
    pub async fn lock(
        &self,
        site: &str,
        credential_id: i64,
        account: &str,
        wait: Duration,
    ) -> Result<FlightLock> {
        let Some(redis) = self.shared() else {
            return Ok(FlightLock { held: None });
        };
        let ttl = seconds(self.config.lock_timeout);
        let deadline = Instant::now() + wait;
        let mut pause = LOCK_POLL_MIN;
        let mut errors = redis::ErrorStreak::default();
        // Whether Redis said, during this wait, that another instance holds the lock.
        let mut seen_held = false;
        loop {
            match redis.try_lock(site, credential_id, ttl).await {
                Ok(Some(owner)) => {
                    self.redis_ok();
                    return Ok(FlightLock::held(
                        redis.clone(),
                        site,
                        credential_id,
                        owner,
                        ttl,
                    ));
                }
                Ok(None) => {
                    seen_held = true;
                    errors.answered();
                }
                Err(e) => {
                    if errors.failed() {
                        self.redis_failed(&e);
                        if seen_held {
                            // Another instance may be logging in: give the account up.
                            return Err(e);
                        }
                        // Redis has not answered since this wait began: it is down, and
                        // the limits hold in process until it is back.
                        return Ok(FlightLock { held: None });
                    }
                    log::warn!("event=flight_lock_redis_error site={site} account={account} error=\"{e}\" action=retry");
                }
            }
            if Instant::now() + pause >= deadline {
                return Err(Error::Timeout(format!(
                    "the login of account `{account}` on another instance did not finish within this acquisition's time"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LOCK_POLL_MAX);
        }
    }

    /// Changes the limits at run time: in this process, and for every instance via Redis.
    pub async fn set_limits(&self, limits: SlotLimits) -> Result<SlotLimits> {
        let limits = self.actor.send(SetLimits(limits)).await??;
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
        if let Some(redis) = &self.redis {
            redis.set_limits(limits).await?;
        }
        self.wake.notify_waiters();
        Ok(limits)
    }

    /// The limits in force and where they come from: the shared ones from Redis when set
    /// there; this instance's without Redis (or while none is set there); and while Redis
    /// cannot be read, the in-process ones the fallback holds, with the error, never passed
    /// off as the shared ones.
    pub async fn limits(&self) -> LimitsInForce {
        let here = self.current_limits();
        let Some(redis) = &self.redis else {
            return LimitsInForce::of(here, LimitsSource::Local, None);
        };
        if self.shared().is_none() {
            let error = "Redis is unreachable: the in-process fallback holds these limits";
            return LimitsInForce::of(here, LimitsSource::Fallback, Some(error.into()));
        }
        match redis.limits().await {
            Ok(Some(limits)) => LimitsInForce::of(limits, LimitsSource::Redis, None),
            Ok(None) => LimitsInForce::of(here, LimitsSource::Local, None),
            Err(e) => {
                log::warn!("event=slots_limits_unread reported=in_process error=\"{e}\"");
                self.redis_failed(&e);
                LimitsInForce::of(here, LimitsSource::Fallback, Some(e.to_string()))
            }
        }
    }
}

/// Where the limits [`Slots::limits`] reports come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitsSource {
    /// Set in Redis: every instance holds them.
    Redis,
    /// This instance's: no Redis, or none set there (the Redis script then uses these).
    Local,
    /// Redis cannot be read: this process holds these in its fallback; the shared ones
    /// are unknown.
    Fallback,
}

/// The limits in force, where they come from and, for the fallback, why.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsInForce {
    pub limits: SlotLimits,
    pub source: LimitsSource,
    pub error: Option<String>,
}

impl LimitsInForce {
    fn of(limits: SlotLimits, source: LimitsSource, error: Option<String>) -> LimitsInForce {
        LimitsInForce {
            limits,
            source,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use actix::Actor;

    use super::*;
    use crate::actors::concurrency::{SlotUsage, Usage};

    /// In-process slots with these limits; a waiter gives up after 0.2 s.
    fn slots(global: u32, per_site: u32, per_account: u32) -> Slots {
        let config = ConcurrencyConfig {
            max_concurrent_acquisitions: global,
            max_concurrent_per_site: per_site,
            max_concurrent_per_account: per_account,
            queue_timeout: 0.2,
            acquisition_timeout: 0.3,
            ..ConcurrencyConfig::default()
        };
        Slots::new(ConcurrencyActor::new(&config).start(), None, &config)
    }

    /// The same slots, with waiters that wait long enough for anything the test does.
    fn patient(slots: Slots) -> Slots {
        Slots {
            config: ConcurrencyConfig {
                queue_timeout: 10.0,
                ..slots.config.clone()
            },
            ..slots
        }
    }

    async fn usage_until(slots: &Slots, what: &str, holds: impl Fn(&SlotUsage) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let usage = slots.actor().send(Usage).await.unwrap();
            if holds(&usage) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {usage:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn timed_out(answer: Result<Slot>) -> bool {
        matches!(answer, Err(Error::QueueTimeout(_)))
    }

    #[actix_rt::test]
    async fn limits_in_total_per_site_and_per_account_hold_until_a_slot_is_dropped() {
        let slots = slots(3, 2, 1);
        assert_eq!(slots.mode(), "memory");
        let alice = slots.acquire("s", "alice").await.unwrap();
        assert_eq!(alice.fence(), 0, "in-process slots are unfenced");
        assert!(timed_out(slots.acquire("s", "alice").await), "per account");
        let bob = slots.acquire("s", "bob").await.unwrap();
        assert!(timed_out(slots.acquire("s", "carol").await), "per site");
        let other_site = slots.acquire("t", "alice").await.unwrap();
        assert!(timed_out(slots.acquire("u", "dave").await), "in total");
        drop(alice);
        // The slot comes back: the site and the total have room again.
        let carol = slots.acquire("s", "carol").await.unwrap();
        drop((bob, carol, other_site));
        usage_until(&slots, "every slot released", |u| u.active_total == 0).await;
    }

    #[actix_rt::test]
    async fn waiters_are_served_in_arrival_order() {
        let slots = patient(slots(1, 1, 1));
        let held = slots.acquire("s", "a").await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (n, account) in ["a", "b", "a", "c"].into_iter().enumerate() {
            let (slots2, order) = (slots.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let slot = slots2.acquire("s", account).await.unwrap();
                order.lock().unwrap().push(n);
                drop(slot);
            }));
            usage_until(&slots, "the waiter queued", |u| u.queue_size == n + 1).await;
        }
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[actix_rt::test]
    async fn a_login_that_outlives_its_lease_keeps_its_slot() {
        let slots = slots(1, 1, 1);
        let slot = slots.acquire("s", "a").await.unwrap();
        // The login runs for more than three leases (0.3 s each): the slot renews itself.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            slots
                .actor()
                .send(crate::actors::concurrency::Cleanup)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let usage = slots.actor().send(Usage).await.unwrap();
        assert_eq!((usage.active_total, usage.recovered_deadlocks), (1, 0));
        assert!(
            timed_out(slots.acquire("s", "b").await),
            "the slot was lost"
        );
        drop(slot);
        slots.acquire("s", "b").await.unwrap();
    }

    #[actix_rt::test]
    async fn without_redis_the_flight_lock_is_the_brokers_own() {
        let slots = slots(1, 1, 1);
        let first = slots.lock("s", 1, "a", Duration::ZERO).await.unwrap();
        let second = slots.lock("s", 1, "a", Duration::ZERO).await.unwrap();
        assert!(!first.is_shared() && !second.is_shared());
    }

    #[actix_rt::test]
    async fn raised_limits_serve_the_waiters() {
        let slots = patient(slots(1, 1, 1));
        let held = slots.acquire("s", "a").await.unwrap();
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("t", "b").await.map(|_| ()) }
        });
        usage_until(&slots, "the waiter queued", |u| u.queue_size == 1).await;
        let raised = SlotLimits {
            global: 2,
            per_site: 1,
            per_account: 1,
        };
        assert_eq!(slots.set_limits(raised).await.unwrap(), raised);
        waiter.await.unwrap().unwrap();
        let in_force = slots.limits().await;
        assert_eq!(
            (in_force.limits, in_force.source),
            (raised, LimitsSource::Local)
        );
        drop(held);
    }

    #[actix_rt::test]
    async fn an_unreachable_redis_falls_back_to_in_process_slots() {
        let config = ConcurrencyConfig {
            max_concurrent_per_account: 1,
            queue_timeout: 10.0,
            ..ConcurrencyConfig::default()
        };
        let store =
            crate::cache::redis_store::RedisStore::connect("redis://127.0.0.1:1/0").unwrap();
        let redis = RedisSlots::new(store.connection(), "tokend-unit");
        let slots = Slots::new(ConcurrencyActor::new(&config).start(), Some(redis), &config);
        assert_eq!(slots.mode(), "redis");
        // Redis errors go on for the grace period, then the slot is taken in process.
        let slot = slots.acquire("s", "a").await.unwrap();
        assert_eq!(slots.mode(), "memory (redis unreachable)");
        assert!(slots.is_degraded());
        assert_eq!(slot.fence(), 0);
        // The in-process limits hold meanwhile, and Redis is not waited for again.
        let started = Instant::now();
        let second = slots.acquire("s", "b").await.unwrap();
        assert!(
            started.elapsed() < redis::ERROR_GRACE,
            "waited for Redis again"
        );
        let usage = slots.actor().send(Usage).await.unwrap();
        assert_eq!(usage.active_total, 2);
        drop((slot, second));
    }

    #[actix_rt::test]
    async fn limits_that_redis_cannot_give_are_reported_as_the_fallback_with_the_error() {
        let config = ConcurrencyConfig::default();
        let store =
            crate::cache::redis_store::RedisStore::connect("redis://127.0.0.1:1/0").unwrap();
        let redis = RedisSlots::new(store.connection(), "tokend-unit");
        let slots = Slots::new(ConcurrencyActor::new(&config).start(), Some(redis), &config);
        let in_force = slots.limits().await;
        assert_eq!(in_force.source, LimitsSource::Fallback);
        assert!(in_force.error.is_some(), "{in_force:?}");
        assert!(slots.is_degraded());
        // Within the retry pause too, without asking Redis again.
        let again = slots.limits().await;
        assert_eq!(again.source, LimitsSource::Fallback);
        assert_eq!(again.limits, in_force.limits);
    }
}

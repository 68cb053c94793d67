//! Login slots as the pipeline sees them: in-process ([`concurrency`], `ConcurrencyActor`) or
//! shared by every instance through Redis ([`redis::RedisSlots`]), with the same semantics
//! (SPEC §1, §9).
//!
//! With Redis configured, slots, the queue order and the single-flight lock live in Redis.
//! Whether Redis is in use is the state of the one Redis link ([`crate::redis::RedisLink`]):
//! while its breaker is open, slots and locks are taken in process (logged once by the link,
//! shown in `/health` and `/resource-usage`), at the same moment as every other policy falls
//! back, and they go back to Redis when the link's probe finds it back.

pub mod concurrency;
pub mod redis;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use tokio::sync::Notify;

use self::concurrency::{
    acquire_slot, ConcurrencyActor, ReclaimExpired, RenewLease, SetLimits, SlotUsage, Usage,
};
pub use self::concurrency::{SlotGuard, SlotLimits};
use self::redis::{RedisSlots, RemoteLease, SlotRequest};
use crate::config::{seconds, ConcurrencyConfig};
use crate::error::{Error, Result};
use crate::redis::Admit;

/// First and longest wait between two tries at a lock another instance holds.
const LOCK_POLL_MIN: Duration = Duration::from_millis(5);
const LOCK_POLL_MAX: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Slots {
    actor: Addr<ConcurrencyActor>,
    redis: Option<RedisSlots>,
    config: ConcurrencyConfig,
    /// The limits this instance offers as defaults to the Redis script (run-time changes
    /// are shared through Redis itself).
    limits: Arc<Mutex<SlotLimits>>,
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
    /// How long the lease lasts unless renewed (`acquisition_timeout`).
    length: Duration,
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
            let length = remote.length;
            // Outside a runtime (process exit) the lease simply expires.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    release_slot(&slots, &lease, length).await;
                    wake.notify_waiters();
                });
            }
        }
    }
}

/// Frees a lease in Redis: a failed release (a reset, a Redis that went silent) is retried
/// until it lands or the lease has run out (`length` from now at most, as its holder renews it
/// no more), so that a lost release does not hold a slot for a whole lease.
async fn release_slot(slots: &RedisSlots, lease: &RemoteLease, length: Duration) {
    let expired = Instant::now() + length;
    let mut pause = LOCK_POLL_MAX;
    let mut failed = false;
    loop {
        match slots.release(lease).await {
            Ok(_) => {
                if failed {
                    log::info!("event=slot_released_after_retry site={}", lease.site);
                }
                return;
            }
            Err(e) if Instant::now() + pause >= expired => {
                log::warn!(
                    "event=slot_release_failed site={} error=\"{e}\" action=lease_expired",
                    lease.site
                );
                return;
            }
            Err(e) => {
                if !failed {
                    log::warn!(
                        "event=slot_release_failed site={} error=\"{e}\" action=retry",
                        lease.site
                    );
                }
                failed = true;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The single-flight lock of an account across instances; renewed while held (so a login
/// that outlives `lock_timeout` keeps it), unlocked when dropped (the unlock retried until it
/// lands or the lock has expired).
///
/// A lock taken in process while Redis was unreachable is *unconfirmed*: it is tried in
/// Redis in the background until Redis answers (then held and renewed there like any other),
/// and [`Slots::confirm`] asks Redis once more before a login starts on it.
pub struct FlightLock {
    held: Option<HeldLock>,
}

struct HeldLock {
    slots: RedisSlots,
    site: String,
    id: i64,
    owner: String,
    ttl: Duration,
    state: Arc<LockState>,
    renewal: tokio::task::JoinHandle<()>,
}

/// What the holder and its background task know of a lock in Redis.
#[derive(Default)]
struct LockState {
    /// Redis said this owner holds the lock.
    confirmed: AtomicBool,
    /// When the last request that Redis answered "held by this owner" was sent: the lock
    /// lasts in Redis at least `ttl` from then.
    renewed_at: Mutex<Option<Instant>>,
    /// The lock is no longer this owner's (taken by another, or not renewed within its
    /// life): a login running on it must stop.
    lost: AtomicBool,
    lost_signal: tokio::sync::Notify,
    /// A login runs on the lock (an unconfirmed one that Redis shows held by another
    /// instance is then lost).
    in_use: AtomicBool,
    /// A lock request whose answer was lost may still run on the server until then: the
    /// release goes on until this instant, so that such a late request leaves no lock behind.
    unsure_until: Mutex<Option<Instant>>,
}

impl LockState {
    fn confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Relaxed)
    }

    /// Redis said this owner holds the lock, to a request sent at `sent`.
    fn held_since(&self, sent: Instant) {
        self.confirmed.store(true, Ordering::Relaxed);
        *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(sent);
    }

    fn renewed_at(&self) -> Option<Instant> {
        *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lose(&self, site: &str, id: i64, why: &str) {
        log::warn!("event=flight_lock_lost site={site} credential_id={id} reason=\"{why}\" action=login_stopped");
        self.lost.store(true, Ordering::Release);
        self.lost_signal.notify_waiters();
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// A lock request sent at `sent` got no answer.
    fn unsure(&self, sent: Instant, ttl: Duration) {
        let mut until = self.unsure_until.lock().unwrap_or_else(|p| p.into_inner());
        *until = Some(until.map_or(sent + ttl, |u| u.max(sent + ttl)));
    }

    fn unsure_until(&self) -> Option<Instant> {
        *self.unsure_until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How often an unconfirmed lock is tried in Redis, and how long the try before a login
/// waits for one answer.
const CONFIRM_EVERY: Duration = Duration::from_millis(250);
const CONFIRM_TRY: Duration = Duration::from_millis(500);
/// The same while the link is down: what a login on an in-process lock pays for asking a
/// silent Redis (one that refuses answers at once). A Redis that is back (before the link's
/// probe found out) answers in far less; one that does not is asked on by the lock's
/// background task, which reports a conflict (`flight_lock_conflict`).
const CONFIRM_TRY_DOWN: Duration = Duration::from_millis(100);
/// How soon a failed renewal is tried again.
const RENEW_RETRY: Duration = Duration::from_millis(250);
/// How long before a lock's life in Redis ends (counted from the last renewal's sending) its
/// holder, unable to renew it, takes it for lost: the round trip and the clocks' drift.
const LOST_MARGIN: Duration = Duration::from_millis(500);

impl FlightLock {
    /// Whether the lock is held in Redis (not the in-process fallback, or a no-op without
    /// Redis).
    pub fn is_shared(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.state.confirmed())
    }

    /// A login starts on the lock: from now on, an unconfirmed lock that Redis shows held by
    /// another instance is lost ([`FlightLock::lost`]) rather than waited for.
    pub fn login_starts(&self) {
        if let Some(held) = &self.held {
            held.state.in_use.store(true, Ordering::Release);
        }
    }

    /// Ends when the lock is no longer this holder's (issue 27): another instance took it, or
    /// it could not be renewed before its life in Redis ends. A login on it must stop then,
    /// before another instance may start one. Never ends for a lock that is not in Redis.
    pub async fn lost(&self) {
        let Some(held) = &self.held else {
            return std::future::pending().await;
        };
        loop {
            // Registered on creation: a loss signalled between the look and the wait is seen.
            let signalled = held.state.lost_signal.notified();
            if held.state.is_lost() {
                return;
            }
            signalled.await;
        }
    }

    fn new(
        slots: &RedisSlots,
        site: &str,
        id: i64,
        owner: String,
        ttl: Duration,
        state: LockState,
    ) -> FlightLock {
        let state = Arc::new(state);
        let renewal = tokio::spawn(keep_lock(
            slots.clone(),
            site.to_string(),
            id,
            owner.clone(),
            ttl,
            state.clone(),
        ));
        FlightLock {
            held: Some(HeldLock {
                slots: slots.clone(),
                site: site.to_string(),
                id,
                owner,
                ttl,
                state,
                renewal,
            }),
        }
    }
}

/// Keeps a lock while its holder runs: an unconfirmed one is tried in Redis until Redis
/// answers; a held one is renewed every third of its life. A failed renewal is tried again
/// after [`RENEW_RETRY`]; a lock found taken, or one whose renewals fail until its life in
/// Redis is about to end, is lost ([`FlightLock::lost`]): its login stops.
async fn keep_lock(
    slots: RedisSlots,
    site: String,
    id: i64,
    owner: String,
    ttl: Duration,
    state: Arc<LockState>,
) {
    let mut conflict_told = false;
    while !state.confirmed() {
        // Unsure until answered: the holder may drop the lock (and abort this task) while
        // the request is under way, and it may still run on the server.
        let sent = Instant::now();
        state.unsure(sent, ttl);
        // Whatever the link's breaker says: this task runs off the caller's path, and its
        // answer is the first news that Redis is back.
        match slots.try_lock(&site, id, &owner, ttl, Admit::Always).await {
            Ok(true) => {
                state.held_since(sent);
                log::info!("event=flight_lock_confirmed site={site} credential_id={id}");
            }
            Ok(false) if state.in_use.load(Ordering::Acquire) => {
                // A login runs here on the in-process lock while another instance holds
                // the account's lock in Redis: this one stops.
                return state.lose(&site, id, "held in Redis by another instance");
            }
            Ok(false) if !conflict_told => {
                conflict_told = true;
                log::warn!("event=flight_lock_conflict site={site} credential_id={id} held_by=another_instance");
            }
            Ok(false) | Err(_) => {}
        }
        tokio::time::sleep(CONFIRM_EVERY).await;
    }
    renew_lock(&slots, &site, id, &owner, ttl, &state).await;
}

/// Renews a held lock until it is lost (the holder's drop aborts this).
async fn renew_lock(
    slots: &RedisSlots,
    site: &str,
    id: i64,
    owner: &str,
    ttl: Duration,
    state: &LockState,
) {
    let mut next = state.renewed_at().unwrap_or_else(Instant::now) + ttl / 3;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let sent = Instant::now();
        // The last moment the lock is surely this holder's: a renewal not answered by then
        // (a silent Redis answers only after the command timeout) is a loss.
        let lapses = state.renewed_at().unwrap_or(sent) + ttl.saturating_sub(LOST_MARGIN);
        let renewed = slots.renew_lock(site, id, owner, ttl);
        match tokio::time::timeout_at(lapses.into(), renewed).await {
            Ok(Ok(true)) => {
                state.held_since(sent);
                next = sent + ttl / 3;
            }
            Ok(Ok(false)) => return state.lose(site, id, "another holder has it"),
            Ok(Err(e)) if Instant::now() + RENEW_RETRY < lapses => {
                log::warn!(
                    "event=flight_lock_renewal_failed site={site} credential_id={id} error=\"{e}\""
                );
                next = Instant::now() + RENEW_RETRY;
            }
            Ok(Err(e)) => {
                let why = format!("not renewed within its life ({ttl:.0?}): {e}");
                return state.lose(site, id, &why);
            }
            Err(_) => {
                let why = format!("no answer to its renewal within its life ({ttl:.0?})");
                return state.lose(site, id, &why);
            }
        }
    }
}

/// Frees `owner`'s lock: a failed unlock is retried until it lands or the lock has expired
/// (`ttl` from now at most, as its holder renews it no more); with `settle`, unlocks go on
/// until that instant anyway, for a lock request that may still run late on the server.
async fn release_lock(
    slots: RedisSlots,
    site: String,
    id: i64,
    owner: String,
    ttl: Duration,
    settle: Option<Instant>,
) {
    let expired = Instant::now() + ttl;
    let mut pause = LOCK_POLL_MAX;
    let mut failed = false;
    loop {
        match slots.unlock(&site, id, &owner).await {
            Ok(_) if settle.is_none_or(|until| Instant::now() >= until) => {
                if failed {
                    log::info!("event=flight_unlocked_after_retry site={site} credential_id={id}");
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if Instant::now() >= settle.map_or(expired, |until| until.max(expired)) {
                    log::warn!("event=flight_unlock_failed site={site} credential_id={id} error=\"{e}\" action=lock_expired");
                    return;
                }
                if !failed {
                    log::warn!("event=flight_unlock_failed site={site} credential_id={id} error=\"{e}\" action=retry");
                }
                failed = true;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Releases `owner`'s lock in the background (outside a runtime, at process exit, the lock
/// simply expires).
fn spawn_release(
    slots: &RedisSlots,
    site: &str,
    id: i64,
    owner: &str,
    ttl: Duration,
    settle: Option<Instant>,
) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let task = release_lock(
            slots.clone(),
            site.to_string(),
            id,
            owner.to_string(),
            ttl,
            settle,
        );
        runtime.spawn(task);
    }
}

impl Drop for FlightLock {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.renewal.abort();
            let settle = held.state.unsure_until();
            spawn_release(
                &held.slots,
                &held.site,
                held.id,
                &held.owner,
                held.ttl,
                settle,
            );
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
            wake: Arc::default(),
        }
    }

    /// The Redis link the shared slots use; `None` in process.
    pub fn link(&self) -> Option<&crate::redis::RedisLink> {
        self.redis.as_ref().map(RedisSlots::link)
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
        Ok(self.actor.send(ReclaimExpired).await?)
    }

    /// The same across instances (Redis); `None` in process.
    pub async fn cleanup_shared(&self) -> Option<Result<(u64, u64)>> {
        Some(self.redis.as_ref()?.cleanup().await)
    }

    /// "redis", "memory", or "memory (redis unreachable)".
    pub fn mode(&self) -> &'static str {
        match &self.redis {
            None => "memory",
            Some(redis) if redis.link().is_up() => "redis",
            Some(_) => "memory (redis unreachable)",
        }
    }

    /// Whether the in-process fallback is in use because the Redis link is not up.
    pub fn is_degraded(&self) -> bool {
        self.redis.as_ref().is_some_and(|r| !r.link().is_up())
    }

    /// Redis, while the link is up.
    fn shared(&self) -> Option<&RedisSlots> {
        self.redis.as_ref().filter(|r| r.link().is_up())
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
                    let remote = RemoteSlot {
                        lease,
                        length: ask.lease,
                        slots: redis.clone(),
                        wake: self.wake.clone(),
                    };
                    return Ok(Slot::remote(remote, ask.lease));
                }
                // Redis did not answer (the link has logged it): in process, at once.
                Err(Error::CacheUnavailable(_)) => {}
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
    /// fallback is for a Redis that is down (known down before the wait, or silent
    /// throughout), and its lock is unconfirmed: see [`Slots::confirm`]. Every try of one
    /// wait carries the same owner id, and a wait that ends without the lock after a try
    /// went unanswered releases that owner's lock once Redis answers.
    pub async fn lock(
        &self,
        site: &str,
        credential_id: i64,
        account: &str,
        wait: Duration,
    ) -> Result<FlightLock> {
        let Some(redis) = &self.redis else {
            return Ok(FlightLock { held: None });
        };
        let ttl = seconds(self.config.lock_timeout);
        let owner = uuid::Uuid::new_v4().to_string();
        let state = LockState::default();
        if self.shared().is_none() {
            // Redis failed moments ago: not waited on now, but tried in the background and
            // asked again before the login starts.
            return Ok(FlightLock::new(
                redis,
                site,
                credential_id,
                owner,
                ttl,
                state,
            ));
        }
        let deadline = Instant::now() + wait;
        let mut pause = LOCK_POLL_MIN;
        let mut errors = redis::ErrorStreak::default();
        // Whether Redis said, during this wait, that another instance holds the lock.
        let mut seen_held = false;
        loop {
            let sent = Instant::now();
            match redis
                .try_lock(site, credential_id, &owner, ttl, Admit::WhenUp)
                .await
            {
                Ok(true) => {
                    state.held_since(sent);
                    return Ok(FlightLock::new(
                        redis,
                        site,
                        credential_id,
                        owner,
                        ttl,
                        state,
                    ));
                }
                Ok(false) => {
                    seen_held = true;
                    errors.answered();
                }
                // A wait whose time ran out during the failed try ends as any other (below);
                // otherwise a Redis taken for down ends the wait at once.
                Err(e) if Instant::now() < deadline => {
                    state.unsure(sent, ttl);
                    if !redis.link().is_up() || errors.failed() {
                        if seen_held {
                            // Another instance may be logging in: give the account up.
                            let settle = state.unsure_until();
                            spawn_release(redis, site, credential_id, &owner, ttl, settle);
                            return Err(e);
                        }
                        // Redis has not answered since this wait began: it is down, and
                        // the limits hold in process until it is back.
                        return Ok(FlightLock::new(
                            redis,
                            site,
                            credential_id,
                            owner,
                            ttl,
                            state,
                        ));
                    }
                    log::warn!("event=flight_lock_redis_error site={site} account={account} error=\"{e}\" action=retry");
                }
                Err(_) => state.unsure(sent, ttl),
            }
            if Instant::now() + pause >= deadline {
                if let Some(settle) = state.unsure_until() {
                    spawn_release(redis, site, credential_id, &owner, ttl, Some(settle));
                }
                return Err(Error::Timeout(format!(
                    "the login of account `{account}` on another instance did not finish within this acquisition's time"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LOCK_POLL_MAX);
        }
    }

    /// Just before a login starts on `lock`: a lock taken in process while Redis was
    /// unreachable is asked for in Redis now, whatever the link's breaker says (Redis may be
    /// back before the link's probe found out). Taken there, or Redis still unreachable (a
    /// try bounded by [`CONFIRM_TRY_DOWN`] while the link is down, by [`CONFIRM_TRY`] with
    /// errors given [`redis::ERROR_GRACE`] while it is up): the login may start. Held by another instance: waits for it at most `wait` (`true`: the caller
    /// then looks for the token that login left), else `TIMEOUT`, or `CACHE_UNAVAILABLE` if
    /// Redis stops answering meanwhile — no login starts beside a lock Redis holds.
    pub async fn confirm(&self, lock: &FlightLock, account: &str, wait: Duration) -> Result<bool> {
        let Some(held) = &lock.held else {
            return Ok(false);
        };
        let deadline = Instant::now() + wait;
        let mut pause = LOCK_POLL_MIN;
        let mut errors = redis::ErrorStreak::default();
        let mut seen_held = false;
        // With Sentinel or Cluster, Redis out of reach may be a failover under way: the
        // lock is asked for again until `failover_wait` has passed.
        let mut unreachable_since: Option<Instant> = None;
        while !held.state.confirmed() {
            let sent = Instant::now();
            let bound = if held.slots.link().is_up() {
                CONFIRM_TRY
            } else {
                CONFIRM_TRY_DOWN
            };
            let tried =
                held.slots
                    .try_lock(&held.site, held.id, &held.owner, held.ttl, Admit::Always);
            match tokio::time::timeout(bound, tried).await {
                Ok(Ok(true)) => {
                    held.state.held_since(sent);
                    log::info!(
                        "event=flight_lock_confirmed site={} account={account} waited={seen_held}",
                        held.site
                    );
                }
                Ok(Ok(false)) => {
                    seen_held = true;
                    errors.answered();
                }
                failed => {
                    held.state.unsure(sent, held.ttl);
                    let e = match failed {
                        Ok(Err(e)) => e,
                        _ => Error::CacheUnavailable("redis slots: timed out".into()),
                    };
                    // Redis is taken for unreachable: the login may start on the in-process
                    // lock (unless Redis showed another instance holding it).
                    if !held.slots.link().is_up() || errors.failed() {
                        let since = *unreachable_since.get_or_insert(sent);
                        if since.elapsed() >= held.slots.link().failover_wait() {
                            return if seen_held { Err(e) } else { Ok(false) };
                        }
                    }
                }
            }
            if held.state.confirmed() {
                break;
            }
            if Instant::now() + pause >= deadline {
                return Err(Error::Timeout(
                    if unreachable_since.is_some() && !seen_held {
                        format!("Redis did not come back (a failover?) within this acquisition's time; no login of account `{account}` was started")
                    } else {
                        format!("the login of account `{account}` on another instance did not finish within this acquisition's time")
                    },
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LOCK_POLL_MAX);
        }
        Ok(seen_held)
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
                LimitsInForce::of(here, LimitsSource::Fallback, Some(e.to_string()))
            }
        }
    }
}

/// Where the limits [`Slots::limits`] reports come from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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

    use self::concurrency::{SlotUsage, Usage};
    use super::*;

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
                .send(crate::slots::concurrency::ReclaimExpired)
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
        let link = crate::redis::RedisLink::open("redis://127.0.0.1:1/0", "tokend-unit").unwrap();
        let redis = RedisSlots::new(link);
        let slots = Slots::new(ConcurrencyActor::new(&config).start(), Some(redis), &config);
        assert_eq!(slots.mode(), "redis");
        // Nobody listens: the link's breaker opens at the first refusal, and the slot is
        // taken in process.
        let started = Instant::now();
        let slot = slots.acquire("s", "a").await.unwrap();
        assert!(started.elapsed() < redis::ERROR_GRACE, "waited out a grace");
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
        let link = crate::redis::RedisLink::open("redis://127.0.0.1:1/0", "tokend-unit").unwrap();
        let redis = RedisSlots::new(link);
        let slots = Slots::new(ConcurrencyActor::new(&config).start(), Some(redis), &config);
        let in_force = slots.limits().await;
        assert_eq!(in_force.source, LimitsSource::Fallback);
        assert!(in_force.error.is_some(), "{in_force:?}");
        assert!(slots.is_degraded());
        // While the link's breaker is open too, without asking Redis again.
        let again = slots.limits().await;
        assert_eq!(again.source, LimitsSource::Fallback);
        assert_eq!(again.limits, in_force.limits);
    }
}

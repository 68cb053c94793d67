//! Login slots, their wait queue and the single-flight locks in Redis, so that every tokend
//! sharing the Redis and `key_prefix` holds the same limits (SPEC §9). Every call goes through
//! the one Redis link ([`RedisLink`]): its keys (all under the `{P}` hash tag, see
//! [`crate::redis::keys`]), its scripts (`src/redis/scripts/slots_*.lua`, `lock_*.lua`) and its
//! breaker.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{P}:slots:leases` | sorted set | lease id → lease expiry (ms) |
//! | `{P}:slots:holders` | hash | lease id → `SITE\nACCOUNT` (what the per-site and per-account counts read) |
//! | `{P}:slots:queue`, `{P}:slots:queue-seq` | sorted set, counter | waiter id → arrival number (FIFO order) |
//! | `{P}:slots:waiters` | hash | waiter id → `deadline\nsite\naccount` |
//! | `{P}:slots:limits` | hash | `global`, `per_site`, `per_account` set at run time |
//! | `{P}:slots:site-limits` | hash | site → its adaptive limit (at most `per_site`) |
//! | `{P}:slots:fence` | counter | the fencing number of the latest grant (see below) |
//! | `{P}:slots:counts` | hash | live leases in all (`g`), per site, per account: kept by the grant and the release, counted again from the holders whenever `g` is not the number of live leases |
//! | `{P}:lock:SITE:ID` | string | the single-flight lock of an account: its owner, expiring after `lock_timeout` unless renewed |
//!
//! The grant script runs atomically, on Redis's clock (`TIME`, so instances' clocks do not
//! matter): it drops expired leases and waiters, counts the live leases per site and account
//! from their holders, walks the oldest [`FIFO_WINDOW`] waiters granting (on paper) every one
//! that could run, and grants the caller only if it can still run after them — FIFO among the
//! waiters that can run, and no head-of-line blocking; the window bounds the script's work
//! when the queue is long. Every key is passed as KEYS (none is built in a script), all of one
//! hash tag, as Redis Cluster needs.
//!
//! Fencing survives a Redis that lost its keys (SPEC §9): when the counter is missing, the
//! grant starts a new epoch at Redis's clock in microseconds, and never below the highest
//! fence stored in the `tokens` table. A Redis grants far fewer than one slot per
//! microsecond, so the new epoch is newer than any number the old one gave.

use std::time::Duration;

use crate::db::Pool;
use crate::error::{Error, Result};
use crate::redis::scripts::{
    LOCK_RELEASE, LOCK_RENEW, LOCK_TAKE, SLOTS_CLEANUP, SLOTS_GRANT, SLOTS_RELEASE, SLOTS_RENEW,
    SLOTS_USAGE,
};
use crate::redis::{Admit, RedisLink};
use crate::slots::concurrency::SlotLimits;

/// How the slots name themselves in errors and logs.
const WHAT: &str = "redis slots";

/// How long a grant waits for a replica to have it (`WAIT 1`, with Sentinel's replicas):
/// a failover right after the grant then keeps it.
const REPLICA_WAIT: Duration = Duration::from_millis(100);

/// How many of the oldest waiters the grant script considers before the caller.
pub const FIFO_WINDOW: usize = 64;

/// How long Redis errors may go on, with no answer in between, before a waiter gives up:
/// a reset connection is retried; a Redis that stays away ends the wait (never with a slot
/// or lock taken without Redis's word). The same grace as the link's breaker.
pub use crate::redis::ERROR_GRACE;

/// Redis errors in a row while waiting.
#[derive(Debug, Default)]
pub(crate) struct ErrorStreak {
    since: Option<tokio::time::Instant>,
}

impl ErrorStreak {
    /// Notes an error; `true` when errors have gone on for [`ERROR_GRACE`].
    pub(crate) fn failed(&mut self) -> bool {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        since.elapsed() >= ERROR_GRACE
    }

    pub(crate) fn answered(&mut self) {
        self.since = None;
    }
}

/// First and longest wait between two polls of a queued waiter.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct RedisSlots {
    link: RedisLink,
    /// The database, whose highest stored fence is the floor of a new fencing epoch.
    database: Option<Pool>,
}

/// What a waiter asks Redis for.
pub struct SlotRequest<'a> {
    pub site: &'a str,
    pub account: &'a str,
    /// This instance's limits, used where none were set at run time in Redis.
    pub limits: SlotLimits,
    /// How long the slot is held at most (`acquisition_timeout`).
    pub lease: Duration,
    /// How long to wait in the queue (`queue_timeout`).
    pub wait: Duration,
    pub max_queue: usize,
}

/// Removes a waiter (and a lease granted to it that never reached its caller) on drop.
struct WaiterGuard {
    slots: RedisSlots,
    id: String,
    site: String,
    armed: bool,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (slots, id, site) = (self.slots.clone(), self.id.clone(), self.site.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // A waiter that gave up: its queue entry, or a grant it never took.
                if let Err(e) = slots.release_id(&id, true).await {
                    log::warn!(
                        "event=slot_release_failed site={site} error=\"{e}\" action=lease_will_expire"
                    );
                }
            });
        }
    }
}

/// A slot granted in Redis: its lease id and fencing number.
#[derive(Debug, Clone)]
pub struct RemoteLease {
    pub id: String,
    pub fence: u64,
    pub site: String,
    pub account: String,
}

/// What one run of the grant script answered.
enum Grant {
    Granted(u64),
    Queued,
    /// The fencing counter is gone: ask the database for the floor of a new epoch.
    NewEpoch,
}

impl RedisSlots {
    pub fn new(link: RedisLink) -> RedisSlots {
        RedisSlots {
            link,
            database: None,
        }
    }

    /// The link these slots use (and whose state says whether they are in use).
    pub fn link(&self) -> &RedisLink {
        &self.link
    }

    /// Seeds a new fencing epoch no lower than the highest fence in `database`'s `tokens`.
    pub fn with_database(mut self, database: Pool) -> RedisSlots {
        self.database = Some(database);
        self
    }

    /// The floor of a new fencing epoch: the highest fence the database holds (0 without a
    /// database, or when it cannot be read: Redis's clock alone then makes the epoch).
    async fn fence_floor(&self) -> u64 {
        let Some(pool) = &self.database else {
            return 0;
        };
        match pool.run(crate::db::tokens::max_fence).await {
            Ok(max) => max.max(0) as u64,
            Err(e) => {
                log::warn!("event=fence_floor_unavailable error=\"{e}\" epoch=redis_clock");
                0
            }
        }
    }

    /// One try: granted (`Some`), queued (`None`), or `QUEUE_FULL`.
    /// One try at a slot; `queued` says whether an earlier try of this waiter was queued.
    async fn try_grant(
        &self,
        id: &str,
        ask: &SlotRequest<'_>,
        queued: bool,
    ) -> Result<Option<u64>> {
        let granted = self.try_grant_once(id, ask, queued).await?;
        if granted.is_some() {
            self.link.replicate(WHAT, REPLICA_WAIT).await;
        }
        Ok(granted)
    }

    async fn try_grant_once(
        &self,
        id: &str,
        ask: &SlotRequest<'_>,
        queued: bool,
    ) -> Result<Option<u64>> {
        match self.grant_once(id, ask, queued, -1).await? {
            Grant::NewEpoch => {
                let floor = self.fence_floor().await;
                log::warn!(
                    "event=fencing_epoch_started floor={floor} reason=redis_lost_the_counter"
                );
                match self.grant_once(id, ask, queued, floor as i64).await? {
                    Grant::Granted(fence) => Ok(Some(fence)),
                    _ => Ok(None),
                }
            }
            Grant::Granted(fence) => Ok(Some(fence)),
            Grant::Queued => Ok(None),
        }
    }

    /// One run of the grant script; `floor` is -1 until the database was asked.
    async fn grant_once(
        &self,
        id: &str,
        ask: &SlotRequest<'_>,
        queued: bool,
        floor: i64,
    ) -> Result<Grant> {
        let max_queue = ask.max_queue;
        let keys = self.link.keys();
        let mut script = SLOTS_GRANT.key(keys.slot_leases());
        script
            .key(keys.slot_holders())
            .key(keys.slot_queue())
            .key(keys.slot_queue_seq())
            .key(keys.slot_waiters())
            .key(keys.slot_limits())
            .key(keys.site_limits())
            .key(keys.fence())
            .key(keys.slot_counts())
            .arg(u8::from(queued))
            .arg(ask.lease.as_millis() as u64)
            .arg(id)
            .arg(ask.site)
            .arg(ask.account)
            .arg(ask.limits.global)
            .arg(ask.limits.per_site)
            .arg(ask.limits.per_account)
            .arg(max_queue)
            .arg(ask.wait.as_millis() as u64)
            .arg(FIFO_WINDOW)
            .arg(floor);
        let (state, fence): (i64, u64) = self.link.invoke(WHAT, Admit::WhenUp, &script).await?;
        match state {
            1 => Ok(Grant::Granted(fence)),
            2 => Ok(Grant::NewEpoch),
            -1 => Err(Error::QueueFull(max_queue)),
            _ => Ok(Grant::Queued),
        }
    }

    /// Waits for a slot at most `wait`, polling with a growing interval; `wake` shortens the
    /// wait when a slot is released by this instance.
    pub async fn acquire(
        &self,
        ask: &SlotRequest<'_>,
        wake: &tokio::sync::Notify,
    ) -> Result<RemoteLease> {
        let (site, account, wait) = (ask.site, ask.account, ask.wait);
        let id = uuid::Uuid::new_v4().to_string();
        // Whatever ends the wait but a grant handed out (an error, a timeout, the caller
        // going away), the waiter and any lease granted meanwhile are removed from Redis.
        let mut waiter = WaiterGuard {
            slots: self.clone(),
            id: id.clone(),
            site: site.to_string(),
            armed: true,
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = POLL_MIN;
        let mut errors = ErrorStreak::default();
        // Set once a try may have queued this waiter (an error may have, too).
        let mut queued = false;
        loop {
            let answer = self.try_grant(&id, ask, queued).await;
            queued = true;
            match answer {
                Ok(Some(fence)) => {
                    waiter.armed = false;
                    return Ok(RemoteLease {
                        id,
                        fence,
                        site: site.to_string(),
                        account: account.to_string(),
                    });
                }
                Ok(None) => errors.answered(),
                // Redis is taken for unreachable (this error opened the link's breaker, or
                // it was open): the wait ends now, and the caller falls back. Another error
                // (Redis answered, but not with a grant) is retried while errors do not go
                // on for the grace (never a slot taken without Redis's word).
                Err(e @ Error::CacheUnavailable(_)) => {
                    if !self.link.is_up() || errors.failed() {
                        return Err(e);
                    }
                    log::warn!(
                        "event=slot_wait_redis_error site={site} error=\"{e}\" action=retry"
                    );
                }
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(Error::QueueTimeout(format!(
                    "no login slot for site `{site}` within {:.0}s (queue_timeout)",
                    wait.as_secs_f64()
                )));
            }
            let _ = tokio::time::timeout(pause, wake.notified()).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// Frees the lease `id`; `waiter` when it may still wait in the queue. Sent whatever the
    /// breaker says: a release runs off the caller's path, and a lost one holds a slot until
    /// its lease ends.
    async fn release_id(&self, id: &str, waiter: bool) -> Result<bool> {
        let keys = self.link.keys();
        let mut script = SLOTS_RELEASE.key(keys.slot_leases());
        script
            .key(keys.slot_holders())
            .key(keys.slot_queue())
            .key(keys.slot_waiters())
            .key(keys.slot_counts())
            .arg(id)
            .arg(u8::from(waiter));
        let n: u64 = self.link.invoke(WHAT, Admit::Always, &script).await?;
        Ok(n > 0)
    }

    /// Extends a lease whose login still runs; `false` when the lease is gone.
    pub async fn renew(&self, lease: &RemoteLease, length: Duration) -> Result<bool> {
        let keys = self.link.keys();
        let mut script = SLOTS_RENEW.key(keys.slot_leases());
        script
            .key(keys.slot_holders())
            .arg(&lease.id)
            .arg(length.as_millis() as u64);
        let n: u64 = self.link.invoke(WHAT, Admit::Always, &script).await?;
        Ok(n > 0)
    }

    pub async fn release(&self, lease: &RemoteLease) -> Result<bool> {
        self.release_id(&lease.id, false).await
    }

    /// One try at the single-flight lock of an account for `ttl` on behalf of `owner`:
    /// `true` when `owner` holds it now (taken, or already its own), `false` while another
    /// owner holds it. Every try of one wait uses the same owner, so a try that timed out
    /// and still ran on the server left a lock its waiter recognises (and releases).
    /// `admit`: a waiting caller asks through the breaker; the background confirmation of a
    /// lock taken in process asks whatever it says.
    pub async fn try_lock(
        &self,
        site: &str,
        credential_id: i64,
        owner: &str,
        ttl: Duration,
        admit: Admit,
    ) -> Result<bool> {
        let mut script = LOCK_TAKE.key(self.link.keys().lock(site, credential_id));
        script.arg(owner).arg(ttl.as_millis() as u64);
        let taken: u64 = self.link.invoke(WHAT, admit, &script).await?;
        if taken == 1 {
            self.link.replicate(WHAT, REPLICA_WAIT).await;
        }
        Ok(taken == 1)
    }

    /// Extends a lock this owner holds to `ttl` from now; `false` when it is no longer held.
    pub async fn renew_lock(
        &self,
        site: &str,
        credential_id: i64,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let mut script = LOCK_RENEW.key(self.link.keys().lock(site, credential_id));
        script.arg(owner).arg(ttl.as_millis() as u64);
        let renewed: u64 = self.link.invoke(WHAT, Admit::Always, &script).await?;
        Ok(renewed == 1)
    }

    /// Frees the lock if `owner` holds it; `true` when it did. Sent whatever the breaker
    /// says (a lost unlock locks the account out until the lock expires).
    pub async fn unlock(&self, site: &str, credential_id: i64, owner: &str) -> Result<bool> {
        let mut script = LOCK_RELEASE.key(self.link.keys().lock(site, credential_id));
        script.arg(owner);
        let freed: u64 = self.link.invoke(WHAT, Admit::Always, &script).await?;
        Ok(freed == 1)
    }

    /// Shares new limits with every instance.
    pub async fn set_limits(&self, limits: SlotLimits) -> Result<()> {
        let cmd = redis::cmd("HSET")
            .arg(self.link.keys().slot_limits())
            .arg("global")
            .arg(limits.global)
            .arg("per_site")
            .arg(limits.per_site)
            .arg("per_account")
            .arg(limits.per_account)
            .clone();
        self.link.query(WHAT, Admit::WhenUp, &cmd).await
    }

    /// The limits in force across instances, if any were set at run time.
    pub async fn limits(&self) -> Result<Option<SlotLimits>> {
        let cmd = redis::cmd("HMGET")
            .arg(self.link.keys().slot_limits())
            .arg("global")
            .arg("per_site")
            .arg("per_account")
            .clone();
        let values: Vec<Option<u32>> = self.link.query(WHAT, Admit::WhenUp, &cmd).await?;
        Ok(match values.as_slice() {
            [Some(global), Some(per_site), Some(per_account)] => Some(SlotLimits {
                global: *global,
                per_site: *per_site,
                per_account: *per_account,
            }),
            _ => None,
        })
    }

    /// Leases held across instances (expired ones dropped first) and the queue length.
    /// Expiry is judged on Redis's clock, as the grant script sets it: an instance whose
    /// clock runs ahead must not free live leases.
    pub async fn usage(&self) -> Result<(u64, u64)> {
        let keys = self.link.keys();
        let mut script = SLOTS_USAGE.key(keys.slot_leases());
        script.key(keys.slot_holders()).key(keys.slot_queue());
        self.link.invoke(WHAT, Admit::WhenUp, &script).await
    }

    /// Drops expired leases and waiters; returns how many of each. Expiry is judged on
    /// Redis's clock, as in [`RedisSlots::usage`].
    pub async fn cleanup(&self) -> Result<(u64, u64)> {
        let keys = self.link.keys();
        let mut script = SLOTS_CLEANUP.key(keys.slot_leases());
        script
            .key(keys.slot_holders())
            .key(keys.slot_queue())
            .key(keys.slot_waiters());
        self.link.invoke(WHAT, Admit::WhenUp, &script).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::Notify;

    use super::*;

    #[test]
    fn errors_give_the_wait_up_only_after_the_grace_with_no_answer_between() {
        let mut streak = ErrorStreak::default();
        assert!(!streak.failed(), "the first error is retried");
        assert!(!streak.failed());
        // Errors that began a grace ago end the wait.
        streak.since = Some(tokio::time::Instant::now() - ERROR_GRACE);
        assert!(streak.failed());
        // An answer in between starts the count again.
        streak.answered();
        assert!(!streak.failed());
    }

    /// Slots in the test Redis under a prefix of their own; `None` (skipped) when Redis is
    /// not there outside CI.
    async fn redis_slots() -> Option<RedisSlots> {
        crate::redis::test_link().await.map(RedisSlots::new)
    }

    fn ask<'a>(site: &'a str, account: &'a str, wait: Duration) -> SlotRequest<'a> {
        SlotRequest {
            site,
            account,
            limits: SlotLimits {
                global: 3,
                per_site: 2,
                per_account: 1,
            },
            lease: Duration::from_secs(30),
            wait,
            max_queue: 10,
        }
    }

    const BRIEF: Duration = Duration::from_millis(50);

    #[actix_rt::test]
    async fn limits_hold_and_a_release_frees_the_slot() {
        let Some(slots) = redis_slots().await else {
            return;
        };
        let wake = Notify::new();
        let timed_out = |answer: Result<RemoteLease>| matches!(answer, Err(Error::QueueTimeout(_)));
        let alice = slots
            .acquire(&ask("s", "alice", BRIEF), &wake)
            .await
            .unwrap();
        assert!(timed_out(
            slots.acquire(&ask("s", "alice", BRIEF), &wake).await
        ));
        let bob = slots.acquire(&ask("s", "bob", BRIEF), &wake).await.unwrap();
        assert!(bob.fence > alice.fence, "fences grow with each grant");
        assert!(timed_out(
            slots.acquire(&ask("s", "carol", BRIEF), &wake).await
        ));
        let other = slots
            .acquire(&ask("t", "carol", BRIEF), &wake)
            .await
            .unwrap();
        assert!(timed_out(
            slots.acquire(&ask("u", "dave", BRIEF), &wake).await
        ));
        // (The waiters that gave up leave the queue on their own, a moment later.)
        assert_eq!(slots.usage().await.unwrap().0, 3);
        assert!(slots.release(&alice).await.unwrap());
        // Released once only: a second release of the same lease frees nothing.
        assert!(!slots.release(&alice).await.unwrap());
        let carol = slots
            .acquire(&ask("s", "carol", BRIEF), &wake)
            .await
            .unwrap();
        for lease in [bob, other, carol] {
            assert!(slots.release(&lease).await.unwrap());
        }
        assert_eq!(slots.usage().await.unwrap().0, 0);
    }

    #[actix_rt::test]
    async fn a_release_of_an_unknown_lease_is_harmless() {
        let Some(slots) = redis_slots().await else {
            return;
        };
        let wake = Notify::new();
        let held = slots
            .acquire(&ask("s", "alice", BRIEF), &wake)
            .await
            .unwrap();
        let unknown = RemoteLease {
            id: "no-such-lease".into(),
            fence: 0,
            site: "s".into(),
            account: "alice".into(),
        };
        assert!(!slots.release(&unknown).await.unwrap());
        assert!(!slots.renew(&unknown, Duration::from_secs(1)).await.unwrap());
        assert_eq!(
            slots.usage().await.unwrap(),
            (1, 0),
            "the held slot was freed"
        );
        assert!(slots.release(&held).await.unwrap());
    }

    #[actix_rt::test]
    async fn an_expired_lease_frees_a_stuck_slot() {
        let Some(slots) = redis_slots().await else {
            return;
        };
        let wake = Notify::new();
        let short = SlotRequest {
            lease: Duration::from_millis(300),
            ..ask("s", "alice", BRIEF)
        };
        // The holder is gone without a release (crash, kill).
        let stuck = slots.acquire(&short, &wake).await.unwrap();
        // A waiter gets the slot once the lease runs out, on Redis's clock.
        let next = slots
            .acquire(&ask("s", "alice", Duration::from_secs(5)), &wake)
            .await
            .unwrap();
        assert!(next.fence > stuck.fence);
        assert!(!slots.renew(&stuck, Duration::from_secs(1)).await.unwrap());
        assert!(slots.release(&next).await.unwrap());
    }

    /// Expired leases leave the site and account sets lazily: until then they are not
    /// counted, and a late renewal does not bring them back.
    #[actix_rt::test]
    async fn an_expired_lease_left_in_the_site_set_neither_counts_nor_revives() {
        let Some(slots) = redis_slots().await else {
            return;
        };
        let wake = Notify::new();
        let one_per_site = |account| SlotRequest {
            limits: SlotLimits {
                global: 3,
                per_site: 1,
                per_account: 1,
            },
            ..ask("s", account, BRIEF)
        };
        let short = SlotRequest {
            lease: Duration::from_millis(300),
            ..one_per_site("alice")
        };
        let stuck = slots.acquire(&short, &wake).await.unwrap();
        // The usage count drops the expired lease from the global set only.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while slots.usage().await.unwrap().0 > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lease never expired"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!slots.renew(&stuck, Duration::from_secs(30)).await.unwrap());
        let carol = slots.acquire(&one_per_site("carol"), &wake).await.unwrap();
        assert!(carol.fence > stuck.fence);
        assert!(slots.release(&carol).await.unwrap());
    }

    /// The counts are kept beside the leases: lost (deleted) or off, they are counted again
    /// from the leases and their holders, and the limits still hold.
    #[actix_rt::test]
    async fn lost_or_wrong_counts_are_counted_again_and_the_limits_hold() {
        let Some(slots) = redis_slots().await else {
            return;
        };
        let wake = Notify::new();
        let timed_out = |answer: Result<RemoteLease>| matches!(answer, Err(Error::QueueTimeout(_)));
        let counts = slots.link().keys().slot_counts();
        let alice = slots
            .acquire(&ask("s", "alice", BRIEF), &wake)
            .await
            .unwrap();
        let bob = slots.acquire(&ask("s", "bob", BRIEF), &wake).await.unwrap();
        let del = ::redis::cmd("DEL").arg(&counts).clone();
        let _: u64 = slots
            .link()
            .query("test", Admit::Always, &del)
            .await
            .unwrap();
        // Site `s` holds its two (per_site 2): a third account waits and times out.
        assert!(timed_out(
            slots.acquire(&ask("s", "carol", BRIEF), &wake).await
        ));
        // Counts that say something else than the leases are not believed either.
        let off = ::redis::cmd("HSET")
            .arg(&counts)
            .arg("g")
            .arg(0)
            .arg("s\ns")
            .arg(0)
            .clone();
        let _: u64 = slots
            .link()
            .query("test", Admit::Always, &off)
            .await
            .unwrap();
        assert!(timed_out(
            slots.acquire(&ask("s", "alice", BRIEF), &wake).await
        ));
        assert!(slots.release(&bob).await.unwrap());
        let carol = slots
            .acquire(&ask("s", "carol", BRIEF), &wake)
            .await
            .unwrap();
        assert!(slots.release(&alice).await.unwrap());
        assert!(slots.release(&carol).await.unwrap());
        // Everything released: every site and account count is gone, the total is zero.
        let all = ::redis::cmd("HGETALL").arg(&counts).clone();
        let left: Vec<String> = slots
            .link()
            .query("test", Admit::Always, &all)
            .await
            .unwrap();
        assert_eq!(left, ["g", "0"]);
    }

    #[actix_rt::test]
    async fn waiters_are_served_in_arrival_order() {
        let Some(slots) = redis_slots().await else {
            return;
        };
        let wake = Arc::new(Notify::new());
        /// One slot in all: every waiter waits for the same one.
        fn one<'a>(site: &'a str, account: &'a str) -> SlotRequest<'a> {
            SlotRequest {
                limits: SlotLimits {
                    global: 1,
                    per_site: 1,
                    per_account: 1,
                },
                ..ask(site, account, Duration::from_secs(10))
            }
        }
        let held = slots.acquire(&one("s", "a"), &wake).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (n, (site, account)) in [("s", "b"), ("t", "c"), ("s", "a"), ("u", "d")]
            .into_iter()
            .enumerate()
        {
            let (slots2, wake, order) = (slots.clone(), wake.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let lease = slots2.acquire(&one(site, account), &wake).await.unwrap();
                order.lock().unwrap().push(n);
                slots2.release(&lease).await.unwrap();
                wake.notify_waiters();
            }));
            // Queued in Redis before the next one arrives.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while slots.usage().await.unwrap().1 < n as u64 + 1 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "waiter {n} not queued"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        slots.release(&held).await.unwrap();
        wake.notify_waiters();
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[actix_rt::test]
    async fn a_flight_lock_has_one_owner_until_unlocked() {
        let Some(slots) = redis_slots().await else {
            return;
        };
        let ttl = Duration::from_secs(30);
        let owner = "owner-one";
        assert!(slots
            .try_lock("s", 7, owner, ttl, Admit::WhenUp)
            .await
            .unwrap());
        assert!(!slots
            .try_lock("s", 7, "owner-two", ttl, Admit::WhenUp)
            .await
            .unwrap());
        // The owner's own late or repeated request finds the lock its own.
        assert!(slots
            .try_lock("s", 7, owner, ttl, Admit::WhenUp)
            .await
            .unwrap());
        // Another account's lock is free.
        assert!(slots
            .try_lock("s", 8, "owner-two", ttl, Admit::WhenUp)
            .await
            .unwrap());
        // Only the owner renews or unlocks it.
        assert!(!slots
            .renew_lock("s", 7, "not-the-owner", ttl)
            .await
            .unwrap());
        assert!(!slots.unlock("s", 7, "not-the-owner").await.unwrap());
        assert!(!slots
            .try_lock("s", 7, "owner-two", ttl, Admit::WhenUp)
            .await
            .unwrap());
        assert!(slots.renew_lock("s", 7, owner, ttl).await.unwrap());
        assert!(slots.unlock("s", 7, owner).await.unwrap());
        assert!(slots
            .try_lock("s", 7, "owner-two", ttl, Admit::WhenUp)
            .await
            .unwrap());
    }
}

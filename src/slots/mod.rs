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
use crate::actors::concurrency::{acquire_slot, ConcurrencyActor, SetLimits};
pub use crate::actors::concurrency::{SlotGuard, SlotLimits};
use crate::config::{seconds, ConcurrencyConfig};
use crate::error::{Error, Result};

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

/// A granted slot; dropping it releases the slot.
pub enum Slot {
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
    /// The fencing number of the grant: a token write with an older one is discarded. In-process
    /// slots give 0 (unfenced): one process cannot race itself past a lease, and their
    /// numbers are not comparable with the shared ones.
    pub fn fence(&self) -> u64 {
        match self {
            Slot::Local(_) => 0,
            Slot::Remote(remote) => remote.lease.fence,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Slot::Remote(remote) = self {
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

/// The single-flight lock of an account across instances; dropping it unlocks.
pub struct FlightLock {
    held: Option<(RedisSlots, String, i64, String)>,
}

impl Drop for FlightLock {
    fn drop(&mut self) {
        if let Some((slots, site, id, owner)) = self.held.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = slots.unlock(&site, id, &owner).await;
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

    pub fn redis(&self) -> Option<&RedisSlots> {
        self.redis.as_ref()
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
                    return Ok(Slot::Remote(Box::new(remote)));
                }
                Err(e @ Error::CacheUnavailable(_)) => self.redis_failed(&e),
                Err(e) => return Err(e),
            }
        }
        let guard = acquire_slot(&self.actor, site, account, wait).await?;
        Ok(Slot::Local(guard))
    }

    /// The single-flight lock of an account across instances (a no-op without Redis, where
    /// the in-process lock of the broker suffices). `TIMEOUT` after `lock_timeout`.
    pub async fn lock(&self, site: &str, credential_id: i64, account: &str) -> Result<FlightLock> {
        let Some(redis) = self.shared() else {
            return Ok(FlightLock { held: None });
        };
        let ttl = seconds(self.config.acquisition_timeout);
        match redis.lock(site, credential_id, ttl, seconds(self.config.lock_timeout)).await {
            Ok(Some(owner)) => {
                self.redis_ok();
                Ok(FlightLock { held: Some((redis.clone(), site.to_string(), credential_id, owner)) })
            }
            Ok(None) => Err(Error::Timeout(format!(
                "the login of account `{account}` (another instance) did not finish within lock_timeout"
            ))),
            Err(e) => {
                self.redis_failed(&e);
                Ok(FlightLock { held: None })
            }
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

    /// The limits in force (shared ones from Redis when set there).
    pub async fn limits(&self) -> SlotLimits {
        if let Some(redis) = self.shared() {
            if let Ok(Some(limits)) = redis.limits().await {
                return limits;
            }
        }
        self.current_limits()
    }
}

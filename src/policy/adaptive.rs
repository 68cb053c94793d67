//! Adaptive concurrency (SPEC §12), AIMD: with `adaptive_concurrency = true`, a site's slot
//! limit moves between 1 and `max_concurrent_per_site` — halved (at least 1) on a congestion
//! signal (a captcha error, a 429, an answer matching `rate_limit_pattern`), raised by one
//! after `adaptive_increase_after` successful logins in a row while at least half the limit
//! was in use.
//!
//! With Redis the state is `{P}:aimd:SITE` (`limit`, `streak`) and the effective limit is
//! written where the grant script reads it (`{P}:slots:site-limits`), so every instance holds
//! the same limit; one Lua script (`src/redis/scripts/aimd_step.lua`) makes each step.
//! Without Redis, or while the Redis link's breaker is open, it is kept in process and
//! handed to `ConcurrencyActor`. Each change is logged once (`event=site_limit_changed`).
//!
//! A congestion signal is taken the moment it arrives, a retry's included (issue 21), and
//! halves the limit once per window, as TCP does once per round trip: only an answer to a
//! request sent after the last halving halves again. The answers of one burst, sent under the
//! old limit, halve it once, not down to 1; a request sent under the lowered limit that is
//! still refused halves it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::SiteConfig;
use crate::redis::scripts::AIMD_STEP;
use crate::redis::{Admit, RedisLink};
use crate::slots::concurrency::{SetSiteLimit, Usage};
use crate::slots::Slots;
use crate::watch::metrics::Metrics;

/// What a finished login says about the portal's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A captcha error, a 429 or a rate-limit answer: halve.
    Congestion,
    /// A token: one more in the row.
    Success,
    /// Any other failure: the row is broken.
    Failure,
}

impl Signal {
    fn as_str(self) -> &'static str {
        match self {
            Signal::Congestion => "congestion",
            Signal::Success => "success",
            Signal::Failure => "failure",
        }
    }
}

/// The adaptive limits of every site. Cheap to clone.
#[derive(Clone)]
pub struct AdaptiveLimits {
    redis: Option<RedisLink>,
    /// In process: (limit, streak) per site.
    local: Arc<Mutex<HashMap<String, (u32, u32)>>>,
    /// In process: when each site's limit was last halved.
    halved: Arc<Mutex<HashMap<String, Instant>>>,
    slots: Slots,
    metrics: Arc<Metrics>,
}

impl AdaptiveLimits {
    pub fn new(redis: Option<RedisLink>, slots: Slots, metrics: Arc<Metrics>) -> AdaptiveLimits {
        AdaptiveLimits {
            redis,
            local: Arc::default(),
            halved: Arc::default(),
            slots,
            metrics,
        }
    }

    /// Takes one step for `site` after a login; logs and applies a change. `sent`: when the
    /// request that met congestion was sent (`None`: now).
    pub async fn observe(
        &self,
        site: &SiteConfig,
        max: u32,
        signal: Signal,
        sent: Option<Instant>,
    ) {
        if !site.adaptive_concurrency {
            return;
        }
        let after = site.adaptive_increase_after.max(1);
        let age = sent.map_or(Duration::ZERO, |at| at.elapsed());
        let step = match self.shared_step(&site.name, max, after, signal, age).await {
            Some(step) => step,
            None => self.local_step(&site.name, max, after, signal, age).await,
        };
        let (old, new) = step;
        self.metrics.set_site_limit(&site.name, new);
        self.slots.actor().do_send(SetSiteLimit {
            site: site.name.clone(),
            limit: Some(new),
        });
        if old != new {
            log::warn!(
                "event=site_limit_changed site={} from={old} to={new} reason={}",
                site.name,
                signal.as_str()
            );
        }
    }

    async fn shared_step(
        &self,
        site: &str,
        max: u32,
        after: u32,
        signal: Signal,
        age: Duration,
    ) -> Option<(u32, u32)> {
        let redis = self.redis.as_ref()?;
        let keys = redis.keys();
        let mut script = AIMD_STEP.key(keys.aimd(site));
        script
            .key(keys.site_limits())
            .key(keys.slot_leases())
            .key(keys.slot_holders())
            .arg(site)
            .arg(signal.as_str())
            .arg(max)
            .arg(after)
            .arg(age.as_millis() as u64);
        // An error is the link's to log (once per outage): the step is taken in process.
        redis
            .invoke("redis adaptive limits", Admit::WhenUp, &script)
            .await
            .ok()
    }

    async fn local_step(
        &self,
        site: &str,
        max: u32,
        after: u32,
        signal: Signal,
        age: Duration,
    ) -> (u32, u32) {
        // Unknown when the slots actor does not answer: then the limit is not raised (a
        // raise needs the site to use half of it), and the log says why.
        let in_use = match self.slots.actor().send(Usage).await {
            Ok(usage) => Some(usage.active_per_site.get(site).copied().unwrap_or(0)),
            Err(e) => {
                log::warn!(
                    "event=site_limit_usage_unknown site={site} error=\"{e}\" raise=skipped"
                );
                None
            }
        };
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let (limit, streak) = local.entry(site.to_string()).or_insert((max, 0));
        let old = (*limit).min(max);
        let mut new = old;
        match signal {
            Signal::Congestion => {
                let mut halved = self.halved.lock().unwrap_or_else(|p| p.into_inner());
                let sent = Instant::now().checked_sub(age);
                let last = halved.get(site).copied();
                // An answer to a request sent before the last halving was already counted.
                if last.is_none_or(|at| sent.is_none_or(|sent| sent >= at)) {
                    new = (old / 2).max(1);
                    halved.insert(site.to_string(), Instant::now());
                }
                *streak = 0;
            }
            Signal::Success => {
                *streak += 1;
                let busy = in_use.is_some_and(|n| n * 2 >= old);
                if *streak >= after && busy && old < max {
                    new = old + 1;
                    *streak = 0;
                }
            }
            Signal::Failure => *streak = 0,
        }
        *limit = new;
        (old, new)
    }

    /// The effective limit of a site (its adaptive one, else `max`).
    pub async fn current(&self, site: &SiteConfig, max: u32) -> u32 {
        if !site.adaptive_concurrency {
            return max;
        }
        if let Some(redis) = &self.redis {
            let cmd = ::redis::cmd("HGET")
                .arg(redis.keys().site_limits())
                .arg(&site.name)
                .clone();
            let value: crate::Result<Option<u32>> = redis
                .query("redis adaptive limits", Admit::WhenUp, &cmd)
                .await;
            if let Ok(value) = value {
                return value.unwrap_or(max).min(max);
            }
        }
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local
            .get(&site.name)
            .map_or(max, |(limit, _)| (*limit).min(max))
    }
}

#[cfg(test)]
mod tests {
    use actix::Actor;

    use super::*;
    use crate::config::ConcurrencyConfig;
    use crate::slots::concurrency::ConcurrencyActor;

    const MAX: u32 = 8;

    fn site() -> SiteConfig {
        toml::from_str(
            "name = \"s\"\ndriver = \"http\"\nlogin_url = \"http://x/login\"\n\
             adaptive_concurrency = true\n",
        )
        .unwrap()
    }

    fn limits(redis: Option<RedisLink>) -> AdaptiveLimits {
        let config = ConcurrencyConfig::default();
        let slots = Slots::new(ConcurrencyActor::new(&config).start(), None, &config);
        let metrics = Arc::new(Metrics::new(Arc::default()));
        AdaptiveLimits::new(redis, slots, metrics)
    }

    async fn redis_link() -> Option<RedisLink> {
        crate::redis::test_link().await
    }

    /// A burst of congestion answers, all to requests sent before the first of them halved
    /// the limit, halves it once; an answer to a request sent after that halves it again.
    async fn a_burst_halves_once(adaptive: AdaptiveLimits) {
        let site = site();
        assert_eq!(adaptive.current(&site, MAX).await, MAX);
        // Requests sent together, a moment ago, under the old limit.
        let burst = Instant::now()
            .checked_sub(Duration::from_secs(5))
            .expect("an uptime of 5 s");
        for _ in 0..5 {
            let congestion = Signal::Congestion;
            adaptive.observe(&site, MAX, congestion, Some(burst)).await;
        }
        assert_eq!(adaptive.current(&site, MAX).await, MAX / 2, "halved once");
        // A request sent under the lowered limit and still refused: halved again.
        let now = Some(Instant::now());
        adaptive.observe(&site, MAX, Signal::Congestion, now).await;
        assert_eq!(adaptive.current(&site, MAX).await, MAX / 4);
    }

    #[actix_rt::test]
    async fn a_burst_of_congestion_halves_the_limit_once_in_process() {
        a_burst_halves_once(limits(None)).await;
    }

    #[actix_rt::test]
    async fn a_burst_of_congestion_halves_the_limit_once_in_redis() {
        let Some(link) = redis_link().await else {
            return;
        };
        a_burst_halves_once(limits(Some(link))).await;
    }
}

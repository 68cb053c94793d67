//! Adaptive concurrency (SPEC §12), AIMD: with `adaptive_concurrency = true`, a site's slot
//! limit moves between 1 and `max_concurrent_per_site` — halved (at least 1) on a congestion
//! signal (a captcha error, a 429, an answer matching `rate_limit_pattern`), raised by one
//! after `adaptive_increase_after` successful logins in a row while at least half the limit
//! was in use.
//!
//! With Redis the state is `P:aimd:SITE` (`limit`, `streak`) and the effective limit is
//! written where the grant script reads it (`P:slots:site-limits`), so every instance holds
//! the same limit; one Lua script makes each step. Without Redis it is kept in process and
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

use redis::aio::ConnectionManager;
use redis::Script;

use crate::config::SiteConfig;
use crate::slots::concurrency::{SetSiteLimit, Usage};
use crate::slots::Slots;
use crate::watch::metrics::Metrics;

/// One AIMD step. KEYS: the site's state, the shared site limits, the site's slot leases.
/// ARGV: site, signal (`congestion`, `success`, `failure`), max limit, increase after, and
/// for congestion how long ago (ms) the refused request was sent. Returns `{old limit, new
/// limit}`.
const STEP: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local site, signal, max, after = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local limit = math.min(tonumber(redis.call('HGET', KEYS[1], 'limit') or max), max)
local streak = tonumber(redis.call('HGET', KEYS[1], 'streak') or '0')
local new = limit
if signal == 'congestion' then
  local halved = tonumber(redis.call('HGET', KEYS[1], 'halved_at') or '0')
  if now - tonumber(ARGV[5]) >= halved then
    new = math.max(1, math.floor(limit / 2))
    redis.call('HSET', KEYS[1], 'halved_at', now)
  end
  streak = 0
elseif signal == 'success' then
  streak = streak + 1
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  local in_use = redis.call('ZCARD', KEYS[3])
  if streak >= after and in_use * 2 >= limit and limit < max then
    new = limit + 1
    streak = 0
  end
else
  streak = 0
end
redis.call('HSET', KEYS[1], 'limit', new, 'streak', streak)
redis.call('HSET', KEYS[2], site, new)
return {limit, new}
"#;

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
    redis: Option<(ConnectionManager, Arc<str>, Arc<Script>)>,
    /// In process: (limit, streak) per site.
    local: Arc<Mutex<HashMap<String, (u32, u32)>>>,
    /// In process: when each site's limit was last halved.
    halved: Arc<Mutex<HashMap<String, Instant>>>,
    slots: Slots,
    metrics: Arc<Metrics>,
}

impl AdaptiveLimits {
    pub fn new(
        redis: Option<(ConnectionManager, &str)>,
        slots: Slots,
        metrics: Arc<Metrics>,
    ) -> AdaptiveLimits {
        AdaptiveLimits {
            redis: redis
                .map(|(conn, prefix)| (conn, Arc::from(prefix), Arc::new(Script::new(STEP)))),
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
        let (conn, prefix, script) = self.redis.as_ref()?;
        let answer: redis::RedisResult<(u32, u32)> = script
            .key(format!("{prefix}:aimd:{site}"))
            .key(format!("{prefix}:slots:site-limits"))
            .key(format!("{prefix}:slots:site:{site}"))
            .arg(site)
            .arg(signal.as_str())
            .arg(max)
            .arg(after)
            .arg(age.as_millis() as u64)
            .invoke_async(&mut conn.clone())
            .await;
        match answer {
            Ok(step) => Some(step),
            Err(e) => {
                log::warn!(
                    "event=site_limit_redis_error site={site} error=\"{e}\" fallback=in_process"
                );
                None
            }
        }
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
        if let Some((conn, prefix, _)) = &self.redis {
            let value: redis::RedisResult<Option<u32>> = redis::cmd("HGET")
                .arg(format!("{prefix}:slots:site-limits"))
                .arg(&site.name)
                .query_async(&mut conn.clone())
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

//! Concurrency recommendations (`POST /performance/optimize-concurrency`): from live usage
//! (queue, waits) and the day's history per site (success rate, congestion, latency), what
//! the three limits should be, and why.
//!
//! A site with `adaptive_concurrency` lowers its own limit on congestion (AIMD), so it is
//! left out of the global per-site recommendation.
//! A lower site limit is recommended only on congestion signals — timeouts, network errors
//! (429 and rate-limit answers among them), captcha errors — never on refused passwords, which
//! fewer logins at once would not cure.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::config::AlertsConfig;
use crate::slots::SlotLimits;

/// What was observed of one site.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteLoad {
    pub site: String,
    pub acquisitions: u64,
    pub success_rate: f64,
    pub timeout_rate: f64,
    /// Percent of acquisitions that ended in a congestion signal (timeout, network error,
    /// captcha error).
    pub congestion_rate: f64,
    pub avg_duration: f64,
    /// The site's slot limit adapts by itself (AIMD): congestion is already acted on there.
    pub adaptive: bool,
}

/// What was observed of the slots.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlotLoad {
    pub queue_size: usize,
    pub oldest_wait_seconds: f64,
    pub queue_timeout: f64,
    pub sites_configured: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Recommendation {
    /// The limit it changes: `global`, `per_site` or `per_account`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: Cow<'static, str>,
    pub current: u32,
    pub recommended: u32,
    pub reason: String,
}

/// A site's figures count only with this many acquisitions behind them.
const MIN_SAMPLE: u64 = 5;

/// The recommended changes (empty when the limits fit) and the limits they lead to.
pub fn recommend(
    limits: SlotLimits,
    slots: &SlotLoad,
    sites: &[SiteLoad],
    thresholds: &AlertsConfig,
) -> (Vec<Recommendation>, SlotLimits) {
    let mut out = Vec::new();
    let mut next = limits;
    if limits.per_account > 1 {
        next.per_account = 1;
        out.push(Recommendation {
            kind: "per_account".into(),
            current: limits.per_account,
            recommended: 1,
            reason: "portals punish an account that logs in twice at once".into(),
        });
    }
    let struggling: Vec<&SiteLoad> = sites
        .iter()
        .filter(|s| {
            !s.adaptive
                && s.acquisitions >= MIN_SAMPLE
                && (s.timeout_rate > thresholds.max_timeout_rate
                    || s.congestion_rate > 100.0 - thresholds.min_success_rate)
        })
        .collect();
    if let Some(worst) = struggling
        .iter()
        .max_by(|a, b| a.congestion_rate.total_cmp(&b.congestion_rate))
    {
        if limits.per_site > 1 {
            next.per_site = limits.per_site - 1;
            out.push(Recommendation {
                kind: "per_site".into(),
                current: limits.per_site,
                recommended: next.per_site,
                reason: format!(
                    "site {}: {:.1}% of {} acquisitions met congestion (timeouts, network or captcha errors) — fewer logins at once should ease the portal",
                    worst.site, worst.congestion_rate, worst.acquisitions
                ),
            });
        }
    } else {
        let waiting = slots.queue_size > 0 && slots.oldest_wait_seconds > slots.queue_timeout / 2.0;
        let ceiling = (limits.per_site * slots.sites_configured.max(1) as u32).max(limits.global);
        if waiting && limits.global < ceiling {
            next.global = limits.global + 1;
            out.push(Recommendation {
                kind: "global".into(),
                current: limits.global,
                recommended: next.global,
                reason: format!(
                    "{} callers waiting, the oldest {:.0}s of a {:.0}s queue_timeout, while logins succeed",
                    slots.queue_size, slots.oldest_wait_seconds, slots.queue_timeout
                ),
            });
        }
    }
    if next.per_site > next.global {
        out.push(Recommendation {
            kind: "per_site".into(),
            current: next.per_site,
            recommended: next.global,
            reason: "a per-site limit above the global one can never be used".into(),
        });
        next.per_site = next.global;
    }
    (out, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(site: &str, n: u64, success: f64, timeouts: f64) -> SiteLoad {
        SiteLoad {
            site: site.into(),
            acquisitions: n,
            success_rate: success,
            timeout_rate: timeouts,
            congestion_rate: 100.0 - success,
            avg_duration: 5.0,
            adaptive: false,
        }
    }

    #[test]
    fn an_adaptive_site_is_left_to_its_own_limit() {
        let congested = SiteLoad {
            adaptive: true,
            ..load("a", 50, 40.0, 30.0)
        };
        let (recs, next) = recommend(LIMITS, &IDLE, &[congested], &AlertsConfig::default());
        assert!(recs.is_empty(), "{recs:?}");
        assert_eq!(next, LIMITS);
    }

    #[test]
    fn refused_passwords_never_lower_the_site_limit() {
        let wrong_passwords = SiteLoad {
            congestion_rate: 0.0,
            ..load("a", 4, 0.0, 0.0)
        };
        let more = SiteLoad {
            acquisitions: 40,
            ..wrong_passwords.clone()
        };
        for site in [wrong_passwords, more] {
            let (recs, next) = recommend(LIMITS, &IDLE, &[site], &AlertsConfig::default());
            assert!(recs.is_empty(), "{recs:?}");
            assert_eq!(next, LIMITS);
        }
    }

    const IDLE: SlotLoad = SlotLoad {
        queue_size: 0,
        oldest_wait_seconds: 0.0,
        queue_timeout: 60.0,
        sites_configured: 2,
    };
    const LIMITS: SlotLimits = SlotLimits {
        global: 3,
        per_site: 2,
        per_account: 1,
    };

    #[test]
    fn healthy_and_idle_changes_nothing() {
        let (recs, next) = recommend(
            LIMITS,
            &IDLE,
            &[load("a", 50, 99.0, 0.0)],
            &AlertsConfig::default(),
        );
        assert!(recs.is_empty());
        assert_eq!(next, LIMITS);
    }

    #[test]
    fn a_struggling_site_lowers_the_site_limit() {
        let (recs, next) = recommend(
            LIMITS,
            &IDLE,
            &[load("a", 50, 60.0, 30.0), load("b", 2, 0.0, 100.0)],
            &AlertsConfig::default(),
        );
        assert_eq!(next.per_site, 1);
        assert!(recs[0].reason.contains("site a"), "{recs:?}");
    }

    #[test]
    fn long_waits_with_healthy_sites_raise_the_global_limit() {
        let busy = SlotLoad {
            queue_size: 12,
            oldest_wait_seconds: 45.0,
            ..IDLE
        };
        let (recs, next) = recommend(
            LIMITS,
            &busy,
            &[load("a", 50, 98.0, 0.0)],
            &AlertsConfig::default(),
        );
        assert_eq!((recs.len(), next.global), (1, 4));
    }

    #[test]
    fn accounts_never_log_in_twice_at_once() {
        let (_, next) = recommend(
            SlotLimits {
                per_account: 3,
                ..LIMITS
            },
            &IDLE,
            &[],
            &AlertsConfig::default(),
        );
        assert_eq!(next.per_account, 1);
    }
}

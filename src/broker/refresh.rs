//! Background refresh (SPEC §1): a token that is being handed out is renewed at two thirds
//! of its life, moved by a random jitter of up to `refresh_jitter` of the lifetime so that
//! tokens do not renew in lockstep — only if that point comes before the `refresh_ahead`
//! margin. The old token is served meanwhile; a refresh that fails backs off.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::pipeline::Broker;
use super::request::AcquireRequest;
use crate::cache::CachedToken;
use crate::config::{seconds, CacheConfig, SiteConfig};
use crate::policy::outcome::TriggerReason;

/// First wait after a failed background refresh; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// When the background refresh of a token becomes due; `expires_at` (never) when the
/// two-thirds point falls inside the `refresh_ahead` margin.
pub fn refresh_point(
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    cache: &CacheConfig,
) -> DateTime<Utc> {
    let life = (expires_at - issued_at).num_milliseconds() as f64;
    if life <= 0.0 {
        return expires_at;
    }
    let jitter = (fastrand::f64() * 2.0 - 1.0) * cache.refresh_jitter * life;
    let point = issued_at + chrono::Duration::milliseconds((life * 2.0 / 3.0 + jitter) as i64);
    let margin = crate::cache::margin(issued_at, expires_at, cache.refresh_ahead);
    let margin = expires_at - chrono::Duration::milliseconds((margin * 1000.0) as i64);
    if point < margin {
        point
    } else {
        expires_at
    }
}

impl Broker {
    /// Starts a background refresh of `entry`'s account unless one runs or backs off.
    pub(super) fn schedule_refresh(&self, site: &SiteConfig, entry: &CachedToken) {
        // A job holds the account: nothing logs it in (its holder renews through the lease).
        if self.held(site, entry.credential_id).is_some() {
            return;
        }
        let key = (site.name.clone(), entry.credential_id);
        {
            let mut refreshing = self
                .inner
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let failures = match refreshing.get(&key) {
                Some((until, _)) if *until > now => return,
                Some((_, failures)) => *failures,
                None => 0,
            };
            let hold = seconds(self.inner.config.concurrency.acquisition_timeout);
            refreshing.insert(key.clone(), (now + hold, failures));
        }
        let broker = self.clone();
        let request = AcquireRequest {
            site_name: site.name.clone(),
            credential_id: Some(entry.credential_id),
            account: None,
            force_refresh: true,
        };
        let account = entry.account.clone();
        actix_web::rt::spawn(async move {
            log::info!("event=background_refresh site={} account={account}", key.0);
            let result = broker
                .acquire_as(request, TriggerReason::RefreshAhead)
                .await;
            let mut refreshing = broker
                .inner
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(_) => {
                    refreshing.remove(&key);
                }
                Err(e) => {
                    let failures = refreshing.get(&key).map_or(0, |(_, n)| *n);
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(1 << failures.min(5))
                        .min(MAX_BACKOFF);
                    log::warn!(
                        "event=background_refresh_failed site={} account={account} error=\"{e}\" retry_in={}s",
                        key.0,
                        backoff.as_secs()
                    );
                    refreshing.insert(key, (Instant::now() + backoff, failures + 1));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_thirds_with_jitter_and_margin() {
        let cache = CacheConfig {
            refresh_ahead: 300.0,
            refresh_jitter: 0.1,
            ..CacheConfig::default()
        };
        let issued = Utc::now();
        let expires = issued + chrono::Duration::seconds(3600);
        for _ in 0..100 {
            let point = refresh_point(issued, expires, &cache);
            let at = (point - issued).num_seconds();
            assert!((2040..=2760).contains(&at), "{at}");
        }
        // A 240 s token: its margin is a quarter of its life (60 s), so two thirds (160 s)
        // comes before it and the token is renewed in the background.
        let short = issued + chrono::Duration::seconds(240);
        let at = (refresh_point(issued, short, &cache) - issued).num_seconds();
        // (A point the jitter moved past 180 s falls inside the margin: then none.)
        assert!((136..=180).contains(&at) || at == 240, "{at}");
        // A point moved by the jitter inside the margin means no background refresh.
        let cache = CacheConfig {
            refresh_jitter: 0.5,
            ..CacheConfig::default()
        };
        let long = issued + chrono::Duration::seconds(1000);
        let late = (0..200)
            .map(|_| refresh_point(issued, long, &cache))
            .filter(|p| *p == long)
            .count();
        assert!(late > 0, "some points fall inside the 250 s margin");
    }
}

#[cfg(test)]
mod timing_tests {
    use super::*;

    fn cache(refresh_ahead: f64, refresh_jitter: f64) -> CacheConfig {
        CacheConfig {
            refresh_ahead,
            refresh_jitter,
            ..CacheConfig::default()
        }
    }

    /// Seconds from issue to the refresh point of `samples` tokens living `life` seconds
    /// (`None` for "no background refresh").
    fn points(life: i64, cache: &CacheConfig, samples: usize) -> Vec<Option<f64>> {
        let issued = Utc::now();
        let expires = issued + chrono::Duration::seconds(life);
        (0..samples)
            .map(|_| {
                let point = refresh_point(issued, expires, cache);
                (point != expires).then(|| (point - issued).num_milliseconds() as f64 / 1000.0)
            })
            .collect()
    }

    #[test]
    fn without_jitter_a_token_is_renewed_at_two_thirds_of_its_life() {
        assert_eq!(points(3600, &cache(300.0, 0.0), 1), [Some(2400.0)]);
        // A short token (margin: a quarter of 30 s) is still renewed, at 20 s.
        assert_eq!(points(30, &cache(300.0, 0.0), 1), [Some(20.0)]);
        // A token issued already expired (or without life) is never renewed ahead.
        let now = Utc::now();
        assert_eq!(refresh_point(now, now, &cache(300.0, 0.0)), now);
    }

    #[test]
    fn the_jitter_spreads_renewals_on_both_sides_of_two_thirds() {
        let at: Vec<f64> = points(3600, &cache(60.0, 0.1), 400)
            .into_iter()
            .map(|p| p.expect("every point is before the 60 s margin"))
            .collect();
        assert!(at.iter().all(|s| (2040.0..=2760.0).contains(s)), "{at:?}");
        assert!(at.iter().any(|s| *s < 2300.0), "never early");
        assert!(at.iter().any(|s| *s > 2500.0), "never late");
    }

    #[test]
    fn the_margin_is_refresh_ahead_or_a_quarter_of_the_life_whichever_is_smaller() {
        // Jittered points fall from 1320 s to 3480 s of a 3600 s life.
        // refresh_ahead (60 s) is the smaller: only points after 3540 s would be dropped.
        let small = points(3600, &cache(60.0, 0.3), 400);
        assert!(small.iter().all(Option::is_some), "{small:?}");
        assert!(
            small.iter().flatten().any(|s| *s > 2700.0),
            "points after three quarters were dropped"
        );
        // A quarter of the life (900 s) is the smaller: points after 2700 s are dropped,
        // the others kept.
        let large = points(3600, &cache(3000.0, 0.3), 400);
        assert!(large.iter().flatten().all(|s| *s < 2700.0), "{large:?}");
        assert!(large.iter().any(Option::is_none), "no point was dropped");
        assert!(large.iter().any(Option::is_some), "every point was dropped");
    }
}

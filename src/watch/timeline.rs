//! Per-minute figures of the last hour (`GET /performance/timeline`), kept by `MonitorActor`
//! in a fixed memory budget: [`MINUTES`] buckets in a ring, each with counts and a
//! logarithmic histogram of login durations (so p50/p95 cost no samples, only
//! [`HISTOGRAM_BINS`] counters).
//!
//! A bucket belongs to one wall-clock minute (UTC); a bucket whose minute is more than an
//! hour old is reused for the new minute, so memory never grows.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::policy::outcome::{AcquisitionStatus, RejectionReason};

/// Buckets kept: one hour of minutes.
pub const MINUTES: usize = 60;
/// Login-duration histogram bins per bucket.
pub const HISTOGRAM_BINS: usize = 64;
/// Upper bound of the first bin, seconds.
const FIRST_BIN: f64 = 0.01;
/// Each bin is this many times wider than the one before: 64 bins reach about 3 hours, at
/// most 25 % coarse.
const BIN_GROWTH: f64 = 1.25;

/// One minute of counts.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Minutes since the epoch; `None` for a bucket never used.
    minute: Option<i64>,
    acquisitions: u32,
    successes: u32,
    failures: u32,
    rejections: u32,
    cache_hits: u64,
    logins: u32,
    login_min: f64,
    login_max: f64,
    histogram: [u32; HISTOGRAM_BINS],
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        minute: None,
        acquisitions: 0,
        successes: 0,
        failures: 0,
        rejections: 0,
        cache_hits: 0,
        logins: 0,
        login_min: f64::INFINITY,
        login_max: 0.0,
        histogram: [0; HISTOGRAM_BINS],
    };

    /// The login duration under which `p` percent of this minute's logins took; `None`
    /// without logins. The bin's upper bound, kept within the minute's real min and max.
    fn login_percentile(&self, p: f64) -> Option<f64> {
        if self.logins == 0 {
            return None;
        }
        let rank = ((p / 100.0) * f64::from(self.logins)).ceil().max(1.0) as u32;
        let mut seen = 0;
        let bin = self
            .histogram
            .iter()
            .position(|count| {
                seen += count;
                seen >= rank
            })
            .unwrap_or(HISTOGRAM_BINS - 1);
        Some(upper_bound(bin).clamp(self.login_min, self.login_max))
    }
}

fn upper_bound(bin: usize) -> f64 {
    FIRST_BIN * BIN_GROWTH.powi(bin as i32)
}

fn bin_of(seconds: f64) -> usize {
    if seconds <= FIRST_BIN {
        return 0;
    }
    let bin = ((seconds / FIRST_BIN).ln() / BIN_GROWTH.ln()).ceil();
    (bin as usize).min(HISTOGRAM_BINS - 1)
}

/// One minute as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct MinutePoint {
    /// The start of the minute.
    pub start: DateTime<Utc>,
    /// Acquisitions that went past the cache (logins, or waits for one), finished this minute.
    pub acquisitions: u32,
    pub successes: u32,
    pub failures: u32,
    /// Requests refused before any login ran.
    pub rejections: u32,
    /// Tokens answered from the cache.
    pub cache_hits: u64,
    pub logins: u32,
    /// Seconds; `null` in a minute without logins.
    pub login_p50: Option<f64>,
    pub login_p95: Option<f64>,
}

/// The ring of the last hour's minutes.
#[derive(Debug, Clone)]
pub struct Timeline {
    buckets: Box<[Bucket; MINUTES]>,
    /// The cache-hit counter as last read, so each minute gets the hits made in it.
    hits_seen: u64,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            buckets: Box::new([Bucket::EMPTY; MINUTES]),
            hits_seen: 0,
        }
    }
}

fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

impl Timeline {
    /// The bucket of `at`'s minute, emptied first if it held an older minute.
    fn bucket(&mut self, at: DateTime<Utc>) -> &mut Bucket {
        let minute = minute_of(at);
        let slot = &mut self.buckets[minute.rem_euclid(MINUTES as i64) as usize];
        if slot.minute != Some(minute) {
            *slot = Bucket {
                minute: Some(minute),
                ..Bucket::EMPTY
            };
        }
        slot
    }

    pub fn finished(&mut self, at: DateTime<Utc>, status: AcquisitionStatus, login: Option<f64>) {
        let bucket = self.bucket(at);
        bucket.acquisitions += 1;
        match status {
            AcquisitionStatus::Success => bucket.successes += 1,
            _ => bucket.failures += 1,
        }
        if let Some(seconds) = login.filter(|s| s.is_finite() && *s >= 0.0) {
            bucket.logins += 1;
            bucket.login_min = bucket.login_min.min(seconds);
            bucket.login_max = bucket.login_max.max(seconds);
            bucket.histogram[bin_of(seconds)] += 1;
        }
    }

    pub fn rejected(&mut self, at: DateTime<Utc>, _reason: RejectionReason) {
        self.bucket(at).rejections += 1;
    }

    /// Adds the cache hits made since the last call (`total` is the running hit counter; a
    /// counter that went back was reset, and counts from zero).
    pub fn cache_hits(&mut self, at: DateTime<Utc>, total: u64) {
        let new = total.checked_sub(self.hits_seen).unwrap_or(total);
        self.hits_seen = total;
        if new > 0 {
            self.bucket(at).cache_hits += new;
        }
    }

    /// Forgets every minute (metrics reset); the hit counter is read from `total` on.
    pub fn clear(&mut self, total_hits: u64) {
        *self = Timeline {
            hits_seen: total_hits,
            ..Timeline::default()
        };
    }

    /// The last [`MINUTES`] minutes up to `now`'s, oldest first, empty minutes included.
    pub fn points(&self, now: DateTime<Utc>) -> Vec<MinutePoint> {
        let current = minute_of(now);
        (current - MINUTES as i64 + 1..=current)
            .map(|minute| {
                let slot = &self.buckets[minute.rem_euclid(MINUTES as i64) as usize];
                let bucket = if slot.minute == Some(minute) {
                    slot
                } else {
                    &Bucket::EMPTY
                };
                MinutePoint {
                    start: Utc
                        .timestamp_opt(minute * 60, 0)
                        .single()
                        .unwrap_or_default(),
                    acquisitions: bucket.acquisitions,
                    successes: bucket.successes,
                    failures: bucket.failures,
                    rejections: bucket.rejections,
                    cache_hits: bucket.cache_hits,
                    logins: bucket.logins,
                    login_p50: bucket.login_percentile(50.0),
                    login_p95: bucket.login_percentile(95.0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64, second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + minute * 60 + second, 0)
            .unwrap()
    }

    #[test]
    fn minutes_count_apart_and_old_minutes_are_reused() {
        let mut timeline = Timeline::default();
        let t0 = at(0, 0);
        for login in [1.0, 2.0, 3.0, 4.0, 40.0] {
            timeline.finished(t0, AcquisitionStatus::Success, Some(login));
        }
        timeline.finished(at(0, 30), AcquisitionStatus::Timeout, None);
        timeline.rejected(at(1, 5), RejectionReason::QueueFull);
        timeline.cache_hits(at(1, 6), 7);
        timeline.cache_hits(at(1, 7), 9);

        let points = timeline.points(at(1, 59));
        assert_eq!(points.len(), MINUTES);
        let (first, last) = (&points[MINUTES - 2], &points[MINUTES - 1]);
        assert_eq!(first.start, Utc.timestamp_opt(1_800_000_000, 0).unwrap());
        assert_eq!(
            (first.acquisitions, first.successes, first.failures),
            (6, 5, 1)
        );
        assert_eq!(first.logins, 5);
        let p50 = first.login_p50.unwrap();
        assert!((3.0..=3.0 * BIN_GROWTH).contains(&p50), "p50 {p50}");
        assert_eq!(first.login_p95, Some(40.0), "clamped to the real maximum");
        assert_eq!((last.rejections, last.cache_hits), (1, 9));
        assert!(points[..MINUTES - 2].iter().all(|p| p.acquisitions == 0));

        // An hour later the same slot holds the new minute only.
        timeline.finished(at(60, 0), AcquisitionStatus::Success, None);
        let points = timeline.points(at(60, 1));
        assert_eq!(points[MINUTES - 1].acquisitions, 1);
        assert_eq!(points[MINUTES - 1].login_p50, None);
        assert_eq!(points.iter().map(|p| p.acquisitions).sum::<u32>(), 1);
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        let mut timeline = Timeline::default();
        timeline.cache_hits(at(0, 0), 10);
        timeline.clear(10);
        timeline.cache_hits(at(0, 1), 12);
        timeline.cache_hits(at(0, 2), 3);
        assert_eq!(timeline.points(at(0, 3))[MINUTES - 1].cache_hits, 5);
    }

    #[test]
    fn bins_cover_short_and_long_logins() {
        assert_eq!(bin_of(0.0), 0);
        assert_eq!(bin_of(1e9), HISTOGRAM_BINS - 1);
        for seconds in [0.02, 0.5, 7.0, 300.0] {
            let bin = bin_of(seconds);
            assert!(upper_bound(bin) >= seconds && upper_bound(bin - 1) < seconds);
        }
    }
}

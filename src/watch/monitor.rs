//! `MonitorActor`: live counters of acquisitions, duration samples and cache hit/miss counts.
//!
//! Messages: [`AcquisitionStarted`], [`AcquisitionFinished`] (fire and forget, from the
//! acquisition pipeline), [`Snapshot`] and [`Reset`] (the admin API, alerts).
//! Cache hits and misses are not messages: the hot path bumps shared atomic counters
//! ([`CacheCounters`]) so that a cached token never waits on this mailbox; the monitor reads
//! them into its snapshots and zeroes them on reset.
//! Counting is cheap; percentiles come from a bounded window of the latest durations.
//! [`GetTimeline`] answers the last hour minute by minute ([`Timeline`], fixed size); a
//! timer every [`HIT_SAMPLING`] files the cache hits made since into the current minute.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use serde::Serialize;

use crate::cache::CacheCounters;
use crate::cache::{CacheKind, KindCounts};
use crate::policy::outcome::{AcquisitionStatus, RejectionReason};
use crate::watch::metrics::Metrics;
use crate::watch::timeline::{MinutePoint, Timeline};

/// Durations kept for percentiles: the latest this many acquisitions.
const SAMPLE_WINDOW: usize = 4096;
/// How often cache hits (atomic counters, no messages) are filed into the timeline.
const HIT_SAMPLING: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Message)]
#[rtype(result = "()")]
pub struct AcquisitionStarted {
    pub site: String,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct AcquisitionFinished {
    pub site: String,
    pub status: AcquisitionStatus,
    /// Seconds from request to answer.
    pub duration: f64,
    /// Seconds spent in the login driver, if a login ran.
    pub login_duration: Option<f64>,
}

/// A request refused before any login ran (SPEC §11: every request counts).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rejected {
    pub site: String,
    pub reason: RejectionReason,
}

#[derive(Message)]
#[rtype(result = "MetricsSnapshot")]
pub struct Snapshot;

/// The last hour, minute by minute, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<MinutePoint>")]
pub struct GetTimeline;

/// Zeroes the counters; answers with the snapshot taken just before.
#[derive(Message)]
#[rtype(result = "MetricsSnapshot")]
pub struct Reset;

/// Counts of one scope (all sites, or one site).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub total_acquisitions: u64,
    pub successful_acquisitions: u64,
    pub failed_acquisitions: u64,
    pub timeout_count: u64,
    pub network_error_count: u64,
    pub captcha_error_count: u64,
    pub credential_error_count: u64,
    pub concurrent_acquisitions: u64,
    /// Requests refused before any login ran, in total and by reason.
    pub rejected_acquisitions: u64,
    pub rejections: BTreeMap<RejectionReason, u64>,
    #[serde(skip)]
    duration_sum: f64,
    #[serde(skip)]
    login_duration_sum: f64,
    #[serde(skip)]
    login_count: u64,
}

impl Counters {
    fn finish(&mut self, status: AcquisitionStatus, duration: f64, login: Option<f64>) {
        self.total_acquisitions += 1;
        self.concurrent_acquisitions = self.concurrent_acquisitions.saturating_sub(1);
        self.duration_sum += duration;
        if let Some(login) = login {
            self.login_duration_sum += login;
            self.login_count += 1;
        }
        match status {
            AcquisitionStatus::Success => self.successful_acquisitions += 1,
            other => {
                self.failed_acquisitions += 1;
                match other {
                    AcquisitionStatus::Timeout => self.timeout_count += 1,
                    AcquisitionStatus::NetworkError => self.network_error_count += 1,
                    AcquisitionStatus::CaptchaError => self.captcha_error_count += 1,
                    AcquisitionStatus::CredentialError => self.credential_error_count += 1,
                    _ => {}
                }
            }
        }
    }

    fn reject(&mut self, reason: RejectionReason) {
        self.rejected_acquisitions += 1;
        *self.rejections.entry(reason).or_default() += 1;
    }

    /// Percent of finished acquisitions that succeeded; 100 when none finished yet.
    pub fn success_rate(&self) -> f64 {
        ratio(self.successful_acquisitions, self.total_acquisitions).unwrap_or(100.0)
    }

    /// Percent of finished acquisitions that ended in a congestion signal: a timeout, a
    /// network error (429 and rate-limit answers among them) or a captcha error.
    pub fn congestion_rate(&self) -> f64 {
        let congested = self.timeout_count + self.network_error_count + self.captcha_error_count;
        ratio(congested, self.total_acquisitions).unwrap_or(0.0)
    }

    pub fn timeout_rate(&self) -> f64 {
        ratio(self.timeout_count, self.total_acquisitions).unwrap_or(0.0)
    }

    pub fn avg_duration(&self) -> f64 {
        mean(self.duration_sum, self.total_acquisitions)
    }

    pub fn avg_login_duration(&self) -> f64 {
        mean(self.login_duration_sum, self.login_count)
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

fn mean(sum: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

/// Everything the monitor knows, at one instant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricsSnapshot {
    pub totals: Counters,
    pub sites: BTreeMap<String, Counters>,
    pub cache: BTreeMap<CacheKind, KindCounts>,
    /// Seconds: p50, p95, p99 of the latest acquisitions' total durations.
    pub percentiles: [f64; 3],
    /// Seconds: p50, p95, p99 of the latest logins' durations.
    pub login_percentiles: [f64; 3],
    pub uptime_seconds: f64,
}

impl MetricsSnapshot {
    /// Token cache hit rate in percent; `None` before the first lookup.
    pub fn cache_hit_rate(&self) -> Option<f64> {
        self.cache
            .get(&CacheKind::Token)
            .and_then(KindCounts::hit_rate)
    }
}

pub struct MonitorActor {
    started: Instant,
    totals: Counters,
    sites: HashMap<String, Counters>,
    cache: Arc<CacheCounters>,
    durations: VecDeque<f64>,
    login_durations: VecDeque<f64>,
    /// The Prometheus side, updated alongside.
    exposition: Arc<Metrics>,
    /// Per-minute counts of the last hour, for the dashboard's charts.
    timeline: Timeline,
}

impl MonitorActor {
    pub fn new(cache: Arc<CacheCounters>, exposition: Arc<Metrics>) -> MonitorActor {
        MonitorActor {
            started: Instant::now(),
            totals: Counters::default(),
            sites: HashMap::new(),
            cache,
            durations: VecDeque::with_capacity(SAMPLE_WINDOW),
            login_durations: VecDeque::with_capacity(SAMPLE_WINDOW),
            exposition,
            timeline: Timeline::default(),
        }
    }
}

fn push_sample(window: &mut VecDeque<f64>, value: f64) {
    if window.len() == SAMPLE_WINDOW {
        window.pop_front();
    }
    window.push_back(value);
}

/// p50, p95 and p99 of a window of samples.
fn percentiles(window: &VecDeque<f64>) -> [f64; 3] {
    let mut sorted: Vec<f64> = window.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    [
        percentile(&sorted, 50.0),
        percentile(&sorted, 95.0),
        percentile(&sorted, 99.0),
    ]
}

impl Actor for MonitorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HIT_SAMPLING, |actor, _| actor.file_cache_hits());
    }
}

impl MonitorActor {
    fn file_cache_hits(&mut self) {
        let hits = self.cache.get(CacheKind::Token).hits;
        self.timeline.cache_hits(chrono::Utc::now(), hits);
    }
}

impl MonitorActor {
    fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            totals: self.totals.clone(),
            sites: self
                .sites
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cache: CacheKind::ALL
                .iter()
                .map(|kind| (*kind, self.cache.get(*kind)))
                .collect(),
            percentiles: percentiles(&self.durations),
            login_percentiles: percentiles(&self.login_durations),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// Nearest-rank percentile of sorted samples; 0 when there are none.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Handler<AcquisitionStarted> for MonitorActor {
    type Result = ();

    fn handle(&mut self, msg: AcquisitionStarted, _: &mut Context<Self>) {
        self.exposition.started(&msg.site);
        self.totals.concurrent_acquisitions += 1;
        self.sites
            .entry(msg.site)
            .or_default()
            .concurrent_acquisitions += 1;
    }
}

impl Handler<AcquisitionFinished> for MonitorActor {
    type Result = ();

    fn handle(&mut self, msg: AcquisitionFinished, _: &mut Context<Self>) {
        self.exposition.finished(
            &msg.site,
            msg.status.as_str(),
            msg.duration,
            msg.login_duration,
        );
        self.totals
            .finish(msg.status, msg.duration, msg.login_duration);
        self.sites.entry(msg.site).or_default().finish(
            msg.status,
            msg.duration,
            msg.login_duration,
        );
        self.timeline
            .finished(chrono::Utc::now(), msg.status, msg.login_duration);
        push_sample(&mut self.durations, msg.duration);
        if let Some(login) = msg.login_duration {
            push_sample(&mut self.login_durations, login);
        }
    }
}

impl Handler<Rejected> for MonitorActor {
    type Result = ();

    fn handle(&mut self, msg: Rejected, _: &mut Context<Self>) {
        self.exposition.rejected(&msg.site, msg.reason.as_str());
        self.timeline.rejected(chrono::Utc::now(), msg.reason);
        self.totals.reject(msg.reason);
        self.sites.entry(msg.site).or_default().reject(msg.reason);
    }
}

impl Handler<Snapshot> for MonitorActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl Handler<Reset> for MonitorActor {
    type Result = MessageResult<Reset>;

    fn handle(&mut self, _: Reset, _: &mut Context<Self>) -> Self::Result {
        let before = self.snapshot();
        // Acquisitions still running stay counted as running.
        let running = self.totals.concurrent_acquisitions;
        let running_per_site: Vec<(String, u64)> = self
            .sites
            .iter()
            .filter(|(_, c)| c.concurrent_acquisitions > 0)
            .map(|(site, c)| (site.clone(), c.concurrent_acquisitions))
            .collect();
        self.totals = Counters {
            concurrent_acquisitions: running,
            ..Counters::default()
        };
        self.sites = running_per_site
            .into_iter()
            .map(|(site, n)| {
                (
                    site,
                    Counters {
                        concurrent_acquisitions: n,
                        ..Counters::default()
                    },
                )
            })
            .collect();
        self.cache.reset();
        self.timeline.clear(0);
        self.durations.clear();
        self.login_durations.clear();
        MessageResult(before)
    }
}

impl Handler<GetTimeline> for MonitorActor {
    type Result = MessageResult<GetTimeline>;

    fn handle(&mut self, _: GetTimeline, _: &mut Context<Self>) -> Self::Result {
        self.file_cache_hits();
        MessageResult(self.timeline.points(chrono::Utc::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn counts_rates_and_reset() {
        let counters = Arc::new(CacheCounters::default());
        let exposition = Arc::new(Metrics::new(counters.clone()));
        let monitor = MonitorActor::new(counters.clone(), exposition).start();
        for (status, duration) in [
            (AcquisitionStatus::Success, 1.0),
            (AcquisitionStatus::Success, 3.0),
            (AcquisitionStatus::Timeout, 60.0),
            (AcquisitionStatus::CredentialError, 2.0),
        ] {
            monitor.do_send(AcquisitionStarted {
                site: "court_zxfw".into(),
            });
            monitor.do_send(AcquisitionFinished {
                site: "court_zxfw".into(),
                status,
                duration,
                login_duration: Some(duration),
            });
        }
        monitor.do_send(AcquisitionStarted {
            site: "court_zxfw".into(),
        });
        counters.hit(CacheKind::Token);
        counters.miss(CacheKind::Token);

        let snap = monitor.send(Snapshot).await.unwrap();
        assert_eq!(snap.totals.total_acquisitions, 4);
        assert_eq!(snap.totals.success_rate(), 50.0);
        assert_eq!(snap.totals.timeout_rate(), 25.0);
        assert_eq!(snap.totals.avg_duration(), 16.5);
        assert_eq!(snap.totals.concurrent_acquisitions, 1);
        assert_eq!(snap.sites["court_zxfw"].credential_error_count, 1);
        assert_eq!(snap.cache_hit_rate(), Some(50.0));
        assert_eq!(snap.percentiles, [2.0, 60.0, 60.0]);

        let before = monitor.send(Reset).await.unwrap();
        assert_eq!(before.totals.total_acquisitions, 4);
        let after = monitor.send(Snapshot).await.unwrap();
        assert_eq!(after.totals.total_acquisitions, 0);
        assert_eq!(
            after.totals.concurrent_acquisitions, 1,
            "running acquisitions survive a reset"
        );
        assert_eq!(after.cache_hit_rate(), None);
    }
}

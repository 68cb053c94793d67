//! Prometheus exposition (`GET /metrics`), with the `prometheus-client` crate: acquisitions by
//! site and status, duration histograms (total and login), acquisitions in flight, and cache
//! lookups by kind and result. Counters here only grow, as Prometheus expects;
//! `POST /performance/metrics/reset` zeroes the live JSON metrics, not these.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

use crate::cache::CacheCounters;
use crate::cache::CacheKind;

/// Seconds: from a cached answer's milliseconds to a browser login's minutes.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcquisitionLabels {
    site: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    site: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    site: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaptchaLabels {
    site: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabels {
    site: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    acquisitions: Family<AcquisitionLabels, Counter>,
    duration: Family<SiteLabels, Histogram, fn() -> Histogram>,
    login_duration: Family<SiteLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<SiteLabels, Gauge>,
    rejections: Family<RejectionLabels, Counter>,
    circuit_open: Family<SiteLabels, Gauge>,
    site_limit: Family<SiteLabels, Gauge>,
    probes: Family<ProbeLabels, Counter>,
    webhook_deliveries: Family<ResultLabels, Counter>,
    /// Captcha solver outcomes (SPEC §15), by site and [`SolveResult`].
    captcha_solves: Family<CaptchaLabels, Counter>,
    /// Accounts held by job checkouts now, per site.
    checkouts_active: Family<SiteLabels, Gauge>,
    /// Checkouts that ended, by site and how (released, expired).
    checkouts_ended: Family<ProbeLabels, Counter>,
}

/// What became of one captcha a solver was asked to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolveResult {
    /// The solver gave a text.
    Solved,
    /// The portal then said the text was wrong.
    Rejected,
    /// The solver printed nothing.
    Empty,
    /// The solver could not run, or exited non-zero.
    Failed,
    /// The solver was killed at its timeout.
    Timeout,
    /// Nobody to ask (`"human"` without the hand-off, or no solver configured).
    Unavailable,
}

impl SolveResult {
    pub fn as_str(self) -> &'static str {
        match self {
            SolveResult::Solved => "solved",
            SolveResult::Rejected => "rejected",
            SolveResult::Empty => "empty",
            SolveResult::Failed => "failed",
            SolveResult::Timeout => "timeout",
            SolveResult::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Cache lookups, read from the shared counters at scrape time.
#[derive(Debug)]
struct CacheCollector(Arc<CacheCounters>);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "cache_lookups",
            "Cache lookups by kind and result (hit, miss, error)",
            None,
            MetricType::Counter,
        )?;
        for kind in CacheKind::ALL {
            let counts = self.0.get(kind);
            for (result, value) in [
                ("hit", counts.hits),
                ("miss", counts.misses),
                ("error", counts.errors),
            ] {
                let labels = [("kind", kind.as_str()), ("result", result)];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let superseded = encoder.encode_descriptor(
            "cache_site_token_superseded",
            "Writes of a site's newest token refused for a newer one of another account",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.0.site_tokens_superseded()).encode(superseded)?;
        Ok(())
    }
}

/// Registers `metric` under `name` and hands it back, for the handle [`Metrics`] keeps.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

type DurationFamily = Family<SiteLabels, Histogram, fn() -> Histogram>;

impl Metrics {
    /// Every family, registered in the order of the exposition: one flat list, so that the
    /// order stays visible.
    pub fn new(cache: Arc<CacheCounters>) -> Metrics {
        let mut registry = Registry::with_prefix("tokend");
        let r = &mut registry;
        let acquisitions = registered(
            r,
            "acquisitions",
            "Acquisitions that reached a login, by site and status",
            Family::<AcquisitionLabels, Counter>::default(),
        );
        let duration = registered(
            r,
            "acquisition_duration_seconds",
            "Time from request to answer of acquisitions that logged in",
            DurationFamily::new_with_constructor(duration_histogram),
        );
        let login_duration = registered(
            r,
            "login_duration_seconds",
            "Time spent in login drivers, retries included",
            DurationFamily::new_with_constructor(duration_histogram),
        );
        let in_flight = registered(
            r,
            "acquisitions_in_flight",
            "Acquisitions logging in now",
            Family::<SiteLabels, Gauge>::default(),
        );
        let rejections = registered(
            r,
            "rejections",
            "Requests refused before any login ran, by site and reason",
            Family::<RejectionLabels, Counter>::default(),
        );
        let circuit_open = registered(
            r,
            "site_circuit_open",
            "1 while a site's circuit is open or half-open (logins paused), else 0",
            Family::<SiteLabels, Gauge>::default(),
        );
        let site_limit = registered(
            r,
            "site_concurrency_limit",
            "A site's effective slot limit (adaptive concurrency)",
            Family::<SiteLabels, Gauge>::default(),
        );
        let probes = registered(
            r,
            "probes",
            "Validity probes of tokens in use, by site and result (valid, invalid, error)",
            Family::<ProbeLabels, Counter>::default(),
        );
        let webhook_deliveries = registered(
            r,
            "webhook_deliveries",
            "Webhook POSTs by result (delivered, retried, failed, dropped from a full queue)",
            Family::<ResultLabels, Counter>::default(),
        );
        let captcha_solves = registered(
            r,
            "captcha_solves",
            "Captchas given to a solver, by site and result (solved, rejected, empty, failed, timeout, unavailable)",
            Family::<CaptchaLabels, Counter>::default(),
        );
        let checkouts_active = registered(
            r,
            "checkouts_active",
            "Accounts held by job checkouts now, by site",
            Family::<SiteLabels, Gauge>::default(),
        );
        let checkouts_ended = registered(
            r,
            "checkouts_ended",
            "Job checkouts that ended, by site and result (released, expired)",
            Family::<ProbeLabels, Counter>::default(),
        );
        registry.register_collector(Box::new(CacheCollector(cache)));
        Metrics {
            checkouts_active,
            checkouts_ended,
            registry,
            acquisitions,
            duration,
            login_duration,
            in_flight,
            rejections,
            circuit_open,
            site_limit,
            probes,
            webhook_deliveries,
            captcha_solves,
        }
    }

    pub fn captcha_solve(&self, site: &str, result: SolveResult) {
        self.captcha_solves
            .get_or_create(&CaptchaLabels {
                site: site.to_string(),
                result: result.as_str().to_string(),
            })
            .inc();
    }

    pub fn started(&self, site: &str) {
        self.in_flight
            .get_or_create(&SiteLabels {
                site: site.to_string(),
            })
            .inc();
    }

    pub fn finished(&self, site: &str, status: &str, duration: f64, login: Option<f64>) {
        let labels = SiteLabels {
            site: site.to_string(),
        };
        self.in_flight.get_or_create(&labels).dec();
        self.acquisitions
            .get_or_create(&AcquisitionLabels {
                site: site.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.duration.get_or_create(&labels).observe(duration);
        if let Some(login) = login {
            self.login_duration.get_or_create(&labels).observe(login);
        }
    }

    pub fn rejected(&self, site: &str, reason: &str) {
        self.rejections
            .get_or_create(&RejectionLabels {
                site: site.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Sets whether a site's circuit is open (read when health is evaluated and scraped).
    pub fn set_circuit_open(&self, site: &str, open: bool) {
        self.circuit_open
            .get_or_create(&SiteLabels {
                site: site.to_string(),
            })
            .set(i64::from(open));
    }

    pub fn set_site_limit(&self, site: &str, limit: u32) {
        self.site_limit
            .get_or_create(&SiteLabels {
                site: site.to_string(),
            })
            .set(i64::from(limit));
    }

    pub fn probe(&self, site: &str, result: &str) {
        self.probes
            .get_or_create(&ProbeLabels {
                site: site.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Sets how many accounts of each site job checkouts hold (sites not named: none).
    pub fn set_checkouts(&self, sites: &[&str], counts: &std::collections::HashMap<String, i64>) {
        for site in sites {
            self.checkouts_active
                .get_or_create(&SiteLabels {
                    site: site.to_string(),
                })
                .set(counts.get(*site).copied().unwrap_or(0));
        }
    }

    /// A checkout ended: `released` by its holder, or `expired` unrenewed.
    pub fn checkout_ended(&self, site: &str, result: &str) {
        self.checkouts_ended
            .get_or_create(&ProbeLabels {
                site: site.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn webhook(&self, result: &str) {
        self.webhook_deliveries
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            log::error!("event=metrics_encoding_failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let cache = Arc::new(CacheCounters::default());
        cache.hit(CacheKind::Token);
        let metrics = Metrics::new(cache);
        metrics.started("court_zxfw");
        metrics.finished("court_zxfw", "success", 1.2, Some(1.0));
        let text = metrics.encode();
        assert!(
            text.contains(r#"tokend_acquisitions_total{site="court_zxfw",status="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("tokend_acquisition_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(r#"tokend_cache_lookups_total{kind="token",result="hit"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tokend_acquisitions_in_flight{site="court_zxfw"} 0"#),
            "{text}"
        );
    }
}

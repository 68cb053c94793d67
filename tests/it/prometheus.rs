//! `/metrics` as a real Prometheus client reads it: parsed with an exposition-format parser,
//! every documented family is there under its documented name (no doubled prefix).

use serde_json::json;

use crate::support::harness::Harness;

/// The families the README documents, as Prometheus sees them.
const DOCUMENTED: [&str; 8] = [
    "tokend_acquisitions_total",
    "tokend_acquisition_duration_seconds",
    "tokend_login_duration_seconds",
    "tokend_acquisitions_in_flight",
    "tokend_cache_lookups_total",
    "tokend_rejections_total",
    "tokend_site_circuit_open",
    "tokend_site_concurrency_limit",
];

/// A sample's number. (OpenMetrics types a counter family without its `_total`, which this
/// text-format parser does not pair with the samples: they come as untyped.)
fn number(value: &prometheus_parse::Value) -> f64 {
    match value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("not a number: {other:?}"),
    }
}

#[actix_rt::test]
async fn every_documented_family_parses_under_its_name() {
    let h = Harness::start(None, "").await;
    h.add_account("alice", "pw-a", false);
    let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
    assert_eq!(status, 200);
    // A refused request, and the site gauges (set when health is evaluated).
    let (status, _) = h
        .acquire(json!({"site_name": "court_zxfw", "credential_id": 999}))
        .await;
    assert_eq!(status, 404);
    h.health().await;
    let (status, _) = h
        .acquire(json!({"site_name": "court_zxfw", "force_refresh": true, "account": "alice"}))
        .await;
    assert_eq!(status, 200);
    let text = h.prometheus_text().await;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let names: std::collections::BTreeSet<String> = scrape
        .samples
        .iter()
        .map(|s| {
            // Histogram samples come as NAME_bucket/_sum/_count.
            let name = s.metric.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| base.ends_with("_seconds"))
                .unwrap_or(name)
                .to_string()
        })
        .collect();
    for family in DOCUMENTED {
        if family == "tokend_rejections_total" {
            continue; // checked below: only families with samples are listed
        }
        assert!(names.contains(family), "{family} missing from {names:?}");
    }
    assert!(
        names.iter().all(|n| !n.starts_with("tokend_tokend")),
        "doubled prefix: {names:?}"
    );
    let hits = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "tokend_cache_lookups_total"
                && s.labels.get("kind") == Some("token")
                && s.labels.get("result") == Some("hit")
        })
        .expect("token cache hits");
    assert!(number(&hits.value) >= 0.0);
}

#[actix_rt::test]
async fn rejections_are_exported_by_site_and_reason() {
    let h = Harness::start(None, "").await;
    // No account at all: every request is refused.
    for _ in 0..3 {
        let (status, _) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 503);
    }
    let text = h.prometheus_text().await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the exposition parses");
    let refused = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "tokend_rejections_total"
                && s.labels.get("site") == Some("court_zxfw")
                && s.labels.get("reason") == Some("no_available_account")
        })
        .expect("tokend_rejections_total{site,reason}");
    assert_eq!(number(&refused.value), 3.0, "{:?}", refused.value);
}

//! The admin surface, each endpoint checked by its effect: metrics and their reset,
//! statistics against the history rows, Prometheus, cache warm-up and clear (keys really in
//! Redis, then really gone), history pages, optimize-concurrency applied at run time.

use serde_json::{json, Value};

use crate::support::harness::{backends, Harness};

const PERF: &str = "/api/v1/automation/performance";

impl Harness {
    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path).await
    }

    async fn post_empty(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::POST, path).await
    }
}

/// Two logins (one success, one wrong password) and a cache hit.
async fn some_traffic(h: &Harness) {
    h.add_account("alice", "pw-alice", true);
    let bad = h.add_account("mallory", "pw-old", false);
    h.portal.state.accept("mallory", "pw-new");
    assert_eq!(h.acquire(json!({"site_name": "court_zxfw"})).await.0, 200);
    assert_eq!(h.acquire(json!({"site_name": "court_zxfw"})).await.0, 200);
    assert_eq!(
        h.acquire(json!({"site_name": "court_zxfw", "credential_id": bad}))
            .await
            .0,
        502
    );
    h.history().await;
}

#[actix_rt::test]
async fn metrics_statistics_and_reset() {
    let h = Harness::start(None, "").await;
    some_traffic(&h).await;

    let (status, body) = h.get(&format!("{PERF}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    let m = &body["data"];
    assert_eq!(m["total_acquisitions"], 2);
    assert_eq!(m["successful_acquisitions"], 1);
    assert_eq!(m["credential_error_count"], 1);
    assert_eq!(m["success_rate"], 50.0);
    // Token lookups: a miss before the first login, a hit, a miss for mallory.
    assert_eq!(m["cache"]["token"]["hits"], 1, "{m}");
    assert_eq!(m["cache"]["token"]["misses"], 2, "{m}");
    assert_eq!(m["sites"]["court_zxfw"]["total_acquisitions"], 2);
    assert!(m["duration_percentiles"]["p99"].as_f64().unwrap() > 0.0);

    let (_, stats) = h.get(&format!("{PERF}/statistics?days=7")).await;
    let s = &stats["data"];
    assert_eq!(s["summary"]["total"], 2, "{s}");
    assert_eq!(s["status_breakdown"]["success"], 1);
    assert_eq!(s["status_breakdown"]["credential_error"], 1);
    assert_eq!(s["site_breakdown"][0]["site_name"], "court_zxfw");
    assert_eq!(s["daily_trend"].as_array().unwrap().len(), 7);
    assert_eq!(s["daily_trend"][6]["total"], 2, "today is the last day");
    assert_eq!(s["real_time_metrics"]["total_acquisitions"], 2);
    assert_eq!(
        h.get(&format!("{PERF}/statistics?days=7&site_name=other"))
            .await
            .1["data"]["summary"]["total"],
        0
    );
    assert_eq!(h.get(&format!("{PERF}/statistics?days=0")).await.0, 400);
    assert_eq!(h.get(&format!("{PERF}/statistics?days=91")).await.0, 400);
    assert_eq!(h.get(&format!("{PERF}/statistics?days=seven")).await.0, 400);

    let prometheus = h
        .client
        .get(format!("http://{}/metrics", h.tokend.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        prometheus.contains(
            r#"tokend_acquisitions_total{site="court_zxfw",status="credential_error"} 1"#
        ),
        "{prometheus}"
    );
    assert!(
        prometheus.contains(r#"tokend_cache_lookups_total{kind="token",result="hit"} 1"#),
        "{prometheus}"
    );

    let (status, reset) = h.post_empty(&format!("{PERF}/metrics/reset")).await;
    assert_eq!(status, 200);
    assert_eq!(reset["data"]["previous"]["total_acquisitions"], 2);
    let (_, after) = h.get(&format!("{PERF}/metrics")).await;
    assert_eq!(after["data"]["total_acquisitions"], 0);
    assert_eq!(after["data"]["cache"]["token"]["hits"], 0);
}

#[actix_rt::test]
async fn history_pages_newest_first_without_token_material() {
    let h = Harness::start(None, "").await;
    h.add_account("alice", "pw-alice", false);
    for _ in 0..5 {
        assert_eq!(
            h.acquire(json!({"site_name": "court_zxfw", "force_refresh": true}))
                .await
                .0,
            200
        );
    }
    h.history().await;
    let (status, page) = h.get("/api/v1/automation/history?limit=2").await;
    assert_eq!(status, 200, "{page}");
    let items = page["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items[0]["id"].as_i64() > items[1]["id"].as_i64());
    let text = page.to_string();
    assert!(
        !text.contains("tok-alice"),
        "token material in history: {text}"
    );
    assert!(!text.contains("token_redacted"));
    let next = page["data"]["next_before_id"].as_i64().unwrap();
    let (_, rest) = h
        .get(&format!(
            "/api/v1/automation/history?limit=10&before_id={next}"
        ))
        .await;
    assert_eq!(rest["data"]["items"].as_array().unwrap().len(), 3);
    assert!(rest["data"]["next_before_id"].is_null());
    assert_eq!(
        h.get("/api/v1/automation/history?status=success&site_name=court_zxfw")
            .await
            .1["data"]["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        h.get("/api/v1/automation/history?status=maybe").await.0,
        400
    );
    assert_eq!(
        h.get("/api/v1/automation/history?limit=100000").await.0,
        400
    );

    // Cleanup of rows older than a day keeps today's; days=0 is refused.
    let (_, cleaned) = h
        .post_empty("/api/v1/automation/history/cleanup?days=1")
        .await;
    assert_eq!(cleaned["data"]["deleted"], 0);
    assert_eq!(
        h.post_empty("/api/v1/automation/history/cleanup?days=0")
            .await
            .0,
        400
    );
    assert_eq!(
        h.post_empty("/api/v1/automation/history/cleanup").await.0,
        400
    );
}

#[actix_rt::test]
async fn cache_warm_up_and_clear_act_on_the_backend() {
    for redis in backends() {
        let h = Harness::start(redis.as_deref(), "").await;
        some_traffic(&h).await;
        let (status, warmed) = h
            .post_empty(&format!("{PERF}/cache/warm-up?site_name=court_zxfw"))
            .await;
        assert_eq!(status, 200, "{warmed}");
        assert_eq!(warmed["data"]["credentials_loaded"], 2);
        assert_eq!(warmed["data"]["blacklisted"], json!(["mallory"]));
        assert_eq!(h.post_empty(&format!("{PERF}/cache/warm-up")).await.0, 400);
        assert_eq!(
            h.post_empty(&format!("{PERF}/cache/warm-up?site_name=nowhere"))
                .await
                .0,
            404
        );

        let (_, stats) = h.get(&format!("{PERF}/cache-stats")).await;
        let kinds = &stats["data"]["kinds"];
        assert!(
            kinds["credentials"]["keys"].as_u64().unwrap() >= 1,
            "{stats}"
        );
        assert!(kinds["blacklist"]["keys"].as_u64().unwrap() >= 1, "{stats}");
        assert!(kinds["token"]["keys"].as_u64().unwrap() >= 2, "{stats}");

        let prefix = match &redis {
            Some(url) => {
                let prefix = h.tokend.state.config.redis.key_prefix.clone();
                let mut conn = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                let exists: bool = redis::AsyncCommands::exists(
                    &mut conn,
                    // The key schema (src/redis/keys.rs): the site is the hash tag.
                    format!("{prefix}:credentials:{{court_zxfw}}"),
                )
                .await
                .unwrap();
                assert!(exists, "warm-up wrote the credential list to Redis");
                assert!(
                    stats["data"]["backend"]["used_memory_bytes"]
                        .as_u64()
                        .unwrap()
                        > 0
                );
                Some((prefix, conn))
            }
            None => None,
        };

        let (status, cleared) = h
            .call(
                reqwest::Method::DELETE,
                &format!("{PERF}/cache/clear?site_name=court_zxfw"),
            )
            .await;
        assert_eq!(status, 200, "{cleared}");
        assert!(
            cleared["data"]["deleted_keys"].as_u64().unwrap() >= 4,
            "{cleared}"
        );
        let (_, stats) = h.get(&format!("{PERF}/cache-stats")).await;
        for kind in ["token", "credentials", "account_stats", "blacklist"] {
            assert_eq!(
                stats["data"]["kinds"][kind]["keys"], 0,
                "{kind} left after clear: {stats}"
            );
        }
        if let Some((prefix, mut conn)) = prefix {
            let left: Vec<String> =
                redis::AsyncCommands::keys(&mut conn, format!("{prefix}:credentials:*"))
                    .await
                    .unwrap();
            assert!(left.is_empty());
        }
        // The next acquire logs in again: the cached token is gone.
        let (_, again) = h
            .acquire(json!({"site_name": "court_zxfw", "account": "alice"}))
            .await;
        assert_eq!(
            again["data"]["source"], "store",
            "from the tokens table after the cache was cleared: {again}"
        );
        assert_eq!(
            h.call(
                reqwest::Method::DELETE,
                &format!("{PERF}/cache/clear?site_name=bad name")
            )
            .await
            .0,
            400
        );
    }
}

#[actix_rt::test]
async fn optimize_concurrency_applies_at_run_time() {
    let h = Harness::start(None, "[concurrency]\nmax_concurrent_per_account = 2\n").await;
    let (status, dry) = h.post_empty(&format!("{PERF}/optimize-concurrency")).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["data"]["optimization_applied"], false);
    assert_eq!(dry["data"]["recommendations"][0]["type"], "per_account");
    assert_eq!(
        h.get(&format!("{PERF}/resource-usage")).await.1["data"]["limits"]["per_account"],
        2
    );

    let (_, applied) = h
        .post_empty(&format!("{PERF}/optimize-concurrency?apply=true"))
        .await;
    assert_eq!(applied["data"]["optimization_applied"], true);
    let (_, usage) = h.get(&format!("{PERF}/resource-usage")).await;
    assert_eq!(usage["data"]["limits"]["per_account"], 1, "{usage}");
    assert!(usage["data"]["process"]["rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        h.post_empty(&format!("{PERF}/optimize-concurrency?apply=maybe"))
            .await
            .0,
        400
    );
    let (status, cleanup) = h.post_empty(&format!("{PERF}/resources/cleanup")).await;
    assert_eq!(status, 200);
    assert_eq!(cleanup["data"]["expired_leases_freed"], 0);
}

/// Malformed and hostile input at every endpoint: never a 5xx, always a JSON error body.
#[actix_rt::test]
async fn hostile_input_never_gets_a_5xx() {
    let h = Harness::start(None, "").await;
    h.add_account("alice", "pw-alice", false);
    let paths = [
        "/api/v1/automation/tokens/acquire",
        "/api/v1/automation/tokens/invalidate",
        "/api/v1/automation/performance/metrics",
        "/api/v1/automation/performance/metrics/reset",
        "/api/v1/automation/performance/statistics",
        "/api/v1/automation/performance/health",
        "/api/v1/automation/performance/resource-usage",
        "/api/v1/automation/performance/resources/cleanup",
        "/api/v1/automation/performance/cache-stats",
        "/api/v1/automation/performance/cache/warm-up",
        "/api/v1/automation/performance/cache/clear",
        "/api/v1/automation/performance/optimize-concurrency",
        "/api/v1/automation/history",
        "/api/v1/automation/history/cleanup",
        "/metrics",
        "/healthz",
        "/../../etc/passwd",
        "/api/v1/automation/tokens/%00",
    ];
    let queries = [
        "",
        "?days=-1",
        "?days=99999999999999999999",
        "?site_name=%00%ff",
        "?site_name=../../x",
        "?limit=-5&before_id=abc",
        "?apply=1",
        "?days=1&days=2",
        "?site_name=",
    ];
    let bodies: [&[u8]; 9] = [
        b"",
        b"{",
        b"null",
        b"[]",
        br#"{"site_name": "court_zxfw", "credential_id": "1"}"#,
        br#"{"site_name": "court_zxfw", "credential_id": 99999999999999999999}"#,
        br#"{"site_name": "\u0000\u202e", "account": "'; DROP TABLE tokens; --"}"#,
        br#"{"site_name": "court_zxfw", "force_refresh": "yes"}"#,
        &[0xff, 0xfe, 0x00, 0x12],
    ];
    let methods = [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
    ];
    let mut checked = 0;
    for path in paths {
        for query in queries {
            for method in &methods {
                for body in bodies {
                    let url = format!("http://{}{path}{query}", h.tokend.addr);
                    let response = h
                        .client
                        .request(method.clone(), url)
                        .header("content-type", "application/json")
                        .body(body.to_vec())
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap();
                    assert!(
                        status < 500 || (status == 502 || status == 503),
                        "{method} {path}{query} {:?} -> {status} {text}",
                        String::from_utf8_lossy(body)
                    );
                    assert!(status != 500, "{method} {path}{query} -> 500 {text}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 5000);
    // tokend still works afterwards.
    assert_eq!(h.acquire(json!({"site_name": "court_zxfw"})).await.0, 200);
}

#[actix_rt::test]
async fn the_openapi_document_lists_every_endpoint() {
    let h = Harness::start(None, "").await;
    let (status, doc) = h.get("/api/v1/automation/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/automation/tokens/acquire", "post"),
        ("/api/v1/automation/tokens/invalidate", "post"),
        ("/api/v1/automation/performance/metrics", "get"),
        ("/api/v1/automation/performance/metrics/reset", "post"),
        ("/api/v1/automation/performance/statistics", "get"),
        ("/api/v1/automation/performance/health", "get"),
        ("/api/v1/automation/performance/resource-usage", "get"),
        ("/api/v1/automation/performance/resources/cleanup", "post"),
        ("/api/v1/automation/performance/cache-stats", "get"),
        ("/api/v1/automation/performance/cache/warm-up", "post"),
        ("/api/v1/automation/performance/cache/clear", "delete"),
        (
            "/api/v1/automation/performance/optimize-concurrency",
            "post",
        ),
        ("/api/v1/automation/history", "get"),
        ("/api/v1/automation/history/cleanup", "post"),
        ("/metrics", "get"),
        ("/healthz", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
        // And the path is really served (not a 404 from the default handler).
        let (status, _) = h.call(method.to_uppercase().parse().unwrap(), path).await;
        assert_ne!(status, 404, "{method} {path} is documented but not served");
    }
    let acquire = &doc["components"]["schemas"]["AcquireRequest"];
    assert!(acquire["properties"]["site_name"].is_object(), "{acquire}");
}

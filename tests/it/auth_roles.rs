//! Bearer roles through the real daemon: a metrics token (for Prometheus) reads metrics,
//! health and every GET, and gets 403 on anything that changes state; the `Bearer` scheme is
//! case-insensitive.

use reqwest::Method;

use crate::support::{write_config, Daemon};

const ADMIN: &str = "admin-token-0123456789";
const METRICS: &str = "metrics-token-0123456789";
const METRICS_ENV: &str = "metrics-env-token-0123456789";

async fn call(method: Method, url: &str, authorization: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().request(method.clone(), url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if method == Method::POST {
        request = request.json(&serde_json::json!({"site_name": "court_zxfw"}));
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn metrics_tokens_read_and_never_change_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\nmetrics_tokens = [\"{METRICS}\"]\n"
        ),
    );
    let daemon = Daemon::start_with_env(
        dir.path(),
        &config,
        "info",
        &[("TOKEND_METRICS_TOKEN", METRICS_ENV)],
    );
    let perf = "/api/v1/automation/performance";
    for token in [METRICS, METRICS_ENV] {
        let bearer = format!("Bearer {token}");
        for path in [
            "/metrics".to_string(),
            format!("{perf}/health"),
            format!("{perf}/metrics"),
            format!("{perf}/statistics?days=1"),
            format!("{perf}/cache-stats"),
            "/api/v1/automation/history".to_string(),
        ] {
            assert_eq!(
                call(Method::GET, &daemon.url(&path), Some(&bearer)).await,
                200,
                "GET {path} with a metrics token"
            );
        }
        for (method, path) in [
            (Method::POST, format!("{perf}/metrics/reset")),
            (Method::DELETE, format!("{perf}/cache/clear")),
            (Method::POST, format!("{perf}/resources/cleanup")),
            (
                Method::POST,
                format!("{perf}/optimize-concurrency?apply=true"),
            ),
            (
                Method::POST,
                "/api/v1/automation/tokens/acquire".to_string(),
            ),
            (
                Method::POST,
                "/api/v1/automation/tokens/invalidate".to_string(),
            ),
            (
                Method::POST,
                "/api/v1/automation/history/cleanup?days=1".to_string(),
            ),
        ] {
            assert_eq!(
                call(method.clone(), &daemon.url(&path), Some(&bearer)).await,
                403,
                "{method} {path} with a metrics token"
            );
        }
    }
    // Captchas are a login in progress: admin only, even to read.
    let captchas = daemon.url("/api/v1/automation/captchas");
    let bearer = format!("Bearer {METRICS}");
    assert_eq!(call(Method::GET, &captchas, Some(&bearer)).await, 403);
    let admin = format!("Bearer {ADMIN}");
    assert_eq!(call(Method::GET, &captchas, Some(&admin)).await, 200);
    // The admin token still does everything.
    assert_eq!(
        call(
            Method::POST,
            &daemon.url(&format!("{perf}/metrics/reset")),
            Some(&format!("Bearer {ADMIN}"))
        )
        .await,
        200
    );
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n"),
    );
    let daemon = Daemon::start(dir.path(), &config);
    let health = daemon.url("/api/v1/automation/performance/health");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        assert_eq!(
            call(Method::GET, &health, Some(&format!("{scheme} {ADMIN}"))).await,
            200,
            "{scheme}"
        );
    }
    assert_eq!(
        call(Method::GET, &health, Some(&format!("Basic {ADMIN}"))).await,
        401
    );
}

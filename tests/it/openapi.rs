//! The OpenAPI document is good enough to generate a client from: every operation has an
//! operationId of its own, every JSON success answer has its real shape (not `object`), a
//! real validator (`openapi-spec-validator`) accepts the document, and the real answers of
//! every endpoint validate against the schemas it declares (`jsonschema`).
//!
//! The validators are Python packages: `TOKEND_OPENAPI_PYTHON` names a Python that has
//! `openapi-spec-validator` and `jsonschema` (.ci/run sets it); without it the tests make a
//! venv of their own under `target/tmp` once. Where neither works they skip, but fail in CI.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::harness::Harness;
use crate::support::{self, harness, write_config, Daemon};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/validate_openapi.py"
);

fn has_validators(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import openapi_spec_validator, jsonschema"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A Python with both validators: `TOKEND_OPENAPI_PYTHON`, or a venv under `target/tmp`
/// (made once). `None` (the test skips) outside CI when neither is there.
fn validator_python() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("TOKEND_OPENAPI_PYTHON") {
        let path = PathBuf::from(path);
        assert!(
            has_validators(&path),
            "TOKEND_OPENAPI_PYTHON={} lacks openapi-spec-validator or jsonschema",
            path.display()
        );
        return Some(path);
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi-venv");
    let python = venv.join("bin/python");
    if !has_validators(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .args(["openapi-spec-validator", "jsonschema"])
                .status()
                .is_ok_and(|s| s.success());
        if !made || !has_validators(&python) {
            support::require("openapi-spec-validator and jsonschema (Python)", false);
            return None;
        }
    }
    Some(python)
}

/// Runs the validation script on `input` (written to a file): its problems, one a line.
fn run_validator(python: &Path, mode: &str, input: &Value) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.json");
    std::fs::write(&file, serde_json::to_vec(input).unwrap()).unwrap();
    let out = Command::new(python)
        .arg(SCRIPT)
        .arg(mode)
        .arg(&file)
        .output()
        .unwrap();
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Follows a `$ref` into `components.schemas`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// A schema that says more than "some object".
fn has_shape(doc: &Value, schema: &Value) -> bool {
    let schema = resolve(doc, schema);
    schema["properties"].is_object()
        || schema["items"].is_object()
        || schema["enum"].is_array()
        || schema["oneOf"].is_array()
        || schema["allOf"].is_array()
}

#[actix_rt::test]
async fn operation_ids_are_unique_and_success_answers_have_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nlisten = \"127.0.0.1:0\"\n");
    let daemon = Daemon::start(dir.path(), &config);
    let doc: Value = reqwest::get(daemon.url("/api/v1/automation/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids = HashSet::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(
                ids.insert(id.to_string()),
                "operationId `{id}` is used twice"
            );
            let Some(schema) =
                operation["responses"]["200"]["content"]["application/json"].get("schema")
            else {
                continue;
            };
            if path.ends_with("openapi.json") {
                continue; // the document itself
            }
            let envelope = resolve(&doc, schema);
            let body = if envelope["properties"]["data"].is_null() {
                schema
            } else {
                &envelope["properties"]["data"]
            };
            assert!(
                has_shape(&doc, body),
                "{method} {path}: the success answer has no schema: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} JSON success answers checked");
    let token = resolve(
        &doc,
        &resolve(
            &doc,
            &doc["paths"]["/api/v1/automation/tokens/acquire"]["post"]["responses"]["200"]
                ["content"]["application/json"]["schema"],
        )["properties"]["data"],
    );
    for field in [
        "token",
        "account",
        "credential_id",
        "expires_at",
        "source",
        "authorization",
        "headers",
    ] {
        // The answer's own fields, or those of a part it flattens (`allOf`).
        let parts = token["allOf"].as_array().into_iter().flatten();
        let mut schemas = std::iter::once(token).chain(parts.map(|part| resolve(&doc, part)));
        assert!(
            schemas.any(|schema| schema["properties"][field].is_object()),
            "acquire answer lacks {field}: {token}"
        );
    }
}

#[actix_rt::test]
async fn the_document_is_valid_openapi() {
    let Some(python) = validator_python() else {
        return;
    };
    let h = Harness::start(None, "").await;
    let (status, doc) = h.api_get("/api/v1/automation/openapi.json").await;
    assert_eq!(status, 200);
    if let Err(problems) = run_validator(&python, "document", &doc) {
        panic!("openapi-spec-validator refuses the document:\n{problems}");
    }
    // Query parameters are declared in the query (a path parameter not in the path is invalid).
    for (path, name) in [
        ("/api/v1/automation/accounts", "site_name"),
        ("/api/v1/automation/tokens/status", "site_name"),
    ] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let param = params.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(param["in"], "query", "{path}: {param}");
    }
}

/// One call: method, the document's path, the real path (with query) and an optional body.
struct Call {
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
}

fn call(method: Method, template: &'static str, query: &str, body: Option<Value>) -> Call {
    Call {
        method,
        template,
        path: format!("{template}{query}"),
        body,
    }
}

/// Every JSON endpoint that a test can call without a captcha waiting, in an order that
/// leaves something to show (an account, a token, a checkout, history).
fn calls(checkout_id: &str) -> Vec<Call> {
    let account = json!({"site_name": "court_zxfw", "account": "u1"});
    vec![
        call(Method::GET, "/healthz", "", None),
        call(
            Method::GET,
            "/api/v1/automation/performance/health",
            "",
            None,
        ),
        call(
            Method::GET,
            "/api/v1/automation/performance/metrics",
            "",
            None,
        ),
        call(
            Method::GET,
            "/api/v1/automation/performance/statistics",
            "?days=1",
            None,
        ),
        call(
            Method::GET,
            "/api/v1/automation/performance/cache-stats",
            "",
            None,
        ),
        call(
            Method::GET,
            "/api/v1/automation/performance/resource-usage",
            "",
            None,
        ),
        call(
            Method::GET,
            "/api/v1/automation/performance/timeline",
            "",
            None,
        ),
        call(
            Method::GET,
            "/api/v1/automation/performance/alerts/history",
            "",
            None,
        ),
        call(Method::GET, "/api/v1/automation/history", "", None),
        call(
            Method::GET,
            "/api/v1/automation/accounts",
            "?site_name=court_zxfw",
            None,
        ),
        call(
            Method::GET,
            "/api/v1/automation/tokens/status",
            "?site_name=court_zxfw",
            None,
        ),
        call(Method::GET, "/api/v1/automation/tokens/checkouts", "", None),
        call(Method::GET, "/api/v1/automation/captchas", "", None),
        call(
            Method::POST,
            "/api/v1/automation/tokens/checkout/{id}/renew",
            "",
            Some(json!({"lease_seconds": 60})),
        )
        .with_id(checkout_id),
        call(
            Method::POST,
            "/api/v1/automation/tokens/checkout/{id}/release",
            "",
            Some(json!({"outcome": "ok"})),
        )
        .with_id(checkout_id),
        call(
            Method::POST,
            "/api/v1/automation/tokens/invalidate",
            "",
            Some(account.clone()),
        ),
        call(
            Method::POST,
            "/api/v1/automation/accounts/unblock",
            "",
            Some(account),
        ),
        call(
            Method::POST,
            "/api/v1/automation/sites/{site}/circuit/close",
            "",
            Some(json!({})),
        )
        .with_site("court_zxfw"),
        call(
            Method::POST,
            "/api/v1/automation/performance/cache/warm-up",
            "?site_name=court_zxfw",
            Some(json!({})),
        ),
        call(
            Method::DELETE,
            "/api/v1/automation/performance/cache/clear",
            "?site_name=court_zxfw",
            None,
        ),
        call(
            Method::POST,
            "/api/v1/automation/performance/resources/cleanup",
            "",
            Some(json!({})),
        ),
        call(
            Method::POST,
            "/api/v1/automation/performance/optimize-concurrency",
            "",
            Some(json!({})),
        ),
        call(
            Method::POST,
            "/api/v1/automation/history/cleanup",
            "?days=30",
            Some(json!({})),
        ),
        call(
            Method::POST,
            "/api/v1/automation/performance/metrics/reset",
            "",
            Some(json!({})),
        ),
    ]
}

impl Call {
    fn with_id(mut self, id: &str) -> Call {
        self.path = self.path.replace("{id}", id);
        self
    }

    fn with_site(mut self, site: &str) -> Call {
        self.path = self.path.replace("{site}", site);
        self
    }
}

/// The real answers of every endpoint, on both backends, validate against the schemas the
/// document declares for them.
#[actix_rt::test]
async fn real_answers_match_their_declared_schemas() {
    let Some(python) = validator_python() else {
        return;
    };
    for backend in harness::backends() {
        let h = Harness::start(backend.as_deref(), "").await;
        h.add_account("u1", "p1", false);
        h.add_account("u2", "p2", false);
        let (_, doc) = h.api_get("/api/v1/automation/openapi.json").await;
        let mut samples = Vec::new();
        let mut record = |method: &Method, template: &str, status: u16, body: Value| {
            samples.push(json!({
                "method": method.as_str().to_lowercase(),
                "path": template,
                "status": status,
                "body": body,
            }));
        };
        // Before any acquisition (rates and percentiles without data), then after.
        for path in [
            "performance/health",
            "performance/metrics",
            "performance/statistics",
        ] {
            let template = format!("/api/v1/automation/{path}");
            let (status, body) = h.api_get(&template).await;
            assert_eq!(status, 200, "{template}: {body}");
            record(&Method::GET, &template, status, body);
        }
        let (status, body) = h.acquire(json!({"site_name": "court_zxfw"})).await;
        assert_eq!(status, 200, "{body}");
        record(
            &Method::POST,
            "/api/v1/automation/tokens/acquire",
            status,
            body,
        );
        let checkout = "/api/v1/automation/tokens/checkout";
        let (status, _, body) = h
            .api_call(
                Method::POST,
                checkout,
                Some(json!({"site_name": "court_zxfw"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let id = body["data"]["checkout"]["checkout_id"]
            .as_str()
            .or(body["data"]["checkout_id"].as_str())
            .unwrap_or_else(|| panic!("no checkout id in {body}"))
            .to_string();
        record(&Method::POST, checkout, status, body);
        // An error answer too: an unknown site.
        let (status, body) = h.acquire(json!({"site_name": "nowhere"})).await;
        record(
            &Method::POST,
            "/api/v1/automation/tokens/acquire",
            status,
            body,
        );
        for c in calls(&id) {
            let (status, _, body) = h.api_call(c.method.clone(), &c.path, c.body).await;
            assert_eq!(status, 200, "{} {}: {body}", c.method, c.path);
            record(&c.method, c.template, status, body);
        }
        // The middleware's refusals: a foreign Host (421), a body without JSON's type (415).
        let url = format!("http://{}/api/v1/automation/accounts", h.tokend.addr);
        let misdirected = reqwest::Client::new()
            .get(&url)
            .header("Host", "evil.example");
        let response = misdirected.send().await.unwrap();
        let status = response.status().as_u16();
        record(
            &Method::GET,
            "/api/v1/automation/accounts",
            status,
            response.json().await.unwrap(),
        );
        let url = format!("http://{}/api/v1/automation/tokens/acquire", h.tokend.addr);
        let form = reqwest::Client::new()
            .post(&url)
            .body("site_name=court_zxfw");
        let response = form.send().await.unwrap();
        let status = response.status().as_u16();
        record(
            &Method::POST,
            "/api/v1/automation/tokens/acquire",
            status,
            response.json().await.unwrap(),
        );
        assert!(
            samples.iter().any(|s| s["status"] == 421)
                && samples.iter().any(|s| s["status"] == 415)
        );
        let input = json!({"document": doc, "samples": samples});
        if let Err(problems) = run_validator(&python, "answers", &input) {
            panic!("backend {backend:?}: answers that do not match their schemas:\n{problems}");
        }
    }
}

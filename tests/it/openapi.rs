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
use std::time::Duration;

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
            check_error_answers(&doc, path, method, operation);
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

/// Every error answer an operation declares is the error envelope (`ErrorBody`), and every
/// operation behind the bearer token declares its 401 and 403.
fn check_error_answers(doc: &Value, path: &str, method: &str, operation: &Value) {
    let responses = operation["responses"].as_object().unwrap();
    for (status, response) in responses {
        // The health report answers 503 too (the database is down): the report itself.
        let health_report = path.ends_with("/performance/health") && status == "503";
        if status.as_str() < "400" || health_report {
            continue;
        }
        let schema = &response["content"]["application/json"]["schema"];
        assert_eq!(
            schema["$ref"], "#/components/schemas/ErrorBody",
            "{method} {path} {status}: the error answer is not declared as ErrorBody: {response}"
        );
    }
    let public = operation["security"] == json!([{}]);
    if !public {
        for status in ["401", "403"] {
            assert!(
                responses.contains_key(status),
                "{method} {path} does not declare {status}"
            );
        }
    }
    let error_body = &doc["components"]["schemas"]["ErrorBody"];
    for field in ["success", "code", "message", "errors"] {
        assert!(
            error_body["required"]
                .as_array()
                .is_some_and(|r| r.contains(&json!(field))),
            "ErrorBody lacks {field}: {error_body}"
        );
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

/// A real answer, as the validation script takes it.
fn sample(method: &Method, template: &str, status: u16, body: Value) -> Value {
    json!({
        "method": method.as_str().to_lowercase(),
        "path": template,
        "status": status,
        "body": body,
    })
}

/// A site whose login program hands its captcha to a person, on a portal of its own (the
/// captcha it asks for would stop the other site's logins).
fn captcha_site(portal: &crate::support::portal::Portal) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/captcha_handoff_login.py"
    );
    format!(
        "[[sites]]\nname = \"court_captcha\"\ndriver = \"command\"\n\
         command = [\"{script}\", \"--captcha-url\", \"{}\", \"--login-url\", \"{}\"]\n",
        portal.url("/captcha"),
        portal.login_url()
    )
}

/// The real answers of every endpoint, on both backends, validate against the schemas the
/// document declares for them: every JSON success answer of the document, and error answers
/// (400, 404, 409, the middleware's 421 and 415).
#[actix_rt::test]
async fn real_answers_match_their_declared_schemas() {
    let Some(python) = validator_python() else {
        return;
    };
    for backend in harness::backends() {
        let captcha_portal = crate::support::portal::Portal::start();
        *captcha_portal.state.captcha_text.lock().unwrap() = Some("x7k2".into());
        captcha_portal.state.accept("alice", "pw-a");
        let h = Harness::start(backend.as_deref(), &captcha_site(&captcha_portal)).await;
        h.add_account("u1", "p1", false);
        h.add_account("u2", "p2", false);
        h.add_account_on("court_captcha", "alice", "pw-a", false);
        let (_, doc) = h.api_get("/api/v1/automation/openapi.json").await;
        let mut samples = Vec::new();
        let mut record = |method: &Method, template: &str, status: u16, body: Value| {
            samples.push(sample(method, template, status, body));
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
        let id = acquire_and_refusals(&h, &mut record).await;
        for c in calls(&id) {
            let (status, _, body) = h.api_call(c.method.clone(), &c.path, c.body).await;
            assert_eq!(status, 200, "{} {}: {body}", c.method, c.path);
            record(&c.method, c.template, status, body);
        }
        // Released: renewing it is 404 CHECKOUT_NOT_FOUND.
        let renew = "/api/v1/automation/tokens/checkout/{id}/renew";
        let (status, _, body) = h
            .api_call(Method::POST, &renew.replace("{id}", &id), Some(json!({})))
            .await;
        assert_eq!(status, 404, "{body}");
        record(&Method::POST, renew, status, body);
        answer_a_captcha(&h, &mut record).await;
        middleware_refusals(&h, &mut record).await;
        for status in [400, 404, 409, 415, 421] {
            assert!(
                samples.iter().any(|s| s["status"] == status),
                "no {status} answer was checked"
            );
        }
        assert_every_json_success_is_sampled(&doc, &samples);
        let input = json!({"document": doc, "samples": samples});
        if let Err(problems) = run_validator(&python, "answers", &input) {
            panic!("backend {backend:?}: answers that do not match their schemas:\n{problems}");
        }
    }
}

/// An acquire and a checkout (200), then refusals: the account another job holds (409),
/// an unknown site (404), a name that cannot be a site (400), a bad limit (400). The
/// checkout id, for the calls that renew and release it.
async fn acquire_and_refusals(
    h: &Harness,
    record: &mut impl FnMut(&Method, &str, u16, Value),
) -> String {
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
    let id = body["data"]["checkout_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no checkout id in {body}"))
        .to_string();
    let held = body["data"]["account"].as_str().unwrap().to_string();
    record(&Method::POST, checkout, status, body);
    // The account another job holds: 409 CHECKED_OUT.
    let (status, _, body) = h
        .api_call(
            Method::POST,
            checkout,
            Some(json!({"site_name": "court_zxfw", "account": held})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    record(&Method::POST, checkout, status, body);
    // An unknown site: 404; a site name that cannot be one: 400.
    for site in ["nowhere", "no such site!"] {
        let (status, body) = h.acquire(json!({"site_name": site})).await;
        assert!(status == 404 || status == 400, "{status} {body}");
        record(
            &Method::POST,
            "/api/v1/automation/tokens/acquire",
            status,
            body,
        );
    }
    let history = "/api/v1/automation/history";
    let (status, body) = h.api_get(&format!("{history}?limit=0")).await;
    assert_eq!(status, 400, "{body}");
    record(&Method::GET, history, status, body);
    id
}

/// A captcha handed to a person: the pending list with it, its answer (200), a second
/// answer (409 CAPTCHA_ALREADY_ANSWERED), an unknown id (404); the login then completes.
async fn answer_a_captcha(h: &Harness, record: &mut impl FnMut(&Method, &str, u16, Value)) {
    let acquire_url = format!("http://{}/api/v1/automation/tokens/acquire", h.tokend.addr);
    let client = h.client.clone();
    let login = actix_web::rt::spawn(async move {
        let answer = client
            .post(acquire_url)
            .json(&json!({"site_name": "court_captcha"}))
            .send()
            .await
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json::<Value>().await.unwrap(),
        )
    });
    let list = "/api/v1/automation/captchas";
    let (id, body) = support::wait_until("a pending captcha", Duration::from_secs(20), || async {
        let (_, body) = h.api_get(list).await;
        let id = body["data"]["captchas"][0]["id"].as_str()?.to_string();
        Some((id, body))
    })
    .await;
    record(&Method::GET, list, 200, body);
    let answer = "/api/v1/automation/captchas/{id}";
    for (id, expected) in [(id.as_str(), 200), (id.as_str(), 409), ("no-such-id", 404)] {
        let (status, _, body) = h
            .api_call(
                Method::POST,
                &answer.replace("{id}", id),
                Some(json!({"answer": "x7k2"})),
            )
            .await;
        assert_eq!(status, expected, "{body}");
        record(&Method::POST, answer, status, body);
    }
    let (status, body) = login.await.unwrap();
    assert_eq!(status, 200, "the login waiting for the captcha: {body}");
}

/// The middleware's refusals: a foreign Host (421), a body without JSON's type (415).
async fn middleware_refusals(h: &Harness, record: &mut impl FnMut(&Method, &str, u16, Value)) {
    let url = format!("http://{}/api/v1/automation/accounts", h.tokend.addr);
    let misdirected = reqwest::Client::new()
        .get(&url)
        .header("Host", "evil.example");
    let response = misdirected.send().await.unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 421);
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
    assert_eq!(status, 415);
    record(
        &Method::POST,
        "/api/v1/automation/tokens/acquire",
        status,
        response.json().await.unwrap(),
    );
}

/// Every operation the document gives a JSON success answer had its real one checked (the
/// document itself aside).
fn assert_every_json_success_is_sampled(doc: &Value, samples: &[Value]) {
    let sampled: HashSet<(String, String)> = samples
        .iter()
        .filter(|s| s["status"] == 200)
        .map(|s| (s["method"].to_string(), s["path"].to_string()))
        .collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let json_success = operation["responses"]["200"]["content"]
                .get("application/json")
                .is_some();
            if !json_success || path.ends_with("/openapi.json") {
                continue;
            }
            assert!(
                sampled.contains(&(json!(method).to_string(), json!(path).to_string())),
                "{method} {path}: no real answer checked against its schema"
            );
        }
    }
}

/// With `admin_token` set: no token is 401, a client token outside `/tokens/` is 403, and
/// both answers are the declared error envelope.
#[actix_rt::test]
async fn refusals_of_the_bearer_token_match_their_declared_schemas() {
    let Some(python) = validator_python() else {
        return;
    };
    let admin = "admin-token-0123456789";
    let client = "client-token-0123456789";
    let h = Harness::start(
        None,
        &format!("server.admin_token = \"{admin}\"\nserver.client_tokens = [\"{client}\"]\n"),
    )
    .await;
    let base = format!("http://{}", h.tokend.addr);
    let doc: Value = (h
        .client
        .get(format!("{base}/api/v1/automation/openapi.json")))
    .bearer_auth(admin)
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let mut samples = Vec::new();
    let accounts = "/api/v1/automation/accounts";
    let acquire = "/api/v1/automation/tokens/acquire";
    for (method, path, token, expected) in [
        (Method::GET, accounts, None, 401),
        (Method::GET, accounts, Some(client), 403),
        (Method::POST, acquire, Some("not-a-token"), 401),
    ] {
        let mut request = h.client.request(method.clone(), format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if method == Method::POST {
            request = request.json(&json!({"site_name": "court_zxfw"}));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, expected, "{method} {path}");
        samples.push(sample(
            &method,
            path,
            status,
            response.json().await.unwrap(),
        ));
    }
    let input = json!({"document": doc, "samples": samples});
    if let Err(problems) = run_validator(&python, "answers", &input) {
        panic!("refusals that do not match their schemas:\n{problems}");
    }
}

//! tokend in-process on 127.0.0.1:0 with its fake portal, for the API tests.
#![allow(dead_code)]

use std::sync::Arc;

use serde_json::Value;
use tokend::accounts::NewAccount;
use tokend::daemon::server::RunningServer;
use tokend::vault::secret::Secret;
use tokend::Config;

use super::portal::{AccountBehaviour, Portal};

const SECRET_KEY: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";

/// tokend plus its fake portal, on one cache backend.
pub struct Harness {
    pub tokend: RunningServer,
    pub portal: Portal,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A client that says `Content-Type: application/json` on every request, as the CLI and the
/// dashboard do: tokend refuses a state-changing request without it (a form could send it).
pub fn json_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The backends to run a test on: in-process always, Redis when it is there (required in CI).
pub fn backends() -> Vec<Option<String>> {
    let mut list = vec![None];
    if super::redis_available() {
        list.push(Some(super::redis_url()));
    }
    list
}

impl Harness {
    pub async fn start(redis: Option<&str>, extra: &str) -> Harness {
        let retry = "[retry]\nnetwork_retry_delay_base = 0.05\ncaptcha_retry_delay = 0.05\nlogin_timeout = 10\n";
        Harness::start_with(redis, retry, extra).await
    }

    pub async fn start_with(redis: Option<&str>, retry: &str, extra: &str) -> Harness {
        let prefix = format!("tokend-test-{}", super::unique());
        Harness::start_shared(redis, &prefix, None, retry, extra).await
    }

    /// An instance on `portal` (a new one if `None`) whose Redis keys start with `prefix`:
    /// two harnesses with the same prefix share one Redis as two tokend instances would.
    pub async fn start_shared(
        redis: Option<&str>,
        prefix: &str,
        portal: Option<Portal>,
        retry: &str,
        extra: &str,
    ) -> Harness {
        Harness::start_full(redis, prefix, portal, retry, extra, "").await
    }

    /// The same, with more keys for the `court_zxfw` site (`site_keys`, TOML lines). Lines
    /// of `extra` written `server.KEY = …` go into the `[server]` table.
    pub async fn start_full(
        redis: Option<&str>,
        prefix: &str,
        portal: Option<Portal>,
        retry: &str,
        extra: &str,
        site_keys: &str,
    ) -> Harness {
        let portal = portal.unwrap_or_else(Portal::start);
        let dir = tempfile::tempdir().unwrap();
        let redis = redis.map_or(String::new(), |url| {
            format!("[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n")
        });
        let (server_keys, extra): (Vec<&str>, Vec<&str>) =
            extra.lines().partition(|l| l.starts_with("server."));
        let server_keys: String = server_keys
            .iter()
            .map(|l| format!("{}\n", l.trim_start_matches("server.")))
            .collect();
        let extra = extra.join("\n");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_keys}[database]\nurl = \"sqlite://{db}\"\n\
             [history]\nspool_file = \"{spool}\"\n{redis}\
             {retry}\n{extra}\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{url}\"\n{site_keys}\n",
            db = dir.path().join("tokend.db").display(),
            // A spool of its own: rows spooled by one test must not be replayed into another.
            spool = dir.path().join("history.spool").display(),
            url = portal.login_url(),
        );
        let env = |name: &str| (name == "TOKEND_SECRET_KEY").then(|| SECRET_KEY.to_string());
        let config = Config::from_sources(Some(&text), &env).unwrap();
        let tokend = tokend::daemon::server::start(Arc::new(config))
            .await
            .unwrap();
        Harness {
            tokend,
            portal,
            client: json_client(),
            _dir: dir,
        }
    }

    pub fn add_account(&self, account: &str, password: &str, preferred: bool) -> i64 {
        self.add_account_on("court_zxfw", account, password, preferred)
    }

    /// An account of another configured site (the fake portal knows accounts by name only).
    pub fn add_account_on(
        &self,
        site: &str,
        account: &str,
        password: &str,
        preferred: bool,
    ) -> i64 {
        self.portal.state.set_account(
            account,
            AccountBehaviour {
                password: password.to_string(),
                ..Default::default()
            },
        );
        let state = &self.tokend.state;
        tokend::accounts::add(
            &state.pool,
            &state.key,
            &NewAccount {
                site_name: site.into(),
                account: account.into(),
                password: Secret::new(password),
                preferred,
                proxy: None,
            },
        )
        .unwrap()
        .id
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let url = format!(
            "http://{}/api/v1/automation/tokens/{path}",
            self.tokend.addr
        );
        let response = self.client.post(url).json(&body).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn acquire(&self, body: Value) -> (u16, Value) {
        self.post("acquire", body).await
    }

    /// An API call without a body: status and JSON body (`null` when there is none).
    pub async fn call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let url = format!("http://{}{path}", self.tokend.addr);
        let response = self.client.request(method, url).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Any API call: status, `Retry-After` header (if any) and JSON body.
    pub async fn api_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Option<String>, Value) {
        let url = format!("http://{}{path}", self.tokend.addr);
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (
            status,
            retry_after,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn api_get(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.api_call(reqwest::Method::GET, path, None).await;
        (status, body)
    }

    /// The Prometheus exposition (`GET /metrics`).
    pub async fn prometheus_text(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.tokend.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `/performance/health`'s data.
    pub async fn health(&self) -> Value {
        self.api_get("/api/v1/automation/performance/health")
            .await
            .1["data"]
            .clone()
    }

    /// The state of one account as `GET /accounts` shows it.
    pub async fn account_state(&self, account: &str) -> Value {
        let (status, body) = self
            .api_get("/api/v1/automation/accounts?site_name=court_zxfw")
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["account"] == account)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// History rows, newest first, once everything recorded has been written.
    pub async fn history(&self) -> Vec<tokend::db::models::HistoryRow> {
        assert_eq!(self.tokend.state.broker.flush_history().await.unwrap(), 0);
        let pool = self.tokend.state.pool.clone();
        pool.run(|conn| tokend::db::history::recent(conn, None, 100))
            .await
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.tokend.handle.stop(false));
    }
}

//! tokend in-process on 127.0.0.1:0 with its fake portal, for the API tests.

use std::sync::Arc;
use std::time::Duration;

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
    /// Its Redis `key_prefix` (another harness with it shares the Redis state).
    pub prefix: String,
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
        // tokend closes a connection idle for 5 s (actix's keep-alive); a request sent on it
        // at that moment fails (`IncompleteMessage`, seen once in the soak): idle connections
        // are dropped well before, as the Python client does.
        .pool_idle_timeout(Duration::from_secs(2))
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

/// The retry settings of a harness that names none: quick retries, a 10 s login timeout.
const QUICK_RETRY: &str =
    "[retry]\nnetwork_retry_delay_base = 0.05\ncaptcha_retry_delay = 0.05\nlogin_timeout = 10\n";

/// How to start a [`Harness`]: `Harness::builder().redis(url).prefix(p).start().await`.
/// Unset, it runs on the in-process backends, with a new fake portal, a Redis key prefix of
/// its own, quick retries and nothing more in its config.
#[derive(Clone)]
pub struct HarnessBuilder {
    redis: Option<String>,
    /// `[redis]` lines instead of `url` (a Sentinel or Cluster topology).
    redis_table: Option<String>,
    prefix: Option<String>,
    portal: Option<Portal>,
    retry: String,
    extra: String,
    sites: String,
    database: Option<String>,
}

impl HarnessBuilder {
    /// Redis at `url` (`None`: the in-process backends).
    pub fn redis(mut self, url: Option<&str>) -> Self {
        self.redis = url.map(str::to_string);
        self
    }

    /// Redis given by these `[redis]` lines (TOML: `sentinels = [...]`, `cluster = [...]`)
    /// instead of a URL; the key prefix is added as with [`HarnessBuilder::redis`].
    pub fn redis_table(mut self, lines: &str) -> Self {
        self.redis_table = Some(lines.to_string());
        self
    }

    /// Redis keys starting with `prefix`: two harnesses with the same prefix share one Redis as
    /// two tokend instances would.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_string());
        self
    }

    /// This fake portal (another harness's, say) instead of a new one.
    pub fn portal(mut self, portal: Portal) -> Self {
        self.portal = Some(portal);
        self
    }

    /// The `[retry]` table (TOML), instead of the quick one.
    pub fn retry(mut self, retry: &str) -> Self {
        self.retry = retry.to_string();
        self
    }

    /// More config (TOML). Lines written `server.KEY = …` go into the `[server]` table.
    pub fn extra(mut self, extra: &str) -> Self {
        self.extra = extra.to_string();
        self
    }

    /// This database URL instead of a SQLite file of its own (two instances sharing one
    /// database, as in production).
    pub fn database(mut self, url: &str) -> Self {
        self.database = Some(url.to_string());
        self
    }

    /// More keys for the `court_zxfw` site (TOML lines).
    pub fn sites(mut self, site_keys: &str) -> Self {
        self.sites = site_keys.to_string();
        self
    }

    /// Two instances on one Redis (one key prefix) and one fake portal, as two hosts would be;
    /// each with a database of its own.
    pub async fn start_pair(mut self) -> (Harness, Harness) {
        let prefix = self
            .prefix
            .take()
            .unwrap_or_else(|| format!("tokend-test-{}", super::unique()));
        let a = self.clone().prefix(&prefix).start().await;
        let b = self.prefix(&prefix).portal(a.portal.clone()).start().await;
        (a, b)
    }

    /// Starts the fake portal (unless given one) and tokend in-process on 127.0.0.1:0.
    pub async fn start(self) -> Harness {
        let portal = self.portal.unwrap_or_else(Portal::start);
        let dir = tempfile::tempdir().unwrap();
        let prefix = self
            .prefix
            .unwrap_or_else(|| format!("tokend-test-{}", super::unique()));
        let redis = match (self.redis_table, self.redis) {
            (Some(lines), _) => format!("[redis]\n{lines}\nkey_prefix = \"{prefix}\"\n"),
            (None, Some(url)) => format!("[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n"),
            (None, None) => String::new(),
        };
        let (server_keys, extra): (Vec<&str>, Vec<&str>) =
            self.extra.lines().partition(|l| l.starts_with("server."));
        let server_keys: String = server_keys
            .iter()
            .map(|l| format!("{}\n", l.trim_start_matches("server.")))
            .collect();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_keys}[database]\nurl = \"{db}\"\n\
             [history]\nspool_file = \"{spool}\"\n{redis}\
             {retry}\n{extra}\n\
             [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"{url}\"\n{site_keys}\n",
            db = self.database.clone().unwrap_or_else(|| format!(
                "sqlite://{}",
                dir.path().join("tokend.db").display()
            )),
            // A spool of its own: rows spooled by one test must not be replayed into another.
            spool = dir.path().join("history.spool").display(),
            retry = self.retry,
            extra = extra.join("\n"),
            url = portal.login_url(),
            site_keys = self.sites,
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
            prefix,
            _dir: dir,
        }
    }
}

impl Harness {
    /// A harness to set up: see [`HarnessBuilder`].
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            redis: None,
            redis_table: None,
            prefix: None,
            portal: None,
            retry: QUICK_RETRY.to_string(),
            extra: String::new(),
            sites: String::new(),
            database: None,
        }
    }

    /// The shortcut for most tests: Redis at `redis` (or none) and `extra` config.
    pub async fn start(redis: Option<&str>, extra: &str) -> Harness {
        Harness::builder().redis(redis).extra(extra).start().await
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

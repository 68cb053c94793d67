//! The CLI's client for the running daemon's API (`tokend token get`, `tokend optimize`):
//! the daemon's address from the config, the admin token, and errors mapped to exit codes.
//!
//! Answers are read into the types the API serializes (`api/answer.rs` and the handlers'
//! answer types): an answer that is not one (an older or foreign server) is an error naming
//! the call, the type and the place in the answer, with the exit status of a daemon error.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::answer::ErrorBody;

use crate::config::Config;
use crate::error::{Error, Result};

/// Longest wait for the daemon: an acquire may include a login.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// `http://<server.listen>`, with a wildcard address replaced by loopback.
pub fn default_url(config: &Config) -> String {
    let listen = config
        .server
        .listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    format!("http://{listen}")
}

/// Where the daemon is, and how long a refused connection is retried (a daemon that was
/// just started is not listening yet).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `--url`; `None`: from the config's `server.listen`.
    pub url: Option<String>,
    pub wait: Duration,
}

impl Endpoint {
    pub fn new(url: Option<&str>, wait_seconds: f64) -> Endpoint {
        Endpoint {
            url: url.map(str::to_string),
            wait: Duration::try_from_secs_f64(wait_seconds).unwrap_or(Duration::ZERO),
        }
    }

    /// The base URL: `--url` (`127.0.0.1:8000` is taken as `http://127.0.0.1:8000`), or the
    /// config's.
    fn base(&self, config: &Config) -> Result<String> {
        let Some(url) = &self.url else {
            return Ok(default_url(config));
        };
        let url = url.trim().trim_end_matches('/');
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        match reqwest::Url::parse(&url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
                Ok(url)
            }
            _ => Err(Error::invalid(
                "--url",
                format!("`{url}` is not an address such as http://127.0.0.1:8000"),
            )),
        }
    }
}

/// The proxy the operator names for a remote daemon; environment proxies are never used.
const PROXY_VARIABLE: &str = "TOKEND_CLI_PROXY";

/// The client for the daemon at `base`. It ignores `HTTP_PROXY` and friends (the admin token
/// must not travel through a proxy nobody chose for it); a daemon that is not on loopback
/// may be reached through the proxy named in `TOKEND_CLI_PROXY`.
fn http_client(base: &str) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy();
    let chosen = std::env::var(PROXY_VARIABLE).ok().filter(|v| !v.is_empty());
    if let Some(proxy) = chosen.filter(|_| !is_loopback(base)) {
        let proxy = reqwest::Proxy::all(&proxy).map_err(|_| {
            Error::invalid(
                PROXY_VARIABLE,
                "is not a proxy URL such as http://proxy.internal:3128",
            )
        })?;
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(|e| Error::Internal(e.to_string()))
}

/// Whether the URL names this machine (`localhost`, `127.x`, `[::1]`).
fn is_loopback(base: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(base) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How often a refused connection is tried again while waiting.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// POSTs `body` (the API's request type, or `{}`) to `path` and reads the `data` of a
/// successful answer as `T`.
pub async fn post<T: DeserializeOwned>(
    config: &Config,
    endpoint: &Endpoint,
    path: &str,
    body: &impl serde::Serialize,
) -> Result<T> {
    let body = serde_json::to_value(body).map_err(|e| Error::Internal(e.to_string()))?;
    let data = call(config, endpoint, reqwest::Method::POST, path, Some(&body)).await?;
    read(&format!("POST {}", without_query(path)), &data)
}

/// GETs `path` and reads the `data` of a successful answer as `T`.
pub async fn get<T: DeserializeOwned>(
    config: &Config,
    endpoint: &Endpoint,
    path: &str,
) -> Result<T> {
    let data = get_json(config, endpoint, path).await?;
    read(&format!("GET {}", without_query(path)), &data)
}

/// GETs `path` and returns the `data` of a successful answer as the daemon wrote it (for
/// `--json`); [`read`] checks that it is the answer expected.
pub async fn get_json(config: &Config, endpoint: &Endpoint, path: &str) -> Result<Value> {
    call(config, endpoint, reqwest::Method::GET, path, None).await
}

/// The `data` of the answer to `call` (`GET /api/…`) read as `T`, or an error naming what
/// in it is not a `T`.
pub fn read<T: DeserializeOwned>(call: &str, data: &Value) -> Result<T> {
    serde_path_to_error::deserialize(data).map_err(|e| {
        let at = match e.path().to_string() {
            root if root == "." => String::new(),
            path => format!(" at `{path}`"),
        };
        Error::Daemon(format!(
            "the answer to {call} is not the {} this tokend reads{at}: {} (is the daemon another version of tokend?)",
            type_name::<T>(),
            e.inner()
        ))
    })
}

/// `AcquiredToken` for `tokend::broker::request::AcquiredToken`.
fn type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

fn without_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(path, _)| path)
}

/// How a value the daemon sent reads on a terminal: a string (a time, an enum's name) as
/// it is, anything else as its JSON.
pub fn wire_text(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(e) => format!("({e})"),
    }
}

async fn call(
    config: &Config,
    endpoint: &Endpoint,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let base = endpoint.base(config)?;
    let client = http_client(&base)?;
    let started = std::time::Instant::now();
    let response = loop {
        match send(config, &client, &base, method.clone(), path, body).await {
            // Refused: nothing was sent, so trying again cannot do anything twice.
            Err(e) if e.is_connect() && started.elapsed() + RETRY_EVERY <= endpoint.wait => {
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Err(e) => {
                let waited = if endpoint.wait.is_zero() {
                    String::new()
                } else {
                    format!(" (tried for {:.0}s, --wait)", endpoint.wait.as_secs_f64())
                };
                return Err(Error::Daemon(format!(
                    "cannot reach tokend at {base}{waited}: {}",
                    error_chain(&e)
                )));
            }
            Ok(response) => break response,
        }
    };
    answer(
        &base,
        &format!("{method} {}", without_query(path)),
        response,
    )
    .await
}

/// The error and its causes (`error sending request: … Connection refused`), without
/// repeating a part that the next one already says.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

async fn send(
    config: &Config,
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client.request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let token = &config.server.admin_token;
    if !token.is_empty() {
        request = request.bearer_auth(token.expose());
    }
    request.send().await
}

/// The `data` of a successful answer; the daemon's refusal as [`Error::Refused`]; anything
/// else (no JSON, not tokend's envelope) as [`Error::Daemon`].
async fn answer(base: &str, call: &str, response: reqwest::Response) -> Result<Value> {
    let status = response.status().as_u16();
    let mut answer: Value = response
        .json()
        .await
        .map_err(|e| Error::Daemon(format!("{base} answered {status} with no JSON: {e}")))?;
    match answer.get("success") {
        Some(Value::Bool(true)) => match answer.get_mut("data") {
            Some(data) => Ok(data.take()),
            None => Err(Error::Daemon(format!(
                "the answer to {call} ({status}) has `success` but no `data`: not tokend's envelope (is {base} tokend?)"
            ))),
        },
        Some(Value::Bool(false)) => {
            // The daemon's code decides the exit status, by the same table as tokend's own
            // errors: a site paused or a budget spent is temporary (75), an unknown captcha
            // or account is 1.
            let refusal: ErrorBody = read(&format!("{call} ({status})"), &answer)?;
            Err(Error::Refused {
                code: refusal.code,
                message: refusal.message,
            })
        }
        _ => Err(Error::Daemon(format!(
            "the answer to {call} ({status}) has no `success`: not tokend's envelope (is {base} tokend?)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_is_not_the_type_names_the_place() {
        let data = serde_json::json!({"site_name": "s", "account": "a", "was_blocked": "yes"});
        let err = read::<crate::api::accounts::UnblockAnswer>("POST /x", &data).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("UnblockAnswer") && text.contains("`was_blocked`"),
            "{text}"
        );
        assert_eq!(err.exit_code(), 69);
        let missing = serde_json::json!({"site_name": "s"});
        let text = read::<crate::api::accounts::UnblockAnswer>("POST /x", &missing)
            .unwrap_err()
            .to_string();
        assert!(text.contains("missing field `account`"), "{text}");
    }

    /// The acquire answer's ready headers: `headers`' one header; from an older daemon that
    /// sends only `authorization`, that; with neither, an error rather than an empty header.
    #[test]
    fn a_token_answer_reads_its_header_from_either_field() {
        use crate::broker::AcquiredToken;
        let answer = |ready: serde_json::Value| {
            let mut data = serde_json::json!({
                "token": "t", "token_type": "Bearer", "account": "a", "credential_id": 1,
                "expires_at": "2026-01-01T00:00:00Z", "source": "cache", "acquisition_id": "x",
            });
            data.as_object_mut()
                .unwrap()
                .extend(ready.as_object().unwrap().clone());
            read::<AcquiredToken>("POST /x", &data)
        };
        let lines = |token: AcquiredToken| -> Vec<String> {
            (token.ready.headers())
                .map(|(name, value)| format!("{name}: {}", value.expose()))
                .collect()
        };
        let cookie =
            answer(serde_json::json!({"authorization": null, "headers": {"Cookie": "SESSION=t"}}));
        let cookie = cookie.unwrap();
        assert!(cookie.ready.authorization().is_none());
        assert_eq!(lines(cookie), ["Cookie: SESSION=t"]);
        let older = answer(serde_json::json!({"authorization": "Bearer t"})).unwrap();
        assert_eq!(lines(older), ["Authorization: Bearer t"]);
        let neither = answer(serde_json::json!({"authorization": null})).unwrap_err();
        assert!(neither.to_string().contains("no header"), "{neither}");
    }

    #[test]
    fn url_without_scheme_is_http() {
        let config = Config::default();
        let base = |url: &str| Endpoint::new(Some(url), 0.0).base(&config);
        assert_eq!(base("127.0.0.1:8000").unwrap(), "http://127.0.0.1:8000");
        assert_eq!(base("https://t.local/").unwrap(), "https://t.local");
        assert!(base("ftp://x").is_err());
        assert_eq!(
            Endpoint::new(None, 0.0).base(&config).unwrap(),
            "http://127.0.0.1:8000"
        );
    }
}

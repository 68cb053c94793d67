//! The CLI's client for the running daemon's API (`tokend token get`, `tokend optimize`):
//! the daemon's address from the config, the admin token, and errors mapped to exit codes.

use std::time::Duration;

use serde_json::Value;

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

/// POSTs `body` to `path` and returns the `data` of a successful answer.
pub async fn post(config: &Config, url: Option<&str>, path: &str, body: &Value) -> Result<Value> {
    call(config, url, reqwest::Method::POST, path, Some(body)).await
}

/// GETs `path` and returns the `data` of a successful answer.
pub async fn get(config: &Config, url: Option<&str>, path: &str) -> Result<Value> {
    call(config, url, reqwest::Method::GET, path, None).await
}

async fn call(
    config: &Config,
    url: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let base = url.map_or_else(
        || default_url(config),
        |u| u.trim_end_matches('/').to_string(),
    );
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut request = client.request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let token = &config.server.admin_token;
    if !token.is_empty() {
        request = request.bearer_auth(token.expose());
    }
    let response = request
        .send()
        .await
        .map_err(|e| Error::Daemon(format!("cannot reach tokend at {base}: {e}")))?;
    let status = response.status().as_u16();
    let answer: Value = response
        .json()
        .await
        .map_err(|e| Error::Daemon(format!("{base} answered {status} with no JSON: {e}")))?;
    if answer["success"] == Value::Bool(true) {
        return Ok(answer["data"].clone());
    }
    let message = format!(
        "{} ({})",
        answer["message"].as_str().unwrap_or("no message"),
        answer["code"].as_str().unwrap_or("?")
    );
    Err(match status {
        400 | 404 => Error::invalid("request", message),
        401 | 403 => Error::Unauthorized(message),
        429 | 504 => Error::Timeout(message),
        _ => Error::Daemon(message),
    })
}

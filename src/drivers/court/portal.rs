//! What the portal logins (recipes, the court portals among them, and `derived` sites) share:
//! one HTTP client per login that keeps the portal's cookies and sends the `Referer`/`Origin`
//! the court portals insist on ([`login_client`], [`client_with`]); a [`Step`] of a `derived`
//! exchange that sends a request and reads the portal's envelope `{"code", "data", "message"}`
//! ([`PortalAnswer`]); and [`logged_answer`], the form in which every step's answer is logged
//! (`event=court_step` / `recipe_step`: the answer's shape as JSON, never a token, cookie or
//! code in it), so that a portal that changed is diagnosed from the log: the step, the HTTP
//! status, the keys, the `code` and the `message` it answered.
//!
//! A leaf: it uses no other file of the drivers but their shared vocabulary.

use std::time::Duration;

use serde_json::Value;

use crate::drivers::login::{
    clean_message, network_cause, parse_retry_after, proxy_failure, read_answer, FailureKind,
    LoginFailure,
};
use crate::vault::secret::{hide_tokens, mask_echoes, Secret};

/// `Referer` of every request to the court portals (they refuse requests without it).
pub const REFERER: &str = "https://zxfw.court.gov.cn/zxfw/";
/// `Origin` of every request to the court portals.
pub const ORIGIN: &str = "https://zxfw.court.gov.cn";
/// The API root of 人民法院在线服务 (`court_zxfw`) unless its `base_url` says otherwise; also
/// where `court_baoquan` asks for its OAuth code.
pub const ZXFW_BASE_URL: &str = "https://zxfw.court.gov.cn/yzw/yzw-zxfw-yhfw";
/// Largest portal answer read (a captcha image is a few KiB).
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;

/// A client for one login: its own cookie store, the portal's headers, no redirects (the
/// requests carry a password or a token), through `proxy` if any.
pub fn login_client(proxy: Option<&Secret>) -> Result<reqwest::Client, LoginFailure> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::REFERER,
        reqwest::header::HeaderValue::from_static(REFERER),
    );
    headers.insert(
        reqwest::header::ORIGIN,
        reqwest::header::HeaderValue::from_static(ORIGIN),
    );
    client_with(proxy, headers)
}

/// A client for one login with `headers` on every request (recipes: none), cookies kept, no
/// redirects, through `proxy` if any.
pub fn client_with(
    proxy: Option<&Secret>,
    headers: reqwest::header::HeaderMap,
) -> Result<reqwest::Client, LoginFailure> {
    let mut builder = reqwest::Client::builder()
        .cookie_store(true)
        .default_headers(headers)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    builder = match proxy {
        Some(url) => builder.proxy(reqwest::Proxy::all(url.expose()).map_err(|e| {
            LoginFailure::new(
                FailureKind::Failed,
                format!(
                    "proxy {}: {}",
                    crate::vault::secret::redact_url(url.expose()),
                    clean_message(&e.to_string(), &[url.expose()])
                ),
            )
        })?),
        None => builder.no_proxy(),
    };
    builder
        .build()
        .map_err(|e| LoginFailure::new(FailureKind::Failed, format!("HTTP client: {e}")))
}

/// The portal's answer to one step: `{"code": 200, "data": …}` or a failure with `message`.
#[derive(Debug)]
pub struct PortalAnswer {
    pub status: reqwest::StatusCode,
    /// `code` as a number (some answers send it as a string).
    pub code: Option<i64>,
    pub message: String,
    /// The whole answer (for the pointers of a `derived` site).
    pub json: Value,
}

impl PortalAnswer {
    /// The portal refused the token it was sent (401/403 as status or `code`).
    pub fn unauthorized(&self) -> bool {
        matches!(self.status.as_u16(), 401 | 403) || matches!(self.code, Some(401 | 403))
    }
}

/// What a step is, for messages and the log.
pub struct Step<'a> {
    pub site: &'a str,
    pub account: &'a str,
    pub name: &'static str,
    /// Masked wherever the answer or an error is logged or returned.
    pub secrets: &'a [&'a str],
    /// The proxy the step goes through, and whether it is the account's own.
    pub proxy: Option<(&'a Secret, bool)>,
}

/// How long connecting (to the portal, or to the proxy) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A court token's life when it carries no JWT `exp` (SPEC §15).
pub const DEFAULT_LIFE: Duration = Duration::from_secs(3600);

impl Step<'_> {
    /// A failure of this step, its message scrubbed of the secrets.
    pub fn failure(&self, kind: FailureKind, what: &str) -> LoginFailure {
        LoginFailure::new(
            kind,
            clean_message(&format!("{}: {what}", self.name), self.secrets),
        )
    }

    /// Sends the request and reads the envelope. Transport errors, 429 and 5xx are network
    /// errors; an answer that is not JSON is `failed` (the portal changed, or a gateway page).
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<PortalAnswer, LoginFailure> {
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                FailureKind::Timeout
            } else {
                FailureKind::Network
            };
            let cause = network_cause(&e, None, CONNECT_TIMEOUT);
            match self.proxy.filter(|_| e.is_connect()) {
                Some((proxy, own)) => {
                    proxy_failure(proxy, own, &format!("{}: {cause}", self.name), self.secrets)
                }
                None => self.failure(kind, &format!("request failed: {cause}")),
            }
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = read_answer(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| self.failure(FailureKind::Network, &format!("reading the answer: {e}")))?;
        // A portal's words, in messages, never carry a token in full either.
        let text = hide_tokens(&mask_echoes(&String::from_utf8_lossy(&bytes), self.secrets));
        log::info!(
            "event=court_step site={} account={} step={} http_status={} bytes={} answer={}",
            self.site,
            self.account,
            self.name,
            status.as_u16(),
            bytes.len(),
            logged_answer(&bytes, self.secrets)
        );
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(self
                .failure(FailureKind::Network, &format!("HTTP {status}: {text}"))
                .with_retry_after(retry_after)
                .congested(status.as_u16() == 429));
        }
        let json: Value = serde_json::from_slice(&bytes).map_err(|_| {
            self.failure(
                FailureKind::Failed,
                &format!("HTTP {status}: the answer is not JSON: {}", cut(&text, 200)),
            )
        })?;
        let code = match json.get("code") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let message = ["message", "msg"]
            .iter()
            .find_map(|k| json.get(*k).and_then(Value::as_str))
            .map(|m| hide_tokens(&mask_echoes(m, self.secrets)))
            .unwrap_or_default();
        Ok(PortalAnswer {
            status,
            code,
            message,
            json,
        })
    }
}

/// The answer as logged: its shape, never its values. A JSON answer stays JSON, with its
/// keys, its `code`/`status` numbers, booleans and nulls, its top-level `message`/`msg` (secrets
/// masked, token-like runs hidden), and every other value replaced by its length and the start
/// of its fingerprint (`"<36 chars sha256:1f2e3d4c5b6a>"`): a token, a cookie or an OAuth code
/// of any shape is never written out. Another answer shows its first 200 characters, secrets
/// masked and token-like runs hidden.
pub(crate) fn logged_answer(bytes: &[u8], secrets: &[&str]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(json) => shape(&json, None, 0, secrets).to_string(),
        Err(_) => {
            let text = clean_message(&String::from_utf8_lossy(bytes), secrets);
            Value::String(cut(&hide_tokens(&text), 200)).to_string()
        }
    }
}

/// What [`logged_answer`] writes for `value`, found under `key` at `depth`.
fn shape(value: &Value, key: Option<&str>, depth: usize, secrets: &[&str]) -> Value {
    const KEPT_NUMBERS: [&str; 4] = ["code", "status", "errcode", "errCode"];
    match value {
        // A key is a name, but a portal may use a token as one: shown like a message.
        Value::Object(map) if depth < 6 => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let name = cut(&hide_tokens(&clean_message(k, secrets)), 40);
                    (name, shape(v, Some(k), depth + 1, secrets))
                })
                .collect(),
        ),
        Value::Array(items) if depth < 6 => {
            let mut shown: Vec<Value> = items
                .iter()
                .take(5)
                .map(|v| shape(v, None, depth + 1, secrets))
                .collect();
            if items.len() > 5 {
                shown.push(Value::String(format!("<{} more>", items.len() - 5)));
            }
            Value::Array(shown)
        }
        Value::Null | Value::Bool(_) => value.clone(),
        // The envelope's own numbers only: a nested `code` may be an OAuth code.
        Value::Number(_) if depth == 1 && key.is_some_and(|k| KEPT_NUMBERS.contains(&k)) => {
            value.clone()
        }
        Value::String(text) if depth == 1 && matches!(key, Some("message" | "msg")) => {
            let text = clean_message(text, secrets);
            Value::String(cut(&hide_tokens(&text), 200))
        }
        other => {
            let text = match other {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let fingerprint = crate::vault::secret::fingerprint(&text);
            Value::String(format!(
                "<{} chars sha256:{}>",
                text.chars().count(),
                &fingerprint[..12]
            ))
        }
    }
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_answers_show_the_shape_as_json_never_the_values() {
        let text = r#"{"code":200,"message":"ok zxOPAQUE0123456789abcdef","data":{"token":"zxOPAQUE0123456789abcdef","jpg":"/9j/4AAQSkZJRg","n":[1,2]},"pw":"hunter22"}"#;
        let shown = logged_answer(text.as_bytes(), &["hunter22"]);
        let json: Value = serde_json::from_str(&shown).expect("the log keeps JSON as JSON");
        assert_eq!(json["code"], 200);
        assert_eq!(json["message"], "ok <24 chars>");
        let token = json["data"]["token"].as_str().unwrap();
        let fingerprint = crate::vault::secret::fingerprint("zxOPAQUE0123456789abcdef");
        assert_eq!(token, format!("<24 chars sha256:{}>", &fingerprint[..12]));
        for value in ["zxOPAQUE", "hunter22", "/9j/4AAQ"] {
            assert!(!shown.contains(value), "{shown}");
        }
        // A token as a key, a numeric code below the envelope: never shown.
        let shown = logged_answer(
            br#"{"code":200,"data":{"code":583920,"zxOPAQUE0123456789abcdef":true}}"#,
            &[],
        );
        assert!(
            !shown.contains("583920") && !shown.contains("zxOPAQUE"),
            "{shown}"
        );
        // Not JSON: a cut text, token-like runs hidden.
        let shown = logged_answer(b"<html>token zxOPAQUE0123456789abcdef</html>", &[]);
        assert!(!shown.contains("zxOPAQUE"), "{shown}");
    }
}

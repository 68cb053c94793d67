//! Blocking HTTP calls, for the tests that drive a real `tokend serve` from a plain thread
//! (the async tests use `Harness`'s calls instead).

use std::future::Future;
use std::net::SocketAddr;

use serde_json::Value;

/// Runs `work` to the end on a runtime of its own.
pub fn block_on<T>(work: impl Future<Output = T>) -> T {
    actix_web::rt::System::new().block_on(work)
}

/// `METHOD url` with an optional bearer token and JSON body: the status and the JSON answer
/// (`null` when the answer is not JSON).
pub fn call_as(method: &str, url: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let method: reqwest::Method = method.parse().unwrap();
    let (url, bearer) = (url.to_string(), bearer.map(str::to_string));
    block_on(async move {
        let mut request = reqwest::Client::new().request(method, url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .expect("an answer, not a closed connection");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

/// [`call_as`] without a token.
pub fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    call_as(method, url, None, body)
}

/// `GET url`.
pub fn get(url: &str) -> (u16, Value) {
    call("GET", url, None)
}

/// `POST /api/v1/automation/tokens/acquire` with `body` on the daemon at `addr`, waiting for
/// the answer.
pub fn acquire(addr: SocketAddr, body: Value) -> (u16, Value) {
    let url = format!("http://{addr}/api/v1/automation/tokens/acquire");
    call("POST", &url, Some(body))
}

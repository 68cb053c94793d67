//! Requests a web page could make in the operator's browser, refused before any handler runs
//! (the default daemon has no token, so the network position of the browser is all a page
//! would need):
//!
//! - `Host` must be a loopback name (`localhost`, `*.localhost`), an IP address, the name in
//!   `server.listen`, or a name in `server.allowed_hosts`; anything else is 421. A DNS-rebinding page reaches the daemon
//!   under its own name, which is none of these; an IP address cannot be rebound.
//!   `/healthz` is exempt (it holds nothing, and probes name the host they like).
//! - A present `Origin` must be the daemon's own (the same host and port as `Host`, or a
//!   name in `allowed_hosts`): 403 otherwise, `null` included. Browsers send `Origin` on
//!   every request that is not a GET or HEAD, and on cross-site fetches.
//! - A request that is not a GET, HEAD or OPTIONS must say `Content-Type: application/json`,
//!   or have no body and carry `Authorization`: 415 otherwise. An HTML form or a "simple"
//!   cross-site fetch can do neither without a CORS preflight, which tokend never grants.

use std::borrow::Cow;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use super::state::AppState;
use crate::error::Error;

/// The middleware: lets the request through or answers 421/403/415 with a JSON error.
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let (allowed, listen): (&[String], &str) = match req.app_data::<web::Data<AppState>>() {
        Some(state) => (&state.config.server.allowed_hosts, &state.listen_host),
        None => (&[], ""),
    };
    match refusal(&req, allowed, listen) {
        Some(error) => Ok(req.into_response(error.error_response())),
        None => Ok(next.call(req).await?.map_into_boxed_body()),
    }
}

/// Why the request is refused, if it is. `listen` is the host of `server.listen`
/// (`tokend.internal:8000`), the daemon's own name for `Host` (not for `Origin`: another
/// local server's page shares it).
fn refusal(req: &ServiceRequest, allowed: &[String], listen: &str) -> Option<Error> {
    let headers = req.headers();
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    // HTTP/2 carries the host in the URI's authority, HTTP/1.1 in the header.
    let host = text(header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
    // The raw path: one the router would also take to `/healthz` (`/%68ealthz`) is checked,
    // which only refuses more.
    if req.path() != "/healthz" {
        let foreign = |h: &&str| {
            let name = host_name(h);
            !name_allowed(&name, allowed) && name != listen
        };
        if let Some(host) = host.filter(foreign) {
            return Some(Error::MisdirectedRequest(format!(
                "this daemon does not answer for the host `{}`; list it in server.allowed_hosts",
                printable(host)
            )));
        }
    }
    if let Some(origin) = text(header::ORIGIN) {
        if !origin_allowed(origin, host, allowed) {
            return Some(Error::Forbidden(format!(
                "requests from the web origin `{}` are refused",
                printable(origin)
            )));
        }
    }
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    if let Some(content_type) = text(header::CONTENT_TYPE) {
        return (!is_json(content_type)).then(|| {
            Error::UnsupportedMediaType(
                "a request that changes state takes a JSON body (Content-Type: application/json)"
                    .into(),
            )
        });
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || text(header::CONTENT_LENGTH).is_some_and(|n| n.trim() != "0");
    (has_body || !headers.contains_key(header::AUTHORIZATION)).then(|| {
        Error::UnsupportedMediaType(
            "a request that changes state must send Content-Type: application/json".into(),
        )
    })
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// The host part of `host[:port]`, `[v6]:port` or `[v6]`, lower-cased (copied only when it
/// has capitals).
pub(crate) fn host_name(authority: &str) -> Cow<'_, str> {
    let authority = authority.trim();
    let name = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(name, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) {
                    name
                } else {
                    authority
                }
            }),
    };
    let name = name.trim_end_matches('.');
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Loopback names, IP addresses (which no DNS answer can rebind) and the configured names.
fn name_allowed(name: &str, allowed: &[String]) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// The daemon's own origin: `http(s)://` and the very authority of `Host`, or a configured
/// name (a TLS proxy in front that rewrites `Host`).
fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let same_as_host = host.is_some_and(|h| h.trim().eq_ignore_ascii_case(authority));
    let name = host_name(authority);
    same_as_host || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

/// Header text for a message: printable ASCII only, at most 100 characters.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(100)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let none: &[String] = &[];
        for ok in [
            "localhost:8000",
            "LOCALHOST",
            "127.0.0.1:8000",
            "127.1.2.3",
            "[::1]:8000",
            "app.localhost:1",
            "10.0.0.5:8000",
        ] {
            assert!(name_allowed(&host_name(ok), none), "{ok}");
        }
        for bad in ["rebind.evil.example:8000", "localhost.evil.example", ""] {
            assert!(!name_allowed(&host_name(bad), none), "{bad}");
        }
        let listed = ["tokend.internal".to_string()];
        assert!(name_allowed(&host_name("Tokend.Internal:8443"), &listed));
    }

    #[test]
    fn origins() {
        let none: &[String] = &[];
        let host = Some("127.0.0.1:8000");
        assert!(origin_allowed("http://127.0.0.1:8000", host, none));
        assert!(!origin_allowed("http://127.0.0.1:9000", host, none));
        assert!(!origin_allowed("http://evil.example", host, none));
        assert!(!origin_allowed("null", host, none));
        let listed = ["tokend.example".to_string()];
        assert!(origin_allowed("https://tokend.example", host, &listed));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("text/plain"));
    }
}

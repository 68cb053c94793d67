//! Bearer-token authentication (SPEC §7). With `server.admin_token` set, every path but
//! `/healthz` needs `Authorization: Bearer <token>`; a client token reaches only
//! `/api/v1/automation/tokens/*`, a metrics token only GETs. Tokens are compared in constant
//! time. The dashboard's own files (`/`, its script and style: a shell without data) are
//! open, so it can ask for the token.
//!
//! What a role may call is decided on the resource pattern the router will run (the path as
//! the router decodes it, `%63aptchas` being `captchas`), never on the raw path: a request
//! that matches no resource needs the admin token.

use std::rc::Rc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use subtle::ConstantTimeEq;

use super::state::AppState;
use crate::error::Error;
use crate::vault::secret::Secret;

/// Paths a client token may call.
const CLIENT_SCOPE: &str = "/api/v1/automation/tokens/";
/// Captchas waiting for a person: admin only, even to read (the image is a login in progress).
const CAPTCHA_SCOPE: &str = "/api/v1/automation/captchas";

#[derive(Debug, PartialEq, Eq)]
enum Role {
    Admin,
    Client,
    /// Read-only: GETs (metrics, health, statistics, history), nothing that changes state.
    Metrics,
}

fn matches(presented: &str, expected: &Secret) -> bool {
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes()))
}

fn role_of(state: &AppState, presented: &str) -> Option<Role> {
    let server = &state.config.server;
    if matches(presented, &server.admin_token) {
        return Some(Role::Admin);
    }
    // Check every client token, so the time taken does not tell which one matched.
    let client = server
        .client_tokens
        .iter()
        .fold(false, |found, token| found | matches(presented, token));
    let metrics = server
        .metrics_tokens
        .iter()
        .fold(false, |found, token| found | matches(presented, token));
    if client {
        Some(Role::Client)
    } else {
        metrics.then_some(Role::Metrics)
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The resource pattern the router will run for this request (`/api/v1/automation/sites/
/// {site}/circuit/close`), found on the decoded path the router matches; `None` when no
/// resource matches (the answer will be 404). Found once per request (matching a dynamic
/// pattern runs a regex) and kept in the request's extensions for the next middleware.
pub(crate) fn route_of(req: &ServiceRequest) -> Option<Rc<str>> {
    if let Some(MatchedRoute(route)) = req.extensions().get::<MatchedRoute>() {
        return route.clone();
    }
    let route: Option<Rc<str>> = req
        .resource_map()
        .match_pattern(req.match_info().as_str())
        .map(Rc::from);
    req.extensions_mut().insert(MatchedRoute(route.clone()));
    route
}

/// [`route_of`]'s answer, kept for the request.
struct MatchedRoute(Option<Rc<str>>);

/// The middleware: lets the request through or answers 401/403 with a JSON error.
pub async fn require_bearer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if state.config.server.admin_token.is_empty() {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let route = route_of(&req).unwrap_or_else(|| Rc::from(""));
    if &*route == "/healthz" || super::dashboard::is_public(req.method(), &route) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let refusal = match presented.map(|p| role_of(&state, p)) {
        None => Some(Error::Unauthorized(
            "send Authorization: Bearer <token>".into(),
        )),
        Some(None) => Some(Error::Unauthorized("unknown bearer token".into())),
        Some(Some(Role::Client)) if !route.starts_with(CLIENT_SCOPE) => Some(Error::Forbidden(
            "a client token may only acquire and invalidate tokens".into(),
        )),
        Some(Some(Role::Metrics)) if route.is_empty() || route.starts_with(CAPTCHA_SCOPE) => Some(
            Error::Forbidden("captchas and unknown paths are for the admin token only".into()),
        ),
        Some(Some(Role::Metrics)) if !matches!(*req.method(), Method::GET | Method::HEAD) => Some(
            Error::Forbidden("a metrics token may only read (GET)".into()),
        ),
        Some(Some(_)) => None,
    };
    match refusal {
        Some(error) => Ok(req.into_response(error.error_response())),
        None => Ok(next.call(req).await?.map_into_boxed_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}

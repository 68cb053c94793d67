//! Bearer-token authentication (SPEC §7). With `server.admin_token` set, every path but
//! `/healthz` needs `Authorization: Bearer <token>`; a client token reaches only
//! `/api/v1/automation/tokens/*`. Tokens are compared in constant time. The dashboard's own
//! files (`/`, its script and style: a shell without data) are open, so it can ask for the
//! token.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::error::Error;
use crate::secret::Secret;

/// Paths a client token may call.
const CLIENT_SCOPE: &str = "/api/v1/automation/tokens/";

#[derive(Debug, PartialEq, Eq)]
enum Role {
    Admin,
    Client,
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
    client.then_some(Role::Client)
}

/// The middleware: lets the request through or answers 401/403 with a JSON error.
pub async fn require_bearer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if state.config.server.admin_token.is_empty()
        || req.path() == "/healthz"
        || super::dashboard::is_public(req.method(), req.path())
    {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let refusal = match presented.map(|p| role_of(&state, p)) {
        None => Some(Error::Unauthorized(
            "send Authorization: Bearer <token>".into(),
        )),
        Some(None) => Some(Error::Unauthorized("unknown bearer token".into())),
        Some(Some(Role::Client)) if !req.path().starts_with(CLIENT_SCOPE) => Some(
            Error::Forbidden("a client token may only acquire and invalidate tokens".into()),
        ),
        Some(Some(_)) => None,
    };
    match refusal {
        Some(error) => Ok(req.into_response(error.error_response())),
        None => Ok(next.call(req).await?.map_into_boxed_body()),
    }
}

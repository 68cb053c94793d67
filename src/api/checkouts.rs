//! Job checkouts over HTTP: `POST /tokens/checkout`, `…/checkout/{id}/renew`,
//! `…/checkout/{id}/release` and `GET /tokens/checkouts`. Under `/tokens/`, so a client token
//! may use them.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::answer::{ok, ErrorBody};
use super::json::Json;
use super::state::AppState;
use crate::broker::{CheckedOut, CheckoutRequest, ReleaseRequest, RenewRequest};
use crate::error::Error;
use crate::lifecycle::checkout::Checkout;

/// A held account and the token to use for the job.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckoutAnswer {
    /// The hold: its id, the account, the job, since when and until when (`lease_until`).
    #[serde(flatten)]
    pub checkout: Checkout,
    pub token: String,
    pub token_type: String,
    /// The ready headers to send to the portal.
    pub headers: BTreeMap<String, String>,
    /// The ready `Authorization` value (`null` for a cookie session).
    pub authorization: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// On renewal: the token was renewed because it would have expired inside the lease.
    pub token_renewed: bool,
}

impl From<CheckedOut> for CheckoutAnswer {
    fn from(held: CheckedOut) -> CheckoutAnswer {
        let CheckedOut {
            checkout,
            token,
            token_renewed,
        } = held;
        let (headers, authorization) = crate::broker::ready_headers(&token);
        CheckoutAnswer {
            checkout,
            token: token.token.expose().to_string(),
            token_type: token.token_type,
            headers,
            authorization,
            expires_at: token.expires_at,
            token_renewed,
        }
    }
}

/// A JSON body that may be left out (its defaults then); a body that is there and wrong is
/// bad input, never taken as the defaults.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::invalid("body", e.to_string()))
}

/// The checkouts in force.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckoutList {
    pub checkouts: Vec<Checkout>,
}

/// Holds an account for a job and hands out its token.
#[utoipa::path(
    post,
    path = "/api/v1/automation/tokens/checkout",
    operation_id = "checkoutAccount",
    tag = "tokens",
    request_body = CheckoutRequest,
    responses(
        (status = 200, description = "The held account and its token", body = super::answer::Answer<CheckoutAnswer>),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown site or account", body = ErrorBody),
        (status = 409, description = "CHECKED_OUT: the account named is held by another job (Retry-After)", body = ErrorBody),
        (status = 503, description = "NO_AVAILABLE_ACCOUNT (Retry-After: the first lease end when every account is held)", body = ErrorBody),
    ),
)]
pub async fn checkout(
    state: web::Data<AppState>,
    body: Json<CheckoutRequest>,
) -> Result<HttpResponse, Error> {
    let request = body.into_inner();
    // Checked here, before any of it reaches SQL (PostgreSQL refuses a NUL byte).
    if let Some(account) = &request.account {
        crate::accounts::validate_account_name("account", account)?;
    }
    let held = state.broker.checkout(request).await?;
    Ok(ok(CheckoutAnswer::from(held)))
}

/// Extends a checkout's lease; the token is renewed first if it would expire inside it.
#[utoipa::path(
    post,
    path = "/api/v1/automation/tokens/checkout/{id}/renew",
    operation_id = "renewCheckout",
    tag = "tokens",
    params(("id" = String, Path, description = "The checkout id")),
    request_body = RenewRequest,
    responses(
        (status = 200, description = "The renewed hold and the token to use", body = super::answer::Answer<CheckoutAnswer>),
        (status = 404, description = "CHECKOUT_NOT_FOUND: unknown, released or expired", body = ErrorBody),
    ),
)]
pub async fn renew(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let request: RenewRequest = optional_body(&body)?;
    let held = state.broker.renew_checkout(&id, request).await?;
    Ok(ok(CheckoutAnswer::from(held)))
}

/// Ends a checkout with the job's outcome (`ok`, `token_rejected`, `failed`).
#[utoipa::path(
    post,
    path = "/api/v1/automation/tokens/checkout/{id}/release",
    operation_id = "releaseCheckout",
    tag = "tokens",
    params(("id" = String, Path, description = "The checkout id")),
    request_body = ReleaseRequest,
    responses(
        (status = 200, description = "The ended checkout", body = super::answer::Answer<Checkout>),
        (status = 404, description = "CHECKOUT_NOT_FOUND: unknown, released or expired", body = ErrorBody),
    ),
)]
pub async fn release(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let request: ReleaseRequest = optional_body(&body)?;
    let released = state.broker.release_checkout(&id, request).await?;
    Ok(ok(released))
}

/// The checkouts in force, on every instance (with Redis).
#[utoipa::path(
    get,
    path = "/api/v1/automation/tokens/checkouts",
    operation_id = "listCheckouts",
    tag = "tokens",
    responses((status = 200, description = "The checkouts in force", body = super::answer::Answer<CheckoutList>)),
)]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let checkouts = state.broker.checkouts().list().await?;
    Ok(ok(CheckoutList { checkouts }))
}

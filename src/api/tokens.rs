//! `POST /api/v1/automation/tokens/acquire` and `/invalidate` (SPEC §7).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::openapi::{Envelope, ErrorBody};
use super::{ok, AppState};
use crate::broker::AcquireRequest;
use crate::error::Error;

/// Hands out a valid token: from the cache, or after one login.
#[utoipa::path(post, path = "/api/v1/automation/tokens/acquire", tag = "tokens", request_body = AcquireRequest, responses((status = 200, description = "The token: {token, token_type, account, credential_id, expires_at, source, acquisition_id}", body = Envelope), (status = 400, body = ErrorBody), (status = 404, description = "Unknown site or account", body = ErrorBody), (status = 429, description = "QUEUE_FULL", body = ErrorBody), (status = 502, description = "TOKEN_ACQUISITION_FAILED", body = ErrorBody), (status = 503, description = "NO_AVAILABLE_ACCOUNT", body = ErrorBody), (status = 504, description = "TIMEOUT", body = ErrorBody)))]
pub async fn acquire(
    state: web::Data<AppState>,
    body: web::Json<AcquireRequest>,
) -> Result<HttpResponse, Error> {
    let request = body.into_inner();
    if request.credential_id.is_some_and(|id| id < 1) {
        return Err(Error::invalid(
            "credential_id",
            "must be an account id (1 or more)",
        ));
    }
    let token = state.broker.acquire(request).await?;
    Ok(ok(token))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    pub site_name: String,
    pub account: String,
}

/// A consumer found the token rejected: drop it so the next acquire logs in again.
#[utoipa::path(post, path = "/api/v1/automation/tokens/invalidate", tag = "tokens", request_body = InvalidateRequest, responses((status = 200, description = "Dropped from cache and store", body = Envelope), (status = 404, body = ErrorBody)))]
pub async fn invalidate(
    state: web::Data<AppState>,
    body: web::Json<InvalidateRequest>,
) -> Result<HttpResponse, Error> {
    let request = body.into_inner();
    let stored = state
        .broker
        .invalidate(&request.site_name, &request.account)
        .await?;
    Ok(ok(json!({
        "site_name": request.site_name,
        "account": request.account,
        "invalidated": true,
        "stored_token_removed": stored,
    })))
}

//! `POST /api/v1/automation/tokens/acquire` and `/invalidate` (SPEC §7).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{ok, AppState};
use crate::broker::AcquireRequest;
use crate::error::Error;

/// Hands out a valid token: from the cache, or after one login.
pub async fn acquire(
    state: web::Data<AppState>,
    body: web::Json<AcquireRequest>,
) -> Result<HttpResponse, Error> {
    let token = state.broker.acquire(body.into_inner()).await?;
    Ok(ok(token))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    pub site_name: String,
    pub account: String,
}

/// A consumer found the token rejected: drop it so the next acquire logs in again.
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

//! `POST /api/v1/automation/tokens/acquire` and `/invalidate` (SPEC §7).

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::answer::{ok, Answer, ErrorBody};
use super::json::Json;
use super::state::AppState;
use crate::accounts::validate_account_name;
use crate::broker::{AcquireRequest, Acquired, AcquiredToken, Source};
use crate::config::validate_site_name;
use crate::error::Error;
use crate::policy::outcome::TriggerReason;

/// Hands out a valid token: from the cache, or after one login.
#[utoipa::path(
    post,
    path = "/api/v1/automation/tokens/acquire",
    operation_id = "acquireToken",
    tag = "tokens",
    request_body = AcquireRequest,
    responses(
        (status = 200, description = "The token: {token, token_type, account, credential_id, expires_at, source, acquisition_id, authorization, headers}", body = super::answer::Answer<crate::broker::AcquiredToken>),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown site or account", body = ErrorBody),
        (status = 429, description = "QUEUE_FULL", body = ErrorBody),
        (status = 502, description = "TOKEN_ACQUISITION_FAILED", body = ErrorBody),
        (status = 503, description = "NO_AVAILABLE_ACCOUNT, SHUTTING_DOWN", body = ErrorBody),
        (status = 504, description = "TIMEOUT", body = ErrorBody),
    ),
)]
pub async fn acquire(
    state: web::Data<AppState>,
    body: Json<AcquireRequest>,
) -> Result<HttpResponse, Error> {
    let request = body.into_inner();
    validate_site_name("site_name", &request.site_name)?;
    if let Some(account) = &request.account {
        validate_account_name("account", account)?;
    }
    if request.credential_id.is_some_and(|id| id < 1) {
        return Err(Error::invalid(
            "credential_id",
            "must be an account id (1 or more)",
        ));
    }
    // A token at hand is answered here and now; everything else (a login, a database read, a
    // Redis round trip) is a future of its own on the heap, so that a hit's future stays small.
    match state.broker.acquire_at_hand(&request) {
        Some(acquired) => answer_acquired(acquired?),
        None => Box::pin(acquire_waiting(state, request)).await,
    }
}

/// An acquire that may wait: on the account check, the cache backend, or a login.
async fn acquire_waiting(
    state: web::Data<AppState>,
    request: AcquireRequest,
) -> Result<HttpResponse, Error> {
    check_account_matches_id(&state, &request).await?;
    let _waiting = state.shutdown.waiting();
    // The login goes on in its own task; a stop whose grace ends first answers 503 here
    // rather than closing the connection without an answer.
    let acquired = tokio::select! {
        // A cached token is ready at the first poll: the grace is then never looked at.
        biased;
        acquired = state.broker.acquire_shared(request, TriggerReason::TokenNeeded) => acquired?,
        () = state.shutdown.grace_over() => return Err(Error::ShuttingDown),
    };
    answer_acquired(acquired)
}

/// The answer to an acquire. A cache hit sends the answer its entry keeps, serialized by the
/// first hit (issue 23): the same bytes `ok(token)` would make, without making them again.
fn answer_acquired(acquired: Acquired) -> Result<HttpResponse, Error> {
    let hit = match acquired {
        Acquired::Cached(hit) => hit,
        Acquired::Obtained(token) => return Ok(ok(token)),
    };
    let body = match hit.hit_answer() {
        Some(body) => body,
        None => {
            let answer = Answer {
                success: true,
                data: AcquiredToken::from_hit(&hit, Source::Cache),
            };
            let json = serde_json::to_vec(&answer)
                .map_err(|e| Error::Internal(format!("acquire answer: {e}")))?;
            hit.keep_hit_answer(json.into())
        }
    };
    Ok(HttpResponse::Ok()
        // A static value: `ContentType::json()` would copy its text into a new header value.
        .content_type(actix_web::http::header::HeaderValue::from_static(
            "application/json",
        ))
        .body(body))
}

/// `credential_id` and `account` name the same account, or the request is refused: taking
/// either silently would hand out another account's token.
async fn check_account_matches_id(state: &AppState, request: &AcquireRequest) -> Result<(), Error> {
    let (Some(id), Some(account)) = (request.credential_id, request.account.clone()) else {
        return Ok(());
    };
    let site = state.broker.site(&request.site_name)?.name.clone();
    let found = state
        .pool
        .run(move |conn| crate::db::accounts::find(conn, &site, &account))
        .await;
    let account = request.account.as_deref().unwrap_or_default();
    match found {
        Ok(Some(row)) if row.id == id => Ok(()),
        Ok(Some(row)) => Err(Error::invalid(
            "credential_id",
            format!(
                "credential_id {id} and account `{account}` (credential_id {}) name different accounts; send one of them",
                row.id
            ),
        )),
        Ok(None) => Err(Error::invalid(
            "account",
            format!(
                "credential_id {id} and account `{account}` disagree: site `{}` has no account `{account}`",
                request.site_name
            ),
        )),
        Err(e) => {
            // Without the database the broker still serves by credential_id (SPEC §10).
            log::warn!("event=account_check_skipped credential_id={id} error=\"{e}\"");
            Ok(())
        }
    }
}

#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    pub site_name: String,
    pub account: String,
}

/// `POST /tokens/invalidate`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct InvalidateAnswer {
    pub site_name: String,
    pub account: String,
    /// Always true.
    pub invalidated: bool,
    pub stored_token_removed: bool,
    /// Whether the cached entries could be read (and so got their tombstones); `false`
    /// when the cache backend failed: the entries are deleted, but a late write of the
    /// old token is not refused.
    pub cache_entries_read: bool,
}

/// A consumer found the token rejected: drop it so the next acquire logs in again.
#[utoipa::path(
    post,
    path = "/api/v1/automation/tokens/invalidate",
    operation_id = "invalidateToken",
    tag = "tokens",
    request_body = InvalidateRequest,
    responses(
        (status = 200, description = "Dropped from cache and store", body = super::answer::Answer<InvalidateAnswer>),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn invalidate(
    state: web::Data<AppState>,
    body: Json<InvalidateRequest>,
) -> Result<HttpResponse, Error> {
    let request = body.into_inner();
    validate_site_name("site_name", &request.site_name)?;
    validate_account_name("account", &request.account)?;
    let done = state
        .broker
        .invalidate(&request.site_name, &request.account)
        .await?;
    Ok(ok(InvalidateAnswer {
        site_name: request.site_name,
        account: request.account,
        invalidated: true,
        stored_token_removed: done.stored_token_removed,
        cache_entries_read: done.cache_entries_read,
    }))
}

//! `GET /api/v1/automation/history` (newest first, keyset pagination, no token material) and
//! `POST /api/v1/automation/history/cleanup?days=N`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::openapi::{Envelope, ErrorBody};
use super::{ok, AppState};
use crate::actors::history::{Cleanup, Page};
use crate::config::validate_site_name;
use crate::db::history::HistoryFilter;
use crate::error::Error;
use crate::outcome::AcquisitionStatus;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    site_name: Option<String>,
    account: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    before_id: Option<i64>,
}

/// History rows, newest first, keyset pagination; no token material.
#[utoipa::path(get, path = "/api/v1/automation/history", tag = "history", params(("site_name" = Option<String>, Query), ("account" = Option<String>, Query), ("status" = Option<String>, Query), ("limit" = Option<i64>, Query, description = "1 to 500, default 50"), ("before_id" = Option<i64>, Query)), responses((status = 200, description = "{items, next_before_id}", body = Envelope), (status = 400, description = "Bad input", body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, Error> {
    let q = query.into_inner();
    if let Some(site) = &q.site_name {
        validate_site_name("site_name", site)?;
    }
    if let Some(status) = &q.status {
        if !AcquisitionStatus::ALL.iter().any(|s| s.as_str() == status) {
            return Err(Error::invalid("status", "must be success, failed, timeout, network_error, captcha_error or credential_error"));
        }
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be from 1 to {MAX_LIMIT}"),
        ));
    }
    let filter = HistoryFilter {
        site_name: q.site_name,
        account: q.account,
        status: q.status,
        before_id: q.before_id,
        limit,
    };
    let rows = state.actors.history.send(Page(filter)).await??;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id, "acquisition_id": r.acquisition_id, "site_name": r.site_name, "account": r.account,
                "credential_id": r.credential_id, "status": r.status, "trigger_reason": r.trigger_reason,
                "attempt_count": r.attempt_count, "total_duration": r.total_duration, "login_duration": r.login_duration,
                "captcha_attempts": r.captcha_attempts, "network_retries": r.network_retries,
                "error_message": r.error_message,
                "error_details": r.error_details.and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok()),
                "created_at": r.created_at.and_utc(), "started_at": r.started_at.and_utc(), "finished_at": r.finished_at.map(|t| t.and_utc()),
            })
        })
        .collect();
    Ok(ok(json!({"items": items, "next_before_id": next})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupQuery {
    days: u32,
}

/// Deletes rows older than `days` days (at least 1), in batches.
#[utoipa::path(post, path = "/api/v1/automation/history/cleanup", tag = "history", params(("days" = u32, Query)), responses((status = 200, description = "{days, deleted}", body = Envelope), (status = 400, description = "Bad input", body = ErrorBody)))]
pub async fn cleanup(
    state: web::Data<AppState>,
    query: web::Query<CleanupQuery>,
) -> Result<HttpResponse, Error> {
    if query.days == 0 {
        return Err(Error::invalid("days", "must be at least 1"));
    }
    let deleted = state
        .actors
        .history
        .send(Cleanup { days: query.days })
        .await??;
    Ok(ok(json!({"days": query.days, "deleted": deleted})))
}

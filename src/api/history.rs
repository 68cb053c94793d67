//! `GET /api/v1/automation/history` (newest first, keyset pagination, no token material) and
//! `POST /api/v1/automation/history/cleanup?days=N`.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::answer::ok;
use super::answer::ErrorBody;
use super::state::AppState;
use crate::accounts::validate_account_name;
use crate::config::validate_site_name;
use crate::db::history::{HistoryFilter, MAX_DAYS};
use crate::db::models::HistoryRow;
use crate::error::Error;
use crate::policy::outcome::AcquisitionStatus;

/// One acquisition as the history shows it: no token material.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    pub id: i64,
    pub acquisition_id: String,
    pub site_name: String,
    pub account: Option<String>,
    pub credential_id: Option<i64>,
    pub status: String,
    pub trigger_reason: String,
    pub attempt_count: i32,
    pub total_duration: f64,
    pub login_duration: Option<f64>,
    pub captcha_attempts: i32,
    pub network_retries: i32,
    pub error_message: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub error_details: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A row's `error_details` as JSON; text that is not JSON (a row written by hand or by an
/// older tool) is kept as `{"text": …}` rather than shown as nothing.
fn details_of(stored: &str) -> Value {
    serde_json::from_str(stored).unwrap_or_else(|_| serde_json::json!({ "text": stored }))
}

impl From<HistoryRow> for HistoryItem {
    fn from(r: HistoryRow) -> HistoryItem {
        HistoryItem {
            id: r.id,
            acquisition_id: r.acquisition_id,
            site_name: r.site_name,
            account: r.account,
            credential_id: r.credential_id,
            status: r.status,
            trigger_reason: r.trigger_reason,
            attempt_count: r.attempt_count,
            total_duration: r.total_duration,
            login_duration: r.login_duration,
            captcha_attempts: r.captcha_attempts,
            network_retries: r.network_retries,
            error_message: r.error_message,
            error_details: r.error_details.map(|d| details_of(&d)),
            created_at: r.created_at.and_utc(),
            started_at: r.started_at.and_utc(),
            finished_at: r.finished_at.map(|t| t.and_utc()),
        }
    }
}

/// `GET /history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    /// Pass as `before_id` for the next page; null on the last.
    pub next_before_id: Option<i64>,
}

/// `POST /history/cleanup`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryCleanupAnswer {
    pub days: u32,
    pub deleted: usize,
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    site_name: Option<String>,
    account: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    before_id: Option<String>,
}

/// A whole number from a query string, within `range`, else 400 naming `field`. Taken as
/// text, so that a number too large for any integer type is named too.
pub(crate) fn number_in(
    field: &str,
    text: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, Error> {
    match text.trim().parse::<i64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(Error::invalid(
            field,
            format!(
                "must be a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// A number of days from a query string: `1..=max`, else 400 naming `days`.
pub(crate) fn checked_days(days: &str, max: u32) -> Result<u32, Error> {
    Ok(number_in("days", days, 1..=i64::from(max))? as u32)
}

/// History rows, newest first, keyset pagination; no token material.
#[utoipa::path(
    get,
    path = "/api/v1/automation/history",
    operation_id = "listHistory",
    tag = "history",
    params(
        ("site_name" = Option<String>, Query),
        ("account" = Option<String>, Query),
        ("status" = Option<String>, Query),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
        ("before_id" = Option<i64>, Query),
    ),
    responses(
        (status = 200, description = "{items, next_before_id}", body = super::answer::Answer<HistoryPage>),
        (status = 400, description = "Bad input", body = ErrorBody),
    ),
)]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, Error> {
    let q = query.into_inner();
    if let Some(site) = &q.site_name {
        validate_site_name("site_name", site)?;
    }
    if let Some(account) = &q.account {
        validate_account_name("account", account)?;
    }
    if let Some(status) = &q.status {
        if !AcquisitionStatus::ALL.iter().any(|s| s.as_str() == status) {
            return Err(Error::invalid("status", "must be success, failed, timeout, network_error, captcha_error or credential_error"));
        }
    }
    let limit = match &q.limit {
        Some(limit) => number_in("limit", limit, 1..=MAX_LIMIT)?,
        None => DEFAULT_LIMIT,
    };
    let before_id = match &q.before_id {
        Some(id) => Some(number_in("before_id", id, 1..=i64::MAX)?),
        None => None,
    };
    let filter = HistoryFilter {
        site_name: q.site_name,
        account: q.account,
        status: q.status,
        before_id,
        limit,
    };
    let rows = state
        .pool
        .run(move |conn| crate::db::history::page(conn, &filter))
        .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(ok(HistoryPage {
        items: rows.into_iter().map(HistoryItem::from).collect(),
        next_before_id: next,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupQuery {
    days: String,
}

/// Deletes rows older than `days` days (1 to [`MAX_DAYS`]), in batches.
#[utoipa::path(
    post,
    path = "/api/v1/automation/history/cleanup",
    operation_id = "cleanupHistory",
    tag = "history",
    params(("days" = u32, Query, description = "1 to 36500")),
    responses(
        (status = 200, description = "{days, deleted}", body = super::answer::Answer<HistoryCleanupAnswer>),
        (status = 400, description = "Bad input", body = ErrorBody),
    ),
)]
pub async fn cleanup(
    state: web::Data<AppState>,
    query: web::Query<CleanupQuery>,
) -> Result<HttpResponse, Error> {
    let days = checked_days(&query.days, MAX_DAYS)?;
    let deleted = state
        .pool
        .run(move |conn| crate::db::retention::delete_older_than(conn, days))
        .await?;
    Ok(ok(HistoryCleanupAnswer { days, deleted }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_details_that_are_not_json_are_kept_as_text() {
        assert_eq!(details_of(r#"{"kind":"timeout"}"#)["kind"], "timeout");
        assert_eq!(details_of("portal said no")["text"], "portal said no");
    }
}

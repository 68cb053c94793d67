//! The time series and logs the dashboard draws (SPEC §14):
//! `GET /api/v1/automation/performance/timeline` (the last hour, minute by minute),
//! `GET /api/v1/automation/performance/alerts/history` (the day's alert transitions) and
//! `GET /api/v1/automation/tokens/status?site_name=` (each account's token, without it).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answer::ok;
use super::answer::ErrorBody;
use super::state::AppState;
use crate::actors::alert::AlertHistory;
use crate::actors::alert_history::AlertTransition;
use crate::broker::TokenStatus;
use crate::error::Error;
use crate::watch::monitor::GetTimeline;
use crate::watch::timeline::MinutePoint;

/// `GET /performance/timeline`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineAnswer {
    /// Always 60.
    pub bucket_seconds: u64,
    pub points: Vec<MinutePoint>,
}

/// `GET /performance/alerts/history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertHistoryAnswer {
    pub transitions: Vec<AlertTransition>,
}

/// `GET /tokens/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenStatusAnswer {
    pub site_name: String,
    pub tokens: Vec<TokenStatus>,
}

/// Acquisitions, outcomes, rejections, cache hits and login duration p50/p95 for each of
/// the last 60 minutes, oldest first (minutes without activity included, as zeros).
#[utoipa::path(
    get,
    path = "/api/v1/automation/performance/timeline",
    tag = "performance",
    responses((status = 200, description = "{bucket_seconds: 60, points: [{start, acquisitions, successes, failures, rejections, cache_hits, logins, login_p50, login_p95}]}", body = super::answer::Answer<TimelineAnswer>))
)]
pub async fn timeline(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let points = state.actors.monitor.send(GetTimeline).await?;
    Ok(ok(TimelineAnswer {
        bucket_seconds: 60,
        points,
    }))
}

/// Each time an alert started firing or was resolved in the last 24 hours, newest first
/// (at most 200).
#[utoipa::path(
    get,
    path = "/api/v1/automation/performance/alerts/history",
    tag = "performance",
    responses((status = 200, description = "{transitions: [{at, type, transition: firing|resolved, severity, message}]}", body = super::answer::Answer<AlertHistoryAnswer>))
)]
pub async fn alert_history(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let transitions = state.actors.alert.send(AlertHistory).await?;
    Ok(ok(AlertHistoryAnswer { transitions }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TokenStatusQuery {
    /// The site whose accounts to show.
    pub site_name: String,
}

/// Per account of the site: where its token is held (`cache`, `store`, or none), when it was
/// issued and expires, whether it would be handed out now, and what caused its login. Never
/// the token.
#[utoipa::path(
    get,
    path = "/api/v1/automation/tokens/status",
    tag = "tokens",
    params(TokenStatusQuery),
    responses(
        (status = 200, description = "{site_name, tokens: [TokenStatus]}", body = super::answer::Answer<TokenStatusAnswer>),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown site", body = ErrorBody)
    )
)]
pub async fn token_status(
    state: web::Data<AppState>,
    query: web::Query<TokenStatusQuery>,
) -> Result<HttpResponse, Error> {
    crate::config::validate_site_name("site_name", &query.site_name)?;
    let tokens = state.broker.token_statuses(&query.site_name).await?;
    Ok(ok(TokenStatusAnswer {
        site_name: query.into_inner().site_name,
        tokens,
    }))
}

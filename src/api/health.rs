//! Liveness (`/healthz`) and health (`/api/v1/automation/performance/health`).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::actors::alert::Health;
use crate::error::Error;

/// Liveness: the process answers HTTP. No auth, no dependencies.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Health level, alerts and components; 503 only when the database cannot be reached.
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let report = state.actors.alert.send(Health).await?;
    let body = json!({"success": true, "data": report});
    Ok(if report.database_up {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    })
}

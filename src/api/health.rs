//! Liveness (`/healthz`) and health (`/api/v1/automation/performance/health`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::answer::success;
use super::state::AppState;
use crate::actors::alert::{Alert, Health, HealthLevel, HealthReport, Severity};
use crate::actors::components::{
    HistoryComponent, HistoryStatus, SecretKeyComponent, SecretKeyStatus, SlotsComponent,
    SlotsStatus,
};
use crate::error::Error;
use crate::history::spool::{dead_letter_path, DeadLetter};

/// `GET /healthz`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

/// Liveness: the process answers HTTP. No auth, no dependencies.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "liveness",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "The process answers", body = Liveness),
    ),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Liveness {
        status: "ok".into(),
    })
}

/// Health level, alerts and components; 503 only when the database cannot be reached.
#[utoipa::path(
    get,
    path = "/api/v1/automation/performance/health",
    operation_id = "health",
    tag = "performance",
    responses(
        (status = 200, description = "status, timestamp, metrics, alerts, thresholds, components", body = super::answer::Answer<HealthReport>),
        (status = 503, description = "The database cannot be reached: the same report", body = super::answer::Answer<HealthReport>),
    ),
)]
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let mut report = state.actors.alert.send(Health).await?;
    // The login slots: shared through Redis, or in process (by design, or as a fallback
    // while the one Redis link is not up: the same state the cache reports).
    let slots_status = if state.slots.is_degraded() {
        SlotsStatus::Degraded
    } else {
        SlotsStatus::Up
    };
    if state.slots.is_degraded() {
        report.alerts.push(Alert {
            kind: "slots_fallback".into(),
            message: "Redis is unreachable: login limits hold per instance until it is back".into(),
            severity: Severity::Medium,
            value: 0.0,
            threshold: 1.0,
        });
        report.status = HealthLevel::from_alerts(&report.alerts);
    }
    if let Some(link) = state.slots.link() {
        report.components.redis = Some(link.whereabouts().await);
    }
    report.components.slots = Some(SlotsComponent {
        status: slots_status,
        mode: state.slots.mode().to_string(),
    });
    // History rows the database refused for their content wait in the dead-letter file.
    let dead = DeadLetter::new(dead_letter_path(&state.config.history.spool_file));
    let dead_rows = dead.rows();
    if dead_rows > 0 {
        report.alerts.push(Alert {
            kind: "history_dead_letter".into(),
            message: format!(
                "{dead_rows} history row(s) the database refused are kept in {}",
                dead.path().display()
            ),
            severity: Severity::Low,
            value: dead_rows as f64,
            threshold: 0.0,
        });
        report.status = HealthLevel::from_alerts(&report.alerts);
    }
    report.components.history = Some(HistoryComponent {
        status: if dead_rows > 0 {
            HistoryStatus::DeadLetters
        } else {
            HistoryStatus::Up
        },
        dead_letter_file: dead.path().to_path_buf(),
        dead_letter_rows: dead_rows,
    });
    report.components.secret_key = Some(SecretKeyComponent {
        status: secret_key_status(&state, &mut report.alerts).await,
    });
    report.status = HealthLevel::from_alerts(&report.alerts);
    let status = if report.database_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(success(status, report))
}

/// Whether the key still opens a stored password (one row): accounts sealed under another
/// key would fail every login with them. `unknown` while the database cannot be asked.
async fn secret_key_status(state: &AppState, alerts: &mut Vec<Alert>) -> SecretKeyStatus {
    let key = state.key.clone();
    let checked = state
        .pool
        .run(move |conn| crate::daemon::checks::key_opens_stored_secret(conn, &key))
        .await;
    match checked {
        Ok(()) => SecretKeyStatus::Ok,
        Err(Error::Crypto(message)) => {
            alerts.push(Alert {
                kind: "secret_key_mismatch".into(),
                message,
                severity: Severity::High,
                value: 1.0,
                threshold: 0.0,
            });
            SecretKeyStatus::Mismatch
        }
        Err(_) => SecretKeyStatus::Unknown,
    }
}

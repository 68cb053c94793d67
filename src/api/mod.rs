//! The HTTP API (SPEC §7): routes, the shared [`AppState`], authentication, and the JSON
//! envelope `{"success": true, "data": …}` / `{"success": false, "code", "message", "errors"}`.
//!
//! One small handler per endpoint, grouped by area: [`tokens`], [`health`], [`metrics`],
//! [`cache`], [`resources`], [`optimize`], [`history`], [`accounts`] (and sites); [`captchas`];
//! [`dashboard`] (the page at `/`) and [`timeline`] (the series it draws).

pub mod accounts;
pub mod auth;
pub mod cache;
pub mod captchas;
pub mod dashboard;
pub mod health;
pub mod history;
pub mod metrics;
pub mod openapi;
pub mod optimize;
pub mod resources;
pub mod schemas;
pub mod timeline;
pub mod tokens;

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;

use crate::actors::Actors;
use crate::broker::Broker;
use crate::cache::TokenCache;
use crate::config::Config;
use crate::crypto::SecretKey;
use crate::db::Pool;
use crate::error::Error;

/// Largest JSON body accepted; token requests are tiny.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler may use. Cheap to clone (`web::Data` wraps it in an `Arc`).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub actors: Actors,
    pub pool: Pool,
    pub key: SecretKey,
    pub cache: TokenCache,
    pub broker: Broker,
    pub slots: crate::slots::Slots,
    /// The end of the stop's grace period, which waiting callers race against.
    pub shutdown: crate::shutdown::Shutdown,
}

/// `{"success": true, "data": …}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Envelope {
    success: bool,
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// `{"success": false, "code": "UPPER_SNAKE", "message": "…", "errors": {…}}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    success: bool,
    code: String,
    message: String,
    #[schema(value_type = Object)]
    errors: serde_json::Value,
}

/// `{"success": true, "data": data}` with status 200.
pub fn ok<T: Serialize>(data: T) -> HttpResponse {
    /// Serialized straight from the data, with no `serde_json::Value` in between.
    #[derive(Serialize)]
    struct Success<T> {
        success: bool,
        data: T,
    }
    HttpResponse::Ok().json(Success {
        success: true,
        data,
    })
}

/// Registers every route; used by the server and by tests.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(|err, _| json_error(err).into()),
    )
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        actix_web::error::InternalError::from_response(
            err.to_string(),
            actix_web::ResponseError::error_response(&Error::invalid("query", err.to_string())),
        )
        .into()
    }))
    .route("/healthz", web::get().to(health::healthz))
    .configure(dashboard::routes)
    .route("/metrics", web::get().to(metrics::prometheus))
    .route(
        "/api/v1/automation/openapi.json",
        web::get().to(openapi::document),
    )
    .route("/api/v1/automation/history", web::get().to(history::list))
    .route(
        "/api/v1/automation/history/cleanup",
        web::post().to(history::cleanup),
    )
    .route("/api/v1/automation/accounts", web::get().to(accounts::list))
    .route(
        "/api/v1/automation/accounts/unblock",
        web::post().to(accounts::unblock),
    )
    .route(
        "/api/v1/automation/sites/{site}/circuit/close",
        web::post().to(accounts::close_circuit),
    )
    .route("/api/v1/automation/captchas", web::get().to(captchas::list))
    .route(
        "/api/v1/automation/captchas/{id}",
        web::post().to(captchas::answer),
    )
    .service(
        web::scope("/api/v1/automation/tokens")
            .route("/acquire", web::post().to(tokens::acquire))
            .route("/invalidate", web::post().to(tokens::invalidate)),
    )
    .service(
        web::scope("/api/v1/automation/performance")
            .route("/health", web::get().to(health::health))
            .route("/resource-usage", web::get().to(resources::usage))
            .route("/resources/cleanup", web::post().to(resources::cleanup))
            .route("/metrics", web::get().to(metrics::metrics))
            .route("/metrics/reset", web::post().to(metrics::reset))
            .route("/statistics", web::get().to(metrics::statistics))
            .route("/cache-stats", web::get().to(cache::stats))
            .route("/cache/warm-up", web::post().to(cache::warm_up))
            .route("/cache/clear", web::delete().to(cache::clear))
            .route("/optimize-concurrency", web::post().to(optimize::optimize)),
    )
    .default_service(web::to(not_found));
}

/// Turns a JSON extraction failure into a 400 or 413 with our error body.
fn json_error(err: actix_web::error::JsonPayloadError) -> actix_web::error::InternalError<String> {
    use actix_web::error::JsonPayloadError as E;
    let message = err.to_string();
    let response = match err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => {
            HttpResponse::PayloadTooLarge().json(json!({
                "success": false,
                "code": "PAYLOAD_TOO_LARGE",
                "message": format!("request body over {MAX_BODY_BYTES} bytes"),
                "errors": {},
            }))
        }
        _ => actix_web::ResponseError::error_response(&Error::invalid("body", message.clone())),
    };
    actix_web::error::InternalError::from_response(message, response)
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "success": false,
        "code": "NOT_FOUND",
        "message": "no such endpoint",
        "errors": {},
    }))
}

//! The HTTP API (SPEC §7): routes, the shared [`AppState`], authentication, and the JSON
//! envelope `{"success": true, "data": …}` / `{"success": false, "code", "message", "errors"}`.
//!
//! One small handler per endpoint, grouped by area: [`tokens`], [`health`], [`metrics`],
//! [`cache`], [`resources`], [`optimize`], [`history`], [`accounts`] (and sites); [`captchas`]; [`checkouts`];
//! [`dashboard`] (the page at `/`) and [`timeline`] (the series it draws).

pub mod accounts;
pub mod answer;
pub mod auth;
pub mod cache;
pub mod captchas;
pub mod checkouts;
pub mod dashboard;
pub mod deadline;
pub mod health;
pub mod history;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod optimize;
pub mod resources;
pub mod same_origin;
pub mod state;
pub mod timeline;
pub mod tokens;

use actix_web::web;

pub use state::AppState;

use crate::error::Error;
use answer::not_found;

/// Registers every route; used by the server and by tests.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // JSON bodies are read by [`json::Json`], with the API's limit and answers.
    cfg.app_data(web::QueryConfig::default().error_handler(|err, _| {
        actix_web::error::InternalError::from_response(
            err.to_string(),
            actix_web::ResponseError::error_response(&Error::invalid("query", err.to_string())),
        )
        .into()
    }))
    .route("/healthz", web::get().to(health::healthz))
    // The hot path next, outside the tokens scope: the router and `auth::route_of` try the
    // patterns in this order, and each dynamic one before it (`{id}`) costs a regex match.
    .route(
        "/api/v1/automation/tokens/acquire",
        web::post().to(tokens::acquire),
    )
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
            .route("/invalidate", web::post().to(tokens::invalidate))
            .route("/checkout", web::post().to(checkouts::checkout))
            .route("/checkout/{id}/renew", web::post().to(checkouts::renew))
            .route("/checkout/{id}/release", web::post().to(checkouts::release))
            .route("/checkouts", web::get().to(checkouts::list)),
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

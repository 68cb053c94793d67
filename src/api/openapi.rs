//! The OpenAPI document of the HTTP API (`GET /api/v1/automation/openapi.json`), generated
//! from the handlers' `#[utoipa::path]` annotations and the request types.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The answers the middleware gives before any handler runs (api/auth.rs,
/// api/same_origin.rs, api/deadline.rs), added to every operation they can end, all with the
/// error envelope: 401 and 403 (with `server.admin_token` set: no or an unknown bearer
/// token, or one whose role may not call this; every operation but the public ones), 421 (a
/// `Host` that is not the daemon's, all but `/healthz`), and on requests with a body 403 (a
/// foreign `Origin`), 415 (no `Content-Type: application/json`) and 408 (the body late past
/// `server.client_request_timeout`).
struct MiddlewareAnswers;

impl Modify for MiddlewareAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{HttpMethod, Ref, ResponseBuilder};
        let answer = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let with_body = [
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
                (HttpMethod::Get, item.get.as_mut()),
            ];
            for (method, operation) in with_body {
                let Some(operation) = operation else { continue };
                // `security(())`: the operation needs no token (`/healthz`, the dashboard).
                let public = serde_json::to_value(&operation.security)
                    .is_ok_and(|security| security == serde_json::json!([{}]));
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| answer(description).into());
                };
                if !public {
                    add(
                        "401",
                        "UNAUTHORIZED: server.admin_token is set and no bearer token, or an unknown one, was sent",
                    );
                }
                if path != "/healthz" {
                    add("421", "MISDIRECTED_REQUEST: the Host is not the daemon's");
                }
                match (public, method == HttpMethod::Get) {
                    (false, true) => add("403", "FORBIDDEN: the token's role may not call this"),
                    (false, false) => add(
                        "403",
                        "FORBIDDEN: the token's role may not call this, or a foreign Origin",
                    ),
                    (true, true) => {}
                    (true, false) => add("403", "FORBIDDEN: a foreign Origin"),
                }
                if method != HttpMethod::Get {
                    add(
                        "415",
                        "UNSUPPORTED_MEDIA_TYPE: no Content-Type: application/json",
                    );
                    add("408", "REQUEST_TIMEOUT: the body arrived too late");
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tokend", description = "Token broker for automated access to web portals. With `server.admin_token` set, every path but /healthz needs `Authorization: Bearer <token>`; client tokens reach only /api/v1/automation/tokens/*."),
    paths(
        super::tokens::acquire,
        super::tokens::invalidate,
        super::checkouts::checkout,
        super::checkouts::renew,
        super::checkouts::release,
        super::checkouts::list,
        super::health::healthz,
        super::health::health,
        super::metrics::metrics,
        super::metrics::reset,
        super::metrics::statistics,
        super::metrics::prometheus,
        super::cache::stats,
        super::cache::warm_up,
        super::cache::clear,
        super::resources::usage,
        super::resources::cleanup,
        super::optimize::optimize,
        super::history::list,
        super::history::cleanup,
        super::accounts::list,
        super::accounts::unblock,
        super::accounts::close_circuit,
        super::captchas::list,
        super::captchas::answer,
        super::timeline::timeline,
        super::timeline::alert_history,
        super::timeline::token_status,
        super::dashboard::index,
        document,
    ),
    components(schemas(super::answer::ErrorBody, crate::broker::AcquireRequest, super::tokens::InvalidateRequest, super::accounts::UnblockRequest, crate::accounts::AccountView, crate::broker::SiteReport, crate::broker::TokenStatus, super::captchas::CaptchaAnswer, crate::lifecycle::captcha::Challenge, crate::broker::CheckoutRequest, crate::broker::RenewRequest, crate::broker::ReleaseRequest, crate::broker::CheckoutOutcome, super::checkouts::CheckoutAnswer, super::checkouts::CheckoutList, crate::lifecycle::checkout::Checkout)),
    modifiers(&BearerAuth, &MiddlewareAnswers),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/automation/openapi.json",
    operation_id = "openapiDocument",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document")),
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

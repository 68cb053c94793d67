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
    components(schemas(super::answer::Envelope, super::answer::ErrorBody, crate::broker::AcquireRequest, super::tokens::InvalidateRequest, super::accounts::UnblockRequest, crate::accounts::AccountView, crate::broker::SiteReport, crate::broker::TokenStatus, super::captchas::CaptchaAnswer, crate::captcha::Challenge, crate::broker::CheckoutRequest, crate::broker::RenewRequest, crate::broker::ReleaseRequest, crate::broker::CheckoutOutcome, super::checkouts::CheckoutAnswer, super::checkouts::CheckoutList, crate::checkout::Checkout)),
    modifiers(&BearerAuth),
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

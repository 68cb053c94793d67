//! The JSON envelope every endpoint answers with: `{"success": true, "data": …}`, or
//! `{"success": false, "code", "message", "errors"}` (built from [`Error`]), and the answers
//! to bodies the extractors refuse and to unknown paths.

use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::json;

use crate::error::Error;

/// Largest JSON body accepted; token requests are tiny.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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
    success(actix_web::http::StatusCode::OK, data)
}

/// `{"success": true, "data": data}` with `status` (the health report's 503).
pub fn success<T: Serialize>(status: actix_web::http::StatusCode, data: T) -> HttpResponse {
    /// Serialized straight from the data, with no `serde_json::Value` in between.
    #[derive(Serialize)]
    struct Success<T> {
        success: bool,
        data: T,
    }
    HttpResponse::build(status).json(Success {
        success: true,
        data,
    })
}

/// Turns a JSON extraction failure into a 400 or 413 with our error body.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
) -> actix_web::error::InternalError<String> {
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
        E::Payload(ref error) if super::deadline::is_timeout(error) => {
            HttpResponse::RequestTimeout().json(json!({
                "success": false,
                "code": "REQUEST_TIMEOUT",
                "message": message.clone(),
                "errors": {},
            }))
        }
        _ => actix_web::ResponseError::error_response(&Error::invalid("body", message.clone())),
    };
    actix_web::error::InternalError::from_response(message, response)
}

pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "success": false,
        "code": "NOT_FOUND",
        "message": "no such endpoint",
        "errors": {},
    }))
}

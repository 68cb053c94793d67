//! The JSON envelope every endpoint answers with, and the one type each side of it has:
//! [`Answer<T>`] `{"success": true, "data": T}` around the `Serialize + ToSchema` answer each
//! handler returns (declared next to it), and [`ErrorBody`] `{"success": false, "code",
//! "message", "errors"}` (declared and built beside [`Error`], whose answer it is), with the
//! answers to bodies the extractors refuse and to unknown paths. The OpenAPI document is
//! generated from these types, and the CLI reads the daemon's answers into them
//! (`cli/client.rs`); `tests/openapi.rs` validates every real answer against the document.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::Error;
pub use crate::error::ErrorBody;

/// Largest JSON body accepted; token requests are tiny.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `{"success": true, "data": …}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Answer<T> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
}

/// `{"success": true, "data": data}` with status 200.
pub fn ok<T: Serialize>(data: T) -> HttpResponse {
    success(StatusCode::OK, data)
}

/// `{"success": true, "data": data}` with `status` (the health report's 503).
pub fn success<T: Serialize>(status: StatusCode, data: T) -> HttpResponse {
    HttpResponse::build(status).json(Answer {
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
            HttpResponse::PayloadTooLarge().json(ErrorBody::new(
                "PAYLOAD_TOO_LARGE",
                format!("request body over {MAX_BODY_BYTES} bytes"),
            ))
        }
        E::Payload(ref error) if super::deadline::is_timeout(error) => {
            HttpResponse::RequestTimeout().json(ErrorBody::new("REQUEST_TIMEOUT", message.clone()))
        }
        _ => actix_web::ResponseError::error_response(&Error::invalid("body", message.clone())),
    };
    actix_web::error::InternalError::from_response(message, response)
}

pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(ErrorBody::new("NOT_FOUND", "no such endpoint"))
}

//! `Answer<T>`, the envelope `{"success": true, "data": T}` of the OpenAPI document around
//! the `Serialize + ToSchema` answer each handler returns (declared next to it).
//! `tests/openapi.rs` validates every real answer against the document.
#![allow(dead_code)]

use utoipa::ToSchema;

/// `{"success": true, "data": …}`.
#[derive(ToSchema)]
pub struct Answer<T> {
    success: bool,
    data: T,
}

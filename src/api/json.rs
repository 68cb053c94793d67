//! [`Json`]: the JSON body of a request, read without a copy when it came in one piece.
//!
//! actix-web's `web::Json` starts every body in a fresh 8 KiB buffer: one large allocation
//! (and, with glibc, a consolidation of the small free chunks) on every token request, for a
//! body of some thirty bytes (issue 23). This extractor keeps the body's one chunk as it
//! came and copies only a body that arrives in pieces. The rules and answers are the API's:
//! a JSON `Content-Type` (`application/json` or `…+json`), at most [`MAX_BODY_BYTES`],
//! every refusal answered by [`json_error`] (400, 408 past the body's deadline, 413).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::Stream;
use serde::de::DeserializeOwned;

use super::answer::{json_error, MAX_BODY_BYTES};

/// A request body parsed from JSON.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = JsonBody<T>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let reading = match head_allows_json(req) {
            Ok(()) => Reading::Body {
                payload: payload.take(),
                first: None,
                more: BytesMut::new(),
            },
            Err(refused) => Reading::Refused(Some(refused)),
        };
        JsonBody {
            reading,
            parsed: PhantomData,
        }
    }
}

/// The head's say: a JSON body of an allowed length, as far as the head tells.
fn head_allows_json(req: &HttpRequest) -> Result<(), JsonPayloadError> {
    if !is_json(req) {
        return Err(JsonPayloadError::ContentType);
    }
    let length = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<usize>().ok());
    match length {
        Some(length) if length > MAX_BODY_BYTES => Err(JsonPayloadError::OverflowKnownLength {
            length,
            limit: MAX_BODY_BYTES,
        }),
        _ => Ok(()),
    }
}

/// Whether the body is declared JSON: `application/json` (what every client sends, checked
/// without parsing), or any media type whose subtype or suffix is `json`.
fn is_json(req: &HttpRequest) -> bool {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .map(|value| value.as_bytes());
    if declared.is_some_and(|value| value.eq_ignore_ascii_case(b"application/json")) {
        return true;
    }
    match req.mime_type() {
        Ok(Some(mime)) => mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"),
        _ => false,
    }
}

/// The future of a [`Json`] extraction.
pub struct JsonBody<T> {
    reading: Reading,
    parsed: PhantomData<fn() -> T>,
}

enum Reading {
    /// The head was refused; the body is left unread (the answer closes the connection).
    Refused(Option<JsonPayloadError>),
    Body {
        payload: Payload,
        /// The first chunk, kept as it came.
        first: Option<Bytes>,
        /// Every byte so far, once a second chunk came.
        more: BytesMut,
    },
}

impl<T: DeserializeOwned> Future for JsonBody<T> {
    type Output = Result<Json<T>, actix_web::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (payload, first, more) = match &mut this.reading {
            Reading::Refused(refused) => {
                let refused = refused.take().unwrap_or(JsonPayloadError::ContentType);
                return Poll::Ready(Err(json_error(refused).into()));
            }
            Reading::Body {
                payload,
                first,
                more,
            } => (payload, first, more),
        };
        loop {
            match ready!(Pin::new(&mut *payload).poll_next(cx)) {
                Some(Ok(chunk)) => {
                    let so_far = first.as_ref().map_or(0, Bytes::len) + more.len();
                    if so_far + chunk.len() > MAX_BODY_BYTES {
                        let overflow = JsonPayloadError::Overflow {
                            limit: MAX_BODY_BYTES,
                        };
                        return Poll::Ready(Err(json_error(overflow).into()));
                    }
                    match first.take() {
                        None if more.is_empty() => *first = Some(chunk),
                        earlier => {
                            if let Some(earlier) = earlier {
                                more.extend_from_slice(&earlier);
                            }
                            more.extend_from_slice(&chunk);
                        }
                    }
                }
                Some(Err(error)) => {
                    return Poll::Ready(Err(json_error(JsonPayloadError::Payload(error)).into()));
                }
                None => {
                    let body: &[u8] = match first {
                        Some(chunk) => chunk,
                        None => more,
                    };
                    return Poll::Ready(
                        serde_json::from_slice(body)
                            .map(Json)
                            .map_err(|e| json_error(JsonPayloadError::Deserialize(e)).into()),
                    );
                }
            }
        }
    }
}

//! The time a caller gets to send a request body (`server.client_request_timeout`, counted
//! from the request's head). actix bounds the head itself; this bounds the body, so a caller
//! sending a byte a second cannot hold a connection (and its file descriptor) for long. A
//! body still arriving at the deadline ends in an error: the handler answers 408 and the
//! connection, its body unread, is closed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use futures_util::Stream;

use super::state::AppState;

/// The middleware: replaces the request's body with one that fails at the deadline.
pub async fn bound_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        let limit = crate::config::seconds(state.config.server.client_request_timeout);
        let body = DeadlineBody {
            inner: Box::pin(req.take_payload()),
            deadline: Instant::now() + limit,
            timer: None,
            waited: false,
            ended: false,
        };
        let boxed: Pin<Box<dyn Stream<Item = BodyChunk>>> = Box::pin(body);
        req.set_payload(Payload::from(boxed));
    }
    next.call(req).await
}

/// What a request body yields.
type BodyChunk = Result<web::Bytes, PayloadError>;

/// A body that ends with a timed-out error once its deadline passes. Its timer is set only
/// when the body has to be waited for: a body that came with the head (every token request)
/// costs no timer. actix calls the handler before it hands over the body read with the head,
/// so the first poll finds nothing yet: that poll asks to be polled again instead of arming
/// the timer (the body is there by then), and only a body still missing at the second arms it.
struct DeadlineBody<S> {
    inner: Pin<Box<S>>,
    deadline: Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The first poll that found nothing yet has passed.
    waited: bool,
    ended: bool,
}

impl<S> Stream for DeadlineBody<S>
where
    S: Stream<Item = BodyChunk>,
{
    type Item = BodyChunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.inner.as_mut().poll_next(cx) {
            return Poll::Ready(item);
        }
        if !self.waited {
            self.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.ended = true;
                Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body did not arrive within server.client_request_timeout",
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Whether a body error is this deadline passing (answered 408, not 400).
pub(crate) fn is_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

//! The body deadline: a request body must be read whole within
//! `[http] body_timeout_secs` of the start of its read. It is a total, not
//! an idle time between chunks, so a body trickled a byte at a time fails
//! as surely as one that stalls. Past it the request is answered
//! `408 request_timeout` with `Connection: close`, whichever handler (or
//! the cluster forwarder) was reading, and the connection closes.
//!
//! actix-web bounds only the request head (`client_request_timeout`);
//! the body is read through the stream [`arm`] puts in its place.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::ConnectionType;
use actix_web::{HttpMessage, ResponseError};
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::ApiError;

/// The deadline put on one request's body.
pub(super) struct Armed {
    timeout: Duration,
    expired: Rc<Cell<bool>>,
}

/// Puts the deadline of `timeout` on the request's body.
pub(super) fn arm(req: &mut ServiceRequest, timeout: Duration) -> Armed {
    let expired = Rc::new(Cell::new(false));
    match req.take_payload() {
        Payload::None => {}
        payload => req.set_payload(Payload::Stream {
            payload: Box::pin(Deadline {
                payload,
                timeout,
                due: None,
                waited: false,
                timer: None,
                expired: expired.clone(),
            }),
        }),
    }
    Armed { timeout, expired }
}

impl Armed {
    /// `res`, or `408 request_timeout` (closing the connection) if the
    /// body missed its deadline, whatever the handler answered.
    pub(super) fn settle(self, res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
        if !self.expired.get() {
            return res;
        }
        metrics::counter!("pushd_http_body_timeouts_total").increment(1);
        let mut answer = ApiError::request_timeout(self.timeout.as_secs()).error_response();
        answer.head_mut().set_connection_type(ConnectionType::Close);
        let (req, _) = res.into_parts();
        ServiceResponse::new(req, answer)
    }
}

/// A body stream that fails once `timeout` has passed since its first
/// poll, saying so in `expired`. The timer is set up only once the body
/// keeps its reader waiting twice: the server hands a body that came with
/// its head (most) to its reader just after the reader first asks, so such
/// a body is read without one.
struct Deadline {
    payload: Payload,
    timeout: Duration,
    /// When the body is due: `timeout` after the first poll.
    due: Option<Instant>,
    /// Whether the reader has been kept waiting once (and woken again, to
    /// look once more before a timer is set up).
    waited: bool,
    timer: Option<Pin<Box<Sleep>>>,
    expired: Rc<Cell<bool>>,
}

impl Deadline {
    /// The error of a body past its deadline.
    fn expire(&self) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.expired.set(true);
        let late = io::Error::new(io::ErrorKind::TimedOut, "the body did not arrive in time");
        Poll::Ready(Some(Err(PayloadError::Io(late))))
    }
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let timeout = this.timeout;
        let due = *this.due.get_or_insert_with(|| Instant::now() + timeout);
        let late = match &mut this.timer {
            Some(timer) => timer.as_mut().poll(cx).is_ready(),
            None => Instant::now() >= due,
        };
        if late {
            return this.expire();
        }
        let polled = Pin::new(&mut this.payload).poll_next(cx);
        if polled.is_pending() && !this.waited {
            // The reader is polled again at once: a body on its way from
            // the connection's buffer is there by then, with no timer set.
            this.waited = true;
            cx.waker().wake_by_ref();
        } else if polled.is_pending() && this.timer.is_none() {
            let mut timer = Box::pin(tokio::time::sleep_until(due));
            if timer.as_mut().poll(cx).is_ready() {
                return this.expire();
            }
            this.timer = Some(timer);
        }
        polled
    }
}

//! The body deadline: a request body must be read whole within
//! `[http] body_timeout_secs` of the start of its read. It is a total, not
//! an idle time between chunks, so a body trickled a byte at a time fails
//! as surely as one that stalls. Past it the request is answered
//! `408 request_timeout` with `Connection: close`, whichever handler (or
//! the cluster forwarder) was reading, and the connection closes.
//!
//! actix-web bounds only the request head (`client_request_timeout`);
//! the body is read through the stream this middleware puts in its place.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::{ApiError, AppState};

/// Puts the deadline on the request's body; answers 408 if it passed.
pub async fn enforce(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.body_timeout);
    let expired = Rc::new(Cell::new(false));
    if let Some(timeout) = timeout {
        match req.take_payload() {
            Payload::None => {}
            payload => req.set_payload(Payload::Stream {
                payload: Box::pin(Deadline {
                    payload,
                    timeout,
                    due: None,
                    timer: None,
                    expired: expired.clone(),
                }),
            }),
        }
    }
    let res = next.call(req).await?.map_into_boxed_body();
    if !expired.get() {
        return Ok(res);
    }
    metrics::counter!("pushd_http_body_timeouts_total").increment(1);
    let secs = timeout.unwrap_or_default().as_secs();
    let mut answer = ApiError::request_timeout(secs).error_response();
    answer.head_mut().set_connection_type(ConnectionType::Close);
    let (req, _) = res.into_parts();
    Ok(ServiceResponse::new(req, answer))
}

/// A body stream that fails once `timeout` has passed since its first
/// poll, saying so in `expired`. The timer is set up only once the body
/// keeps its reader waiting: a body that came with its head (most) is read
/// without one.
struct Deadline {
    payload: Payload,
    timeout: Duration,
    /// When the body is due: `timeout` after the first poll.
    due: Option<Instant>,
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
        if polled.is_pending() && this.timer.is_none() {
            let mut timer = Box::pin(tokio::time::sleep_until(due));
            if timer.as_mut().poll(cx).is_ready() {
                return this.expire();
            }
            this.timer = Some(timer);
        }
        polled
    }
}

//! The way in of every request, before the error bodies and routing: the
//! connection limit's reserve ([`super::connections`]), the body deadline
//! ([`super::deadline`]) and the write gate ([`super::backpressure`]), in
//! that order. One middleware rather than three: each `from_fn` layer
//! boxes a future and wraps the answer for every request.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::web;

use super::{AppState, backpressure, connections, deadline};

/// Admits a request: refused on a reserve connection unless it is
/// monitoring, its body put on a deadline, and a write passed through the
/// write gate.
pub async fn admit(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let reserve = connections::reserve_max(&req);
    if let Some(answer) = reserve.and_then(|max| connections::refusal(&req, max)) {
        return Ok(closing(req.into_response(answer)));
    }
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let Some(state) = state else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let armed = deadline::arm(&mut req, state.body_timeout);
    let res = match backpressure::writes(&req) {
        true => backpressure::through(&state.writes, req, next).await?,
        false => next.call(req).await?.map_into_boxed_body(),
    };
    let res = armed.settle(res);
    Ok(match reserve {
        Some(_) => closing(res),
        None => res,
    })
}

/// `res`, closing its connection after it.
fn closing(mut res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    res.response_mut()
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    res
}

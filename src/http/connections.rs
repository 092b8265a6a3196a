//! How many connections the API serves at once. pushd counts its open
//! connections itself and never stops accepting, so neither the listen
//! backlog nor the open files limit fills up behind slow clients:
//!
//! - up to `max` connections are served;
//! - the next `reserve` are served `/healthz` and `/metrics` only (anything
//!   else is answered `503 too_many_connections`), then closed: monitoring
//!   still gets in while slow clients hold every connection;
//! - past those a connection is closed as soon as it is accepted.

use std::any::Any;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::dev::{Extensions, ServiceRequest};
use actix_web::rt::net::TcpStream;
use actix_web::{HttpResponse, ResponseError};

use super::ApiError;

/// The most connections served by default, whatever the open files limit:
/// a client holding a connection with a body under way costs the daemon
/// about 24 KiB (3,000 of them took 72 MiB), so at most about 400 MiB.
const DEFAULT_CAP: usize = 16_384;

/// The paths a reserve connection is served.
const MONITORING: [&str; 2] = ["/healthz", "/metrics"];

/// How many connections are served, and how many more monitoring gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimit {
    /// Connections served at once.
    pub max: usize,
    /// Connections past `max` served `/healthz` and `/metrics` only.
    pub reserve: usize,
}

impl ConnectionLimit {
    /// `configured` connections, or by default as many as `open_files`
    /// leaves (see [`for_connections`]) less the reserve, capped at
    /// 16,384. The reserve is a sixteenth of `max`, 8 to 1024.
    pub fn new(configured: Option<usize>, open_files: u64) -> Self {
        let usable = for_connections(open_files);
        let max = configured.unwrap_or_else(|| (usable - usable / 16).clamp(1, DEFAULT_CAP));
        ConnectionLimit {
            max,
            reserve: (max / 16).clamp(8, 1024),
        }
    }

    /// Connections open at once at most: `max` and the reserve.
    pub fn total(&self) -> usize {
        self.max.saturating_add(self.reserve)
    }

    /// Logs the limit, warning when it does not fit in `open_files`.
    pub fn report(&self, open_files: u64) {
        let usable = for_connections(open_files);
        tracing::info!(
            max_connections = self.max,
            reserve = self.reserve,
            open_files,
            "serving {} connections at once, {} more for /healthz and /metrics",
            self.max,
            self.reserve
        );
        if self.total() > usable {
            tracing::warn!(
                "[http] max_connections ({}) and its reserve ({}) exceed the {usable} open files \
                 left for connections by the open files limit ({open_files}): accepting may fail \
                 under load; raise the limit (LimitNOFILE= in a systemd unit, ulimit -Hn) or \
                 lower max_connections",
                self.max,
                self.reserve
            );
        }
    }
}

/// The open files left for connections under a limit of `open_files`: the
/// rest are pushd's own (journal, sled, event log, backups, provider and
/// webhook connections), an eighth of the limit and at least 128 (at most
/// half of a tiny limit).
fn for_connections(open_files: u64) -> usize {
    let open_files = usize::try_from(open_files).unwrap_or(usize::MAX);
    let headroom = (open_files / 8).max(128).min(open_files / 2);
    open_files - headroom
}

/// The open connections, shared by the server's workers.
#[derive(Clone)]
pub struct Connections(Arc<Shared>);

struct Shared {
    open: AtomicUsize,
    limit: ConnectionLimit,
}

impl Connections {
    /// No connection open yet, under `limit`.
    pub fn new(limit: ConnectionLimit) -> Self {
        metrics::gauge!("pushd_http_connections_max").set(limit.max as f64);
        Connections(Arc::new(Shared {
            open: AtomicUsize::new(0),
            limit,
        }))
    }

    /// Counts a connection just accepted (actix-web's `on_connect`): keeps
    /// its [`Slot`] with it, and closes it at once past the reserve.
    pub fn accepted(&self, io: &dyn Any, data: &mut Extensions) {
        let open = self.0.open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("pushd_http_connections").increment(1.0);
        let limit = self.0.limit;
        data.insert(Slot {
            shared: self.0.clone(),
            reserve: open > limit.max,
        });
        if open > limit.total() {
            metrics::counter!("pushd_http_connections_refused_total").increment(1);
            if let Some(stream) = io.downcast_ref::<TcpStream>() {
                // SAFETY: shutdown(2) of the stream's own open socket; the
                // server then reads its end and drops the connection.
                unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
            }
        }
    }
}

/// A connection's place in the count, kept in its connection data and
/// given back when the connection is dropped.
pub struct Slot {
    shared: Arc<Shared>,
    /// Past `max`: served monitoring only.
    reserve: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("pushd_http_connections").decrement(1.0);
    }
}

/// Whether the request came on a reserve connection (past `max`): such a
/// connection is served `/healthz` and `/metrics` only, and then closed.
pub(super) fn reserve_max(req: &ServiceRequest) -> Option<usize> {
    req.conn_data::<Slot>()
        .filter(|slot| slot.reserve)
        .map(|slot| slot.shared.limit.max)
}

/// The answer on a reserve connection to anything but monitoring:
/// `503 too_many_connections`, or `None` to serve it.
pub(super) fn refusal(req: &ServiceRequest, max: usize) -> Option<HttpResponse> {
    if MONITORING.contains(&req.path()) {
        return None;
    }
    metrics::counter!("pushd_http_connections_refused_total").increment(1);
    Some(ApiError::too_many_connections(max).error_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_room_for_pushd_s_own_files() {
        for open_files in [256, 512, 1024, 20_000, 1 << 20] {
            let limit = ConnectionLimit::new(None, open_files);
            assert!(
                limit.total() + 128 <= open_files as usize,
                "{open_files}: {limit:?}"
            );
            assert!(limit.max <= DEFAULT_CAP, "{open_files}: {limit:?}");
        }
        assert_eq!(ConnectionLimit::new(None, 1024).max, 840);
        let set = ConnectionLimit::new(Some(20), 1024);
        assert_eq!((set.max, set.reserve), (20, 8));
    }
}

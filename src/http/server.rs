//! The HTTP server: the API's routes, extractors and middlewares over a
//! daemon's [`AppState`], on a bound listener, until a shutdown signal has
//! drained it. A single node and a cluster node start it the same way;
//! only the state (and, for a cluster node, what a signal hands over
//! first) differs.

use std::net::TcpListener;
use std::task::Poll;
use std::time::Duration;

use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};

use super::AppState;
use crate::config::{Config, IdentityVerification};
use crate::keys::{self, Source};

/// What a cluster node does on SIGTERM/SIGINT before its HTTP server
/// drains: hand its partitions over while it still answers (forwarding).
pub type HandOver = Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()>>;

/// What the server answers with besides the state: the keys and how SDK
/// events prove their customer, the metrics, and whether to print the
/// start-up banner.
pub struct Start {
    /// The API and SDK keys, and where they are kept.
    pub keys: keys::ResolvedKeys,
    /// Whether SDK-key events must prove their customer.
    pub identity: IdentityVerification,
    /// The Prometheus recorder `/metrics` renders.
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
    /// Print where the keys are and where it listens, once ready.
    pub banner: bool,
}

/// Serves the API over `state` on `listener` until SIGTERM/SIGINT has
/// drained it, with at most `[http] max_connections` connections (sized
/// from the open files limit, which it raises first). With `hand_over`,
/// the signal runs it first and only then drains the server.
pub async fn run(
    state: web::Data<AppState>,
    listener: TcpListener,
    start: Start,
    config: &Config,
    hand_over: Option<HandOver>,
) -> std::io::Result<()> {
    let Start {
        keys,
        identity,
        prometheus,
        banner,
    } = start;
    let open_files = crate::persistence::raise_open_files();
    let limit = config.http.connection_limit(open_files);
    limit.report(open_files);
    let addr = listener.local_addr()?;
    let site_id = config.compat.customerio_site_id.clone();
    let key_data = web::Data::new(super::KeyCheck::new(&keys.keys, identity, site_id));
    let compat = web::Data::new(super::compat::Compat::new(&config.compat));
    let prometheus = web::Data::new(prometheus);
    let max_body = state.max_body;
    let connections = super::Connections::new(limit);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(super::forward::to_owner))
            .wrap(ErrorHandlers::new().default_handler(super::contract_body))
            .wrap(from_fn(super::intake::admit))
            .app_data(state.clone())
            .app_data(key_data.clone())
            .app_data(prometheus.clone())
            .app_data(compat.clone())
            .configure(|cfg| super::extractors(cfg, max_body))
            .configure(super::routes)
    })
    .shutdown_timeout(drain_time(config).as_secs())
    .on_connect(move |io, data| connections.accepted(io, data))
    // actix-web's own limit is per worker and stops accepting when reached:
    // above ours (one worker may hold them all), it is never reached.
    .max_connections(limit.total().saturating_mul(2))
    .listen(listener)?;
    let server = match hand_over {
        Some(_) => server.disable_signals(),
        None => server,
    };
    let mut server = server.run();
    if let Some(hand_over) = hand_over {
        // Listening from here on: a signal sent once the banner shows is
        // caught.
        let signalled = shutdown_signal()?;
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            signalled.await;
            tracing::info!("stopping: handing the partitions over first");
            hand_over().await;
            handle.stop(true).await;
        });
    }
    // The first poll starts the workers and installs the SIGTERM/SIGINT
    // handlers: only then may the banner say the daemon is ready (a signal
    // sent on seeing it must drain the daemon, not kill it).
    match futures_util::poll!(&mut server) {
        Poll::Ready(result) => result?,
        Poll::Pending => {
            if banner {
                print_banner(&keys, addr);
            }
            server.await?
        }
    }
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT; the handlers are installed
/// when this is called.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// How long the HTTP server may drain its connections on SIGTERM: a third
/// of `shutdown_timeout_secs`, at most 10 s; the rest is the last
/// checkpoint's.
pub fn drain_time(config: &Config) -> Duration {
    Duration::from_secs((config.shutdown_timeout_secs / 3).clamp(1, 10))
}

/// What `serve` prints on start: generated keys (once), where the keys are
/// kept, the dashboard, and last the address (a script waits for that line).
fn print_banner(keys: &keys::ResolvedKeys, addr: std::net::SocketAddr) {
    let generated = [
        ("api_key", &keys.keys.api, &keys.api_source),
        ("sdk_key", &keys.keys.sdk, &keys.sdk_source),
    ];
    for (name, key, source) in generated {
        if let Source::Generated(path) = source {
            println!("generated {name}: {key} (kept in {})", path.display());
        }
    }
    println!("{}", keys.whereabouts());
    println!("dashboard: http://{addr}/ (sign in with the API key)");
    println!("pushd listening on http://{addr}");
}

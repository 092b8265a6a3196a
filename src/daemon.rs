//! `pushd serve`: opens the store, starts the engine and the providers,
//! resumes unsettled deliveries, serves the API until SIGTERM/SIGINT, then
//! drains, flushes and exits.

use std::sync::Arc;

use actix_web::middleware::ErrorHandlers;
use actix_web::{App, HttpServer, web};
use metrics_exporter_prometheus::PrometheusBuilder;
use pushd_actors::engine::Ports;
use pushd_actors::ports::SystemClock;
use pushd_actors::registry::Registry;
use rand::Rng;

use crate::config::{Config, ConfigError};
use crate::http::{self, AppState, BodyLimit, Keys};
use crate::persistence::{OpenError, Persistence};
use crate::providers::{ClientOptions, Providers};
use crate::template::LiquidRenderer;

/// Why the daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state on disk could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The engine could not recover its state.
    #[error("recovery: {0}")]
    Recover(#[from] pushd_actors::engine::EngineError),
    /// The listener could not be bound, or the server failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
}

/// The configured key (if not blank), else the one kept in the data dir,
/// else a new one (kept there, and printed once so the user can copy it).
fn key(
    data_dir: &std::path::Path,
    name: &str,
    configured: Option<String>,
) -> Result<String, ServeError> {
    if let Some(k) = configured.filter(|k| !k.trim().is_empty()) {
        return Ok(k);
    }
    let path = data_dir.join(name);
    if let Ok(k) = std::fs::read_to_string(&path)
        && !k.trim().is_empty()
    {
        return Ok(k.trim().to_string());
    }
    let bytes: [u8; 24] = rand::thread_rng().r#gen();
    let k: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(&path, &k)?;
    println!("generated {name}: {k} (kept in the data dir)");
    Ok(k)
}

/// Runs the daemon until a shutdown signal.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| ServeError::Metrics(e.to_string()))?;
    let persistence = Persistence::open(
        &config.data_dir,
        config.store_cache_mb << 20,
        crate::store::Timing::default(),
    )?;
    let store = persistence.store.clone();
    let keys = Keys {
        api: key(&config.data_dir, "api_key", config.api_key.clone())?,
        sdk: key(&config.data_dir, "sdk_key", config.sdk_key.clone())?,
    };
    let renderer = Arc::new(LiquidRenderer::default());
    let providers = Arc::new(Providers::for_apps(
        &config.apps(),
        &ClientOptions::default(),
    ));
    let ports = Ports {
        provider: providers,
        journal: persistence.journal.clone(),
        store: store.clone(),
        renderer: renderer.clone(),
        clock: Arc::new(SystemClock),
    };
    let registry = Arc::new(Registry::new(
        ports,
        config.engine.engine_config(),
        config.engine.shard_count(),
    ));
    let recovery = registry.recover()?;
    tracing::info!(
        covered = recovery.replayed.covered,
        replayed = recovery.replayed.records,
        resumed = recovery.resumed,
        "recovered"
    );

    let state = web::Data::new(AppState {
        registry,
        store: store.clone(),
        renderer,
    });
    let keys = web::Data::new(keys);
    let limit = web::Data::new(BodyLimit(config.max_body_bytes));
    let prometheus = web::Data::new(prometheus);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(ErrorHandlers::new().default_handler(http::contract_body))
            .app_data(state.clone())
            .app_data(keys.clone())
            .app_data(limit.clone())
            .app_data(prometheus.clone())
            .configure(http::dashboard::routes)
            .configure(http::routes)
    })
    .shutdown_timeout(10)
    .bind(&config.listen)?;
    for addr in server.addrs() {
        println!("pushd listening on http://{addr}");
    }
    server.run().await?;
    tracing::info!("http drained; checkpointing");
    persistence.close();
    Ok(())
}

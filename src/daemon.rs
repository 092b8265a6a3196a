//! `pushd serve`: opens the store, starts the engine and the providers,
//! resumes unsettled deliveries, serves the API until SIGTERM/SIGINT, then
//! drains, flushes and exits.

use std::sync::Arc;

use actix_web::middleware::ErrorHandlers;
use actix_web::{App, HttpServer, web};
use metrics_exporter_prometheus::PrometheusBuilder;
use pushd_actors::ports::SystemClock;
use pushd_actors::registry::Registry;
use rand::Rng;

use crate::config::{Config, ConfigError};
use crate::http::{self, AppState, BodyLimit, Keys};
use crate::providers::{ClientOptions, Providers};
use crate::store::{self, SledStore};
use crate::template::LiquidRenderer;

/// Why the daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// The listener could not be bound, or the server failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
}

/// The configured key (if not blank), else the one kept in the store, else
/// a new one (kept, and printed once so the user can copy it).
fn key(store: &SledStore, name: &str, configured: Option<String>) -> Result<String, ServeError> {
    if let Some(k) = configured.filter(|k| !k.trim().is_empty()) {
        return Ok(k);
    }
    if let Some(k) = store.meta(name)? {
        return Ok(k);
    }
    let bytes: [u8; 24] = rand::thread_rng().r#gen();
    let k: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    store.set_meta(name, &k)?;
    println!("generated {name}: {k} (kept in the data dir)");
    Ok(k)
}

/// Runs the daemon until a shutdown signal.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| ServeError::Metrics(e.to_string()))?;
    let store = Arc::new(SledStore::open(
        &config.data_dir,
        config.store_cache_mb << 20,
    )?);
    let keys = Keys {
        api: key(&store, "api_key", config.api_key.clone())?,
        sdk: key(&store, "sdk_key", config.sdk_key.clone())?,
    };
    let renderer = Arc::new(LiquidRenderer::default());
    let providers = Arc::new(Providers::for_apps(
        &config.apps(),
        &ClientOptions::default(),
    ));
    let registry = Arc::new(Registry::new(
        providers,
        store.clone(),
        renderer.clone(),
        Arc::new(SystemClock),
        config.engine.engine_config(),
        config.engine.shard_count(),
    ));
    let resumed = store.customers_with_unsettled()?;
    for id in &resumed {
        registry.wake(id);
    }
    tracing::info!(customers = resumed.len(), "resumed unsettled deliveries");

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
    tracing::info!("http drained; flushing the store");
    store.close();
    Ok(())
}

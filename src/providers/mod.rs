//! Push providers: own HTTP/2 clients for APNs and FCM HTTP v1, and
//! [`Providers`], the engine's [`Provider`] that routes by app and platform.
//!
//! The clients turn the engine's push options into each provider's headers
//! and payload, refuse a payload larger than the provider accepts before any
//! network call (`payload_too_large`), and map wire errors onto
//! [`ProviderError`]: only an error about the token itself bounces. An app
//! without usable credentials for a platform fails those sends with
//! `credentials_not_found` and makes no network call.

mod apns;
mod fcm;
mod h2;
mod http;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushd_actors::model::{DEFAULT_APP, Platform};
use pushd_actors::ports::{Accepted, BoxFuture, Provider, ProviderError, Push, Slot};
use pushd_actors::status::FailureReason;
use serde::{Deserialize, Serialize};

pub use apns::ApnsClient;
pub use fcm::FcmClient;
pub use h2::{Endpoint, Reserved};

/// Apple's production APNs endpoint.
pub const APNS_DEFAULT_ENDPOINT: &str = "https://api.push.apple.com";
/// Apple's sandbox APNs endpoint, for development builds' tokens.
pub const APNS_SANDBOX_ENDPOINT: &str = "https://api.sandbox.push.apple.com";
/// Google's FCM endpoint.
pub const FCM_DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";

/// One app's credentials: `[apns]` and `[fcm]` for the app `default`,
/// `[apps.<app_id>.apns]` and `[apps.<app_id>.fcm]` for the others.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// The app's APNs key and topic.
    pub apns: ApnsConfig,
    /// The app's Firebase service account.
    pub fcm: FcmConfig,
}

pub use crate::config::{ApnsConfig, FcmConfig};

/// Tuning of the provider clients; the defaults suit production.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// How long one request may take, connecting included; then it is transient.
    pub request_timeout: Duration,
    /// APNs: a signed JWT is reused until it is this old. Apple refuses
    /// tokens older than an hour and throttles renewals within 20 minutes.
    pub apns_token_ttl: Duration,
    /// FCM: the access token is refreshed once less than this of its
    /// lifetime is left.
    pub fcm_refresh_margin: Duration,
    /// Requests in flight on one provider connection. Beyond it a push
    /// waits for a slot before its request is built and before its timeout
    /// starts (see `h2`).
    pub streams_per_connection: usize,
    /// Connections per provider endpoint, opened as the ones open fill up.
    pub max_connections: usize,
    /// A connection this old takes no new push; the next one opens a fresh
    /// connection before a provider or its load balancer closes the old one.
    pub max_connection_age: Duration,
    /// The share of each endpoint's streams kept for transactional pushes:
    /// campaign pushes never take it (see `h2`).
    pub transactional_share: f64,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            request_timeout: Duration::from_secs(30),
            apns_token_ttl: Duration::from_secs(40 * 60),
            fcm_refresh_margin: Duration::from_secs(5 * 60),
            streams_per_connection: 1000,
            max_connections: 2,
            max_connection_age: Duration::from_secs(30 * 60),
            transactional_share: 0.2,
        }
    }
}

/// Why a provider client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A required setting is absent.
    #[error("no {0} configured")]
    Missing(String),
    /// Some of the settings a provider needs are set, not all: each
    /// missing one is named.
    #[error("incomplete settings: {0}")]
    Incomplete(String),
    /// The key or service-account file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's content is not a usable key or service account.
    #[error("unusable credentials in {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    /// The endpoint URL is not usable.
    #[error("{0}")]
    Endpoint(String),
}

impl CredentialsError {
    /// Reads a credentials file.
    pub fn read(path: &str) -> Result<Vec<u8>, CredentialsError> {
        std::fs::read(path).map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })
    }

    /// The file at `path` holds no usable credentials.
    pub fn invalid(path: &str, message: String) -> CredentialsError {
        CredentialsError::Invalid {
            path: path.to_owned(),
            message,
        }
    }
}

/// The engine's [`Provider`]: each push goes out with its app's
/// credentials, APNs for iOS, FCM for Android, on its endpoint's HTTP/2
/// connections, in a slot reserved there first.
#[derive(Clone)]
pub struct Providers {
    apps: Arc<HashMap<String, AppClients>>,
}

/// One app's clients; `Err` says why a platform cannot send.
struct AppClients {
    apns: Result<ApnsClient, String>,
    fcm: Result<FcmClient, String>,
}

impl Providers {
    /// The app `default` alone, with these sections; a platform whose
    /// credentials are missing or bad is logged once and then fails its
    /// sends with `credentials_not_found`.
    pub fn from_config(apns: &ApnsConfig, fcm: &FcmConfig) -> Providers {
        Providers::with_options(apns, fcm, &ClientOptions::default())
    }

    /// [`Providers::from_config`] with tuned clients.
    pub fn with_options(apns: &ApnsConfig, fcm: &FcmConfig, options: &ClientOptions) -> Providers {
        let app = AppConfig {
            apns: apns.clone(),
            fcm: fcm.clone(),
        };
        Providers::for_apps(&BTreeMap::from([(DEFAULT_APP.to_owned(), app)]), options)
    }

    /// Every app's clients. A push for an app not listed fails with
    /// `credentials_not_found`.
    pub fn for_apps(apps: &BTreeMap<String, AppConfig>, options: &ClientOptions) -> Providers {
        let apps = apps
            .iter()
            .map(|(id, config)| (id.clone(), AppClients::new(id, config, options)))
            .collect();
        Providers {
            apps: Arc::new(apps),
        }
    }

    /// The client for `push`'s app and platform, or why there is none.
    fn client(&self, push: &Push) -> Result<Client, String> {
        let Some(app) = self.apps.get(&*push.app) else {
            return Err(format!(
                "no credentials configured for app \"{}\"",
                push.app
            ));
        };
        match push.platform {
            Platform::Ios => app.apns.clone().map(Client::Apns),
            Platform::Android => app.fcm.clone().map(Client::Fcm),
        }
    }
}

impl AppClients {
    /// Builds both clients of app `id`, logging a platform that cannot send.
    fn new(id: &str, config: &AppConfig, options: &ClientOptions) -> AppClients {
        // The default app's messages keep their words from before apps existed.
        let prefix = match id {
            DEFAULT_APP => String::new(),
            _ => format!("app \"{id}\": "),
        };
        let apns = ApnsClient::new(&config.apns, options).map_err(|e| {
            tracing::warn!(app = id, error = %e, "APNs disabled: iOS sends fail with credentials_not_found");
            match e {
                CredentialsError::Missing(_) => format!("{prefix}no APNs key configured"),
                e => format!("{prefix}APNs credentials unusable: {e}"),
            }
        });
        let fcm = FcmClient::new(&config.fcm, options).map_err(|e| {
            tracing::warn!(app = id, error = %e, "FCM disabled: Android sends fail with credentials_not_found");
            match e {
                CredentialsError::Missing(_) => format!("{prefix}no FCM service account configured"),
                e => format!("{prefix}FCM credentials unusable: {e}"),
            }
        });
        AppClients { apns, fcm }
    }
}

impl Providers {
    /// The request a send of `push` would make, built by the functions a
    /// send uses and sent nowhere, or why the send would fail before any
    /// network call (`credentials_not_found`, `payload_too_large`, ...).
    pub fn request(&self, push: &Push) -> Result<WireRequest, ProviderError> {
        match self.client(push) {
            Ok(Client::Apns(c)) => c.request(push),
            Ok(Client::Fcm(c)) => c.request(push),
            Err(detail) => Err(without_credentials(detail)),
        }
    }
}

/// The refusal of a push whose app has no usable credentials for its
/// platform, in `detail`'s words.
fn without_credentials(detail: String) -> ProviderError {
    ProviderError::Permanent {
        reason: FailureReason::CredentialsNotFound,
        detail,
    }
}

impl Provider for Providers {
    fn reserve(&self, push: &Push) -> BoxFuture<Slot> {
        let lane = push.content.lane;
        match self.client(push) {
            Ok(Client::Apns(c)) => {
                let endpoint = c.endpoint(push.environment).clone();
                Box::pin(async move { Slot::holding(endpoint.reserve(lane).await) })
            }
            Ok(Client::Fcm(c)) => {
                let endpoint = c.endpoint().clone();
                Box::pin(async move { Slot::holding(endpoint.reserve(lane).await) })
            }
            // Nothing will be sent: no room to wait for.
            Err(_) => Box::pin(std::future::ready(Slot::free())),
        }
    }

    fn send(&self, push: Push, slot: Slot) -> BoxFuture<Result<Accepted, ProviderError>> {
        let platform = push.platform;
        let client = self.client(&push);
        Box::pin(async move {
            let started = Instant::now();
            let result = match client {
                Ok(Client::Apns(c)) => {
                    let endpoint = c.endpoint(push.environment);
                    c.send_reserved(&push, &*reserved(endpoint, &push, &slot).await)
                        .await
                }
                Ok(Client::Fcm(c)) => {
                    c.send_reserved(&push, &*reserved(c.endpoint(), &push, &slot).await)
                        .await
                }
                Err(detail) => Err(without_credentials(detail)),
            };
            record(platform, &result, started);
            result
        })
    }
}

/// The reservation `slot` holds on `endpoint`, or a new one if it holds
/// none (a slot of another provider or none at all).
async fn reserved<'a>(endpoint: &Endpoint, push: &Push, slot: &'a Slot) -> Held<'a> {
    match slot.get::<Reserved>() {
        Some(held) => Held::Given(held),
        None => Held::Taken(endpoint.reserve(push.content.lane).await),
    }
}

/// A reservation, borrowed from the slot or taken for this send.
enum Held<'a> {
    Given(&'a Reserved),
    Taken(Reserved),
}

impl std::ops::Deref for Held<'_> {
    type Target = Reserved;
    fn deref(&self) -> &Reserved {
        match self {
            Held::Given(r) => r,
            Held::Taken(r) => r,
        }
    }
}

/// A push's HTTP request as a send puts it on the wire, but for its
/// `authorization` header (a secret, and signed only when sent).
#[derive(Clone, Debug, PartialEq)]
pub struct WireRequest {
    /// The URL it is POSTed to.
    pub url: String,
    /// Its headers, in order, `authorization` left out.
    pub headers: Vec<(String, String)>,
    /// Its JSON body: the APNs payload, or FCM's `{"message": ...}`.
    pub payload: serde_json::Value,
}

impl WireRequest {
    /// The request of `head` with the JSON text `body`.
    fn new(head: &::http::Request<()>, body: &str) -> WireRequest {
        let headers = head.headers().iter();
        WireRequest {
            url: head.uri().to_string(),
            headers: headers
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            payload: serde_json::from_str(body).expect("the body is the JSON just encoded"),
        }
    }
}

/// A configured client, moved into a send's future.
enum Client {
    Apns(ApnsClient),
    Fcm(FcmClient),
}

/// Records the request counter and latency histogram of one send.
fn record(platform: Platform, result: &Result<Accepted, ProviderError>, started: Instant) {
    let outcome = match result {
        Ok(_) => "accepted",
        Err(ProviderError::Transient { .. }) => "transient",
        Err(ProviderError::Bounced { .. }) => "bounced",
        Err(ProviderError::Permanent { reason, .. }) => reason.code(),
    };
    let platform = platform.as_str();
    metrics::counter!("pushd_provider_requests_total", "platform" => platform, "result" => outcome)
        .increment(1);
    metrics::histogram!("pushd_provider_latency_seconds", "platform" => platform)
        .record(started.elapsed().as_secs_f64());
}

//! Push providers: own HTTP/2 clients for APNs and FCM HTTP v1, and
//! [`Providers`], the engine's [`Provider`] that routes by platform.
//!
//! Wire errors map onto [`ProviderError`] as DESIGN.md "Provider errors" says.
//! A platform without usable credentials fails every send with
//! `credentials_not_found` and makes no network call.

mod apns;
mod fcm;
mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pushd_actors::model::Platform;
use pushd_actors::ports::{Accepted, BoxFuture, Provider, ProviderError, Push};
use pushd_actors::status::FailureReason;
use serde::Deserialize;
use tokio::sync::Semaphore;

pub use apns::ApnsClient;
pub use fcm::FcmClient;

/// Apple's production APNs endpoint.
pub const APNS_DEFAULT_ENDPOINT: &str = "https://api.push.apple.com";
/// Google's FCM endpoint.
pub const FCM_DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";

/// The `[apns]` configuration section.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApnsConfig {
    /// Base URL; `http://` is spoken as HTTP/2 with prior knowledge (h2c).
    /// Defaults to [`APNS_DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// Path of the .p8 token-signing key (PKCS#8 PEM, EC P-256).
    pub key_file: Option<String>,
    /// The key's id (JWT `kid`).
    pub key_id: Option<String>,
    /// The Apple developer team id (JWT `iss`).
    pub team_id: Option<String>,
    /// The app's bundle id (`apns-topic`).
    pub topic: Option<String>,
}

/// The `[fcm]` configuration section.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct FcmConfig {
    /// Base URL; `http://` is spoken as h2c. Defaults to [`FCM_DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// Path of the service-account JSON file.
    pub service_account_file: Option<String>,
}

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
    /// Requests in flight per provider. Beyond the connection's stream
    /// limit a request would only wait inside the HTTP/2 client, holding
    /// its buffers and spending its timeout there; it waits here instead,
    /// and its timeout starts once it is on the wire.
    pub max_in_flight: usize,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            request_timeout: Duration::from_secs(30),
            apns_token_ttl: Duration::from_secs(40 * 60),
            fcm_refresh_margin: Duration::from_secs(5 * 60),
            max_in_flight: 1000,
        }
    }
}

/// Why a provider client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A required setting is absent.
    #[error("no {0} configured")]
    Missing(&'static str),
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

/// The engine's [`Provider`]: APNs for iOS, FCM for Android.
#[derive(Clone)]
pub struct Providers {
    apns: Result<ApnsClient, String>,
    fcm: Result<FcmClient, String>,
    /// Request slots per platform (see [`ClientOptions::max_in_flight`]).
    slots: [Arc<Semaphore>; 2],
}

impl Providers {
    /// Builds both clients; a platform whose credentials are missing or bad
    /// is logged once and then fails its sends with `credentials_not_found`.
    pub fn from_config(apns: &ApnsConfig, fcm: &FcmConfig) -> Providers {
        Providers::with_options(apns, fcm, &ClientOptions::default())
    }

    /// [`Providers::from_config`] with tuned clients.
    pub fn with_options(apns: &ApnsConfig, fcm: &FcmConfig, options: &ClientOptions) -> Providers {
        let apns = ApnsClient::new(apns, options).map_err(|e| {
            tracing::warn!(error = %e, "APNs disabled: iOS sends fail with credentials_not_found");
            match e {
                CredentialsError::Missing(_) => "no APNs key configured".to_owned(),
                e => format!("APNs credentials unusable: {e}"),
            }
        });
        let fcm = FcmClient::new(fcm, options).map_err(|e| {
            tracing::warn!(error = %e, "FCM disabled: Android sends fail with credentials_not_found");
            match e {
                CredentialsError::Missing(_) => "no FCM service account configured".to_owned(),
                e => format!("FCM credentials unusable: {e}"),
            }
        });
        Providers {
            apns,
            fcm,
            slots: slots(options.max_in_flight),
        }
    }

    /// Routes to the given clients; `None` means not configured.
    pub fn new(apns: Option<ApnsClient>, fcm: Option<FcmClient>) -> Providers {
        Providers {
            apns: apns.ok_or_else(|| "no APNs key configured".to_owned()),
            fcm: fcm.ok_or_else(|| "no FCM service account configured".to_owned()),
            slots: slots(ClientOptions::default().max_in_flight),
        }
    }
}

impl Provider for Providers {
    fn send(&self, push: Push) -> BoxFuture<Result<Accepted, ProviderError>> {
        let platform = push.platform;
        let (client, slots) = match platform {
            Platform::Ios => (self.apns.clone().map(Client::Apns), &self.slots[0]),
            Platform::Android => (self.fcm.clone().map(Client::Fcm), &self.slots[1]),
        };
        let slots = slots.clone();
        Box::pin(async move {
            let _slot = match &client {
                Ok(_) => Some(slots.acquire_owned().await.expect("slots are never closed")),
                Err(_) => None,
            };
            let started = Instant::now();
            let result = match client {
                Ok(Client::Apns(c)) => c.send(&push).await,
                Ok(Client::Fcm(c)) => c.send(&push).await,
                Err(detail) => Err(ProviderError::Permanent {
                    reason: FailureReason::CredentialsNotFound,
                    detail,
                }),
            };
            record(platform, &result, started);
            result
        })
    }
}

fn slots(max_in_flight: usize) -> [Arc<Semaphore>; 2] {
    [0, 1].map(|_| Arc::new(Semaphore::new(max_in_flight.max(1))))
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

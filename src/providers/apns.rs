//! APNs provider API client: HTTP/2 with token (ES256 JWT) authentication.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushd_actors::ports::{Accepted, Clock, ProviderError, Push, SystemClock};
use pushd_actors::status::FailureReason;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::http::{client_for, network_error, retry_after};
use super::{APNS_DEFAULT_ENDPOINT, ApnsConfig, ClientOptions, CredentialsError};

/// How long APNs keeps trying to reach an offline device (`apns-expiration`).
const EXPIRATION: Duration = Duration::from_secs(24 * 3600);

/// An APNs client: one pooled HTTP/2 connection set and a cached JWT.
/// Cheap to clone.
#[derive(Clone)]
pub struct ApnsClient(Arc<Inner>);

/// What a client's clones share.
struct Inner {
    http: reqwest::Client,
    endpoint: String,
    topic: String,
    signer: JwtSigner,
}

impl ApnsClient {
    /// A client with the default [`ClientOptions`].
    pub fn from_config(config: &ApnsConfig) -> Result<ApnsClient, CredentialsError> {
        ApnsClient::new(config, &ClientOptions::default())
    }

    /// A client tuned by `options` (request timeout, JWT renewal).
    pub fn new(
        config: &ApnsConfig,
        options: &ClientOptions,
    ) -> Result<ApnsClient, CredentialsError> {
        let path = config
            .key_file
            .as_deref()
            .ok_or(CredentialsError::Missing("APNs key_file"))?;
        let key_id = config
            .key_id
            .clone()
            .ok_or(CredentialsError::Missing("APNs key_id"))?;
        let team_id = config
            .team_id
            .clone()
            .ok_or(CredentialsError::Missing("APNs team_id"))?;
        let topic = config
            .topic
            .clone()
            .ok_or(CredentialsError::Missing("APNs topic"))?;
        let pem = CredentialsError::read(path)?;
        let invalid = |message: String| CredentialsError::invalid(path, message);
        let key = EncodingKey::from_ec_pem(&pem).map_err(|e| invalid(e.to_string()))?;
        let signer = JwtSigner {
            key,
            key_id,
            team_id,
            ttl: options.apns_token_ttl,
            cached: Mutex::new(None),
        };
        // Sign once now: a key that cannot sign is a configuration error.
        signer.token().map_err(|e| invalid(e.detail().to_owned()))?;
        let endpoint = config.endpoint.as_deref().unwrap_or(APNS_DEFAULT_ENDPOINT);
        Ok(ApnsClient(Arc::new(Inner {
            http: client_for(endpoint, options.request_timeout)?,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            topic,
            signer,
        })))
    }

    /// Sends one push. An `ExpiredProviderToken` answer drops the cached JWT
    /// and retries once with a fresh one.
    pub async fn send(&self, push: &Push) -> Result<Accepted, ProviderError> {
        let inner = &self.0;
        let url = format!("{}/3/device/{}", inner.endpoint, push.token);
        let body = Bytes::from(payload(push).to_string());
        let mut renewed = false;
        loop {
            let jwt = inner.signer.token()?;
            let expiration = SystemClock.now() as u64 + EXPIRATION.as_secs();
            let mut request = inner
                .http
                .post(&url)
                .header("authorization", format!("bearer {jwt}"))
                .header("apns-topic", &inner.topic)
                .header("apns-push-type", "alert")
                .header("apns-priority", "10")
                .header("apns-expiration", expiration.to_string())
                .header("content-type", "application/json");
            if let Some(collapse) = &push.content.collapse_id {
                request = request.header("apns-collapse-id", collapse);
            }
            let response = request
                .body(body.clone())
                .send()
                .await
                .map_err(|e| network_error(&e))?;
            let status = response.status();
            if status.is_success() {
                let provider_id = response
                    .headers()
                    .get("apns-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                return Ok(Accepted { provider_id });
            }
            let retry = retry_after(response.headers());
            let reason = response
                .json::<ErrorBody>()
                .await
                .map(|b| b.reason)
                .unwrap_or_default();
            if status == StatusCode::FORBIDDEN && reason == "ExpiredProviderToken" && !renewed {
                tracing::info!("APNs says the provider token expired; signing a new one");
                inner.signer.invalidate(&jwt);
                renewed = true;
                continue;
            }
            return Err(map_error(status, &reason, retry));
        }
    }
}

/// APNs's error body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    reason: String,
}

/// The APNs JSON payload: `aps` plus the delivery keys at the top level.
fn payload(push: &Push) -> Value {
    let mut body = json!({
        "aps": {
            "alert": {"title": push.content.title, "body": push.content.body},
            "sound": "default",
        },
        "CIO-Delivery-ID": push.delivery_id,
        "CIO-Delivery-Token": push.token,
    });
    if let Some(link) = &push.content.deep_link {
        body["deep_link"] = Value::String(link.clone());
    }
    body
}

/// Maps an APNs error answer (DESIGN.md "Provider errors").
fn map_error(status: StatusCode, reason: &str, retry_after: Option<Duration>) -> ProviderError {
    let detail = format!("{} {reason}", status.as_u16())
        .trim_end()
        .to_owned();
    match (status.as_u16(), reason) {
        (400, "BadDeviceToken" | "DeviceTokenNotForTopic") | (410, _) => {
            ProviderError::Bounced { detail }
        }
        (403, "InvalidProviderToken" | "ExpiredProviderToken") => ProviderError::Permanent {
            reason: FailureReason::CredentialsNotFound,
            detail,
        },
        (429, _) | (500..=599, _) => ProviderError::Transient {
            detail,
            retry_after,
        },
        _ => ProviderError::Permanent {
            reason: FailureReason::ProviderRejected,
            detail,
        },
    }
}

/// Signs provider tokens and reuses one until it is `ttl` old.
struct JwtSigner {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    ttl: Duration,
    cached: Mutex<Option<(Arc<str>, Instant)>>,
}

/// The provider token's claims.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

impl JwtSigner {
    /// The current token, signed anew when the cached one is too old.
    fn token(&self) -> Result<Arc<str>, ProviderError> {
        let mut cached = self.cached.lock().expect("jwt cache lock");
        if let Some((jwt, at)) = cached.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(jwt.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = Claims {
            iss: &self.team_id,
            iat: SystemClock.now() as u64,
        };
        let jwt: Arc<str> = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| ProviderError::Permanent {
                reason: FailureReason::CredentialsNotFound,
                detail: format!("cannot sign APNs token: {e}"),
            })?
            .into();
        *cached = Some((jwt.clone(), Instant::now()));
        Ok(jwt)
    }

    /// Drops the cached token if it is still `stale`.
    fn invalidate(&self, stale: &str) {
        let mut cached = self.cached.lock().expect("jwt cache lock");
        if cached.as_ref().is_some_and(|(jwt, _)| &**jwt == stale) {
            *cached = None;
        }
    }
}

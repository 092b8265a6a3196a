//! APNs provider API client: HTTP/2 with token (ES256 JWT) authentication,
//! to the production or the sandbox endpoint as the device's token requires.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushd_actors::model::{Environment, Platform, PushKind, PushPriority};
use pushd_actors::ports::{Accepted, Clock, ProviderError, Push, SystemClock};
use pushd_actors::status::FailureReason;
use serde::{Deserialize, Serialize};

use super::h2::{Endpoint, Reserved};
use super::http::{check_size, endpoint, invalid_request, resend, retry_after, transport_error};
use super::{
    APNS_DEFAULT_ENDPOINT, APNS_SANDBOX_ENDPOINT, ApnsConfig, ClientOptions, CredentialsError,
    WireRequest,
};

/// How long APNs keeps trying to reach an offline device (`apns-expiration`)
/// when the message sets no `ttl_seconds`.
const EXPIRATION: Duration = Duration::from_secs(24 * 3600);
/// Largest payload APNs accepts, in bytes.
const APNS_MAX_PAYLOAD: usize = 4096;

/// An APNs client: HTTP/2 connections to each environment's endpoint and a
/// cached JWT.
/// Cheap to clone.
#[derive(Clone)]
pub struct ApnsClient(Arc<Inner>);

/// What a client's clones share.
struct Inner {
    production: Endpoint,
    sandbox: Endpoint,
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
        let settings = [
            ("key_file", config.key_file.is_some()),
            ("key_id", config.key_id.is_some()),
            ("team_id", config.team_id.is_some()),
            ("topic", config.topic.is_some()),
        ];
        let (Some(path), Some(key_id), Some(team_id), Some(topic)) = (
            config.key_file.as_deref(),
            config.key_id.clone(),
            config.team_id.clone(),
            config.topic.clone(),
        ) else {
            // Every missing item at once: a half-done [apns] is fixed in
            // one go, not one restart per setting.
            let missing: Vec<&str> = settings
                .iter()
                .filter(|(_, set)| !set)
                .map(|(name, _)| *name)
                .collect();
            return Err(match missing.len() == settings.len() {
                true => CredentialsError::Missing("APNs key_file".into()),
                false => CredentialsError::Incomplete(format!(
                    "[apns] lacks {} (or their PUSHD_APNS_* variables)",
                    missing.join(", ")
                )),
            });
        };
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
        let production = config.endpoint.as_deref().unwrap_or(APNS_DEFAULT_ENDPOINT);
        let sandbox = config
            .sandbox_endpoint
            .as_deref()
            .unwrap_or(APNS_SANDBOX_ENDPOINT);
        Ok(ApnsClient(Arc::new(Inner {
            production: endpoint(production, Platform::Ios, options)?,
            sandbox: endpoint(sandbox, Platform::Ios, options)?,
            topic,
            signer,
        })))
    }

    /// The connections to `environment`'s endpoint.
    pub fn endpoint(&self, environment: Environment) -> &Endpoint {
        match environment {
            Environment::Production => &self.0.production,
            Environment::Sandbox => &self.0.sandbox,
        }
    }

    /// Sends one push to its environment's endpoint, once there is room.
    pub async fn send(&self, push: &Push) -> Result<Accepted, ProviderError> {
        let room = self
            .endpoint(push.environment)
            .reserve(push.content.lane)
            .await;
        self.send_reserved(push, &room).await
    }

    /// Sends one push to its environment's endpoint, in a slot reserved
    /// there. An `ExpiredProviderToken` answer drops the cached JWT and
    /// retries once with a fresh one; a push APNs never processed (its
    /// connection went away) is sent again at once.
    pub async fn send_reserved(
        &self,
        push: &Push,
        room: &Reserved,
    ) -> Result<Accepted, ProviderError> {
        let inner = &self.0;
        let endpoint = self.endpoint(push.environment);
        let (mut renewed, mut resent) = (false, 0);
        loop {
            // The request is built for each attempt (a second one is rare)
            // and handed over whole, so nothing of it, its payload
            // included, stays with the push while the answer is awaited.
            let body = Bytes::from(encoded(push)?);
            let ready = match endpoint.ready(room).await {
                Ok(ready) => ready,
                Err(e) if resend(&e, &mut resent) => continue,
                Err(e) => return Err(transport_error(e)),
            };
            let jwt = inner.signer.token()?;
            let request = self.head(push, endpoint, Some(&jwt))?;
            let (status, headers, answer) = match ready.send(request, body).await {
                Ok(answer) => answer,
                Err(e) if resend(&e, &mut resent) => continue,
                Err(e) => return Err(transport_error(e)),
            };
            if status.is_success() {
                let provider_id = headers
                    .get("apns-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                return Ok(Accepted { provider_id });
            }
            let retry = retry_after(&headers);
            let reason = serde_json::from_slice::<ErrorBody>(&answer)
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

    /// The request `push` makes, as [`ApnsClient::send`] puts it on the
    /// wire but for its authorization, or why the send would fail before
    /// any network call.
    pub fn request(&self, push: &Push) -> Result<WireRequest, ProviderError> {
        let body = encoded(push)?;
        let head = self.head(push, self.endpoint(push.environment), None)?;
        Ok(WireRequest::new(&head, &body))
    }

    /// The request head of `push` to `endpoint`, signed with `jwt` (none
    /// for a preview).
    fn head(
        &self,
        push: &Push,
        endpoint: &Endpoint,
        jwt: Option<&str>,
    ) -> Result<Request<()>, ProviderError> {
        let options = &push.content.options;
        let (push_type, default_priority) = match options.kind {
            PushKind::Alert => ("alert", PushPriority::High),
            PushKind::Background => ("background", PushPriority::Normal),
        };
        let priority = match options.priority.unwrap_or(default_priority) {
            PushPriority::High => "10",
            PushPriority::Normal => "5",
        };
        let uri = endpoint
            .uri(&format!("/3/device/{}", push.token))
            .map_err(invalid_request)?;
        let mut request = Request::post(uri);
        if let Some(jwt) = jwt {
            request = request.header("authorization", format!("bearer {jwt}"));
        }
        request = request
            .header("apns-topic", &self.0.topic)
            .header("apns-push-type", push_type)
            .header("apns-priority", priority)
            .header("apns-expiration", expiration(options.ttl_seconds))
            .header("content-type", "application/json");
        if let Some(collapse) = &push.content.collapse_id {
            request = request.header("apns-collapse-id", collapse);
        }
        request.body(()).map_err(|e| invalid_request(e.to_string()))
    }
}

/// APNs's error body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    reason: String,
}

/// `apns-expiration`: when APNs stops trying an offline device, Unix
/// seconds; `0` (a TTL of 0) means deliver now or never.
fn expiration(ttl_seconds: Option<u32>) -> String {
    match ttl_seconds {
        Some(0) => "0".to_owned(),
        Some(ttl) => (SystemClock.now() as u64 + u64::from(ttl)).to_string(),
        None => (SystemClock.now() as u64 + EXPIRATION.as_secs()).to_string(),
    }
}

/// The payload of `push` as JSON text, refused (`payload_too_large`) when
/// larger than APNs accepts.
fn encoded(push: &Push) -> Result<String, ProviderError> {
    let text = serde_json::to_string(&payload(push)).expect("an APNs payload always serializes");
    check_size("APNs", text.len(), APNS_MAX_PAYLOAD)?;
    Ok(text)
}

/// A value at the payload's top level.
#[derive(Serialize)]
#[serde(untagged)]
enum Field<'a> {
    Text(&'a str),
    Aps(Aps<'a>),
}

/// `aps`, borrowed from the push: written straight to text, with no JSON
/// tree copied from it first, since every push is encoded on the engine's
/// thread. Fields are declared in the order of their names, the order
/// APNs has always been sent them in.
#[derive(Serialize)]
#[serde(untagged)]
enum Aps<'a> {
    Background {
        #[serde(rename = "content-available")]
        content_available: u8,
    },
    Alert {
        alert: Alert<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        badge: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        category: Option<&'a str>,
        #[serde(rename = "interruption-level", skip_serializing_if = "Option::is_none")]
        interruption_level: Option<&'static str>,
        /// Lets the app's notification service extension fetch the image.
        #[serde(rename = "mutable-content", skip_serializing_if = "Option::is_none")]
        mutable_content: Option<u8>,
        #[serde(rename = "relevance-score", skip_serializing_if = "Option::is_none")]
        relevance_score: Option<f64>,
        sound: &'a str,
        #[serde(rename = "thread-id", skip_serializing_if = "Option::is_none")]
        thread_id: Option<&'a str>,
    },
}

/// `aps.alert`: what an alert shows.
#[derive(Serialize)]
struct Alert<'a> {
    body: &'a str,
    title: &'a str,
}

/// The APNs JSON payload, its keys in order: `aps`, and at the top level
/// the push data, the deep link, the image URL and the delivery keys
/// (which no data key can replace). A background push's `aps` holds only
/// `content-available`.
fn payload(push: &Push) -> BTreeMap<&str, Field<'_>> {
    let content = &push.content;
    let options = &content.options;
    let mut body: BTreeMap<&str, Field> = (options.data.iter())
        .map(|(key, value)| (key.as_str(), Field::Text(value)))
        .collect();
    let aps = match options.kind {
        PushKind::Background => Aps::Background {
            content_available: 1,
        },
        PushKind::Alert => Aps::Alert {
            alert: Alert {
                body: &content.body,
                title: &content.title,
            },
            badge: options.badge,
            category: options.category.as_deref(),
            interruption_level: options.interruption_level.map(|l| l.as_str()),
            mutable_content: options.image_url.as_ref().map(|_| 1),
            relevance_score: options.relevance_score,
            sound: options.sound.as_deref().unwrap_or("default"),
            thread_id: options.thread_id.as_deref(),
        },
    };
    body.insert("aps", Field::Aps(aps));
    if let Some(link) = &content.deep_link {
        body.insert("deep_link", Field::Text(link));
    }
    if let Some(url) = &options.image_url {
        body.insert("image_url", Field::Text(url));
    }
    body.insert("CIO-Delivery-ID", Field::Text(&push.delivery_id));
    body.insert("CIO-Delivery-Token", Field::Text(&push.token));
    body
}

/// Maps an APNs error answer: a token Apple does not know for this topic
/// bounces, refused credentials are `credentials_not_found`, a payload
/// Apple finds too large is `payload_too_large`, throttling and server
/// errors are retried, anything else is `provider_rejected`.
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
        (413, _) => ProviderError::Permanent {
            reason: FailureReason::PayloadTooLarge,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing set is "not configured"; some set is an incomplete setup
    /// naming every missing item, so one edit fixes it.
    #[test]
    fn an_incomplete_apns_setup_names_every_missing_setting() {
        let none = ApnsClient::from_config(&ApnsConfig::default())
            .err()
            .unwrap();
        assert!(matches!(none, CredentialsError::Missing(_)), "{none}");
        let half = ApnsConfig {
            team_id: Some("T1".into()),
            ..ApnsConfig::default()
        };
        let e = ApnsClient::from_config(&half).err().unwrap().to_string();
        assert!(e.contains("key_file, key_id, topic"), "{e}");
        assert!(!e.contains("team_id"), "{e}");
    }
}

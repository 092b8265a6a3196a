//! FCM HTTP v1 client, with the service-account OAuth2 flow written here.
//!
//! The flow is our own (RS256 assertion on jsonwebtoken, POSTed with reqwest)
//! rather than gcp_auth's: it must honour the service account's `token_uri`,
//! `http://` included, so that tests and the demo can use a local fake token
//! endpoint, and it shares our HTTP/2 client settings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushd_actors::ports::{Accepted, Clock, ProviderError, Push, SystemClock};
use pushd_actors::status::FailureReason;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::http::{client_for, network_error, retry_after};
use super::{ClientOptions, CredentialsError, FCM_DEFAULT_ENDPOINT, FcmConfig};

/// The OAuth2 scope FCM sends need.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The JWT-bearer grant type (RFC 7523).
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime of the signed assertion; Google accepts at most an hour.
const ASSERTION_TTL: u64 = 3600;

/// An FCM client: pooled HTTP/2 connections and a cached access token.
/// Cheap to clone.
#[derive(Clone)]
pub struct FcmClient(Arc<Inner>);

/// What a client's clones share.
struct Inner {
    http: reqwest::Client,
    token_http: reqwest::Client,
    send_url: String,
    client_email: String,
    token_uri: String,
    key: EncodingKey,
    refresh_margin: Duration,
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

/// The fields of a service-account JSON file we use.
#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    private_key: String,
    client_email: String,
    token_uri: String,
}

/// A cached OAuth2 access token.
struct AccessToken {
    value: Arc<str>,
    expires: Instant,
}

impl FcmClient {
    /// A client with the default [`ClientOptions`].
    pub fn from_config(config: &FcmConfig) -> Result<FcmClient, CredentialsError> {
        FcmClient::new(config, &ClientOptions::default())
    }

    /// A client tuned by `options` (request timeout, token refresh margin).
    pub fn new(config: &FcmConfig, options: &ClientOptions) -> Result<FcmClient, CredentialsError> {
        let path = config
            .service_account_file
            .as_deref()
            .ok_or(CredentialsError::Missing("FCM service_account_file"))?;
        let text = CredentialsError::read(path)?;
        let invalid = |message: String| CredentialsError::invalid(path, message);
        let account: ServiceAccount =
            serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| invalid(e.to_string()))?;
        let endpoint = config.endpoint.as_deref().unwrap_or(FCM_DEFAULT_ENDPOINT);
        let inner = Inner {
            http: client_for(endpoint, options.request_timeout)?,
            token_http: client_for(&account.token_uri, options.request_timeout)?,
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                endpoint.trim_end_matches('/'),
                account.project_id
            ),
            client_email: account.client_email,
            token_uri: account.token_uri,
            key,
            refresh_margin: options.fcm_refresh_margin,
            token: tokio::sync::Mutex::new(None),
        };
        // Sign once now: a key that cannot sign is a configuration error.
        inner
            .assertion()
            .map_err(|e| invalid(e.detail().to_owned()))?;
        Ok(FcmClient(Arc::new(inner)))
    }

    /// Sends one push. A 401 drops the cached access token and retries once
    /// with a fresh one.
    pub async fn send(&self, push: &Push) -> Result<Accepted, ProviderError> {
        let inner = &self.0;
        let body = Bytes::from(message(push).to_string());
        let mut refreshed = false;
        loop {
            let token = inner.access_token().await?;
            let response = inner
                .http
                .post(&inner.send_url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| network_error(&e))?;
            let status = response.status();
            if status.is_success() {
                let name = response.json::<SendResponse>().await.ok().map(|r| r.name);
                return Ok(Accepted { provider_id: name });
            }
            let retry = retry_after(response.headers());
            let error = response.json::<ErrorEnvelope>().await.ok().map(|e| e.error);
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                tracing::info!("FCM refused the access token; fetching a new one");
                inner.invalidate(&token).await;
                refreshed = true;
                continue;
            }
            return Err(map_error(status, error, retry));
        }
    }
}

impl Inner {
    /// The cached access token, fetched anew when it is close to expiry.
    /// Holding the lock across the fetch makes concurrent sends wait for one
    /// refresh instead of each starting their own.
    async fn access_token(&self) -> Result<Arc<str>, ProviderError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() + self.refresh_margin < token.expires
        {
            return Ok(token.value.clone());
        }
        let fetched = self.fetch_token().await?;
        let value = fetched.value.clone();
        *cached = Some(fetched);
        Ok(value)
    }

    /// Drops the cached token if it is still `stale`.
    async fn invalidate(&self, stale: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| &*t.value == stale) {
            *cached = None;
        }
    }

    /// The signed JWT-bearer assertion.
    fn assertion(&self) -> Result<String, ProviderError> {
        let iat = SystemClock.now() as u64;
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_TTL,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key).map_err(|e| {
            ProviderError::Permanent {
                reason: FailureReason::CredentialsNotFound,
                detail: format!("cannot sign FCM assertion: {e}"),
            }
        })
    }

    /// Trades a fresh assertion for an access token at `token_uri`.
    async fn fetch_token(&self) -> Result<AccessToken, ProviderError> {
        let assertion = self.assertion()?;
        let requested = Instant::now();
        let response = self
            .token_http
            .post(&self.token_uri)
            .form(&[
                ("grant_type", GRANT_TYPE),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| network_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            let retry = retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            let detail = format!("token endpoint {} {}", status.as_u16(), text.trim());
            tracing::warn!(%detail, "FCM access token refused");
            return Err(
                if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    ProviderError::Transient {
                        detail,
                        retry_after: retry,
                    }
                } else {
                    ProviderError::Permanent {
                        reason: FailureReason::CredentialsNotFound,
                        detail,
                    }
                },
            );
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|e| ProviderError::Transient {
                detail: format!("token endpoint: bad answer: {e}"),
                retry_after: None,
            })?;
        Ok(AccessToken {
            value: token.access_token.into(),
            expires: requested + Duration::from_secs(token.expires_in),
        })
    }
}

/// The assertion's claims.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

/// A successful send's answer.
#[derive(Deserialize)]
struct SendResponse {
    name: String,
}

/// Google's error envelope.
#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

/// `error` of Google's envelope.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

/// One entry of `error.details`; FCM's carries `errorCode`.
#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
}

/// The HTTP v1 message: the delivery keys go in `data`.
fn message(push: &Push) -> Value {
    let mut data = json!({
        "CIO-Delivery-ID": push.delivery_id,
        "CIO-Delivery-Token": push.token,
    });
    if let Some(link) = &push.content.deep_link {
        data["deep_link"] = Value::String(link.clone());
    }
    let mut android = json!({"priority": "high"});
    if let Some(collapse) = &push.content.collapse_id {
        android["collapse_key"] = Value::String(collapse.clone());
    }
    json!({
        "message": {
            "token": push.token,
            "notification": {"title": push.content.title, "body": push.content.body},
            "data": data,
            "android": android,
        }
    })
}

/// Maps an FCM error answer (DESIGN.md "Provider errors").
fn map_error(
    status: StatusCode,
    error: Option<ErrorBody>,
    retry_after: Option<Duration>,
) -> ProviderError {
    let (google_status, code) = error
        .map(|e| {
            let code = e.details.into_iter().find_map(|d| d.error_code);
            (e.status, code)
        })
        .unwrap_or_default();
    let reason = code.as_deref().unwrap_or(&google_status);
    let detail = format!("{} {reason}", status.as_u16())
        .trim_end()
        .to_owned();
    match status.as_u16() {
        _ if status == StatusCode::NOT_FOUND || reason == "UNREGISTERED" => {
            ProviderError::Bounced { detail }
        }
        400 if google_status == "INVALID_ARGUMENT" => ProviderError::Bounced { detail },
        401 | 403 => ProviderError::Permanent {
            reason: FailureReason::CredentialsNotFound,
            detail,
        },
        429 | 500..=599 => ProviderError::Transient {
            detail,
            retry_after,
        },
        _ => ProviderError::Permanent {
            reason: FailureReason::ProviderRejected,
            detail,
        },
    }
}

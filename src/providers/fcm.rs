//! FCM HTTP v1 client, with the service-account OAuth2 flow written here.
//!
//! The flow is our own (RS256 assertion on jsonwebtoken, POSTed with reqwest)
//! rather than gcp_auth's: it must honour the service account's `token_uri`,
//! `http://` included, so that tests and the demo can use a local fake token
//! endpoint, and it shares our HTTP/2 client settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushd_actors::model::{Platform, PushKind, PushPriority};
use pushd_actors::ports::{Accepted, Clock, ProviderError, Push, SystemClock};
use pushd_actors::status::FailureReason;
use serde::{Deserialize, Serialize};

use super::h2::{Endpoint, Reserved};
use super::http::{
    check_size, client_for, endpoint, invalid_request, network_error, resend, retry_after,
    transport_error,
};
use super::{ClientOptions, CredentialsError, FCM_DEFAULT_ENDPOINT, FcmConfig, WireRequest};

/// Largest payload FCM accepts, in bytes: what reaches the device, the
/// notification, the data and the Android notification options, as JSON.
const FCM_MAX_PAYLOAD: usize = 4000;
/// The field FCM names when the registration token itself is wrong.
const TOKEN_FIELD: &str = "message.token";

/// The OAuth2 scope FCM sends need.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The JWT-bearer grant type (RFC 7523).
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime of the signed assertion; Google accepts at most an hour.
const ASSERTION_TTL: u64 = 3600;

/// An FCM client: HTTP/2 connections to the send endpoint and a cached
/// access token.
/// Cheap to clone.
#[derive(Clone)]
pub struct FcmClient(Arc<Inner>);

/// What a client's clones share.
struct Inner {
    endpoint: Endpoint,
    /// Fetches access tokens: a few an hour, so the general client.
    token_http: reqwest::Client,
    send_uri: Uri,
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
            .ok_or(CredentialsError::Missing("FCM service_account_file".into()))?;
        let text = CredentialsError::read(path)?;
        let invalid = |message: String| CredentialsError::invalid(path, message);
        let account: ServiceAccount =
            serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| invalid(e.to_string()))?;
        let url = config.endpoint.as_deref().unwrap_or(FCM_DEFAULT_ENDPOINT);
        let endpoint = endpoint(url, Platform::Android, options)?;
        let send_uri = endpoint
            .uri(&format!(
                "/v1/projects/{}/messages:send",
                account.project_id
            ))
            .map_err(invalid)?;
        let inner = Inner {
            endpoint,
            token_http: client_for(&account.token_uri, options.request_timeout)?,
            send_uri,
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

    /// The connections to the send endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.0.endpoint
    }

    /// Sends one push, once there is room at the endpoint.
    pub async fn send(&self, push: &Push) -> Result<Accepted, ProviderError> {
        let room = self.endpoint().reserve(push.content.lane).await;
        self.send_reserved(push, &room).await
    }

    /// Sends one push in a slot reserved at the endpoint. A 401 drops the
    /// cached access token and retries once with a fresh one; a push FCM
    /// never processed (its connection went away) is sent again at once.
    pub async fn send_reserved(
        &self,
        push: &Push,
        room: &Reserved,
    ) -> Result<Accepted, ProviderError> {
        let inner = &self.0;
        let (mut refreshed, mut resent) = (false, 0);
        loop {
            // The message is built, checked and encoded for each attempt (a
            // second one is rare) and its bytes handed over whole, so
            // nothing of it stays with the push while the answer is awaited.
            let body = Bytes::from(encoded(push)?);
            let token = inner.access_token().await?;
            let ready = match inner.endpoint.ready(room).await {
                Ok(ready) => ready,
                Err(e) if resend(&e, &mut resent) => continue,
                Err(e) => return Err(transport_error(e)),
            };
            let request = self.head(Some(&token))?;
            let (status, headers, answer) = match ready.send(request, body).await {
                Ok(answer) => answer,
                Err(e) if resend(&e, &mut resent) => continue,
                Err(e) => return Err(transport_error(e)),
            };
            if status.is_success() {
                let name = serde_json::from_slice::<SendResponse>(&answer)
                    .ok()
                    .map(|r| r.name);
                return Ok(Accepted { provider_id: name });
            }
            let retry = retry_after(&headers);
            let error = serde_json::from_slice::<ErrorEnvelope>(&answer)
                .ok()
                .map(|e| e.error);
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

impl FcmClient {
    /// The request `push` makes, as [`FcmClient::send`] puts it on the
    /// wire but for its authorization, or why the send would fail before
    /// any network call.
    pub fn request(&self, push: &Push) -> Result<WireRequest, ProviderError> {
        let body = encoded(push)?;
        Ok(WireRequest::new(&self.head(None)?, &body))
    }

    /// The request head of a send, with the access token `token` (none for
    /// a preview).
    fn head(&self, token: Option<&str>) -> Result<Request<()>, ProviderError> {
        let mut request = Request::post(self.0.send_uri.clone());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        (request.header("content-type", "application/json").body(()))
            .map_err(|e| invalid_request(e.to_string()))
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
        // Boxed: the fetch (an HTTPS call) is rare, and its future inline
        // would widen every push's future for as long as it waits.
        let fetched = Box::pin(self.fetch_token()).await?;
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
#[derive(Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

/// One entry of `error.details`: FCM's carries `errorCode`, a
/// `google.rpc.BadRequest` the fields it refused.
#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    #[serde(default, rename = "fieldViolations")]
    field_violations: Vec<FieldViolation>,
}

/// A refused field of a `google.rpc.BadRequest`.
#[derive(Deserialize)]
struct FieldViolation {
    #[serde(default)]
    field: String,
}

impl ErrorBody {
    /// Whether the error is about the registration token rather than the
    /// message: a field violation on `message.token`, or (as FCM answers
    /// today, without details) its "registration token" message.
    fn names_the_token(&self) -> bool {
        let field = self
            .details
            .iter()
            .flat_map(|d| &d.field_violations)
            .any(|v| v.field == TOKEN_FIELD);
        field || self.message.contains("registration token")
    }
}

/// The message of `push` as JSON text, refused (`payload_too_large`) when
/// what reaches the device is larger than FCM accepts.
fn encoded(push: &Push) -> Result<String, ProviderError> {
    let message = Message::of(push);
    check_size("FCM", message.payload_size(), FCM_MAX_PAYLOAD)?;
    Ok(json_text(&Envelope { message }))
}

/// The HTTP v1 request body.
#[derive(Serialize)]
struct Envelope<'a> {
    message: Message<'a>,
}

/// The HTTP v1 message, borrowed from the push: written straight to text,
/// with no JSON tree copied from it first, since every push is encoded on
/// the engine's thread. Fields are declared in the order of their names,
/// the order FCM has always been sent them in. The push data, the deep
/// link and the delivery keys (which no data key can replace) go in
/// `data`; a background push is data-only, without `notification`.
#[derive(Serialize)]
struct Message<'a> {
    android: Android<'a>,
    data: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification: Option<Notification<'a>>,
    token: &'a str,
}

/// `message.android`.
#[derive(Serialize)]
struct Android<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    collapse_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification: Option<Shown<'a>>,
    priority: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
}

/// `message.notification`: what an alert shows.
#[derive(Serialize)]
struct Notification<'a> {
    body: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    title: &'a str,
}

/// `message.android.notification`: how Android shows an alert.
#[derive(Serialize)]
struct Shown<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sound: Option<&'a str>,
}

impl<'a> Message<'a> {
    fn of(push: &'a Push) -> Message<'a> {
        let content = &push.content;
        let options = &content.options;
        let mut data: BTreeMap<&str, &str> = (options.data.iter())
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        if let Some(link) = &content.deep_link {
            data.insert("deep_link", link);
        }
        data.insert("CIO-Delivery-ID", &push.delivery_id);
        data.insert("CIO-Delivery-Token", &push.token);
        let default_priority = match options.kind {
            PushKind::Alert => PushPriority::High,
            PushKind::Background => PushPriority::Normal,
        };
        let priority = match options.priority.unwrap_or(default_priority) {
            PushPriority::High => "HIGH",
            PushPriority::Normal => "NORMAL",
        };
        let alert = options.kind == PushKind::Alert;
        let shown = Shown {
            channel_id: options.android_channel_id.as_deref(),
            notification_count: options.badge,
            sound: options.sound.as_deref(),
        };
        let shown_any = shown.channel_id.is_some()
            || shown.notification_count.is_some()
            || shown.sound.is_some();
        Message {
            android: Android {
                collapse_key: content.collapse_id.as_deref(),
                notification: (alert && shown_any).then_some(shown),
                priority,
                ttl: options.ttl_seconds.map(|ttl| format!("{ttl}s")),
            },
            data,
            notification: alert.then(|| Notification {
                body: &content.body,
                image: options.image_url.as_deref(),
                title: &content.title,
            }),
            token: &push.token,
        }
    }

    /// Bytes of what reaches the device: the notification, the data and
    /// the Android notification options, as JSON.
    fn payload_size(&self) -> usize {
        self.notification.as_ref().map_or(0, json_len)
            + json_len(&self.data)
            + self.android.notification.as_ref().map_or(0, json_len)
    }
}

/// `v` as JSON text. Every type written here serializes: string keys, no
/// floats, no fallible `Serialize`.
fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("an FCM message always serializes")
}

/// The length of `v` as JSON text, counted as serde_json writes it rather
/// than made and dropped. (std's `io::sink` does not count, and a crate
/// for these few lines would be more to keep.)
fn json_len<T: Serialize>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, v).expect("an FCM message always serializes");
    count.0
}

/// Maps an FCM error answer. Only an error about the token bounces (and
/// suppresses it): `UNREGISTERED`, or `INVALID_ARGUMENT` naming the token.
/// Any other refusal of the message is `provider_rejected`, in FCM's words.
fn map_error(
    status: StatusCode,
    error: Option<ErrorBody>,
    retry_after: Option<Duration>,
) -> ProviderError {
    let error = error.unwrap_or_default();
    let code = error.details.iter().find_map(|d| d.error_code.as_deref());
    let reason = code.unwrap_or(&error.status);
    let detail = format!("{} {reason}", status.as_u16())
        .trim_end()
        .to_owned();
    match status.as_u16() {
        _ if status == StatusCode::NOT_FOUND || reason == "UNREGISTERED" => {
            ProviderError::Bounced { detail }
        }
        400 if error.status == "INVALID_ARGUMENT" && error.names_the_token() => {
            ProviderError::Bounced { detail }
        }
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
            detail: match error.message.trim() {
                "" => detail,
                words => format!("{detail}: {words}"),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn answer(body: Value) -> Option<ErrorBody> {
        serde_json::from_value::<ErrorEnvelope>(body)
            .ok()
            .map(|e| e.error)
    }

    #[test]
    fn a_payload_is_measured_as_the_text_that_is_sent() {
        let parts = [
            json!({"title": "Caf\u{e9} \"ouvert\"", "body": "line\nnext \u{1F600} \\ tab\t"}),
            json!({"CIO-Delivery-ID": "d-1", "k\u{0001}": "</script>"}),
            json!({"notification_count": 3, "sound": null, "x": [1.5, true]}),
        ];
        for v in parts {
            assert_eq!(json_len(&v), v.to_string().len(), "{v}");
        }
    }

    #[test]
    fn invalid_argument_bounces_only_when_it_names_the_token() {
        let fcm_error = json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "INVALID_ARGUMENT"});
        let token_message = answer(json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "The registration token is not a valid FCM registration token",
            "details": [fcm_error]}}));
        let got = map_error(StatusCode::BAD_REQUEST, token_message, None);
        assert!(matches!(got, ProviderError::Bounced { .. }), "{got:?}");

        let payload = answer(json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "Invalid value at 'message.android.ttl'",
            "details": [fcm_error, {"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.android.ttl",
                                     "description": "Invalid value"}]}]}}));
        let got = map_error(StatusCode::BAD_REQUEST, payload, None);
        assert_eq!(
            got,
            ProviderError::Permanent {
                reason: FailureReason::ProviderRejected,
                detail: "400 INVALID_ARGUMENT: Invalid value at 'message.android.ttl'".into(),
            }
        );
    }
}

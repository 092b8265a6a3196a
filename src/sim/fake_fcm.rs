//! A fake FCM: the HTTP v1 send endpoint plus an OAuth2 token endpoint
//! (`POST /token`) that verifies service-account assertions, on one h2c server.
//! Like FCM it refuses a bad message with `INVALID_ARGUMENT` and says which
//! field is wrong, the token or another one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use hyper::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pushd_actors::model::{Environment, Platform};
use pushd_actors::ports::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::fake::{Fake, Fault, FaultMix, Recorder, Reply, Server, json_response};
use crate::providers::FcmConfig;

/// TEST-ONLY RSA 2048 private key of the fake's service account
/// (`tests/fixtures/test_only_rsa_private.pem`). It protects nothing.
pub const TEST_RSA_PRIVATE_KEY_PEM: &str =
    include_str!("../../tests/fixtures/test_only_rsa_private.pem");
/// The public half of [`TEST_RSA_PRIVATE_KEY_PEM`].
pub const TEST_RSA_PUBLIC_KEY_PEM: &str =
    include_str!("../../tests/fixtures/test_only_rsa_public.pem");

/// Largest message FCM accepts: its notification and data, in bytes of JSON.
const MAX_PAYLOAD: usize = 4096;
/// Android delivery priorities FCM accepts (it takes either case).
const PRIORITIES: [&str; 4] = ["HIGH", "NORMAL", "high", "normal"];
/// The scope an assertion must ask for.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The grant type the token endpoint accepts.
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// What the fake FCM accepts.
#[derive(Clone, Debug)]
pub struct FakeFcmConfig {
    /// The Firebase project.
    pub project_id: String,
    /// The service account's email (assertion `iss`).
    pub client_email: String,
    /// The service account's public key, PEM.
    pub public_key_pem: String,
    /// Lifetime of issued access tokens, in seconds (`expires_in`).
    pub token_expires_in: u64,
    /// Outcomes for unscripted tokens.
    pub mix: FaultMix,
}

impl Default for FakeFcmConfig {
    /// The test-only service account, hour-long tokens, no faults.
    fn default() -> FakeFcmConfig {
        FakeFcmConfig {
            project_id: "pushd-test".to_owned(),
            client_email: "pushd@pushd-test.iam.gserviceaccount.com".to_owned(),
            public_key_pem: TEST_RSA_PUBLIC_KEY_PEM.to_owned(),
            token_expires_in: 3600,
            mix: FaultMix::default(),
        }
    }
}

/// A running fake FCM on 127.0.0.1; stops when dropped.
pub struct FakeFcm {
    server: Server,
    state: Arc<State>,
}

/// What the server's handler shares with [`FakeFcm`].
struct State {
    config: FakeFcmConfig,
    key: DecodingKey,
    token_uri: String,
    recorder: Arc<Recorder>,
    token_requests: AtomicUsize,
    /// Access tokens issued, and when each expires.
    issued: Mutex<HashMap<String, Instant>>,
}

/// An assertion's claims (`aud`, `exp` are checked by the validation).
#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    scope: String,
}

impl FakeFcm {
    /// Starts the server.
    pub async fn start(config: FakeFcmConfig) -> std::io::Result<FakeFcm> {
        let key = DecodingKey::from_rsa_pem(config.public_key_pem.as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let recorder = Arc::new(Recorder::new(Platform::Android, config.mix.clone()));
        let mut started = None;
        let server = Server::start(recorder.clone(), |endpoint| {
            let state = Arc::new(State {
                key,
                token_uri: format!("{endpoint}/token"),
                config,
                recorder,
                token_requests: AtomicUsize::new(0),
                issued: Mutex::new(HashMap::new()),
            });
            started = Some(state.clone());
            Arc::new(move |parts: Parts, body: Bytes| -> BoxFuture<Reply> {
                let state = state.clone();
                Box::pin(async move { state.handle(parts, body).await })
            })
        })
        .await?;
        let state = started.expect("the server built its handler");
        Ok(FakeFcm { server, state })
    }

    /// Its base URL, `http://127.0.0.1:port` (h2c).
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Its OAuth2 token endpoint.
    pub fn token_uri(&self) -> String {
        self.state.token_uri.clone()
    }

    /// Writes a service-account JSON for this fake (test-only key, `token_uri`
    /// pointing here).
    pub fn write_service_account(&self, path: &Path) -> std::io::Result<()> {
        let config = &self.state.config;
        let account = json!({
            "type": "service_account",
            "project_id": config.project_id,
            "private_key_id": "test-only",
            "private_key": TEST_RSA_PRIVATE_KEY_PEM,
            "client_email": config.client_email,
            "token_uri": self.token_uri(),
        });
        std::fs::write(path, account.to_string())
    }

    /// A client configuration for this fake, with the service account at `path`.
    pub fn client_config(&self, path: &Path) -> FcmConfig {
        FcmConfig {
            endpoint: Some(self.endpoint()),
            service_account_file: Some(path.display().to_string()),
        }
    }

    /// Forgets every access token issued, so the next send gets a 401.
    pub fn revoke_tokens(&self) {
        self.state.issued.lock().expect("issued lock").clear();
    }

    /// Token requests received, whatever their answer.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Distinct access tokens seen on sends.
    pub fn distinct_access_tokens(&self) -> usize {
        self.state.recorder.distinct_credentials()
    }
}

impl Fake for FakeFcm {
    fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }
}

impl State {
    /// Routes one request: token endpoint or `messages:send`.
    async fn handle(&self, parts: Parts, body: Bytes) -> Reply {
        if parts.method != Method::POST {
            return error(405, "METHOD_NOT_ALLOWED", None);
        }
        let path = parts.uri.path().to_owned();
        if path == "/token" {
            return self.token(&body);
        }
        let project = path
            .strip_prefix("/v1/projects/")
            .and_then(|rest| rest.strip_suffix("/messages:send"));
        match project {
            Some(p) if p == self.config.project_id => self.send(parts, body).await,
            Some(_) => error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH")),
            None => error(404, "NOT_FOUND", None),
        }
    }

    /// The OAuth2 token endpoint.
    fn token(&self, body: &[u8]) -> Reply {
        self.token_requests.fetch_add(1, Ordering::SeqCst);
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        if form.get("grant_type").map(String::as_str) != Some(GRANT_TYPE) {
            return json_response(400, &json!({"error": "unsupported_grant_type"}), &[]);
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.token_uri]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
        let granted = form
            .get("assertion")
            .and_then(|a| jsonwebtoken::decode::<AssertionClaims>(a, &self.key, &validation).ok())
            .is_some_and(|t| {
                t.claims.iss == self.config.client_email
                    && t.claims.scope.split(' ').any(|s| s == SCOPE)
            });
        if !granted {
            return json_response(400, &json!({"error": "invalid_grant"}), &[]);
        }
        let token = format!("ya29.fake-{}", self.recorder.random_hex(32));
        let lifetime = Duration::from_secs(self.config.token_expires_in);
        self.issued
            .lock()
            .expect("issued lock")
            .insert(token.clone(), Instant::now() + lifetime);
        json_response(
            200,
            &json!({
                "access_token": token,
                "expires_in": self.config.token_expires_in,
                "token_type": "Bearer",
            }),
            &[],
        )
    }

    /// `messages:send`.
    async fn send(&self, parts: Parts, body: Bytes) -> Reply {
        self.recorder.request();
        let bearer = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let valid = bearer.is_some_and(|t| {
            let issued = self.issued.lock().expect("issued lock");
            issued
                .get(t)
                .is_some_and(|expires| Instant::now() < *expires)
        });
        let Some(bearer) = bearer.filter(|_| valid) else {
            return error(401, "UNAUTHENTICATED", None);
        };
        self.recorder.saw_credential(bearer);
        let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
            return error(400, "INVALID_ARGUMENT", None);
        };
        let message = &payload["message"];
        let token = match message["token"].as_str() {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => return invalid_token(),
        };
        self.recorder.call(&token);
        if let Some(reply) = invalid_message(message) {
            return reply;
        }
        let decision = self.recorder.decide(&token);
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        if let Some(fault) = decision.fault {
            return fault_reply(fault);
        }
        let delivery_id = message["data"]["CIO-Delivery-ID"]
            .as_str()
            .map(str::to_owned);
        self.recorder.deliver(
            Environment::Production,
            &token,
            payload,
            delivery_id,
            &parts,
        );
        let name = format!(
            "projects/{}/messages/{}",
            self.config.project_id,
            self.recorder.random_hex(16)
        );
        json_response(200, &json!({ "name": name }), &[])
    }
}

/// What FCM refuses in a message other than its token: data values that
/// are not strings, an unknown Android priority, a TTL that is not a
/// duration in seconds ("3600s"), a message over its size limit.
fn invalid_message(message: &Value) -> Option<Reply> {
    let data = message["data"].as_object();
    if let Some((key, _)) = data.and_then(|d| d.iter().find(|(_, v)| !v.is_string())) {
        return Some(invalid_field(
            &format!("message.data[{key}]"),
            "Invalid value: data values must be strings",
        ));
    }
    let android = &message["android"];
    if let Some(priority) = android.get("priority")
        && !priority.as_str().is_some_and(|p| PRIORITIES.contains(&p))
    {
        return Some(invalid_field(
            "message.android.priority",
            "Invalid value at 'message.android.priority'",
        ));
    }
    if let Some(ttl) = android.get("ttl")
        && !ttl.as_str().is_some_and(is_duration)
    {
        return Some(invalid_field(
            "message.android.ttl",
            "Invalid value at 'message.android.ttl'",
        ));
    }
    let size = message["data"].to_string().len() + message["notification"].to_string().len();
    (size > MAX_PAYLOAD).then(|| invalid_argument("Android message is too big", None))
}

/// A protobuf JSON duration in whole or fractional seconds: "3600s", "1.5s".
fn is_duration(text: &str) -> bool {
    let Some(number) = text.strip_suffix('s') else {
        return false;
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction) && fraction.len() <= 9
}

/// FCM's answer to a token that is not a registration token.
fn invalid_token() -> Reply {
    invalid_argument(
        "The registration token is not a valid FCM registration token",
        Some("message.token"),
    )
}

/// FCM's answer to a bad value in `field` (not the token).
fn invalid_field(field: &str, message: &str) -> Reply {
    invalid_argument(message, Some(field))
}

/// A 400 `INVALID_ARGUMENT` with FCM's message, and a `BadRequest` field
/// violation when it names the field.
fn invalid_argument(message: &str, field: Option<&str>) -> Reply {
    let mut details = vec![json!({
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "INVALID_ARGUMENT",
    })];
    if let Some(field) = field {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": message}],
        }));
    }
    let body = json!({"error": {"code": 400, "message": message,
        "status": "INVALID_ARGUMENT", "details": details}});
    json_response(400, &body, &[])
}

/// A Google API error, with FCM's `errorCode` when given.
fn error(code: u16, status: &str, fcm_code: Option<&str>) -> Reply {
    error_with(code, status, fcm_code, &[])
}

/// [`error`] with extra headers.
fn error_with(
    code: u16,
    status: &str,
    fcm_code: Option<&str>,
    headers: &[(&str, String)],
) -> Reply {
    let details: Vec<Value> = fcm_code
        .map(|c| {
            json!({
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": c,
            })
        })
        .into_iter()
        .collect();
    let body = json!({
        "error": {"code": code, "message": status, "status": status, "details": details}
    });
    json_response(code, &body, headers)
}

/// A scripted failure, as FCM says it.
fn fault_reply(fault: Fault) -> Reply {
    match fault {
        Fault::Unregistered => error(404, "NOT_FOUND", Some("UNREGISTERED")),
        Fault::BadDeviceToken => invalid_token(),
        Fault::TooManyRequests { retry_after_secs } => error_with(
            429,
            "RESOURCE_EXHAUSTED",
            Some("QUOTA_EXCEEDED"),
            &[("retry-after", retry_after_secs.to_string())],
        ),
        Fault::InternalError => error(500, "INTERNAL", Some("INTERNAL")),
        Fault::Unavailable => error(503, "UNAVAILABLE", Some("UNAVAILABLE")),
        Fault::Reset => Reply::Reset,
        Fault::ExpiredCredentials => error(401, "UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR")),
        Fault::MessageTooBig => invalid_argument("Android message is too big", None),
    }
}

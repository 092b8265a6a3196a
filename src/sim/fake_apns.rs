//! A fake APNs: validates requests the way Apple does (path, provider JWT,
//! topic, push type, priority, expiration, payload) and answers with
//! scripted or random outcomes. Like Apple it has two endpoints, production
//! and sandbox, and a token is valid on one of them only.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use hyper::Method;
use hyper::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pushd_actors::model::{Environment, Platform};
use pushd_actors::ports::{BoxFuture, Clock, SystemClock};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Deserialize;
use serde_json::{Value, json};

use super::fake::{Fake, Fault, FaultMix, Recorder, Reply, Server, json_response, respond};
use crate::providers::ApnsConfig;

/// Largest payload APNs accepts, in bytes.
const MAX_PAYLOAD: usize = 4096;
/// Provider tokens older than this are refused as expired.
const MAX_TOKEN_AGE: u64 = 3600;
/// The `apns-push-type` values Apple knows.
const PUSH_TYPES: [&str; 9] = [
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "location",
    "liveactivity",
    "pushtotalk",
];

/// A freshly generated APNs token-signing key (EC P-256). Test-only.
pub struct ApnsTestKey {
    /// The private key as a .p8 file holds it (PKCS#8 PEM).
    pub p8_pem: String,
    /// The public key, an uncompressed P-256 point, for [`FakeApnsConfig`].
    pub public_key: Vec<u8>,
}

impl ApnsTestKey {
    /// Generates a key pair with ring.
    pub fn generate() -> ApnsTestKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key generation");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("a key ring just generated parses");
        let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let mut p8_pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            p8_pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            p8_pem.push('\n');
        }
        p8_pem.push_str("-----END PRIVATE KEY-----\n");
        ApnsTestKey {
            p8_pem,
            public_key: pair.public_key().as_ref().to_vec(),
        }
    }

    /// Writes the .p8 file.
    pub fn write_p8(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.p8_pem)
    }
}

/// What the fake APNs accepts.
#[derive(Clone, Debug)]
pub struct FakeApnsConfig {
    /// The public half of the provider's signing key (uncompressed point).
    pub public_key: Vec<u8>,
    /// The key id JWTs must name.
    pub key_id: String,
    /// The team id JWTs must be issued by.
    pub team_id: String,
    /// The only `apns-topic` accepted.
    pub topic: String,
    /// Outcomes for unscripted tokens.
    pub mix: FaultMix,
}

impl FakeApnsConfig {
    /// Accepts JWTs signed by `key`, with test key id, team and topic and no faults.
    pub fn new(key: &ApnsTestKey) -> FakeApnsConfig {
        FakeApnsConfig {
            public_key: key.public_key.clone(),
            key_id: "TESTKEY001".to_owned(),
            team_id: "TESTTEAM01".to_owned(),
            topic: "io.pushd.demo".to_owned(),
            mix: FaultMix::default(),
        }
    }
}

/// A running fake APNs on 127.0.0.1, a production and a sandbox endpoint;
/// stops when dropped.
pub struct FakeApns {
    production: Server,
    sandbox: Server,
    state: Arc<State>,
}

/// What the servers' handlers share with [`FakeApns`].
struct State {
    config: FakeApnsConfig,
    key: DecodingKey,
    recorder: Arc<Recorder>,
    /// Signature-checked JWTs and their `iat`, so each is verified once.
    verified: Mutex<HashMap<String, u64>>,
    /// Tokens of development builds: valid on the sandbox only. Every
    /// other token is valid on production only.
    sandbox_tokens: Mutex<HashSet<String>>,
}

/// A provider token's claims.
#[derive(Deserialize)]
struct Claims {
    iss: String,
    iat: u64,
}

impl FakeApns {
    /// Starts both endpoints.
    pub async fn start(config: FakeApnsConfig) -> std::io::Result<FakeApns> {
        let recorder = Arc::new(Recorder::new(Platform::Ios, config.mix.clone()));
        let state = Arc::new(State {
            key: DecodingKey::from_ec_der(&config.public_key),
            config,
            recorder: recorder.clone(),
            verified: Mutex::new(HashMap::new()),
            sandbox_tokens: Mutex::new(HashSet::new()),
        });
        let serve = |environment: Environment| {
            let state = state.clone();
            Server::start(recorder.clone(), move |_| {
                Arc::new(move |parts: Parts, body: Bytes| -> BoxFuture<Reply> {
                    let state = state.clone();
                    Box::pin(async move { state.handle(environment, parts, body).await })
                })
            })
        };
        let production = serve(Environment::Production).await?;
        let sandbox = serve(Environment::Sandbox).await?;
        Ok(FakeApns {
            production,
            sandbox,
            state,
        })
    }

    /// Its production base URL, `http://127.0.0.1:port` (h2c).
    pub fn endpoint(&self) -> String {
        self.production.endpoint()
    }

    /// Its sandbox base URL, `http://127.0.0.1:port` (h2c).
    pub fn sandbox_endpoint(&self) -> String {
        self.sandbox.endpoint()
    }

    /// Makes `token` a development build's token: accepted on the sandbox,
    /// `BadDeviceToken` on production (and the reverse for other tokens).
    pub fn issue_sandbox_token(&self, token: &str) {
        let mut tokens = self.state.sandbox_tokens.lock().expect("tokens lock");
        tokens.insert(token.to_owned());
    }

    /// A client configuration for this fake, with the .p8 at `key_file`.
    pub fn client_config(&self, key_file: &Path) -> ApnsConfig {
        let config = &self.state.config;
        ApnsConfig {
            endpoint: Some(self.endpoint()),
            sandbox_endpoint: Some(self.sandbox_endpoint()),
            key_file: Some(key_file.display().to_string()),
            key_id: Some(config.key_id.clone()),
            team_id: Some(config.team_id.clone()),
            topic: Some(config.topic.clone()),
        }
    }

    /// Distinct provider JWTs seen.
    pub fn distinct_jwts(&self) -> usize {
        self.state.recorder.distinct_credentials()
    }
}

impl Fake for FakeApns {
    fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }
}

impl State {
    /// Validates one request as APNs's `environment` endpoint does, then
    /// answers as scripted.
    async fn handle(&self, environment: Environment, parts: Parts, body: Bytes) -> Reply {
        self.recorder.request();
        if parts.method != Method::POST {
            return error(405, "MethodNotAllowed");
        }
        let Some(token) = parts.uri.path().strip_prefix("/3/device/") else {
            return error(404, "BadPath");
        };
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return error(400, "BadDeviceToken");
        }
        self.recorder.call(token);
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let Some(jwt) = header("authorization").and_then(|v| v.strip_prefix("bearer ")) else {
            return error(403, "MissingProviderToken");
        };
        let Some(iat) = self.verify(jwt) else {
            return error(403, "InvalidProviderToken");
        };
        if (SystemClock.now() as u64).saturating_sub(iat) > MAX_TOKEN_AGE {
            return error(403, "ExpiredProviderToken");
        }
        self.recorder.saw_credential(jwt);
        if header("apns-topic") != Some(self.config.topic.as_str()) {
            return error(400, "TopicDisallowed");
        }
        if let Some(reason) = bad_headers(&header) {
            return error(400, reason);
        }
        let sandbox_token = self
            .sandbox_tokens
            .lock()
            .expect("tokens lock")
            .contains(token);
        if sandbox_token != (environment == Environment::Sandbox) {
            return error(400, "BadDeviceToken");
        }
        if body.len() > MAX_PAYLOAD {
            return error(413, "PayloadTooLarge");
        }
        let payload: Value = match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) if v.get("aps").is_some() => v,
            _ => return error(400, "PayloadEmpty"),
        };
        let decision = self.recorder.decide(token);
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        if let Some(fault) = decision.fault {
            return fault_reply(fault);
        }
        let delivery_id = payload["CIO-Delivery-ID"].as_str().map(str::to_owned);
        let token = token.to_owned();
        self.recorder
            .deliver(environment, &token, payload, delivery_id, &parts);
        let id = self.recorder.random_hex(32).to_uppercase();
        let apns_id = format!(
            "{}-{}-{}-{}-{}",
            &id[..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..]
        );
        respond(200, Bytes::new(), &[("apns-id", apns_id)])
    }

    /// The JWT's `iat` if its header, signature and issuer are right.
    fn verify(&self, jwt: &str) -> Option<u64> {
        if let Some(iat) = self.verified.lock().expect("verified lock").get(jwt) {
            return Some(*iat);
        }
        let header = jsonwebtoken::decode_header(jwt).ok()?;
        if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(&self.config.key_id) {
            return None;
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(jwt, &self.key, &validation)
            .ok()?
            .claims;
        if claims.iss != self.config.team_id {
            return None;
        }
        self.verified
            .lock()
            .expect("verified lock")
            .insert(jwt.to_owned(), claims.iat);
        Some(claims.iat)
    }
}

/// Apple's reason for a push type, priority or expiration it refuses: an
/// unknown type, a priority other than 1, 5 or 10 (and 10 on a background
/// push), an expiration that is not Unix seconds.
fn bad_headers<'a>(header: &impl Fn(&str) -> Option<&'a str>) -> Option<&'static str> {
    let push_type = header("apns-push-type").unwrap_or_default();
    if !PUSH_TYPES.contains(&push_type) {
        return Some("InvalidPushType");
    }
    match header("apns-priority") {
        None | Some("1" | "5") => {}
        Some("10") if push_type != "background" => {}
        Some(_) => return Some("BadPriority"),
    }
    let expiration = header("apns-expiration");
    if expiration.is_some_and(|e| e.parse::<u64>().is_err()) {
        return Some("BadExpirationDate");
    }
    None
}

/// An APNs error answer.
fn error(status: u16, reason: &str) -> Reply {
    json_response(status, &json!({ "reason": reason }), &[])
}

/// A scripted failure, as APNs says it.
fn fault_reply(fault: Fault) -> Reply {
    match fault {
        Fault::Unregistered => json_response(
            410,
            &json!({"reason": "Unregistered", "timestamp": SystemClock.now_ms()}),
            &[],
        ),
        Fault::BadDeviceToken => error(400, "BadDeviceToken"),
        Fault::TooManyRequests { retry_after_secs } => json_response(
            429,
            &json!({"reason": "TooManyRequests"}),
            &[("retry-after", retry_after_secs.to_string())],
        ),
        Fault::InternalError => error(500, "InternalServerError"),
        Fault::Unavailable => error(503, "ServiceUnavailable"),
        Fault::Reset => Reply::Reset,
        Fault::ExpiredCredentials => error(403, "ExpiredProviderToken"),
        Fault::MessageTooBig => error(413, "PayloadTooLarge"),
    }
}

//! Bearer-key authentication: the management API key for `/v1/`, and the
//! SDK key (or the API key) for device reports. Extractors, so a handler
//! states in its signature which key it needs.

use std::future::{Ready, ready};

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use ring::hmac;
use ring::rand::SystemRandom;
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The two keys.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Management API key.
    pub api: String,
    /// Device/SDK key.
    pub sdk: String,
}

/// The keys as the request path checks them: HMAC tags under a key drawn at
/// start. A given key's tag is computed once and compared with each in
/// constant time (`subtle`); the tags have a fixed length, so neither a
/// key's bytes nor its length leak through timing.
pub struct KeyCheck {
    hmac: hmac::Key,
    api: hmac::Tag,
    sdk: hmac::Tag,
}

impl KeyCheck {
    /// Checks against `keys`.
    pub fn new(keys: &Keys) -> Self {
        let hmac = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .expect("the system has randomness");
        KeyCheck {
            api: hmac::sign(&hmac, keys.api.as_bytes()),
            sdk: hmac::sign(&hmac, keys.sdk.as_bytes()),
            hmac,
        }
    }

    /// Which key `given` is, if any.
    fn which(&self, given: &str) -> Option<Which> {
        let tag = hmac::sign(&self.hmac, given.as_bytes());
        let same = |known: &hmac::Tag| bool::from(tag.as_ref().ct_eq(known.as_ref()));
        match (same(&self.api), same(&self.sdk)) {
            (true, _) => Some(Which::Api),
            (_, true) => Some(Which::Sdk),
            _ => None,
        }
    }
}

/// A key the request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Api,
    Sdk,
}

/// Proof the request carried the API key.
pub struct ApiKey;

/// Proof the request carried the SDK key or the API key.
pub struct SdkKey;

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

fn check(req: &HttpRequest, allow_sdk: bool) -> Result<(), ApiError> {
    let keys = req
        .app_data::<web::Data<KeyCheck>>()
        .expect("keys are configured");
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer key",
        )
    };
    let given = bearer(req).ok_or_else(unauthorized)?;
    // Blank keys never authenticate (a configured key is never blank).
    match keys.which(given).filter(|_| !given.is_empty()) {
        Some(Which::Api) => Ok(()),
        Some(Which::Sdk) if allow_sdk => Ok(()),
        _ => Err(unauthorized()),
    }
}

impl FromRequest for ApiKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req, false).map(|()| ApiKey))
    }
}

impl FromRequest for SdkKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req, true).map(|()| SdkKey))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_matches() {
        let check = KeyCheck::new(&Keys {
            api: "api-key-123".into(),
            sdk: "sdk-key-456".into(),
        });
        assert_eq!(check.which("api-key-123"), Some(Which::Api));
        assert_eq!(check.which("sdk-key-456"), Some(Which::Sdk));
        for wrong in ["api-key-12", "api-key-1234", "", "sdk-key-45"] {
            assert_eq!(check.which(wrong), None, "{wrong:?}");
        }
    }
}

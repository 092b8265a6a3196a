//! Bearer-key authentication: the management API key for `/v1/`, and the
//! SDK key (or the API key) for device reports. Extractors, so a handler
//! states in its signature which key it needs.

use std::future::{Ready, ready};

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use super::error::ApiError;

/// The two keys, as app data.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Management API key.
    pub api: String,
    /// Device/SDK key.
    pub sdk: String,
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

/// Compares without an early exit, so timing does not leak the key.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn check(req: &HttpRequest, allow_sdk: bool) -> Result<(), ApiError> {
    let keys = req
        .app_data::<web::Data<Keys>>()
        .expect("keys are configured");
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer key",
        )
    };
    let given = bearer(req).ok_or_else(unauthorized)?;
    if same(given, &keys.api) || (allow_sdk && same(given, &keys.sdk)) {
        Ok(())
    } else {
        Err(unauthorized())
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

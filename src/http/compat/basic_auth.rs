//! HTTP Basic with a write key as the user, as Segment's, RudderStack's
//! and Customer.io Data Pipelines' clients authenticate. pushd's API key
//! (as a bearer, or Basic under the Customer.io site id) is taken too.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

use super::Compat;
use crate::http::auth::{basic_credentials, has_api_key, unauthorized};
use crate::http::error::ApiError;

/// The configured write keys, as SHA-256 digests compared in constant time.
pub struct WriteKeys(Vec<[u8; 32]>);

impl WriteKeys {
    /// The digests of `keys`.
    pub fn new(keys: &[String]) -> Self {
        WriteKeys(keys.iter().map(|k| sha256(k)).collect())
    }

    /// Whether `given` is one of the keys; every key is compared, in
    /// constant time each.
    fn knows(&self, given: &str) -> bool {
        let given = sha256(given);
        let mut found = subtle::Choice::from(0);
        for key in &self.0 {
            found |= key.as_slice().ct_eq(given.as_slice());
        }
        bool::from(found) && !self.0.is_empty()
    }
}

fn sha256(text: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
    out
}

/// Proof the request carried an ingestion write key (or the API key).
pub struct WriteKey;

fn check(req: &HttpRequest) -> Result<WriteKey, ApiError> {
    let compat = req
        .app_data::<web::Data<Compat>>()
        .expect("the compat state is configured");
    let user = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials)
        .map(|(user, _)| user);
    if user.is_some_and(|u| !u.is_empty() && compat.write_keys.knows(&u)) || has_api_key(req) {
        return Ok(WriteKey);
    }
    Err(unauthorized(
        "missing or wrong write key: send one of [compat] ingest_write_keys \
         (PUSHD_COMPAT_INGEST_WRITE_KEYS) as the HTTP Basic user",
    ))
}

impl FromRequest for WriteKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_configured_key_is_known() {
        let keys = WriteKeys::new(&["write-key-1".into(), "write-key-2".into()]);
        assert!(keys.knows("write-key-1"));
        assert!(keys.knows("write-key-2"));
        assert!(!keys.knows("write-key-3"));
        assert!(!keys.knows(""));
        assert!(!WriteKeys::new(&[]).knows(""));
    }
}

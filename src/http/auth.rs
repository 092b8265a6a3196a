//! Bearer-key authentication: the management API key for `/v1/`, and the
//! SDK key (or the API key) for device reports and a customer's own
//! events. Extractors, so a handler states in its signature which key it
//! needs.
//!
//! Customer.io's Track API clients send their key as HTTP Basic
//! `site_id:key` instead: with `[compat] customerio_site_id` set, a Basic
//! credential whose user is that site id carries the key as its password,
//! and counts as the same key sent as a bearer.
//!
//! The SDK key ships inside every copy of the app, so anyone has it. With
//! identity verification on, an SDK-key call about a customer must also
//! carry `Pushd-Customer-Auth`: the HMAC of the customer id under the
//! identity secret, which only the app's backend (holding the API key) can
//! compute. Without it the answer is `401` before anything is looked up,
//! so it says nothing about whether the customer exists.

use std::borrow::Cow;
use std::future::{Ready, ready};

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderName;
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};
use quick_cache::sync::Cache;
use ring::hmac;
use ring::rand::SystemRandom;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::IdentityVerification;
pub use crate::keys::Caller;
use crate::keys::{identity_key, identity_secret};

/// The header an app sends its customer's identity proof in.
pub const CUSTOMER_AUTH: &str = "Pushd-Customer-Auth";

/// Customers whose proof is remembered once found right (about 100 bytes
/// each).
const VERIFIED_PROOFS: usize = 16_384;

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
    /// The identity secret as an HMAC key (set up once, not per call),
    /// when SDK-key calls must prove their customer.
    identity: Option<hmac::Key>,
    /// Proofs lately found right, by customer id: an app sends the same
    /// proof with each of its customer's reports, and comparing it with
    /// the one found right costs a small part of an HMAC.
    verified: Cache<String, [u8; 32]>,
    /// The Customer.io site id a Basic credential's user must be.
    site_id: Option<String>,
}

impl KeyCheck {
    /// Checks against `keys`, asking SDK-key calls about a customer for its
    /// proof when `identity` is `Required`, and taking a key as Basic
    /// `site_id:key` when `site_id` is set.
    pub fn new(keys: &Keys, identity: IdentityVerification, site_id: Option<String>) -> Self {
        let hmac = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .expect("the system has randomness");
        KeyCheck {
            api: hmac::sign(&hmac, keys.api.as_bytes()),
            sdk: hmac::sign(&hmac, keys.sdk.as_bytes()),
            hmac,
            identity: (identity == IdentityVerification::Required)
                .then(|| identity_key(&identity_secret(&keys.api))),
            verified: Cache::new(VERIFIED_PROOFS),
            site_id,
        }
    }

    /// Whether `proof` is `customer_id`'s; true when verification is off.
    /// Both comparisons (with a proof found right before, and ring's
    /// `verify`) take the same time wherever the proof differs; a wrong
    /// proof always goes through the HMAC, so how long a call takes says
    /// nothing about another customer's proof.
    fn vouches(&self, customer_id: &str, proof: Option<&[u8]>) -> bool {
        let Some(key) = &self.identity else {
            return true;
        };
        let Some(tag) = proof.and_then(proof_bytes) else {
            return false;
        };
        let known = self.verified.get(customer_id);
        if known.is_some_and(|known| bool::from(known.ct_eq(&tag))) {
            return true;
        }
        let right = hmac::verify(key, customer_id.as_bytes(), &tag).is_ok();
        if right {
            self.verified.insert(customer_id.to_owned(), tag);
        }
        right
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

/// The 32 bytes a proof's 64 hex digits (either case) spell, if they do.
/// Written here rather than taken from a hex crate: it is the only hex
/// pushd reads, and these few lines decode it without allocating (it runs
/// on every report that carries a proof, so a digit is a match, not a
/// `char` conversion).
fn proof_bytes(proof: &[u8]) -> Option<[u8; 32]> {
    let digits: &[u8; 64] = proof.try_into().ok()?;
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(bytes)
}

/// The value of one hex digit.
fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
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

/// Whether the request carried the API key (as [`ApiKey`] extracts it).
pub(super) fn has_api_key(req: &HttpRequest) -> bool {
    check(req, false).is_ok()
}

/// Proof the request carried the SDK key or the API key, and which.
pub struct SdkKey(pub Caller);

/// Proof the request may act for the customer its path names: the API
/// key, or the SDK key with that customer's `Pushd-Customer-Auth` proof
/// (no proof when identity verification is off).
pub struct ForCustomer(pub Caller);

/// The key the request carries: `Bearer <key>`, or Basic `site_id:key`
/// whose user is the configured Customer.io site id.
///
/// A bearer key is borrowed from the header: only a Basic one, decoded,
/// is a new string.
fn presented(req: &HttpRequest) -> Option<Cow<'_, str>> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Cow::Borrowed(key.trim()));
    }
    let site_id = key_check(req).site_id.as_deref()?;
    let (user, password) = basic_credentials(value)?;
    (user == site_id).then_some(Cow::Owned(password))
}

/// The user and password of an HTTP Basic `Authorization` value.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn key_check(req: &HttpRequest) -> &KeyCheck {
    req.app_data::<web::Data<KeyCheck>>()
        .expect("keys are configured")
}

/// 401 `unauthorized` in these words.
pub(super) fn unauthorized(words: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", words)
}

/// A node-to-node call whose signature was checked
/// ([`super::forward::to_owner`]): the caller the forwarding node
/// authenticated, if any, stands for the key the client presented there.
#[derive(Clone, Copy, Debug)]
pub struct NodeCall(pub Option<Caller>);

/// The caller whose key the request carries, if any (the caller a signed
/// node-to-node call names).
pub fn caller_of(req: &HttpRequest) -> Option<Caller> {
    check(req, true).ok()
}

fn check(req: &HttpRequest, allow_sdk: bool) -> Result<Caller, ApiError> {
    let wrong_key = || unauthorized("missing or wrong bearer key");
    let node_call = req.extensions().get::<NodeCall>().copied();
    let caller = match node_call {
        Some(NodeCall(caller)) => caller,
        None => {
            let given = presented(req).ok_or_else(wrong_key)?;
            // Blank keys never authenticate (a configured key is never blank).
            match key_check(req).which(&given).filter(|_| !given.is_empty()) {
                Some(Which::Api) => Some(Caller::Backend),
                Some(Which::Sdk) => Some(Caller::App),
                None => None,
            }
        }
    };
    match caller {
        Some(Caller::Backend) => Ok(Caller::Backend),
        Some(Caller::App) if allow_sdk => Ok(Caller::App),
        _ => Err(wrong_key()),
    }
}

/// The request's `Pushd-Customer-Auth`, if it carries one.
fn customer_auth(req: &HttpRequest) -> Option<&[u8]> {
    /// [`CUSTOMER_AUTH`] as a header name made once, not parsed per call.
    static NAME: HeaderName = HeaderName::from_static("pushd-customer-auth");
    Some(req.headers().get(&NAME)?.as_bytes().trim_ascii())
}

/// The request's `Pushd-Customer-Auth` as text, if it carries one (to
/// relay it).
pub(super) fn customer_auth_text(req: &HttpRequest) -> Option<String> {
    customer_auth(req).map(|proof| String::from_utf8_lossy(proof).into_owned())
}

/// Checks that an SDK-key call speaks for `customer_id`: with
/// verification on, it must carry that customer's proof. An API-key call
/// always may.
pub(super) fn speaks_for(
    req: &HttpRequest,
    caller: Caller,
    customer_id: &str,
) -> Result<(), ApiError> {
    speaks_with(req, caller, customer_id, customer_auth(req))
}

/// Checks that a call carrying `proof` (or none) speaks for `customer_id`.
fn speaks_with(
    req: &HttpRequest,
    caller: Caller,
    customer_id: &str,
    proof: Option<&[u8]>,
) -> Result<(), ApiError> {
    match caller == Caller::Backend || key_check(req).vouches(customer_id, proof) {
        true => Ok(()),
        false => Err(wrong_proof()),
    }
}

/// Checks the proof an SDK-key call carries, if any, against
/// `customer_id`: a device report needs none (it names its delivery and
/// device), but an app that sends one must send its own customer's.
pub fn proof_if_given(
    req: &HttpRequest,
    caller: Caller,
    customer_id: &str,
) -> Result<(), ApiError> {
    match customer_auth(req) {
        Some(proof) => speaks_with(req, caller, customer_id, Some(proof)),
        None => Ok(()),
    }
}

/// Checks that a call of `caller` carrying `proof` speaks for
/// `customer_id` (a proof relayed from the node the call reached).
pub(super) fn proof_given(
    req: &HttpRequest,
    caller: Caller,
    customer_id: &str,
    proof: &[u8],
) -> Result<(), ApiError> {
    speaks_with(req, caller, customer_id, Some(proof.trim_ascii()))
}

fn wrong_proof() -> ApiError {
    unauthorized(&format!(
        "an SDK-key call about a customer needs that customer's {CUSTOMER_AUTH} proof \
         (HMAC-SHA256 of the customer id under the identity secret, from your backend)"
    ))
}

impl FromRequest for ApiKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req, false).map(|_| ApiKey))
    }
}

impl FromRequest for SdkKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req, true).map(SdkKey))
    }
}

impl FromRequest for ForCustomer {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    /// Runs before the body is read: a call without the proof is refused
    /// having read and looked up nothing.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req, true).and_then(|caller| {
            // The id exactly as the handler's `web::Path` reads it.
            let id = web::Path::<String>::extract(req)
                .into_inner()
                .map(web::Path::into_inner)
                .unwrap_or_default();
            speaks_for(req, caller, &id).map(|()| ForCustomer(caller))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::identity_proof;

    #[test]
    fn only_the_exact_key_matches() {
        let check = KeyCheck::new(
            &Keys {
                api: "api-key-123".into(),
                sdk: "sdk-key-456".into(),
            },
            IdentityVerification::Off,
            None,
        );
        assert_eq!(check.which("api-key-123"), Some(Which::Api));
        assert_eq!(check.which("sdk-key-456"), Some(Which::Sdk));
        for wrong in ["api-key-12", "api-key-1234", "", "sdk-key-45"] {
            assert_eq!(check.which(wrong), None, "{wrong:?}");
        }
        assert!(check.vouches("c1", None), "verification off");
    }

    #[test]
    fn only_the_customers_own_proof_vouches_for_it() {
        let keys = Keys {
            api: "api-key-0123456789".into(),
            sdk: "sdk-key-0123456789".into(),
        };
        let check = KeyCheck::new(&keys, IdentityVerification::Required, None);
        let secret = identity_secret(&keys.api);
        let proof = identity_proof(&secret, "c1");
        assert!(check.vouches("c1", Some(proof.as_bytes())));
        assert!(check.vouches("c1", Some(proof.to_ascii_uppercase().as_bytes())));
        assert!(!check.vouches("c2", Some(proof.as_bytes())));
        assert!(!check.vouches("c1", None));
        assert!(!check.vouches("c1", Some(b"")));
        let under_sdk_key = identity_proof(&identity_secret(&keys.sdk), "c1");
        assert!(!check.vouches("c1", Some(under_sdk_key.as_bytes())));
        // Malformed proofs: short, long, not hex, or hex with a sign that
        // a lax parser would take.
        let malformed = [
            proof[1..].to_string(),
            format!("{proof}0"),
            format!("g{}", &proof[1..]),
            format!("+{}", &proof[1..]),
        ];
        for bad in &malformed {
            assert!(!check.vouches("c1", Some(bad.as_bytes())), "{bad:?}");
        }
        // Once c1's proof is remembered, another customer's well-formed
        // proof is still refused for c1, and c1's own still taken.
        assert!(!check.vouches("c1", Some(identity_proof(&secret, "c2").as_bytes())));
        assert!(check.vouches("c1", Some(proof.as_bytes())));
        assert!(check.vouches("c2", Some(identity_proof(&secret, "c2").as_bytes())));
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        // base64("site-1:key:with:colons"), base64("writekey:")
        let value = "Basic c2l0ZS0xOmtleTp3aXRoOmNvbG9ucw==";
        let (user, password) = basic_credentials(value).unwrap();
        assert_eq!(
            (user.as_str(), password.as_str()),
            ("site-1", "key:with:colons")
        );
        let (user, password) = basic_credentials("basic d3JpdGVrZXk6").unwrap();
        assert_eq!((user.as_str(), password.as_str()), ("writekey", ""));
        for bad in ["Bearer abc", "Basic !!!", "Basic bm9jb2xvbg==", "Basic"] {
            assert!(basic_credentials(bad).is_none(), "{bad}");
        }
    }
}

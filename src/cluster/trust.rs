//! The node credential: every node-to-node call is signed with the
//! cluster secret, which only the nodes hold. The signature covers the
//! method, path and query, a digest of the body, the time, the caller the
//! forwarding node authenticated and the *called* node's advertised
//! address, so a call cannot be altered, replayed after
//! [`MAX_AGE_SECS`], or sent on to another node. A client key holder or a
//! NATS user who points a lease at their own address receives signed calls
//! but can neither reuse them elsewhere nor make new ones.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::{digest, hmac};

/// Header carrying a node-to-node call's signature:
/// `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const NODE_SIGNATURE: &str = "Pushd-Node-Signature";
/// Header naming who the forwarding node authenticated: `backend` (the API
/// key), `app` (the SDK key) or `none` (no valid key; the receiver answers
/// 401 as it would have). Covered by the signature.
pub const NODE_CALLER: &str = "Pushd-Node-Caller";
/// A signed call older (or further ahead) than this is refused, seconds.
pub const MAX_AGE_SECS: i64 = 60;
/// The shortest cluster secret taken, bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The cluster secret as an HMAC-SHA256 key.
#[derive(Clone)]
pub struct NodeCredential {
    key: hmac::Key,
}

impl std::fmt::Debug for NodeCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCredential(..)")
    }
}

/// What a node-to-node call is, as signed.
pub struct SignedCall<'a> {
    /// Its HTTP method.
    pub method: &'a str,
    /// Its path and query.
    pub path_and_query: &'a str,
    /// Its body.
    pub body: &'a [u8],
    /// The called node's advertised address.
    pub address: &'a str,
    /// The [`NODE_CALLER`] value.
    pub caller: &'a str,
}

/// Why a node-to-node call's signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No [`NODE_SIGNATURE`] or [`NODE_CALLER`] header.
    #[error("the call carries no {NODE_SIGNATURE} and {NODE_CALLER}")]
    Missing,
    /// A header does not parse.
    #[error(
        "{NODE_SIGNATURE} is not t=<unix seconds>,v1=<hex>, or {NODE_CALLER} not backend, app or none"
    )]
    Malformed,
    /// Signed too long ago (or ahead: a negative age).
    #[error("the signature is {0} s old; one more than {MAX_AGE_SECS} s old (or ahead) is refused")]
    Stale(i64),
    /// Not the secret's signature of this call to this node.
    #[error("the signature does not match this call to this node")]
    Wrong,
}

impl NodeCredential {
    /// The credential of `secret`, which must be at least
    /// [`MIN_SECRET_BYTES`] long.
    pub fn new(secret: &[u8]) -> Option<NodeCredential> {
        (secret.len() >= MIN_SECRET_BYTES).then(|| NodeCredential {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// The [`NODE_SIGNATURE`] value of `call`, signed now.
    pub fn sign(&self, call: &SignedCall<'_>) -> String {
        self.sign_at(call, now())
    }

    /// The [`NODE_SIGNATURE`] value of `call`, signed at `at` (Unix
    /// seconds).
    pub fn sign_at(&self, call: &SignedCall<'_>, at: i64) -> String {
        let tag = hmac::sign(&self.key, &signed_text(call, at));
        format!("t={at},v1={}", hex(tag.as_ref()))
    }

    /// Checks `header` (the [`NODE_SIGNATURE`] value, if any) against
    /// `call`, in constant time.
    pub fn verify(&self, header: Option<&str>, call: &SignedCall<'_>) -> Result<(), Refused> {
        self.verify_at(header, call, now())
    }

    fn verify_at(
        &self,
        header: Option<&str>,
        call: &SignedCall<'_>,
        now: i64,
    ) -> Result<(), Refused> {
        let header = header.ok_or(Refused::Missing)?;
        let (at, tag) = parse(header).ok_or(Refused::Malformed)?;
        let age = now.saturating_sub(at);
        if age.abs() > MAX_AGE_SECS {
            return Err(Refused::Stale(age));
        }
        hmac::verify(&self.key, &signed_text(call, at), &tag).map_err(|_| Refused::Wrong)
    }
}

/// What is signed: each part on its own line, the body as its SHA-256.
fn signed_text(call: &SignedCall<'_>, at: i64) -> Vec<u8> {
    let body = digest::digest(&digest::SHA256, call.body);
    format!(
        "pushd-node-v1\n{}\n{}\n{}\n{at}\n{}\n{}",
        call.method,
        call.path_and_query,
        hex(body.as_ref()),
        call.address,
        call.caller
    )
    .into_bytes()
}

/// The time and tag of a [`NODE_SIGNATURE`] value.
fn parse(header: &str) -> Option<(i64, Vec<u8>)> {
    let (t, v1) = header.trim().split_once(',')?;
    let at = t.trim().strip_prefix("t=")?.parse().ok()?;
    let digits = v1.trim().strip_prefix("v1=")?;
    if digits.len() != 64 {
        return None;
    }
    let tag = (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((at, tag))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(address: &'a str, body: &'a [u8]) -> SignedCall<'a> {
        SignedCall {
            method: "POST",
            path_and_query: "/v1/customers/c1?x=1",
            body,
            address,
            caller: "backend",
        }
    }

    #[test]
    fn only_this_call_to_this_node_within_a_minute_passes() {
        let credential = NodeCredential::new(&[7; 32]).unwrap();
        let signed = credential.sign_at(&call("127.0.0.1:1", b"{}"), 1000);
        let ok = |h: Option<&str>, c: &SignedCall<'_>, now| credential.verify_at(h, c, now);
        assert_eq!(ok(Some(&signed), &call("127.0.0.1:1", b"{}"), 1030), Ok(()));
        assert_eq!(
            ok(Some(&signed), &call("127.0.0.1:2", b"{}"), 1000),
            Err(Refused::Wrong)
        );
        assert_eq!(
            ok(Some(&signed), &call("127.0.0.1:1", b"{ }"), 1000),
            Err(Refused::Wrong)
        );
        assert_eq!(
            ok(Some(&signed), &call("127.0.0.1:1", b"{}"), 1061),
            Err(Refused::Stale(61))
        );
        assert_eq!(
            ok(None, &call("127.0.0.1:1", b"{}"), 1000),
            Err(Refused::Missing)
        );
        assert_eq!(
            ok(Some("t=1000,v1=zz"), &call("127.0.0.1:1", b"{}"), 1000),
            Err(Refused::Malformed)
        );
        let other = NodeCredential::new(&[8; 32]).unwrap();
        let theirs = other.sign_at(&call("127.0.0.1:1", b"{}"), 1000);
        assert_eq!(
            ok(Some(&theirs), &call("127.0.0.1:1", b"{}"), 1000),
            Err(Refused::Wrong)
        );
    }

    #[test]
    fn a_short_secret_is_no_credential() {
        assert!(NodeCredential::new(&[1; 31]).is_none());
    }
}

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

use crate::topology::wire::{MAX_AGE_SECS, Refused, SignedCall};

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

impl NodeCredential {
    /// The credential of `secret`, which must be at least
    /// [`MIN_SECRET_BYTES`] long.
    pub fn new(secret: &[u8]) -> Option<NodeCredential> {
        (secret.len() >= MIN_SECRET_BYTES).then(|| NodeCredential {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// The signature header's value of `call`, signed now.
    pub fn sign(&self, call: &SignedCall<'_>) -> String {
        self.sign_at(call, now())
    }

    /// The signature header's value of `call`, signed at `at` (Unix
    /// seconds).
    pub fn sign_at(&self, call: &SignedCall<'_>, at: i64) -> String {
        let tag = hmac::sign(&self.key, &signed_text(call, at));
        format!("t={at},v1={}", hex(tag.as_ref()))
    }

    /// Checks `header` (the signature header's value, if any) against
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

/// The time and tag of a signature header's value.
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

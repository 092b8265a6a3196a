//! What nodes say to each other over the API: the headers that mark a
//! node-to-node call and its answer, who the forwarding node authenticated,
//! a signed call's parts and why one is refused, and a relayed batch. The
//! HTTP layer reads these on the calls it receives; cluster mode
//! ([`crate::cluster`]) writes them on the calls it sends.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::keys::Caller;

/// Header of a request another node forwarded: answered where it lands.
pub const FORWARDED: &str = "Pushd-Forwarded";
/// Header asking for this node's partitions only (value `local`).
pub const SCOPE: &str = "Pushd-Scope";
/// Header of an answer to a [`SCOPE`]d read: the partitions it includes,
/// comma-separated (empty for none), so the asking node can tell a
/// complete read from one that lacks a partition's share.
pub const PARTITIONS: &str = "Pushd-Partitions";
/// Where a node sends another the reports for that node's partitions, in
/// batches.
pub const RELAYED_REPORTS: &str = "/v1/cluster/reports";
/// Header carrying a node-to-node call's signature:
/// `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const NODE_SIGNATURE: &str = "Pushd-Node-Signature";
/// Header naming who the forwarding node authenticated: `backend` (the API
/// key), `app` (the SDK key) or `none` (no valid key; the receiver answers
/// 401 as it would have). Covered by the signature.
pub const NODE_CALLER: &str = "Pushd-Node-Caller";
/// A signed call older (or further ahead) than this is refused, seconds.
pub const MAX_AGE_SECS: i64 = 60;
/// Header of a partition's store export, another node's share of a
/// cluster's backup: the journal position it covers.
pub const COVERED: &str = "Pushd-Covered";
/// Header of a keyed send's answer that replays the first one (value
/// `true`); a forwarded send's answer carries it back.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// The [`PARTITIONS`] header value of `partitions`.
pub fn partitions_header(partitions: &BTreeSet<u16>) -> String {
    let tags: Vec<String> = partitions.iter().map(u16::to_string).collect();
    tags.join(",")
}

/// The partitions a [`PARTITIONS`] header value names; `None` if it does
/// not parse.
pub fn parse_partitions(value: &str) -> Option<BTreeSet<u16>> {
    value
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| t.trim().parse().ok())
        .collect()
}

/// The [`NODE_CALLER`] value of the caller a node authenticated, if any.
pub fn caller_name(caller: Option<Caller>) -> &'static str {
    match caller {
        Some(Caller::Backend) => "backend",
        Some(Caller::App) => "app",
        None => "none",
    }
}

/// The caller a [`NODE_CALLER`] value names: `None` for an unknown value,
/// `Some(None)` for `none`.
pub fn parse_caller(value: &str) -> Option<Option<Caller>> {
    match value {
        "backend" => Some(Some(Caller::Backend)),
        "app" => Some(Some(Caller::App)),
        "none" => Some(None),
        _ => None,
    }
}

/// What another node answered.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its content type, if any.
    pub content_type: Option<String>,
    /// The partitions its [`PARTITIONS`] header names, if it has one.
    pub partitions: Option<BTreeSet<u16>>,
    /// Whether it is a keyed send's first answer, replayed
    /// ([`IDEMPOTENT_REPLAYED`]).
    pub replayed: bool,
    /// Its body.
    pub body: Bytes,
}

/// Why another node did not answer.
#[derive(Debug, thiserror::Error)]
#[error("node {address} did not answer: {reason}")]
pub struct Unreachable {
    /// Where it was asked.
    pub address: String,
    /// Why.
    pub reason: String,
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

/// A relayed batch's body: many small calls to one node sent as one.
#[derive(Serialize, Deserialize)]
pub struct Batch<T> {
    /// The items, in order.
    pub items: Vec<T>,
}

/// A relayed batch's answer.
#[derive(Serialize, Deserialize)]
pub struct Answers<T> {
    /// One answer per item, in the items' order.
    pub answers: Vec<T>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_names_its_partitions_and_the_gatherer_reads_them_back() {
        let some: BTreeSet<u16> = [0, 7, 1023].into();
        assert_eq!(partitions_header(&some), "0,7,1023");
        assert_eq!(parse_partitions("0,7,1023"), Some(some));
        // A node serving none names none; it is not a garbled answer.
        assert_eq!(partitions_header(&BTreeSet::new()), "");
        assert_eq!(parse_partitions(""), Some(BTreeSet::new()));
        assert_eq!(parse_partitions("3,x"), None);
        assert_eq!(parse_partitions("70000"), None);
    }

    #[test]
    fn a_caller_name_reads_back_as_the_caller() {
        for caller in [Some(Caller::Backend), Some(Caller::App), None] {
            assert_eq!(parse_caller(caller_name(caller)), Some(caller));
        }
        assert_eq!(parse_caller("admin"), None);
    }
}

//! Calls between nodes, over the same HTTP API clients use: a request for
//! a partition another node serves is forwarded to it as it came (without
//! the client's key: the caller it authenticated goes along), and reads
//! that combine every partition ask each other node for its own partitions
//! only. A node marks what it sends with [`FORWARDED`] (answer here, do
//! not forward again) or [`SCOPE`] (answer from this node's partitions
//! only), and signs every call with the cluster secret ([`super::trust`]).

use std::time::Duration;

use actix_web::http::StatusCode;
use bytes::Bytes;

use super::trust::{NODE_CALLER, NODE_SIGNATURE, NodeCredential, SignedCall};
use crate::http::Caller;

/// Header of a request another node forwarded: answered where it lands.
pub const FORWARDED: &str = "Pushd-Forwarded";
/// Where a node sends another the reports for that node's partitions, in
/// batches ([`super::relay`]).
pub const RELAYED_REPORTS: &str = "/v1/cluster/reports";
/// Header asking for this node's partitions only (value `local`).
pub const SCOPE: &str = "Pushd-Scope";
/// Header of an answer to a [`SCOPE`]d read: the partitions it includes,
/// comma-separated (empty for none), so the asking node can tell a
/// complete read from one that lacks a partition's share.
pub const PARTITIONS: &str = "Pushd-Partitions";

/// The [`PARTITIONS`] header value of `partitions`.
pub fn partitions_header(partitions: &std::collections::BTreeSet<u16>) -> String {
    let tags: Vec<String> = partitions.iter().map(u16::to_string).collect();
    tags.join(",")
}

/// The partitions a [`PARTITIONS`] header value names; `None` if it does
/// not parse.
pub fn parse_partitions(value: &str) -> Option<std::collections::BTreeSet<u16>> {
    value
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| t.trim().parse().ok())
        .collect()
}

/// How long a bulk import forwarded to the node serving its customers may
/// take: its size, not only that node's health, sets the wait.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(30);

/// What a peer answered.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its content type, if any.
    pub content_type: Option<String>,
    /// The partitions its [`PARTITIONS`] header names, if it has one.
    pub partitions: Option<std::collections::BTreeSet<u16>>,
    /// Whether it is a keyed send's first answer, replayed
    /// ([`crate::http::IDEMPOTENT_REPLAYED`]).
    pub replayed: bool,
    /// Its body.
    pub body: Bytes,
}

/// Why a peer did not answer.
#[derive(Debug, thiserror::Error)]
#[error("node {address} did not answer: {reason}")]
pub struct Unreachable {
    /// Where it was asked.
    pub address: String,
    /// Why.
    pub reason: String,
}

/// The HTTP client of node-to-node calls, which it signs.
#[derive(Clone)]
pub struct Peers {
    client: reqwest::Client,
    credential: NodeCredential,
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

impl Peers {
    /// A client signing with `credential`, with a bounded connect; each
    /// call bounds its own wait.
    pub fn new(credential: NodeCredential) -> Peers {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Peers { client, credential }
    }

    /// POSTs `body` to `path` of the node at `address`: the part of a
    /// backend's call (a send, an import, an ingested batch) this node split
    /// off for that node's customers, marked forwarded so that it answers
    /// the part whole.
    pub async fn forward_part(
        &self,
        timeout: Duration,
        address: &str,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, Unreachable> {
        let post = actix_web::http::Method::POST;
        let forwarded = [(FORWARDED, "1")];
        (self.call(
            timeout,
            address,
            &post,
            path,
            Some(Caller::Backend),
            &forwarded,
            body,
        ))
        .await
    }

    /// Sends `method path_and_query` with `body` to the node at `address`,
    /// on behalf of `caller` (whom this node authenticated, if anyone) and
    /// with `headers` set, signed for that address; a node that has not
    /// answered whole within `timeout` is unreachable for this call.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call's parts, named once here"
    )]
    pub async fn call(
        &self,
        timeout: Duration,
        address: &str,
        method: &actix_web::http::Method,
        path_and_query: &str,
        caller: Option<Caller>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, Unreachable> {
        let unreachable = |reason: String| Unreachable {
            address: address.to_string(),
            reason,
        };
        let caller = caller_name(caller);
        let signature = self.credential.sign(&SignedCall {
            method: method.as_str(),
            path_and_query,
            body: &body,
            address,
            caller,
        });
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
            .map_err(|e| unreachable(e.to_string()))?;
        let mut request = self
            .client
            .request(method, format!("http://{address}{path_and_query}"))
            .timeout(timeout)
            .header("content-type", "application/json")
            .header(NODE_SIGNATURE, signature)
            .header(NODE_CALLER, caller)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                metrics::counter!("pushd_cluster_peer_timeouts_total").increment(1);
            }
            unreachable(e.to_string())
        })?;
        let status = StatusCode::from_u16(response.status().as_u16())
            .map_err(|e| unreachable(e.to_string()))?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let partitions = response
            .headers()
            .get(PARTITIONS)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_partitions);
        let replayed = response
            .headers()
            .get(crate::http::IDEMPOTENT_REPLAYED)
            .is_some_and(|v| v.as_bytes() == b"true");
        let body = response
            .bytes()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        metrics::counter!("pushd_cluster_peer_calls_total").increment(1);
        Ok(Answer {
            status,
            content_type,
            partitions,
            replayed,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

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
}

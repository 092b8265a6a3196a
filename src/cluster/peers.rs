//! Calls between nodes, over the same HTTP API clients use: a request for
//! a partition another node serves is forwarded to it as it came (without
//! the client's key: the caller it authenticated goes along), and reads
//! that combine every partition ask each other node for its own partitions
//! only. A node marks what it sends with
//! [`FORWARDED`](crate::topology::wire::FORWARDED) (answer here, do not
//! forward again) or [`SCOPE`](crate::topology::wire::SCOPE) (answer from
//! this node's partitions only), and signs every call with the cluster
//! secret ([`super::trust`]).

use std::time::Duration;

use actix_web::http::StatusCode;
use tokio::io::AsyncWriteExt as _;

use super::trust::NodeCredential;
use crate::topology::Call;
use crate::topology::wire::{
    Answer, IDEMPOTENT_REPLAYED, NODE_CALLER, NODE_SIGNATURE, PARTITIONS, SignedCall, Unreachable,
    caller_name, parse_partitions,
};

/// The HTTP client of node-to-node calls, which it signs.
#[derive(Clone)]
pub struct Client {
    client: reqwest::Client,
    credential: NodeCredential,
}

impl Client {
    /// A client signing with `credential`, with a bounded connect; each
    /// call bounds its own wait.
    pub fn new(credential: NodeCredential) -> Client {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Client { client, credential }
    }

    /// A client signing with the same credential over connections of its
    /// own (driven by the runtime that first uses them).
    pub fn with_own_connections(&self) -> Client {
        Client::new(self.credential.clone())
    }

    /// Sends `call` to the node at its address, on behalf of its caller
    /// (whom this node authenticated, if anyone) and with its headers set,
    /// signed for that address; a node that has not answered whole within
    /// its timeout is unreachable for this call.
    pub async fn call(&self, call: Call<'_>) -> Result<Answer, Unreachable> {
        let address = call.address;
        let unreachable = |reason: String| Unreachable {
            address: address.to_string(),
            reason,
        };
        let response = self.send(call).await?;
        let status = status_of(&response).map_err(unreachable)?;
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
            .get(IDEMPOTENT_REPLAYED)
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

    /// Sends `call` and writes the body of its answer, if 200, into `to`
    /// (a spool file: for bodies too large to hold in memory). Answers the
    /// status and the value of the answer's header `header`, if any.
    pub async fn download(
        &self,
        call: Call<'_>,
        header: &str,
        to: std::fs::File,
    ) -> Result<(StatusCode, Option<String>, std::fs::File), Unreachable> {
        let address = call.address;
        let unreachable = |reason: String| Unreachable {
            address: address.to_string(),
            reason,
        };
        let mut response = self.send(call).await?;
        let status = status_of(&response).map_err(unreachable)?;
        let value = response
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut out = tokio::fs::File::from_std(to);
        if status == StatusCode::OK {
            while let Some(chunk) =
                (response.chunk().await).map_err(|e| unreachable(e.to_string()))?
            {
                out.write_all(&chunk)
                    .await
                    .map_err(|e| unreachable(format!("spool: {e}")))?;
            }
        }
        out.flush()
            .await
            .map_err(|e| unreachable(format!("spool: {e}")))?;
        metrics::counter!("pushd_cluster_peer_calls_total").increment(1);
        Ok((status, value, out.into_std().await))
    }

    /// Signs and sends `call`; answers once its answer's head arrived.
    async fn send(&self, call: Call<'_>) -> Result<reqwest::Response, Unreachable> {
        let Call {
            timeout,
            address,
            method,
            path_and_query,
            caller,
            headers,
            body,
        } = call;
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
        request.send().await.map_err(|e| {
            if e.is_timeout() {
                metrics::counter!("pushd_cluster_peer_timeouts_total").increment(1);
            }
            unreachable(e.to_string())
        })
    }
}

/// An answer's status, as actix names it.
fn status_of(response: &reqwest::Response) -> Result<StatusCode, String> {
    StatusCode::from_u16(response.status().as_u16()).map_err(|e| e.to_string())
}

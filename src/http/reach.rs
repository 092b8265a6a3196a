//! Finding what a request is about: the running partition of a customer or
//! a delivery, the message templates, and reads over every partition this
//! node runs (the delivery log, counters and time series of a message or
//! campaign, summed or merged across partitions).

use std::collections::BTreeMap;
use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{FromRequest, HttpRequest};
use bytes::Bytes;
use futures_util::future::join_all;
use pushd_actors::engine::PartitionTag;
use pushd_actors::model::{Delivery, MessageSpec};
use pushd_actors::tally::Tally;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, AppState};
use crate::cluster::catalog::Templates;
use crate::cluster::peers::SCOPE;
use crate::partition::Partition;
use crate::store::{DeliveryFilter, cursor_of};

/// Where message templates are kept.
pub enum Catalog {
    /// In the single partition's journal and store.
    Local(Arc<Partition>),
    /// In the cluster's templates bucket.
    Shared(Arc<Templates>),
}

/// Runs `read`, a read of the store, on the blocking pool. A read may
/// wait for a drain (which syncs the event log and writes sled) or for a
/// page from disk: on a slow disk it holds a pool thread, never the HTTP
/// worker, which serves every other request of its connections
/// (`/healthz` and reports included).
pub async fn off_workers<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    actix_web::web::block(read).await.map_err(ApiError::from)?
}

impl Catalog {
    /// The message `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<MessageSpec>, ApiError> {
        match self {
            Catalog::Local(p) => {
                let (p, id) = (p.clone(), id.to_string());
                off_workers(move || Ok(p.store.message(&id)?)).await
            }
            Catalog::Shared(t) => t.get(id).await.map_err(cluster_error),
        }
    }

    /// Every message.
    pub async fn all(&self) -> Result<Vec<MessageSpec>, ApiError> {
        match self {
            Catalog::Local(p) => {
                let p = p.clone();
                off_workers(move || Ok(p.store.messages()?)).await
            }
            Catalog::Shared(t) => t.all().await.map_err(cluster_error),
        }
    }

    /// Creates or replaces a message; answers once durable.
    pub async fn put(&self, spec: MessageSpec) -> Result<(), ApiError> {
        match self {
            Catalog::Local(p) => Ok(p.registry.put_message(spec).await?),
            Catalog::Shared(t) => t.put(&spec).await.map_err(cluster_error),
        }
    }
}

/// 503 for a NATS failure: nothing was changed.
fn cluster_error(e: crate::cluster::ClusterError) -> ApiError {
    tracing::error!(error = %e, "cluster call failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unavailable",
        format!("the cluster's NATS did not answer ({e}); nothing was changed, retry in a moment"),
    )
}

/// Whether a read asks for this node's partitions only (another node
/// gathering every node's share), or for all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// This node's partitions only.
    pub local: bool,
}

impl Scope {
    /// Every partition of the cluster.
    pub const ALL: Scope = Scope { local: false };
}

impl FromRequest for Scope {
    type Error = actix_web::Error;
    type Future = Ready<Result<Scope, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let local = req
            .headers()
            .get(SCOPE)
            .is_some_and(|v| v.as_bytes() == b"local");
        ready(Ok(Scope { local }))
    }
}

/// `POST /v1/cluster/tallies` body: what to count.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TalliesAsked {
    /// Messages and campaigns, in order.
    pub counted: Vec<CountedOwned>,
}

/// One message or campaign, owned.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CountedOwned {
    /// A message's counters.
    Message(String),
    /// A campaign's counters.
    Campaign(String),
}

/// `POST /v1/cluster/tallies` answer: one tally per asked item.
#[derive(Debug, Serialize, Deserialize)]
pub struct TalliesAnswer {
    /// In the order asked.
    pub tallies: Vec<Tally>,
}

/// What a counter read is about.
#[derive(Clone, Copy, Debug)]
pub enum Counted<'a> {
    /// One message's deliveries.
    Message(&'a str),
    /// Every delivery of a campaign's messages.
    Campaign(&'a str),
}

impl Counted<'_> {
    /// The same, owned (to move to another thread or node).
    pub fn owned(self) -> CountedOwned {
        match self {
            Counted::Message(id) => CountedOwned::Message(id.to_string()),
            Counted::Campaign(id) => CountedOwned::Campaign(id.to_string()),
        }
    }
}

impl AppState {
    /// The partition `tag` if this node runs it, else 503: it is moving
    /// between nodes, and the client retries.
    fn running(&self, tag: PartitionTag) -> Result<Arc<Partition>, ApiError> {
        self.partitions.get(tag).ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "partition_unavailable",
                format!(
                    "partition {} is not served by this node right now (it is moving between \
                     nodes); retry in a moment",
                    tag.0
                ),
            )
        })
    }

    /// The running partition of customer `id`.
    pub fn customer_partition(&self, id: &str) -> Result<Arc<Partition>, ApiError> {
        self.running(self.partitions.partitioning().of_customer(id))
    }

    /// The running partition of delivery `id`; 404 if the id names no
    /// partition (no such delivery can exist).
    pub fn delivery_partition(&self, id: &str) -> Result<Arc<Partition>, ApiError> {
        let tag = self
            .partitions
            .partitioning()
            .of_delivery(id)
            .ok_or_else(|| ApiError::not_found("delivery", id))?;
        self.running(tag)
    }

    /// The counters of each of `of`, summed over every partition (every
    /// node's, unless `scope` is local).
    pub async fn tallies(&self, of: &[Counted<'_>], scope: Scope) -> Result<Vec<Tally>, ApiError> {
        let owned: Vec<CountedOwned> = of.iter().map(|c| c.owned()).collect();
        let mut sums = self.local_tallies(owned.clone()).await?;
        if scope.local {
            return Ok(sums);
        }
        let asked = TalliesAsked { counted: owned };
        let body = Bytes::from(serde_json::to_vec(&asked).expect("encodes"));
        for answer in self
            .gather(Method::POST, "/v1/cluster/tallies", body)
            .await?
        {
            let remote: TalliesAnswer = serde_json::from_slice(&answer).map_err(peer_garbled)?;
            for (sum, t) in sums.iter_mut().zip(remote.tallies) {
                *sum += t;
            }
        }
        Ok(sums)
    }

    /// A message's or campaign's time series over every partition; `path`
    /// is the request's, asked of the other nodes.
    pub async fn series(
        &self,
        of: Counted<'_>,
        scope: Scope,
        path: &str,
    ) -> Result<Vec<(i64, i64, i64)>, ApiError> {
        let mut points = self.local_series(of.owned()).await?;
        if scope.local {
            return Ok(points);
        }
        for answer in self.gather(Method::GET, path, Bytes::new()).await? {
            let body: Value = serde_json::from_slice(&answer).map_err(peer_garbled)?;
            for p in body["points"].as_array().into_iter().flatten() {
                let n = |k: &str| p[k].as_i64().unwrap_or(0);
                points.push((n("minute"), n("delivered"), n("opened")));
            }
        }
        let mut minutes: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for (minute, delivered, opened) in points {
            let sum = minutes.entry(minute).or_default();
            sum.0 += delivered;
            sum.1 += opened;
        }
        Ok(minutes.into_iter().map(|(m, (d, o))| (m, d, o)).collect())
    }

    /// The other nodes' pages of the delivery log for the same request
    /// (`path_and_query`), and whether any holds more.
    pub async fn peer_deliveries(
        &self,
        path_and_query: &str,
    ) -> Result<(Vec<Value>, bool), ApiError> {
        let mut items = Vec::new();
        let mut more = false;
        for answer in self
            .gather(Method::GET, path_and_query, Bytes::new())
            .await?
        {
            let mut body: Value = serde_json::from_slice(&answer).map_err(peer_garbled)?;
            more |= !body["next_cursor"].is_null();
            if let Value::Array(page) = body["deliveries"].take() {
                items.extend(page);
            }
        }
        Ok((items, more))
    }

    /// Asks every other live node for its partitions' share of a read;
    /// fails if one does not answer (the read would be incomplete).
    async fn gather(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Vec<Bytes>, ApiError> {
        let Some(link) = &self.cluster else {
            return Ok(Vec::new());
        };
        let auth = format!("Bearer {}", link.api_key);
        let calls = link.node.peer_addresses().into_iter().map(|address| {
            let (auth, body, method) = (auth.clone(), body.clone(), method.clone());
            async move {
                let answer = link
                    .peers
                    .call(
                        link.forward_timeout,
                        &address,
                        &method,
                        path,
                        Some(&auth),
                        &[(SCOPE, "local")],
                        body,
                    )
                    .await;
                (address, answer)
            }
        });
        let mut out = Vec::new();
        for (address, answer) in join_all(calls).await {
            match answer {
                Ok(a) if a.status.is_success() => out.push(a.body),
                Ok(a) => {
                    return Err(incomplete(&address, &String::from_utf8_lossy(&a.body)));
                }
                Err(e) => return Err(incomplete(&address, &e.reason)),
            }
        }
        Ok(out)
    }

    /// The counters of each of `of`, summed over this node's partitions
    /// (read off the HTTP workers: counters drain the store first).
    pub async fn local_tallies(&self, of: Vec<CountedOwned>) -> Result<Vec<Tally>, ApiError> {
        let partitions = self.partitions.running();
        off_workers(move || {
            let tally = |c: &CountedOwned| {
                let mut sum = Tally::default();
                for p in &partitions {
                    sum += match c {
                        CountedOwned::Message(id) => p.store.message_metrics(id),
                        CountedOwned::Campaign(id) => p.store.campaign_metrics(id),
                    };
                }
                sum
            };
            Ok(of.iter().map(tally).collect())
        })
        .await
    }

    /// A message's or campaign's time series (minute, delivered, opened)
    /// summed over this node's partitions, oldest minute first (read off
    /// the HTTP workers).
    pub async fn local_series(&self, of: CountedOwned) -> Result<Vec<(i64, i64, i64)>, ApiError> {
        let partitions = self.partitions.running();
        off_workers(move || {
            let mut minutes: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for p in partitions {
                let points = match &of {
                    CountedOwned::Message(id) => p.store.message_timeseries(id),
                    CountedOwned::Campaign(id) => p.store.campaign_timeseries(id),
                };
                for (minute, delivered, opened) in points {
                    let sum = minutes.entry(minute).or_default();
                    sum.0 += delivered;
                    sum.1 += opened;
                }
            }
            Ok(minutes.into_iter().map(|(m, (d, o))| (m, d, o)).collect())
        })
        .await
    }

    /// One page of the delivery log over this node's partitions, newest
    /// first, and the cursor of the next. Every partition pages by delivery
    /// id below the same cursor, so their pages merge into one.
    /// Read off the HTTP workers (the log drains the store first).
    pub async fn local_deliveries(
        &self,
        filter: DeliveryFilter,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<Delivery>, Option<String>), ApiError> {
        let partitions = self.partitions.running();
        off_workers(move || {
            let mut merged = Vec::new();
            let mut more = false;
            for p in partitions {
                let (page, next) = p.store.list_deliveries(&filter, limit, cursor.as_deref())?;
                more |= next.is_some();
                merged.extend(page);
            }
            Ok(newest_page(merged, limit, more, |d| &d.id))
        })
        .await
    }
}

/// 503 for a read another node could not add its share to.
fn incomplete(address: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unavailable",
        format!(
            "node {address} did not add its partitions to this read ({why}); retry in a moment"
        ),
    )
}

/// 502 for a node's answer that does not parse.
fn peer_garbled(e: serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "cluster_unavailable",
        format!("another node answered something unreadable: {e}"),
    )
}

/// The first `limit` of `items` by id, newest (greatest) first, and the
/// cursor after the last one when more remain: `more` says whether some
/// source held more than it gave.
pub fn newest_page<T>(
    mut items: Vec<T>,
    limit: usize,
    more: bool,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    items.sort_by(|a, b| id(b).cmp(id(a)));
    let more = more || items.len() > limit;
    items.truncate(limit);
    let next = match (more, items.last()) {
        (true, Some(last)) => Some(cursor_of(id(last))),
        _ => None,
    };
    (items, next)
}

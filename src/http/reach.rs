//! Finding what a request is about: the running partition of a customer or
//! a delivery, the message templates, and reads over every partition this
//! node runs (the delivery log, counters and time series of a message or
//! campaign, summed or merged across partitions).

use std::collections::{BTreeMap, BTreeSet};
use std::future::{Ready, ready};
use std::ops::AddAssign;
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

use super::{ApiError, AppState, Caller};
use crate::partition::Partition;
use crate::store::{CreatedRange, DeliveryFilter, RangeCount, cursor_of};
use crate::topology::wire::{PARTITIONS, SCOPE, partitions_header};
use crate::topology::{Call, SharedTemplates};

/// Where message templates are kept.
pub enum Catalog {
    /// In the single partition's journal and store.
    Local(Arc<Partition>),
    /// Where every node of a cluster reads and writes them.
    Shared(Arc<dyn SharedTemplates>),
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
            Catalog::Shared(t) => Ok(t.get(id).await?),
        }
    }

    /// Every message.
    pub async fn all(&self) -> Result<Vec<MessageSpec>, ApiError> {
        match self {
            Catalog::Local(p) => {
                let p = p.clone();
                off_workers(move || Ok(p.store.messages()?)).await
            }
            Catalog::Shared(t) => Ok(t.all().await?),
        }
    }

    /// Creates or replaces a message; answers once durable.
    pub async fn put(&self, spec: MessageSpec) -> Result<(), ApiError> {
        match self {
            Catalog::Local(p) => Ok(p.registry.put_message(spec).await?),
            Catalog::Shared(t) => Ok(t.put(&spec).await?),
        }
    }
}

/// Whether a read asks for this node's partitions only (another node
/// gathering every node's share), or for all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// This node's partitions only.
    pub local: bool,
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
    /// Count only their deliveries created in this range (left out when
    /// unbounded, so a node of an earlier release reads the call; with a
    /// range it refuses the field rather than count all time).
    #[serde(default, skip_serializing_if = "CreatedRange::is_all")]
    pub created: CreatedRange,
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
    pub tallies: Vec<Metrics>,
}

/// The metrics of a message or a campaign: its counters, how many of its
/// deliveries failed for each failure-reason code, and (a message's) when
/// its next held delivery is due. (A node of an older release answers no
/// `failure_reasons` and no `next_release_ms`.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// The counters.
    #[serde(flatten)]
    pub tally: Tally,
    /// Deliveries that ended `failed` or `undeliverable`, by reason code.
    #[serde(default)]
    pub failure_reasons: BTreeMap<String, i64>,
    /// When the message's next held (`scheduled`) delivery is due, Unix
    /// ms; none for a campaign, or when none is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_release_ms: Option<i64>,
}

impl AddAssign for Metrics {
    fn add_assign(&mut self, rhs: Metrics) {
        self.tally += rhs.tally;
        for (reason, count) in rhs.failure_reasons {
            *self.failure_reasons.entry(reason).or_default() += count;
        }
        self.next_release_ms = [self.next_release_ms, rhs.next_release_ms]
            .into_iter()
            .flatten()
            .min();
    }
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
    /// `e`, except that on a cluster node a journal failure (the partition
    /// fenced off, or NATS silent) is the 503 a client retries, not a 500.
    pub fn unfenced(&self, e: ApiError) -> ApiError {
        match (self.topology.peers(), e.code) {
            (Some(_), "journal_error") => ApiError::journal_in_cluster(),
            _ => e,
        }
    }

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

    /// The counters of each of `of` (over their deliveries created in
    /// `created`), summed over every partition of the cluster (or lacking
    /// those `partial` allows).
    pub async fn tallies(
        &self,
        of: &[Counted<'_>],
        created: CreatedRange,
        partial: Partial,
    ) -> Result<Merged<Vec<Metrics>>, ApiError> {
        let owned: Vec<CountedOwned> = of.iter().map(|c| c.owned()).collect();
        let (mut sums, here) = self.local_tallies(owned.clone(), created).await?;
        let mut shares = vec![here];
        let asked = TalliesAsked {
            counted: owned,
            created,
        };
        let body = Bytes::from(serde_json::to_vec(&asked).expect("encodes"));
        for share in self
            .gather(Method::POST, "/v1/cluster/tallies", body, partial)
            .await?
        {
            let remote: TalliesAnswer =
                serde_json::from_slice(&share.body).map_err(peer_garbled)?;
            for (sum, m) in sums.iter_mut().zip(remote.tallies) {
                *sum += m;
            }
            shares.push(share.partitions);
        }
        let missing = self.missing(shares, partial)?;
        Ok(Merged {
            value: sums,
            missing,
        })
    }

    /// A message's or campaign's time series (over its deliveries created
    /// in `created`) over every partition (or lacking those `partial`
    /// allows); `path_and_query` is the request's, asked of the other nodes.
    pub async fn series(
        &self,
        of: Counted<'_>,
        created: CreatedRange,
        path_and_query: &str,
        partial: Partial,
    ) -> Result<Merged<Vec<(i64, i64, i64)>>, ApiError> {
        let (mut points, here) = self.local_series(of.owned(), created).await?;
        let mut shares = vec![here];
        for share in self
            .gather(Method::GET, path_and_query, Bytes::new(), partial)
            .await?
        {
            let body: Value = serde_json::from_slice(&share.body).map_err(peer_garbled)?;
            for p in body["points"].as_array().into_iter().flatten() {
                let n = |k: &str| p[k].as_i64().unwrap_or(0);
                points.push((n("minute"), n("delivered"), n("opened")));
            }
            shares.push(share.partitions);
        }
        let missing = self.missing(shares, partial)?;
        let mut minutes: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for (minute, delivered, opened) in points {
            let sum = minutes.entry(minute).or_default();
            sum.0 += delivered;
            sum.1 += opened;
        }
        Ok(Merged {
            value: minutes.into_iter().map(|(m, (d, o))| (m, d, o)).collect(),
            missing,
        })
    }

    /// The other nodes' pages of the delivery log for the same request
    /// (`path_and_query`), whether any holds more, the sum of their totals
    /// (`None` if a node of an earlier release answered none), and the
    /// partitions each page includes.
    pub async fn peer_deliveries(
        &self,
        path_and_query: &str,
        partial: Partial,
    ) -> Result<PeerPages, ApiError> {
        let mut pages = PeerPages {
            items: Vec::new(),
            more: false,
            total: Some(0),
            shares: Vec::new(),
        };
        for share in self
            .gather(Method::GET, path_and_query, Bytes::new(), partial)
            .await?
        {
            let mut body: Value = serde_json::from_slice(&share.body).map_err(peer_garbled)?;
            pages.more |= !body["next_cursor"].is_null();
            if let Value::Array(page) = body["deliveries"].take() {
                pages.items.extend(page);
            }
            pages.total = pages.total.zip(body["total"].as_u64()).map(|(a, b)| a + b);
            pages.shares.push(share.partitions);
        }
        Ok(pages)
    }

    /// The partitions of the cluster none of `shares` (the partitions each
    /// answer of a merged read included) covers, if `partial` allows a read
    /// lacking some; else 503 unless every partition is covered. A
    /// partition covered twice (it moved during the read) is counted twice:
    /// 503 either way.
    pub fn missing(
        &self,
        shares: Vec<BTreeSet<u16>>,
        partial: Partial,
    ) -> Result<Vec<u16>, ApiError> {
        let mut covered = BTreeSet::new();
        for share in shares {
            for tag in share {
                if !covered.insert(tag) {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "cluster_unavailable",
                        format!(
                            "partition {tag} moved between nodes during this read and was \
                             counted twice; retry in a moment"
                        ),
                    ));
                }
            }
        }
        let count = self.partitions.partitioning().count();
        let missing: Vec<u16> = (0..count).filter(|t| !covered.contains(t)).collect();
        if missing.is_empty() || partial.0 {
            if !missing.is_empty() {
                metrics::counter!("pushd_cluster_partial_reads_total").increment(1);
            }
            return Ok(missing);
        }
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            format!(
                "no node answered for partitions {missing:?} (moving between nodes, or their \
                 node did not answer); retry in a moment, or pass partial=true for the figures \
                 of the others"
            ),
        ))
    }

    /// Asks every other node for its partitions' share of a read, each
    /// answer with the partitions it includes; a node that does not answer
    /// fails the read (it would be incomplete) unless `partial` allows it.
    async fn gather(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        partial: Partial,
    ) -> Result<Vec<Share>, ApiError> {
        let Some(peers) = self.topology.peers() else {
            return Ok(Vec::new());
        };
        let calls = peers.peer_addresses().into_iter().map(|address| {
            let (body, method) = (body.clone(), method.clone());
            async move {
                let call = Call {
                    timeout: peers.forward_timeout(),
                    address: &address,
                    method: &method,
                    path_and_query: path,
                    caller: Some(Caller::Backend),
                    headers: &[(SCOPE, "local")],
                    body,
                };
                let answer = peers.call(call).await;
                (address, answer)
            }
        });
        let mut out = Vec::new();
        for (address, answer) in join_all(calls).await {
            let refusal = match answer {
                Ok(a) if a.status.is_success() => {
                    // A node of an earlier release names no partitions:
                    // those it held a lease of, as last read.
                    let partitions = a.partitions.unwrap_or_else(|| peers.held_by(&address));
                    out.push(Share {
                        body: a.body,
                        partitions,
                    });
                    continue;
                }
                Ok(a) => String::from_utf8_lossy(&a.body).into_owned(),
                Err(e) => e.reason,
            };
            if !partial.0 {
                return Err(incomplete(&address, &refusal));
            }
            tracing::debug!(address, refusal, "a node left out of a partial read");
        }
        Ok(out)
    }

    /// The counters of each of `of` (over their deliveries created in
    /// `created`), summed over this node's partitions, and which those are
    /// (read off the HTTP workers: counters drain the store first, and a
    /// range is a scan).
    pub async fn local_tallies(
        &self,
        of: Vec<CountedOwned>,
        created: CreatedRange,
    ) -> Result<(Vec<Metrics>, BTreeSet<u16>), ApiError> {
        let partitions = self.partitions.running();
        let tags = tags_of(&partitions);
        let sums = off_workers(move || {
            let tally = |c: &CountedOwned| -> Result<Metrics, ApiError> {
                let mut sum = Metrics::default();
                for p in &partitions {
                    sum += if created.is_all() {
                        live_metrics(p, c)
                    } else {
                        let count = in_range(p, c, &created)?;
                        Metrics {
                            tally: count.tally,
                            failure_reasons: count.failure_reasons,
                            next_release_ms: None,
                        }
                    };
                }
                // Whatever the range: it says what is still to go out.
                if let CountedOwned::Message(id) = c {
                    let held = partitions.iter();
                    sum.next_release_ms =
                        held.filter_map(|p| p.registry.held().next_due_of(id)).min();
                }
                Ok(sum)
            };
            of.iter().map(tally).collect()
        })
        .await?;
        Ok((sums, tags))
    }

    /// A message's or campaign's time series (minute, delivered, opened)
    /// summed over this node's partitions, oldest minute first (read off
    /// the HTTP workers), and which partitions those are.
    pub async fn local_series(
        &self,
        of: CountedOwned,
        created: CreatedRange,
    ) -> Result<(Vec<(i64, i64, i64)>, BTreeSet<u16>), ApiError> {
        let partitions = self.partitions.running();
        let tags = tags_of(&partitions);
        let points = off_workers(move || {
            let mut minutes: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for p in partitions {
                let points = match &of {
                    _ if !created.is_all() => in_range(&p, &of, &created)?.series,
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
        .await?;
        Ok((points, tags))
    }

    /// One page of the delivery log over this node's partitions, newest
    /// first, the cursor of the next, and which partitions those are.
    /// Every partition pages by delivery id below the same cursor, so their
    /// pages merge into one. Read off the HTTP workers (the log drains the
    /// store first).
    pub async fn local_deliveries(
        &self,
        filter: DeliveryFilter,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<(Vec<Delivery>, Option<String>, BTreeSet<u16>), ApiError> {
        let partitions = self.partitions.running();
        let tags = tags_of(&partitions);
        let (page, next) = off_workers(move || {
            let mut merged = Vec::new();
            let mut more = false;
            for p in partitions {
                let (page, next) = p.store.list_deliveries(&filter, limit, cursor.as_deref())?;
                more |= next.is_some();
                merged.extend(page);
            }
            Ok(newest_page(merged, limit, more, |d| &d.id))
        })
        .await?;
        Ok((page, next, tags))
    }

    /// How many deliveries `filter` matches over this node's partitions
    /// (read off the HTTP workers).
    pub async fn local_delivery_count(&self, filter: DeliveryFilter) -> Result<u64, ApiError> {
        let partitions = self.partitions.running();
        off_workers(move || {
            let mut total = 0;
            for p in partitions {
                total += p.store.count_deliveries(&filter)?;
            }
            Ok(total)
        })
        .await
    }
}

/// The live metrics of `of` in partition `p`.
fn live_metrics(p: &Partition, of: &CountedOwned) -> Metrics {
    match of {
        CountedOwned::Message(id) => Metrics {
            tally: p.store.message_metrics(id),
            failure_reasons: p.store.message_failure_reasons(id),
            next_release_ms: None,
        },
        CountedOwned::Campaign(id) => Metrics {
            tally: p.store.campaign_metrics(id),
            failure_reasons: p.store.campaign_failure_reasons(id),
            next_release_ms: None,
        },
    }
}

/// What `of`'s deliveries created in `created` count in partition `p`.
fn in_range(
    p: &Partition,
    of: &CountedOwned,
    created: &CreatedRange,
) -> Result<RangeCount, ApiError> {
    Ok(match of {
        CountedOwned::Message(id) => p.store.message_in_range(id, created)?,
        CountedOwned::Campaign(id) => p.store.campaign_in_range(id, created)?,
    })
}

/// The other nodes' pages of one page of the delivery log.
pub struct PeerPages {
    /// Their deliveries, as they answered them.
    pub items: Vec<Value>,
    /// Whether any holds more than it gave.
    pub more: bool,
    /// The sum of their totals; `None` if one answered none.
    pub total: Option<u64>,
    /// The partitions each page includes.
    pub shares: Vec<BTreeSet<u16>>,
}

/// The tags of `partitions`.
fn tags_of(partitions: &[Arc<Partition>]) -> BTreeSet<u16> {
    partitions.iter().map(|p| p.tag.0).collect()
}

/// One node's answer to a gathered read and the partitions it includes.
struct Share {
    body: Bytes,
    partitions: BTreeSet<u16>,
}

/// The figures of a read over every partition, and the partitions whose
/// share they lack (only where the client allowed that with
/// `?partial=true`).
pub struct Merged<T> {
    /// The figures.
    pub value: T,
    /// Partitions left out, in order.
    pub missing: Vec<u16>,
}

/// `?partial=` of a merged read: whether an answer may lack partitions,
/// naming them, instead of answering 503.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Partial(pub bool);

impl Partial {
    /// The `partial` query value, if given; 400 unless `true` or `false`.
    pub fn parse(value: Option<&str>) -> Result<Partial, ApiError> {
        super::query_flag(value, "partial").map(Partial)
    }

    /// Adds `partial` and `missing_partitions` to `body` when the client
    /// asked for a partial read.
    pub fn mark(self, body: &mut Value, missing: &[u16]) {
        if self.0 {
            body["partial"] = Value::Bool(!missing.is_empty());
            body["missing_partitions"] = serde_json::json!(missing);
        }
    }
}

impl FromRequest for Partial {
    type Error = ApiError;
    type Future = Ready<Result<Partial, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let value = form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(k, _)| k == "partial")
            .map(|(_, v)| v.into_owned());
        ready(Partial::parse(value.as_deref()))
    }
}

/// A local-scope answer (this node's share of a gathered read) naming the
/// partitions it includes.
pub fn local_share(partitions: &BTreeSet<u16>) -> actix_web::HttpResponseBuilder {
    let mut res = actix_web::HttpResponse::Ok();
    res.insert_header((PARTITIONS, partitions_header(partitions)));
    res
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn partial_is_true_or_false_and_marks_only_the_reads_that_ask() {
        assert_eq!(Partial::parse(None).unwrap(), Partial(false));
        assert_eq!(Partial::parse(Some("false")).unwrap(), Partial(false));
        assert_eq!(Partial::parse(Some("true")).unwrap(), Partial(true));
        let e = Partial::parse(Some("yes")).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "invalid_field"));
        assert!(
            e.message.contains("partial must be true or false"),
            "{}",
            e.message
        );

        let mut body = json!({"sends": 3});
        Partial(false).mark(&mut body, &[2]);
        assert_eq!(body, json!({"sends": 3}));
        Partial(true).mark(&mut body, &[]);
        assert_eq!(
            body,
            json!({"sends": 3, "partial": false, "missing_partitions": []})
        );
        Partial(true).mark(&mut body, &[2, 5]);
        assert_eq!(
            body,
            json!({"sends": 3, "partial": true, "missing_partitions": [2, 5]})
        );
    }

    /// A range reaches the other nodes with the tallies asked of them; an
    /// unbounded one is left out, so a node of an earlier release (which
    /// refuses unknown fields) reads the call as before, and refuses a
    /// ranged one rather than answer all time.
    #[test]
    fn tallies_asked_carry_their_range_to_the_other_nodes() {
        let counted = vec![CountedOwned::Message("m".into())];
        let all = TalliesAsked {
            counted: counted.clone(),
            created: CreatedRange::default(),
        };
        assert_eq!(
            serde_json::to_value(&all).unwrap(),
            json!({"counted": [{"message": "m"}]})
        );
        let created = CreatedRange {
            from: Some(100),
            to: None,
        };
        let ranged = serde_json::to_value(TalliesAsked { counted, created }).unwrap();
        assert_eq!(ranged["created"], json!({"from": 100}));
        let read: TalliesAsked = serde_json::from_value(ranged).unwrap();
        assert_eq!(read.created, created);
    }

    /// Nodes' shares sum reason by reason, the next release is the earliest
    /// any node holds, and a node of an older release (its tallies without
    /// `failure_reasons` or `next_release_ms`) and this one read each
    /// other's answers.
    #[test]
    fn failure_reasons_merge_across_nodes_of_either_release() {
        let share = |failed: i64, reasons: &[(&str, i64)]| {
            let mut tally = Tally::default();
            tally.message.failed = failed;
            Metrics {
                tally,
                failure_reasons: reasons.iter().map(|&(r, n)| (r.to_owned(), n)).collect(),
                next_release_ms: None,
            }
        };
        let mut sum = share(3, &[("no_devices", 1), ("customer_unsubscribed", 2)]);
        sum.next_release_ms = Some(9_000);
        let mut there = share(4, &[("customer_unsubscribed", 4)]);
        there.next_release_ms = Some(5_000);
        let here = serde_json::to_value(TalliesAnswer {
            tallies: vec![there],
        })
        .unwrap();
        let older: Vec<Tally> = serde_json::from_value(here["tallies"].clone()).unwrap();
        assert_eq!(
            older[0].message.failed, 4,
            "an older node reads the counters"
        );
        let remote: TalliesAnswer = serde_json::from_value(here).unwrap();
        let from_older: TalliesAnswer =
            serde_json::from_value(json!({"tallies": [share(1, &[]).tally]})).unwrap();
        for m in remote.tallies.into_iter().chain(from_older.tallies) {
            sum += m;
        }
        assert_eq!(sum.tally.message.failed, 8);
        let expected = [("customer_unsubscribed", 6), ("no_devices", 1)];
        let expected: BTreeMap<String, i64> =
            expected.iter().map(|&(r, n)| (r.to_owned(), n)).collect();
        assert_eq!(sum.failure_reasons, expected);
        assert_eq!(sum.next_release_ms, Some(5_000));
    }
}

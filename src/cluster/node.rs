//! A cluster node: the loop that keeps its leases and its share of the
//! partitions, and the taking over and dropping of one partition.
//!
//! Every tick (a fifth of the lease time) a node renews its member key and
//! its leases, reads who holds every lease, and then evens the load: with
//! `n` live members each holds at most `ceil(partitions / n)`; a node under
//! that takes free partitions (a lapsed lease is free), a node over it
//! hands one back (its last snapshot uploaded first). Taking a partition
//! over loads its latest snapshot, reads the journal after it (fencing off
//! the previous writer), replays it into the store and resumes the unsettled
//! sends; only then does the node serve it. A lease found lost, or a journal
//! that failed (fenced), drops the partition at once; a renewal NATS did not
//! answer is tried again until the lease would lapse. A released lease or a
//! member leaving, seen by watching the buckets, starts a review at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use futures_util::future::join_all;
use pushd_actors::engine::{EngineConfig, PartitionTag};
use pushd_actors::ports::{Clock, Provider, Renderer};
use pushd_actors::registry::Shards;
use serde::Serialize;
use tokio::sync::Notify;

mod tenure;

use super::journal::StreamJournal;
use super::lease::{self, Held, Holder, Renewal};
use super::{ClusterError, Nats, Settings, key_of, nats, scan};
use crate::partition::Partitions;
use crate::store::{Retention, SledStore, Snapshotter};

/// What a partition's engine is built from, besides its journal and store.
#[derive(Clone)]
pub struct EngineParts {
    /// Sends pushes.
    pub provider: Arc<dyn Provider>,
    /// Renders templates.
    pub renderer: Arc<dyn Renderer>,
    /// Tells the time.
    pub clock: Arc<dyn Clock>,
    /// Tuning.
    pub config: EngineConfig,
    /// The actor threads every partition shares.
    pub shards: Arc<Shards>,
    /// How long each partition's snapshot keeps deliveries.
    pub retention: Retention,
    /// Where each partition's delivery events are published.
    pub events: super::events::EventStream,
    /// The message templates (the cluster's bucket): what a scheduled
    /// delivery renders when released.
    pub catalog: Arc<dyn pushd_actors::ports::Catalog>,
}

/// A partition this node holds the lease of.
struct Owned {
    held: Held,
    /// The revision the lease was taken at: names this tenure.
    epoch: u64,
    renewed_at: Instant,
    running: Option<Running>,
}

/// A partition this node serves.
struct Running {
    journal: Arc<StreamJournal>,
    store: Arc<SledStore>,
    snapshotter: Snapshotter,
    uploader: tokio::task::JoinHandle<()>,
    dir: PathBuf,
}

/// A cluster node.
pub struct Node {
    settings: Settings,
    nats: Nats,
    me: Holder,
    partitions: Arc<Partitions>,
    engine: EngineParts,
    data_dir: PathBuf,
    cache_bytes: u64,
    runtime: tokio::runtime::Handle,
    owned: Mutex<BTreeMap<PartitionTag, Owned>>,
    /// Who holds each lease, as last read.
    holders: RwLock<BTreeMap<PartitionTag, Holder>>,
    /// Live members and their addresses, as last read.
    members: RwLock<BTreeMap<String, String>>,
    /// Partitions this node refused to serve because a newer pushd wrote
    /// them, with why (cleared once it serves them).
    refused: Mutex<BTreeMap<u16, String>>,
    /// Starts a review before the next tick.
    wake: Arc<Notify>,
}

/// A node's view, for `/healthz`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// This node.
    pub node: String,
    /// Partitions in the cluster.
    pub partitions: u16,
    /// Partitions this node serves.
    pub serving: Vec<u16>,
    /// Partitions whose lease this node holds while it loads them.
    pub loading: Vec<u16>,
    /// Live members.
    pub members: Vec<String>,
    /// Partitions no node holds a lease of.
    pub free: Vec<u16>,
    /// The oldest lease renewal of this node, ms ago.
    pub oldest_renewal_ms: u64,
    /// Partitions this node refused because a newer pushd wrote records
    /// or a snapshot it cannot read, with why: a newer node must serve
    /// them (see docs/cluster.md on rolling upgrades).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<u16, String>,
}

impl Node {
    /// A node over `nats`; [`Node::run`] starts it.
    #[allow(
        clippy::too_many_arguments,
        reason = "the node's parts, named once here"
    )]
    pub fn new(
        settings: Settings,
        nats: Nats,
        partitions: Arc<Partitions>,
        engine: EngineParts,
        data_dir: PathBuf,
        cache_bytes: u64,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Node> {
        let me = Holder {
            node: settings.node.clone(),
            address: settings.advertise.clone(),
        };
        Arc::new(Node {
            settings,
            nats,
            me,
            partitions,
            engine,
            data_dir,
            cache_bytes,
            runtime,
            owned: Mutex::new(BTreeMap::new()),
            holders: RwLock::new(BTreeMap::new()),
            members: RwLock::new(BTreeMap::new()),
            refused: Mutex::new(BTreeMap::new()),
            wake: Arc::new(Notify::new()),
        })
    }

    fn owned(&self) -> MutexGuard<'_, BTreeMap<PartitionTag, Owned>> {
        self.owned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The address of the node holding partition `tag`'s lease, unless it
    /// is this one or none holds it.
    pub fn owner_address(&self, tag: PartitionTag) -> Option<String> {
        let holders = self.holders.read().unwrap_or_else(PoisonError::into_inner);
        holders
            .get(&tag)
            .filter(|h| h.node != self.me.node)
            .map(|h| h.address.clone())
    }

    /// [`Node::owner_address`] read afresh from the lease (when the view of
    /// the last tick is out of date: a partition just moved).
    pub async fn current_owner_address(&self, tag: PartitionTag) -> Option<String> {
        let holder = lease::holder(&self.nats.leases, tag).await.ok()?;
        let mut holders = self.holders.write().unwrap_or_else(PoisonError::into_inner);
        match &holder {
            Some(h) => holders.insert(tag, h.clone()),
            None => holders.remove(&tag),
        };
        holder.filter(|h| h.node != self.me.node).map(|h| h.address)
    }

    /// The addresses of the other nodes: live members, and any node still
    /// holding a lease (a node leaving hands its partitions back after it
    /// left the members).
    pub fn peer_addresses(&self) -> Vec<String> {
        let mut addresses: BTreeSet<String> = {
            let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
            members
                .iter()
                .filter(|(node, _)| **node != self.me.node)
                .map(|(_, address)| address.clone())
                .collect()
        };
        let holders = self.holders.read().unwrap_or_else(PoisonError::into_inner);
        addresses.extend(
            holders
                .values()
                .filter(|h| h.node != self.me.node)
                .map(|h| h.address.clone()),
        );
        addresses.into_iter().collect()
    }

    /// The partitions whose lease the node at `address` holds, as last
    /// read.
    pub fn held_by(&self, address: &str) -> BTreeSet<u16> {
        let holders = self.holders.read().unwrap_or_else(PoisonError::into_inner);
        holders
            .iter()
            .filter(|(_, h)| h.address == address)
            .map(|(tag, _)| tag.0)
            .collect()
    }

    /// What this node holds and sees.
    pub fn status(&self) -> Status {
        let owned = self.owned();
        let serving = owned
            .iter()
            .filter(|(_, o)| o.running.is_some())
            .map(|(t, _)| t.0)
            .collect();
        let loading = owned
            .iter()
            .filter(|(_, o)| o.running.is_none())
            .map(|(t, _)| t.0)
            .collect();
        let oldest = owned
            .values()
            .map(|o| o.renewed_at.elapsed())
            .max()
            .unwrap_or_default();
        drop(owned);
        let holders = self.holders.read().unwrap_or_else(PoisonError::into_inner);
        let free = (0..self.settings.partitions)
            .filter(|p| !holders.contains_key(&PartitionTag(*p)))
            .collect();
        drop(holders);
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        Status {
            node: self.me.node.clone(),
            partitions: self.settings.partitions,
            serving,
            loading,
            members: members.keys().cloned().collect(),
            free,
            refused: self
                .refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            oldest_renewal_ms: oldest.as_millis() as u64,
        }
    }

    /// Runs the node's loop until the runtime stops: a review every tick,
    /// and at once when a lease is released or a member leaves (seen by
    /// watching the buckets), so released partitions are taken promptly, or
    /// a partition's journal stopped (fenced off: dropped at once).
    pub async fn run(self: Arc<Self>) {
        let tick = self.settings.tick();
        self.runtime.spawn(self.clone().watch_leases());
        self.runtime.spawn(self.clone().watch_members());
        if let Err(e) = self.announce().await {
            tracing::warn!(error = %e, "cannot announce this node");
        }
        // A cluster starting: let the other nodes starting now announce
        // themselves before taking a share, so the first one up does not
        // take everything. A node joining a running cluster (leases held)
        // takes its share at once: the others hand partitions back to it
        // as soon as they see it.
        let leases = lease::holders(&self.nats.leases, self.settings.partitions).await;
        if leases.map_or(true, |held| held.is_empty()) {
            tokio::time::sleep(tick * 2).await;
        }
        loop {
            let started = Instant::now();
            if let Err(e) = self.review().await {
                tracing::warn!(error = %e, "cluster review failed; trying again");
            }
            if started.elapsed() > tick * 2 {
                tracing::warn!(took = ?started.elapsed(), "a cluster review took long");
            }
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Follows the lease bucket: notes each holder as it writes (so calls
    /// are forwarded to a partition's new owner at once) and wakes the loop
    /// when a lease is released.
    async fn watch_leases(self: Arc<Self>) {
        loop {
            match self.nats.leases.watch_all().await {
                Ok(mut changes) => {
                    while let Some(change) = changes.next().await {
                        let Ok(entry) = change else { break };
                        let Some(tag) = lease::tag_of(&entry.key) else {
                            continue;
                        };
                        let holder = (entry.operation == kv::Operation::Put)
                            .then(|| serde_json::from_slice::<Holder>(&entry.value).ok())
                            .flatten();
                        let mut holders =
                            self.holders.write().unwrap_or_else(PoisonError::into_inner);
                        match holder {
                            Some(h) => {
                                holders.insert(tag, h);
                            }
                            None => {
                                holders.remove(&tag);
                                drop(holders);
                                self.wake.notify_one();
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot watch the leases"),
            }
            tokio::time::sleep(self.settings.tick()).await;
        }
    }

    /// Follows the member bucket: wakes the loop when a member leaves (the
    /// others' share grows).
    async fn watch_members(self: Arc<Self>) {
        loop {
            match self.nats.members.watch_all().await {
                Ok(mut changes) => {
                    while let Some(change) = changes.next().await {
                        let Ok(entry) = change else { break };
                        if entry.operation != kv::Operation::Put {
                            self.wake.notify_one();
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot watch the members"),
            }
            tokio::time::sleep(self.settings.tick()).await;
        }
    }

    /// Renews this node's member key.
    async fn announce(&self) -> Result<(), ClusterError> {
        let address = self.me.address.clone().into_bytes();
        self.nats
            .members
            .put(key_of(&self.me.node), address.into())
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// One tick: membership, renewals, and evening the load.
    async fn review(self: &Arc<Self>) -> Result<(), ClusterError> {
        // Renewals first: nothing else failing this tick may cost a lease.
        self.renew_all().await;
        self.announce().await?;
        self.read_members().await?;
        let holders = lease::holders(&self.nats.leases, self.settings.partitions).await?;
        *self.holders.write().unwrap_or_else(PoisonError::into_inner) = holders.clone();
        let members = self
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
            .max(1);
        let share = usize::from(self.settings.partitions).div_ceil(members);
        let held: Vec<PartitionTag> = self.owned().keys().copied().collect();
        if held.len() > share {
            // Only a partition already served: one still loading would fence
            // off the node that takes it next.
            let served = self
                .owned()
                .iter()
                .rev()
                .find(|(_, o)| o.running.is_some())
                .map(|(t, _)| *t);
            if let Some(tag) = served {
                tracing::info!(
                    partition = tag.0,
                    share,
                    "handing a partition back to even the load"
                );
                self.hand_back(tag).await;
            }
            return Ok(());
        }
        let mut room = share - held.len();
        for tag in (0..self.settings.partitions).map(PartitionTag) {
            if room == 0 {
                break;
            }
            if holders.contains_key(&tag) || held.contains(&tag) {
                continue;
            }
            if let Some(won) = lease::acquire(&self.nats.leases, tag, &self.me).await? {
                room -= 1;
                self.owned().insert(
                    tag,
                    Owned {
                        held: won,
                        epoch: won.revision,
                        renewed_at: Instant::now(),
                        running: None,
                    },
                );
                let node = self.clone();
                self.runtime.spawn(async move { node.take_over(won).await });
            }
        }
        Ok(())
    }

    async fn read_members(&self) -> Result<(), ClusterError> {
        let mut members = BTreeMap::new();
        for (key, address) in scan(&self.nats.members).await? {
            let node = base64_name(&key).unwrap_or(key);
            members.insert(node, String::from_utf8_lossy(&address).into_owned());
        }
        members.insert(self.me.node.clone(), self.me.address.clone());
        *self.members.write().unwrap_or_else(PoisonError::into_inner) = members;
        Ok(())
    }

    /// Renews every held lease; drops the partitions whose lease was lost
    /// or would lapse unrenewed, or whose journal failed.
    async fn renew_all(self: &Arc<Self>) {
        let held: Vec<(Held, Instant, bool)> = self
            .owned()
            .values()
            .map(|o| {
                let failed = o
                    .running
                    .as_ref()
                    .is_some_and(|r| r.journal.failure().is_some());
                (o.held, o.renewed_at, failed)
            })
            .collect();
        let renewals = held
            .iter()
            .map(|(h, renewed_at, _)| self.renew_until_lapse(*h, *renewed_at));
        let results = join_all(renewals).await;
        for ((held, renewed_at, failed), (result, sent)) in held.into_iter().zip(results) {
            match result {
                Renewal::Renewed(revision) if !failed => {
                    if let Some(o) = self.owned().get_mut(&held.tag) {
                        o.held.revision = revision;
                        o.renewed_at = sent;
                    }
                }
                Renewal::Renewed(revision) => {
                    tracing::warn!(
                        partition = held.tag.0,
                        "journal failed; dropping the partition"
                    );
                    self.retire(held.tag);
                    let held = Held { revision, ..held };
                    lease::release(&self.nats.leases, held).await;
                }
                Renewal::Lost => {
                    tracing::warn!(partition = held.tag.0, "lease lost; dropping the partition");
                    metrics::counter!("pushd_cluster_leases_lost_total").increment(1);
                    self.retire(held.tag);
                }
                Renewal::Unknown(e) if renewed_at.elapsed() >= self.settings.lease => {
                    tracing::warn!(partition = held.tag.0, error = %e, "lease not renewed in time; dropping the partition");
                    metrics::counter!("pushd_cluster_leases_lost_total").increment(1);
                    self.retire(held.tag);
                }
                Renewal::Unknown(e) => {
                    tracing::warn!(partition = held.tag.0, error = %e, "lease renewal failed; trying again next tick");
                }
            }
        }
        metrics::gauge!("pushd_cluster_partitions_served").set(self.partitions.tags().len() as f64);
        let owned = self.owned();
        let oldest = owned.values().map(|o| o.renewed_at.elapsed()).max();
        metrics::gauge!("pushd_cluster_leases_held").set(owned.len() as f64);
        metrics::gauge!("pushd_cluster_lease_renewal_age_seconds")
            .set(oldest.unwrap_or_default().as_secs_f64());
    }

    /// Renews `held` (last renewed at `renewed_at`); while NATS does not
    /// answer (a server lost, its streams electing new leaders) tries again
    /// after short pauses, the client reconnecting to another server, until
    /// the lease would lapse. Answers the outcome and when the renewal that
    /// decided it was sent (the lease runs from no earlier).
    async fn renew_until_lapse(&self, held: Held, renewed_at: Instant) -> (Renewal, Instant) {
        let mut pause = RENEW_RETRY_PAUSE;
        // When the first try whose answer was lost was sent.
        let mut unanswered: Option<Instant> = None;
        loop {
            let sent = Instant::now();
            match lease::renew(&self.nats.leases, held, &self.me).await {
                // The try whose answer was lost may have been stored: then
                // the lease is still this node's, at that revision.
                Renewal::Lost if let Some(first) = unanswered => {
                    let stored = lease::mine(&self.nats.leases, held.tag, &self.me).await;
                    return match stored {
                        // Stored no earlier than that try was sent.
                        Ok(Some(revision)) => (Renewal::Renewed(revision), first),
                        Ok(None) => (Renewal::Lost, sent),
                        Err(e) => (Renewal::Unknown(e.to_string()), sent),
                    };
                }
                Renewal::Unknown(e) if renewed_at.elapsed() + pause < self.settings.lease => {
                    unanswered.get_or_insert(sent);
                    tracing::info!(partition = held.tag.0, error = %e, "lease renewal failed; trying again");
                    metrics::counter!("pushd_cluster_lease_renewal_retries_total").increment(1);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RENEW_RETRY_PAUSE * 8);
                }
                outcome => return (outcome, sent),
            }
        }
    }

    /// Leaves the members, then hands every partition back (last snapshot
    /// uploaded, lease released): what a node does on SIGTERM. The others
    /// count it gone at once, so their share grows, and they take each
    /// partition as its lease is released instead of after the lease time.
    pub async fn leave(&self) {
        if let Err(e) = self.nats.members.delete(key_of(&self.me.node)).await {
            tracing::warn!(error = %e, "cannot leave the members; the key lapses by itself");
        }
        // A partition still loading would fence off the node that takes it
        // next: handed back once served (or given up). Nothing renews the
        // leases now, so for half a lease at most.
        let loading_since = Instant::now();
        while self.owned().values().any(|o| o.running.is_none()) {
            if loading_since.elapsed() > self.settings.lease / 2 {
                tracing::warn!("partitions still loading; handing them back as they are");
                break;
            }
            tokio::time::sleep(LOADING_POLL).await;
        }
        let tags: Vec<PartitionTag> = self.owned().keys().copied().collect();
        let hand_backs = tags.into_iter().map(|tag| self.hand_back(tag));
        join_all(hand_backs).await;
    }
}

/// How often a node leaving looks whether its partitions finished loading.
const LOADING_POLL: Duration = Duration::from_millis(50);

/// The first pause before a failed lease renewal is tried again; later
/// ones double, up to eight times this.
const RENEW_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The node name a member key encodes.
fn base64_name(key: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key)
        .ok()?;
    String::from_utf8(bytes).ok()
}

//! One partition's tenure on a node: taking it over (snapshot, journal,
//! replay, resumed sends), serving it (snapshot uploads), and giving it up,
//! at once when its lease is lost or gracefully when handing it back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushd_actors::engine::{PartitionTag, Ports};
use pushd_actors::ports::{OsEntropy, Position, Store};
use pushd_actors::registry::Registry;

use super::super::events::PartitionEvents;
use super::super::journal::{Place, StreamJournal};
use super::super::lease::{self, Held};
use super::super::{ClusterError, Nats, key_of, snapshots};
use super::{Node, Running};
use crate::partition::Partition;
use crate::store::{SledStore, Snapshotter, Timing};

impl Node {
    /// Stops serving `tag` at once: requests for it are refused (503) or
    /// forwarded, its journal refuses every later write.
    pub(super) fn drop_partition(&self, tag: PartitionTag) -> Option<Running> {
        // The tenure ends first: a takeover finishing now sees it gone and
        // stops serving what it just loaded.
        let owned = self.owned().remove(&tag);
        self.partitions.remove(tag);
        let owned = owned?;
        let running = owned.running?;
        running.journal.close();
        running.uploader.abort();
        Some(running)
    }

    /// Drops partition `tag` and cleans up after it in the background.
    pub(super) fn retire(&self, tag: PartitionTag) {
        if let Some(running) = self.drop_partition(tag) {
            retire(running);
        }
    }

    /// Hands partition `tag` back: stops serving it, lets its journal
    /// publish what it holds, uploads a last snapshot, releases the lease.
    pub(super) async fn hand_back(&self, tag: PartitionTag) {
        let held = self.owned().get(&tag).map(|o| o.held);
        let Some(held) = held else { return };
        if let Some(running) = self.drop_partition(tag) {
            running.journal.stopped().await;
            let Running {
                journal,
                store,
                snapshotter,
                dir,
                ..
            } = running;
            let _ = tokio::task::spawn_blocking(move || snapshotter.stop()).await;
            let subject = self.settings.journal_subject(tag.0);
            if let Err(e) = snapshots::upload(&self.nats, tag, &subject, &store, &journal, 0).await
            {
                tracing::warn!(partition = tag.0, error = %e, "no last snapshot; the next owner replays more");
            }
            remove_later(dir);
        }
        lease::release(&self.nats.leases, held).await;
    }

    /// Takes partition `held.tag` over; on failure gives the lease back.
    pub(super) async fn take_over(self: Arc<Self>, held: Held) {
        let started = Instant::now();
        let tag = held.tag;
        match self.load(held).await {
            Ok(running) => {
                let mut owned = self.owned();
                match owned.get_mut(&tag).filter(|o| o.epoch == held.revision) {
                    Some(o) => {
                        o.running = Some(running);
                        drop(owned);
                        metrics::counter!("pushd_cluster_takeovers_total").increment(1);
                        metrics::histogram!("pushd_cluster_takeover_seconds")
                            .record(started.elapsed().as_secs_f64());
                        tracing::info!(partition = tag.0, elapsed = ?started.elapsed(), "partition taken over");
                        self.refused_because(tag, None);
                    }
                    None => {
                        // Lost while loading.
                        drop(owned);
                        self.partitions.remove(tag);
                        running.journal.close();
                        running.uploader.abort();
                        retire(running);
                    }
                }
            }
            Err(e) => {
                if let ClusterError::NewerRecords(why) = &e {
                    tracing::error!(partition = tag.0, error = %e, "partition written by a newer pushd; giving the lease back");
                    self.refused_because(tag, Some(why.clone()));
                } else {
                    tracing::warn!(partition = tag.0, error = %e, "cannot take the partition over; giving the lease back");
                }
                let current = self.owned().remove(&tag).map(|o| o.held);
                if let Some(current) = current {
                    lease::release(&self.nats.leases, current).await;
                }
            }
        }
    }

    /// Notes (`Some`) or clears (`None`) why this node refused partition
    /// `tag`, for `/healthz`.
    fn refused_because(&self, tag: PartitionTag, why: Option<String>) {
        let mut refused = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match why {
            Some(why) => refused.insert(tag.0, why),
            None => refused.remove(&tag.0),
        };
    }

    /// Builds the partition's engine: snapshot, journal, replay, resume.
    pub(super) async fn load(self: &Arc<Self>, held: Held) -> Result<Running, ClusterError> {
        let tag = held.tag;
        let dir = self
            .data_dir
            .join("partitions")
            .join(format!("p{}-{}", tag.0, held.revision));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| ClusterError::Snapshot(e.to_string()))?;
        }
        std::fs::create_dir_all(dir.parent().expect("a parent"))
            .map_err(|e| ClusterError::Snapshot(e.to_string()))?;
        let store = snapshots::load(&self.nats, tag, &dir, self.cache_bytes).await?;
        let covered = store
            .covered()
            .map_err(|e| ClusterError::Snapshot(e.to_string()))?;
        let subject = self.settings.journal_subject(tag.0);
        let place = Place {
            js: self.nats.js.clone(),
            stream: self.nats.journal.clone(),
            subject: subject.clone(),
            writer: format!("{}-{}", key_of(&self.me.node), held.revision),
        };
        // A journal fenced off (another node took the partition) wakes the
        // loop, which drops the partition at once: calls then go to the new
        // owner instead of failing here until the next tick.
        let wake = self.wake.clone();
        let opened =
            StreamJournal::open(place, covered, &self.runtime, move || wake.notify_one()).await?;
        let journal = opened.journal;
        // Before the replay: the replayed records' events are published
        // too, from the first the stream may lack.
        let events = PartitionEvents::open(
            self.engine.events.clone(),
            tag,
            journal.clone(),
            self.engine.clock.clone(),
            self.runtime.clone(),
        )
        .await?;
        store.attach(events);
        let ports = Ports {
            provider: self.engine.provider.clone(),
            journal: journal.clone(),
            store: store.clone(),
            renderer: self.engine.renderer.clone(),
            clock: self.engine.clock.clone(),
            entropy: Arc::new(OsEntropy),
            catalog: self.engine.catalog.clone(),
        };
        let registry = Arc::new(Registry::for_partition(
            ports,
            self.engine.config.clone(),
            self.engine.shards.clone(),
            tag,
        ));
        let recovering = registry.clone();
        let recovery = tokio::task::spawn_blocking(move || recovering.recover())
            .await
            .map_err(|e| ClusterError::Snapshot(e.to_string()))?
            .map_err(|e| ClusterError::Snapshot(format!("recovery: {e}")))?;
        registry.start_releases();
        tracing::info!(
            partition = tag.0,
            covered,
            messages = opened.messages,
            replayed = recovery.replayed.records,
            held = recovery.held,
            resumed = recovery.resumed,
            "partition recovered"
        );
        let snapshotter = Snapshotter::start(&store, Timing::default(), Box::new(|_| {}))
            .map_err(|e| ClusterError::Snapshot(e.to_string()))?;
        // Replayed above: its deliveries may expire from now on.
        snapshotter.retain(self.engine.retention.clone());
        self.partitions.insert(Arc::new(Partition {
            tag,
            registry,
            store: store.clone(),
        }));
        let uploader = self.runtime.spawn(upload_every(
            self.nats.clone(),
            tag,
            subject,
            store.clone(),
            journal.clone(),
            self.settings.snapshot_every,
            covered,
        ));
        Ok(Running {
            journal,
            store,
            snapshotter,
            uploader,
            dir,
        })
    }
}

/// Uploads the partition's snapshot every `every` while it runs.
async fn upload_every(
    nats: Nats,
    tag: PartitionTag,
    subject: String,
    store: Arc<SledStore>,
    journal: Arc<StreamJournal>,
    every: Duration,
    mut uploaded: Position,
) {
    loop {
        tokio::time::sleep(every).await;
        match snapshots::upload(&nats, tag, &subject, &store, &journal, uploaded).await {
            Ok(covered) => uploaded = covered,
            Err(e) => tracing::warn!(partition = tag.0, error = %e, "snapshot upload failed"),
        }
    }
}

/// Stops a dropped partition's snapshot thread and deletes its directory,
/// in the background.
fn retire(running: Running) {
    std::thread::spawn(move || {
        running.snapshotter.stop();
        remove_later(running.dir);
    });
}

/// Deletes a dropped partition's directory in the background (its store
/// may still be open while its last actors stop).
fn remove_later(dir: PathBuf) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "partition directory not removed");
        }
    });
}

//! Customers partitioned over engines: each partition is one independent
//! engine state (a registry of PersonActors, a journal, a store), and a
//! customer belongs to exactly one by a stable hash of its id. A single node
//! runs partition 0 of 1; a cluster node runs the partitions whose leases it
//! holds (see `cluster`), and the set changes while it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use pushd_actors::delivery_id::DeliveryId;
use pushd_actors::engine::PartitionTag;
use pushd_actors::registry::Registry;

use crate::store::SledStore;

/// Most partitions a cluster may have: a delivery id has 16 bits for it.
pub const MAX_PARTITIONS: u16 = 1024;

/// How customers map to partitions: the same on every node and across
/// restarts (CRC-32 of the id, not std's hasher, which may change between
/// Rust releases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partitioning {
    count: u16,
}

impl Partitioning {
    /// One partition: the single-node daemon.
    pub fn single() -> Partitioning {
        Partitioning { count: 1 }
    }

    /// `count` partitions (1 to [`MAX_PARTITIONS`]).
    pub fn new(count: u16) -> Partitioning {
        debug_assert!((1..=MAX_PARTITIONS).contains(&count));
        Partitioning {
            count: count.clamp(1, MAX_PARTITIONS),
        }
    }

    /// How many partitions there are.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The partition of a customer.
    pub fn of_customer(&self, id: &str) -> PartitionTag {
        PartitionTag((crc32fast::hash(id.as_bytes()) % u32::from(self.count)) as u16)
    }

    /// The partition a delivery id names; `None` when it names none of
    /// these (then no such delivery exists). With one partition every id is
    /// its own, including those made before ids carried a partition.
    pub fn of_delivery(&self, id: &str) -> Option<PartitionTag> {
        if self.count == 1 {
            return Some(PartitionTag(0));
        }
        let tag = DeliveryId::parse(id)?.partition();
        (tag.0 < self.count).then_some(tag)
    }
}

/// One partition's engine as this node runs it.
pub struct Partition {
    /// Which one.
    pub tag: PartitionTag,
    /// Its PersonActors.
    pub registry: Arc<Registry>,
    /// Its state: what its delivery log, counters and customers read from.
    pub store: Arc<SledStore>,
}

/// The partitions this node runs now, by tag.
pub struct Partitions {
    partitioning: Partitioning,
    running: RwLock<BTreeMap<PartitionTag, Arc<Partition>>>,
}

impl Partitions {
    /// None running yet, out of `partitioning`.
    pub fn new(partitioning: Partitioning) -> Partitions {
        Partitions {
            partitioning,
            running: RwLock::new(BTreeMap::new()),
        }
    }

    /// How customers map to partitions.
    pub fn partitioning(&self) -> Partitioning {
        self.partitioning
    }

    /// The partition `tag`, if this node runs it.
    pub fn get(&self, tag: PartitionTag) -> Option<Arc<Partition>> {
        let running = self.running.read().unwrap_or_else(PoisonError::into_inner);
        running.get(&tag).cloned()
    }

    /// Starts serving `partition`.
    pub fn insert(&self, partition: Arc<Partition>) {
        let mut running = self.running.write().unwrap_or_else(PoisonError::into_inner);
        running.insert(partition.tag, partition);
    }

    /// Stops serving `tag`; answers the partition it served.
    pub fn remove(&self, tag: PartitionTag) -> Option<Arc<Partition>> {
        let mut running = self.running.write().unwrap_or_else(PoisonError::into_inner);
        running.remove(&tag)
    }

    /// Every partition this node runs, in tag order.
    pub fn running(&self) -> Vec<Arc<Partition>> {
        let running = self.running.read().unwrap_or_else(PoisonError::into_inner);
        running.values().cloned().collect()
    }

    /// The sum of `of` over the partitions running now (without copying
    /// their list, for the hot path).
    pub fn sum(&self, of: impl Fn(&Partition) -> usize) -> usize {
        let running = self.running.read().unwrap_or_else(PoisonError::into_inner);
        running.values().map(|p| of(p)).sum()
    }

    /// The tags of the partitions this node runs.
    pub fn tags(&self) -> Vec<PartitionTag> {
        let running = self.running.read().unwrap_or_else(PoisonError::into_inner);
        running.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushd_actors::ports::OsEntropy;

    #[test]
    fn customers_spread_over_partitions_the_same_way_every_time() {
        let p = Partitioning::new(64);
        // Pinned: a change here moves every customer of a running cluster.
        assert_eq!(p.of_customer("c1"), PartitionTag(33));
        assert_eq!(p.of_customer("customer-42"), PartitionTag(21));
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            seen.insert(p.of_customer(&format!("c{i}")));
        }
        assert_eq!(seen.len(), 64, "2000 customers reach every partition");
        assert_eq!(
            Partitioning::single().of_customer("anyone"),
            PartitionTag(0)
        );
    }

    #[test]
    fn a_delivery_id_names_its_partition() {
        let p = Partitioning::new(8);
        let id = DeliveryId::new(PartitionTag(5), 1_764_100_000_000, &OsEntropy).to_string();
        assert_eq!(p.of_delivery(&id), Some(PartitionTag(5)));
        let foreign = DeliveryId::new(PartitionTag(9), 1_764_100_000_000, &OsEntropy).to_string();
        assert_eq!(p.of_delivery(&foreign), None, "no partition 9 of 8");
        assert_eq!(p.of_delivery("old-style-id"), None);
        assert_eq!(
            Partitioning::single().of_delivery("old-style-id"),
            Some(PartitionTag(0))
        );
    }
}

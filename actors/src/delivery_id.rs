//! A delivery's id, and the one place that knows its layout.
//!
//! An id is a ULID: 48 bits of creation time (Unix ms), so the delivery log
//! sorts by it and a date range is a range of ids, then 80 bits that are
//! random except for the lowest 16, which name the partition whose engine
//! made it. A device report names only the delivery, so the partition (and
//! the node that owns it) is read off the id. A keyed send's ids are not
//! random: they come from its key's seed and the customer's place in the
//! call, so every try of the call, on any node, makes the same ones.
//!
//! ```text
//!  127            80 79                       16 15           0
//! ┌────────────────┬───────────────────────────┬──────────────┐
//! │ created, ms    │ entropy (or seed, index)  │ partition    │
//! └────────────────┴───────────────────────────┴──────────────┘
//! ```

use std::fmt;

use crate::engine::PartitionTag;
use crate::ports::Entropy;

/// The bits below the time that name the partition.
const PARTITION_BITS: u32 = 16;
/// The latest time a ULID can carry (48 bits of ms).
const MAX_MS: i64 = (1 << 48) - 1;

/// A delivery id (see the module docs for its layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryId(ulid::Ulid);

impl DeliveryId {
    /// The least id there is.
    pub const LEAST: DeliveryId = DeliveryId(ulid::Ulid::nil());

    /// A new id for a delivery `partition`'s engine makes at `created_ms`.
    pub fn new(partition: PartitionTag, created_ms: i64, entropy: &dyn Entropy) -> DeliveryId {
        let random = (entropy.next_u128() & !0xFFFF) | u128::from(partition.0);
        DeliveryId::from_parts(created_ms, random)
    }

    /// The id of a keyed send's delivery to its customer number `index`,
    /// on a single node: the key's `seed` above the index, the call's
    /// start time `started_ms` in front.
    pub fn keyed(started_ms: i64, seed: u64, index: usize) -> DeliveryId {
        let random = (u128::from(seed) << PARTITION_BITS) | (index as u128 & 0xFFFF);
        DeliveryId::from_parts(started_ms, random)
    }

    /// The id of a keyed send's delivery to its customer number `index`,
    /// whose customer is in `partition` (customers split in partitions):
    /// the partition in the lowest 16 bits as every partitioned id, the
    /// index in the 16 above, the seed's high 48 bits above those.
    pub fn keyed_in(
        started_ms: i64,
        seed: u64,
        index: usize,
        partition: PartitionTag,
    ) -> DeliveryId {
        let random = (u128::from(seed >> 16) << 32)
            | ((index as u128 & 0xFFFF) << PARTITION_BITS)
            | u128::from(partition.0);
        DeliveryId::from_parts(started_ms, random)
    }

    /// The least id a delivery made at `ms` can have (times outside what
    /// an id can carry are clamped): the start of a range of ids by date.
    pub fn first_at(ms: i64) -> DeliveryId {
        DeliveryId::from_parts(ms, 0)
    }

    /// The id `text` spells; `None` for one no engine made (not a ULID).
    pub fn parse(text: &str) -> Option<DeliveryId> {
        ulid::Ulid::from_string(text).ok().map(DeliveryId)
    }

    /// The partition whose engine made it.
    pub fn partition(self) -> PartitionTag {
        PartitionTag(self.0.random() as u16)
    }

    fn from_parts(ms: i64, random: u128) -> DeliveryId {
        DeliveryId(ulid::Ulid::from_parts(ms.clamp(0, MAX_MS) as u64, random))
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::OsEntropy;

    /// Entropy of all ones: the greatest id of a time and partition.
    struct Ones;

    impl Entropy for Ones {
        fn next_u64(&self) -> u64 {
            u64::MAX
        }
    }

    #[test]
    fn an_id_carries_its_partition_and_sorts_by_time() {
        let early = DeliveryId::new(PartitionTag(63), 1_764_100_000_000, &OsEntropy);
        let late = DeliveryId::new(PartitionTag(2), 1_764_100_000_001, &OsEntropy);
        assert_eq!(early.partition(), PartitionTag(63));
        assert_eq!(late.partition(), PartitionTag(2));
        assert!(early < late && early.to_string() < late.to_string());
        assert_ne!(
            DeliveryId::new(PartitionTag(5), 0, &OsEntropy),
            DeliveryId::new(PartitionTag(5), 0, &OsEntropy)
        );
        let text = early.to_string();
        assert_eq!(DeliveryId::parse(&text), Some(early));
        assert_eq!(DeliveryId::parse("not-a-ulid"), None);
    }

    #[test]
    fn the_first_id_of_a_time_is_below_every_id_made_then_and_above_earlier_ones() {
        let ms = 1_764_100_000_000;
        let greatest_before = DeliveryId::new(PartitionTag(u16::MAX), ms - 1, &Ones);
        let first = DeliveryId::first_at(ms);
        assert!(greatest_before < first);
        assert!(first <= DeliveryId::new(PartitionTag(0), ms, &OsEntropy));
        assert_eq!(DeliveryId::first_at(-5), DeliveryId::first_at(0));
        assert_eq!(DeliveryId::first_at(i64::MAX), DeliveryId::first_at(MAX_MS));
    }

    #[test]
    fn a_keyed_id_is_the_same_on_every_try_and_carries_its_partition() {
        let a = DeliveryId::keyed_in(1_000, 0xDEAD_BEEF_0000_1234, 7, PartitionTag(9));
        let b = DeliveryId::keyed_in(1_000, 0xDEAD_BEEF_0000_1234, 7, PartitionTag(9));
        assert_eq!(a, b);
        assert_eq!(a.partition(), PartitionTag(9));
        assert_ne!(
            a,
            DeliveryId::keyed_in(1_000, 0xDEAD_BEEF_0000_1234, 8, PartitionTag(9))
        );
        assert_eq!(
            DeliveryId::keyed(1_000, 42, 3),
            DeliveryId::keyed(1_000, 42, 3)
        );
        assert_ne!(
            DeliveryId::keyed(1_000, 42, 3),
            DeliveryId::keyed(1_000, 42, 4)
        );
    }
}

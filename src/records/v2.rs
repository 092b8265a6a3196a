//! Records of version 2: version 1's, and the journal entry of a customer's
//! erasure.
//!
//! Only the journal entry changed. [`Entry`] holds version 1's entries in
//! their order, then [`Entry::CustomerErased`]: postcard writes a variant as
//! its index, so the bytes of a version-1 journal record read as version 2
//! too. Every other record is version 1's type, reused. Like every version,
//! these types are frozen.

use serde::{Deserialize, Serialize, Serializer};

use pushd_actors::ports as p;

use super::v1::{Customer, Delivery, MessageSpec, SendRecord};
use super::{Frozen, RecordError, Thaw};

/// A journal entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub enum Entry {
    /// A customer created or replaced.
    Customer(Customer),
    /// A customer removed.
    CustomerDeleted(String),
    /// A message created or replaced.
    Message(Box<MessageSpec>),
    /// A delivery new or changed.
    Delivery(Box<Delivery>),
    /// A keyed send record.
    SendRecord(Box<SendRecord>),
    /// Send records started before this time are dropped.
    SendRecordsExpired(i64),
    /// A customer erased, with its deliveries and their events.
    CustomerErased(String),
}

/// Written as [`Entry`] reads: the variant's index, then its record.
impl Serialize for Frozen<'_, p::Entry> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            p::Entry::Customer(c) => {
                s.serialize_newtype_variant("Entry", 0, "Customer", &Frozen(c))
            }
            p::Entry::CustomerDeleted(id) => {
                s.serialize_newtype_variant("Entry", 1, "CustomerDeleted", id)
            }
            p::Entry::Message(m) => s.serialize_newtype_variant("Entry", 2, "Message", &Frozen(m)),
            p::Entry::Delivery(d) => {
                s.serialize_newtype_variant("Entry", 3, "Delivery", &Frozen(d))
            }
            p::Entry::SendRecord(r) => {
                s.serialize_newtype_variant("Entry", 4, "SendRecord", &Frozen(r))
            }
            p::Entry::SendRecordsExpired(t) => {
                s.serialize_newtype_variant("Entry", 5, "SendRecordsExpired", t)
            }
            p::Entry::CustomerErased(id) => {
                s.serialize_newtype_variant("Entry", 6, "CustomerErased", id)
            }
        }
    }
}

impl Thaw<p::Entry> for Entry {
    fn thaw(self) -> Result<p::Entry, RecordError> {
        Ok(match self {
            Entry::Customer(c) => p::Entry::Customer(c.thaw()?),
            Entry::CustomerDeleted(id) => p::Entry::CustomerDeleted(id),
            Entry::Message(m) => p::Entry::Message(m.thaw()?),
            Entry::Delivery(d) => p::Entry::Delivery(d.thaw()?),
            Entry::SendRecord(r) => p::Entry::SendRecord(r.thaw()?),
            Entry::SendRecordsExpired(t) => p::Entry::SendRecordsExpired(t),
            Entry::CustomerErased(id) => p::Entry::CustomerErased(id),
        })
    }
}

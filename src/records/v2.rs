//! Records of version 2: version 1's, and the journal entry of a customer's
//! erasure.
//!
//! Only the journal entry changed. [`Entry`] holds version 1's entries in
//! their order, then [`Entry::CustomerErased`]: postcard writes a variant as
//! its index, so the bytes of a version-1 journal record read as version 2
//! too. Every other record is version 1's type, reused. Like every version,
//! these types are frozen; [`super::v3`] replaced them as the one written.

use serde::Deserialize;

use pushd_actors::ports as p;

use super::v1::{Customer, Delivery, MessageSpec, SendRecord};
use super::{RecordError, Thaw};

/// A journal entry. Read, never written: [`super::v3`] holds its
/// deliveries' new failure reason.
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

//! Records of version 2: version 1's, and the journal entry of a customer's
//! erasure.
//!
//! Only the journal entry changed. [`Entry`] holds version 1's entries in
//! their order, then [`Entry::CustomerErased`]: postcard writes a variant as
//! its index, so the bytes of a version-1 journal record read as version 2
//! too. Every other record is version 1's type, reused. Like every version,
//! these types are frozen; [`super::v3`] replaced them as the one written.

use super::journal_entry;
use super::v1::{Customer, Delivery, MessageSpec, SendRecord};

journal_entry! {
    /// A journal entry. Read, never written: [`super::v3`] holds its
    /// deliveries' new failure reason.
}

//! What pushd writes to disk: versioned records of their own, apart from
//! the engine's domain models, converted to and from them here and
//! nowhere else.
//!
//! Two kinds of bytes hold records:
//!
//! - **Journal records** (journal segments, the cluster's stream messages)
//!   hold a list of entries. The segment's header (or the stream message's
//!   `Pushd-Format` header) names the version of every record in it; files
//!   and messages without one hold version 1, as pushd wrote before
//!   records had versions. [`encode_entries`] writes [`JOURNAL_VERSION`];
//!   [`decode_entries`] reads every version up to it.
//! - **Snapshot values** (customers, deliveries, messages, keyed send
//!   records, counters, series in sled) each start with a one-byte version,
//!   then the record ([`Stored`]). A value keeps its version until it is
//!   written again, so a new version never needs a rewrite of the
//!   snapshot: it is read as it is and converted.
//!
//! A model may change freely: the record types ([`v1`], ...) are
//! frozen: each version reads into the current models with [`Thaw`], and
//! the current version is written from them through [`Frozen`]. A record that must change gets a
//! new version module beside the old ones, and the old one stays readable.
//! Bytes of a version newer than this binary knows are refused with
//! [`RecordError::Newer`], naming both versions. A new snapshot value
//! version also raises the snapshot's format (`store::codec::FORMAT`), so
//! an older pushd refuses the snapshot when it opens it, not at a read.

pub mod v1;
pub mod v2;
pub mod v3;
pub mod v4;
pub mod v5;

use std::collections::BTreeMap;
use std::sync::Arc;

use pushd_actors::idempotency::SendRecord;
use pushd_actors::model::{Content, Customer, Delivery, MessageSpec};
use pushd_actors::ports::{Change, Entry};
use pushd_actors::tally::Tally;
use serde::{Serialize, Serializer};

/// The version of the journal records this binary writes: [`v5`] entries.
/// Versions 2 and 3 were supersets of the one before (see [`v2`], [`v3`]);
/// the deliveries of versions 4 and 5 and the messages of version 5 hold
/// more fields, so each version's bytes are read with that version's
/// types.
pub const JOURNAL_VERSION: u32 = 5;
/// The version of a delivery's snapshot value this binary writes: a [`v5`]
/// record. A message's value is of version [`MESSAGE_VERSION`], a
/// counters value's of [`TALLY_VERSION`]; the other values are still
/// written as version 1: their records have not changed since.
pub const VALUE_VERSION: u8 = 5;

/// Why bytes are not a record this binary can read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The bytes do not decode as the record their version names.
    #[error("record does not decode: {0}")]
    Decode(#[from] postcard::Error),
    /// They decode, but hold a value the model refuses.
    #[error("record holds an invalid value: {0}")]
    Invalid(String),
    /// Written by a newer pushd.
    #[error("{what} of version {found}; this pushd reads versions 1 to {known}")]
    Newer {
        /// What kind of record.
        what: &'static str,
        /// Its version.
        found: u32,
        /// The newest this binary reads.
        known: u32,
    },
    /// A snapshot value without even its version byte.
    #[error("empty snapshot value")]
    Empty,
}

/// A model value seen as its record: serializes exactly as the record
/// type deserializes, without copying the model into a record first (the
/// journal writes every change, so a copy per record would cost on the
/// hot path). `record_struct!` and `record_enum!` write both sides from
/// one list of fields.
pub struct Frozen<'a, T: ?Sized>(pub &'a T);

/// A record's model value.
pub trait Thaw<M> {
    /// The model value of `self`; fails where the record holds a value the
    /// model refuses.
    fn thaw(self) -> Result<M, RecordError>;
}

/// Values stored as they are: primitives and maps of them.
macro_rules! identity {
    ($($t:ty),*) => {$(
        impl Serialize for Frozen<'_, $t> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }
        impl Thaw<$t> for $t {
            fn thaw(self) -> Result<$t, RecordError> {
                Ok(self)
            }
        }
    )*};
}
identity!(String, bool, i64, u16, u32, u64, f64, [i64; 2], BTreeMap<String, String>);

impl<T> Serialize for Frozen<'_, Option<T>>
where
    for<'b> Frozen<'b, T>: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(v) => s.serialize_some(&Frozen(v)),
            None => s.serialize_none(),
        }
    }
}

impl<R: Thaw<M>, M> Thaw<Option<M>> for Option<R> {
    fn thaw(self) -> Result<Option<M>, RecordError> {
        self.map(R::thaw).transpose()
    }
}

impl<T> Serialize for Frozen<'_, Vec<T>>
where
    for<'b> Frozen<'b, T>: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Frozen))
    }
}

impl<R: Thaw<M>, M> Thaw<Vec<M>> for Vec<R> {
    fn thaw(self) -> Result<Vec<M>, RecordError> {
        self.into_iter().map(R::thaw).collect()
    }
}

impl<T> Serialize for Frozen<'_, Box<T>>
where
    for<'b> Frozen<'b, T>: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Frozen(&**self.0).serialize(s)
    }
}

impl<R: Thaw<M>, M> Thaw<Box<M>> for Box<R> {
    fn thaw(self) -> Result<Box<M>, RecordError> {
        (*self).thaw().map(Box::new)
    }
}

impl<T> Serialize for Frozen<'_, Arc<T>>
where
    for<'b> Frozen<'b, T>: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Frozen(&**self.0).serialize(s)
    }
}

/// A rendered push is shared (`Arc`) in the model: every version's record
/// of it reads into one.
impl<R: Thaw<Content>> Thaw<Arc<Content>> for R {
    fn thaw(self) -> Result<Arc<Content>, RecordError> {
        Thaw::<Content>::thaw(self).map(Arc::new)
    }
}

/// A frozen record struct: the struct (what is read from disk), its
/// model value ([`Thaw`]), and the model seen as it ([`Frozen`]), from one
/// list of fields, in the order the bytes hold them. `read` before the
/// name leaves out [`Frozen`]: a record a newer version replaced is only
/// read.
macro_rules! record_struct {
    (
        $(#[$doc:meta])*
        read $record:ident = $model:path { $($field:ident: $ty:ty),* $(,)? }
        new { $($new:ident: $value:expr),* $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
        pub struct $record {
            $(#[allow(missing_docs)] pub $field: $ty),*
        }

        impl $crate::records::Thaw<$model> for $record {
            fn thaw(self) -> Result<$model, $crate::records::RecordError> {
                type M = $model;
                Ok(M {
                    $($field: $crate::records::Thaw::thaw(self.$field)?,)*
                    $($new: $value,)*
                })
            }
        }
    };
    (
        $(#[$doc:meta])*
        read $record:ident = $model:path { $($field:ident: $ty:ty),* $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
        pub struct $record {
            $(#[allow(missing_docs)] pub $field: $ty),*
        }

        impl $crate::records::Thaw<$model> for $record {
            fn thaw(self) -> Result<$model, $crate::records::RecordError> {
                type M = $model;
                Ok(M { $($field: $crate::records::Thaw::thaw(self.$field)?),* })
            }
        }
    };
    (
        $(#[$doc:meta])*
        $record:ident = $model:path { $($field:ident: $ty:ty),* $(,)? }
    ) => {
        $crate::records::record_struct! {
            $(#[$doc])*
            read $record = $model { $($field: $ty),* }
        }

        impl serde::Serialize for $crate::records::Frozen<'_, $model> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct as _;
                let fields = [$(stringify!($field)),*].len();
                let mut out = s.serialize_struct(stringify!($record), fields)?;
                $(out.serialize_field(stringify!($field), &$crate::records::Frozen(&self.0.$field))?;)*
                out.end()
            }
        }
    };
}

/// A frozen record enum of unit variants, and the model enum with the
/// same variants (`read`: the model has these and more, and the record
/// is only read).
macro_rules! record_enum {
    (
        $(#[$doc:meta])*
        read $record:ident = $model:path { $($(#[$vdoc:meta])* $variant:ident),* $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum $record {
            $($(#[$vdoc])* $variant),*
        }

        impl $crate::records::Thaw<$model> for $record {
            fn thaw(self) -> Result<$model, $crate::records::RecordError> {
                type M = $model;
                Ok(match self { $($record::$variant => M::$variant),* })
            }
        }
    };
    (
        $(#[$doc:meta])*
        $record:ident = $model:path { $($(#[$vdoc:meta])* $variant:ident),* $(,)? }
    ) => {
        $crate::records::record_enum! {
            $(#[$doc])*
            read $record = $model { $($(#[$vdoc])* $variant),* }
        }

        impl serde::Serialize for $crate::records::Frozen<'_, $model> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                type M = $model;
                match self.0 { $(M::$variant => $record::$variant),* }.serialize(s)
            }
        }
    };
}

/// The journal entry of versions 2 on: its seven entries in their order
/// (version 1's six, then the erasure), over the record types the module
/// it is written in names `Customer`, `MessageSpec`, `Delivery` and
/// `SendRecord`, and its model value. Each version writes its own, frozen
/// like its other records; only those types change between them.
macro_rules! journal_entry {
    ($(#[$doc:meta])*) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
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

        impl $crate::records::Thaw<pushd_actors::ports::Entry> for Entry {
            fn thaw(self) -> Result<pushd_actors::ports::Entry, $crate::records::RecordError> {
                use pushd_actors::ports::Entry as E;
                use $crate::records::Thaw as T;
                Ok(match self {
                    Entry::Customer(c) => E::Customer(T::thaw(c)?),
                    Entry::CustomerDeleted(id) => E::CustomerDeleted(id),
                    Entry::Message(m) => E::Message(T::thaw(m)?),
                    Entry::Delivery(d) => E::Delivery(T::thaw(d)?),
                    Entry::SendRecord(r) => E::SendRecord(T::thaw(r)?),
                    Entry::SendRecordsExpired(t) => E::SendRecordsExpired(t),
                    Entry::CustomerErased(id) => E::CustomerErased(id),
                })
            }
        }
    };
}

pub(crate) use {journal_entry, record_enum, record_struct};

/// Appends the current version's record of `changes`' entries to `out`.
/// On an error, `out` keeps what it held, and may hold part of the record
/// after it.
pub fn encode_entries(changes: &[Change], out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    postcard::to_extend(&Entries(changes), Extending(out)).map(drop)
}

/// A borrowed buffer postcard appends to, so an error leaves it in place.
struct Extending<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Extending<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// The entries of a record's changes, written as the current version's
/// list of entries.
struct Entries<'a>(&'a [Change]);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|c| Frozen(&c.entry)))
    }
}

/// The entries of a journal record of `version`.
pub fn decode_entries(version: u32, payload: &[u8]) -> Result<Vec<Entry>, RecordError> {
    match version {
        1 => postcard::from_bytes::<Vec<v1::Entry>>(payload)?.thaw(),
        2 => postcard::from_bytes::<Vec<v2::Entry>>(payload)?.thaw(),
        3 => postcard::from_bytes::<Vec<v3::Entry>>(payload)?.thaw(),
        4 => postcard::from_bytes::<Vec<v4::Entry>>(payload)?.thaw(),
        5 => postcard::from_bytes::<Vec<v5::Entry>>(payload)?.thaw(),
        found => Err(RecordError::Newer {
            what: "a journal record",
            found,
            known: JOURNAL_VERSION,
        }),
    }
}

/// A model value kept in the snapshot: a version byte, then its record.
pub trait Stored: Sized {
    /// The bytes of the value's current record.
    fn encode(&self) -> Result<Vec<u8>, RecordError>;
    /// The value of a record of any version this binary reads.
    fn decode(bytes: &[u8]) -> Result<Self, RecordError>;
}

/// A snapshot value's version and record.
fn versioned(bytes: &[u8]) -> Result<(u8, &[u8]), RecordError> {
    let (&version, rest) = bytes.split_first().ok_or(RecordError::Empty)?;
    Ok((version, rest))
}

/// A snapshot value of a version newer than `known`.
fn newer(found: u8, known: u8) -> RecordError {
    RecordError::Newer {
        what: "a snapshot value",
        found: found.into(),
        known: known.into(),
    }
}

/// [`Stored`] for model types: each written as the version given, and read
/// from every version listed, each with its version's record type.
macro_rules! stored {
    ($(
        $(#[$doc:meta])*
        $model:ty: writes $version:expr, reads { $($read:pat => $record:ty),* $(,)? }
    )*) => {$(
        $(#[$doc])*
        impl Stored for $model {
            fn encode(&self) -> Result<Vec<u8>, RecordError> {
                Ok(postcard::to_extend(&Frozen(self), vec![$version])?)
            }

            fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
                match versioned(bytes)? {
                    $(($read, rest) => postcard::from_bytes::<$record>(rest)?.thaw(),)*
                    (found, _) => Err(newer(found, $version)),
                }
            }
        }
    )*};
}

/// The version of a counters value: 2 since they count `scheduled` and
/// `canceled` deliveries.
pub const TALLY_VERSION: u8 = 2;
/// The version of a message's snapshot value: 2 since it names its lane.
pub const MESSAGE_VERSION: u8 = 2;

stored! {
    /// A delivery: version 3 since its failure reasons gained
    /// `template_limit_exceeded` and `internal_error`, version 4 since it can
    /// be scheduled (statuses `scheduled` and `canceled`, its schedule),
    /// version 5 since its push carries its lane; version 2's record is
    /// version 1's.
    Delivery: writes VALUE_VERSION, reads {
        1 | 2 => v1::Delivery,
        3 => v3::Delivery,
        4 => v4::Delivery,
        5 => v5::Delivery,
    }
    /// A message's or campaign's counters: version 2 adds `scheduled` and
    /// `canceled` (0 in a version-1 value: nothing was scheduled then).
    Tally: writes TALLY_VERSION, reads { 1 => v1::Tally, 2 => v4::Tally }
    /// A message: version 2 adds its lane (`campaign` in a version-1 value:
    /// there was no other).
    MessageSpec: writes MESSAGE_VERSION, reads { 1 => v1::MessageSpec, 2 => v5::MessageSpec }
    /// A customer with its devices.
    Customer: writes 1, reads { 1 => v1::Customer }
    /// A keyed send's record.
    SendRecord: writes 1, reads { 1 => v1::SendRecord }
    /// A time series' minute: deliveries and opens.
    [i64; 2]: writes 1, reads { 1 => [i64; 2] }
    /// A failure reason's count.
    i64: writes 1, reads { 1 => i64 }
}

/// Prefixes a version-1 snapshot value written before values carried
/// their version (snapshot format 3) with its version byte.
pub fn tag_unversioned(value: &[u8]) -> Vec<u8> {
    [&[1u8][..], value].concat()
}

#[cfg(test)]
mod tests;

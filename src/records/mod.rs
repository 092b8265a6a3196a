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
//! frozen, and each version converts to the current models with the
//! [`Thaw`] and [`Freeze`] conversions. A record that must change gets a
//! new version module beside the old ones, and the old one stays readable.
//! Bytes of a version newer than this binary knows are refused with
//! [`RecordError::Newer`], naming both versions. A new snapshot value
//! version also raises the snapshot's format (`store::codec::FORMAT`), so
//! an older pushd refuses the snapshot when it opens it, not at a read.

pub mod v1;
pub mod v2;

use std::collections::BTreeMap;
use std::sync::Arc;

use pushd_actors::idempotency::SendRecord;
use pushd_actors::model::{Content, Customer, Delivery, MessageSpec};
use pushd_actors::ports::{Change, Entry};
use pushd_actors::tally::Tally;

/// The version of the journal records this binary writes: [`v2`] entries.
/// Version 2 is a superset of version 1 (see [`v2`]), so version-1 bytes
/// also read as version 2.
pub const JOURNAL_VERSION: u32 = 2;
/// The version of the snapshot values this binary writes: [`v1`] records.
pub const VALUE_VERSION: u8 = 1;

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

/// A model value's record: what is written (by reference, so the model
/// is not consumed).
pub trait Freeze<R> {
    /// The record of `self`.
    fn freeze(&self) -> R;
}

/// A record's model value.
pub trait Thaw<M> {
    /// The model value of `self`; fails where the record holds a value the
    /// model refuses.
    fn thaw(self) -> Result<M, RecordError>;
}

/// Values stored as they are: primitives and maps of them.
macro_rules! identity {
    ($($t:ty),*) => {$(
        impl Freeze<$t> for $t {
            fn freeze(&self) -> $t {
                self.clone()
            }
        }
        impl Thaw<$t> for $t {
            fn thaw(self) -> Result<$t, RecordError> {
                Ok(self)
            }
        }
    )*};
}
identity!(String, bool, i64, u32, u64, f64, [i64; 2], BTreeMap<String, String>);

impl<M: Freeze<R>, R> Freeze<Option<R>> for Option<M> {
    fn freeze(&self) -> Option<R> {
        self.as_ref().map(M::freeze)
    }
}

impl<R: Thaw<M>, M> Thaw<Option<M>> for Option<R> {
    fn thaw(self) -> Result<Option<M>, RecordError> {
        self.map(R::thaw).transpose()
    }
}

impl<M: Freeze<R>, R> Freeze<Vec<R>> for Vec<M> {
    fn freeze(&self) -> Vec<R> {
        self.iter().map(M::freeze).collect()
    }
}

impl<R: Thaw<M>, M> Thaw<Vec<M>> for Vec<R> {
    fn thaw(self) -> Result<Vec<M>, RecordError> {
        self.into_iter().map(R::thaw).collect()
    }
}

impl<M: Freeze<R>, R> Freeze<Box<R>> for Box<M> {
    fn freeze(&self) -> Box<R> {
        Box::new((**self).freeze())
    }
}

impl<R: Thaw<M>, M> Thaw<Box<M>> for Box<R> {
    fn thaw(self) -> Result<Box<M>, RecordError> {
        (*self).thaw().map(Box::new)
    }
}

impl Freeze<v1::Content> for Arc<Content> {
    fn freeze(&self) -> v1::Content {
        (**self).freeze()
    }
}

impl Thaw<Arc<Content>> for v1::Content {
    fn thaw(self) -> Result<Arc<Content>, RecordError> {
        Thaw::<Content>::thaw(self).map(Arc::new)
    }
}

/// A record struct and the model struct with the same fields: each field
/// converts with its own [`Freeze`] and [`Thaw`].
macro_rules! mirror_struct {
    ($record:ident = $model:path { $($field:ident),* $(,)? }) => {
        impl $crate::records::Freeze<$record> for $model {
            fn freeze(&self) -> $record {
                $record { $($field: $crate::records::Freeze::freeze(&self.$field)),* }
            }
        }
        impl $crate::records::Thaw<$model> for $record {
            fn thaw(self) -> Result<$model, $crate::records::RecordError> {
                type M = $model;
                Ok(M { $($field: $crate::records::Thaw::thaw(self.$field)?),* })
            }
        }
    };
}

/// A record enum and the model enum with the same unit variants.
macro_rules! mirror_enum {
    ($record:ident = $model:path { $($variant:ident),* $(,)? }) => {
        impl $crate::records::Freeze<$record> for $model {
            fn freeze(&self) -> $record {
                type M = $model;
                match self { $(M::$variant => $record::$variant),* }
            }
        }
        impl $crate::records::Thaw<$model> for $record {
            fn thaw(self) -> Result<$model, $crate::records::RecordError> {
                type M = $model;
                Ok(match self { $($record::$variant => M::$variant),* })
            }
        }
    };
}

pub(crate) use {mirror_enum, mirror_struct};

/// Appends the current version's record of `changes`' entries to `out`.
pub fn encode_entries(changes: &[Change], out: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
    let entries: Vec<v2::Entry> = changes.iter().map(|c| c.entry.freeze()).collect();
    postcard::to_extend(&entries, out)
}

/// The entries of a journal record of `version`.
pub fn decode_entries(version: u32, payload: &[u8]) -> Result<Vec<Entry>, RecordError> {
    match version {
        1 => postcard::from_bytes::<Vec<v1::Entry>>(payload)?.thaw(),
        2 => postcard::from_bytes::<Vec<v2::Entry>>(payload)?.thaw(),
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

/// [`Stored`] for a model type whose records are so far only of version 1.
macro_rules! stored_v1 {
    ($($model:ty => $record:ty),* $(,)?) => {$(
        impl Stored for $model {
            fn encode(&self) -> Result<Vec<u8>, RecordError> {
                let record: $record = self.freeze();
                Ok(postcard::to_extend(&record, vec![VALUE_VERSION])?)
            }

            fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
                let (&version, rest) = bytes.split_first().ok_or(RecordError::Empty)?;
                match version {
                    1 => postcard::from_bytes::<$record>(rest)?.thaw(),
                    found => Err(RecordError::Newer {
                        what: "a snapshot value",
                        found: found.into(),
                        known: VALUE_VERSION.into(),
                    }),
                }
            }
        }
    )*};
}

stored_v1! {
    Customer => v1::Customer,
    Delivery => v1::Delivery,
    MessageSpec => v1::MessageSpec,
    SendRecord => v1::SendRecord,
    Tally => v1::Tally,
    [i64; 2] => [i64; 2],
}

/// Prefixes a version-1 snapshot value written before values carried
/// their version (snapshot format 3) with its version byte.
pub fn tag_unversioned(value: &[u8]) -> Vec<u8> {
    [&[1u8][..], value].concat()
}

#[cfg(test)]
mod tests;

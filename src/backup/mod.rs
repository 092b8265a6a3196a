//! Backups of a single node's whole state, taken while it serves, and
//! `pushd restore`, which makes a data directory from one.
//!
//! **What a backup holds, and why it is consistent.** It is taken at one
//! journal position: a drain moves every change applied so far (so every
//! change acknowledged before the call) into sled, and sled is exported with
//! the position it covers (see [`SledStore::export`](crate::store::SledStore::export);
//! drains wait meanwhile, writes do not). A drain writes the event log's
//! events of the records it covers before sled covers them, so the event log
//! then holds every event up to that position: its segments are copied up
//! to its readable end, cut back to the last record at or before the
//! position (see [`EventLog::export`](crate::events::EventLog::export)).
//! The webhooks, with their progress (cursors no further than that cut),
//! and `keys.toml` come with it. See [`take`].
//!
//! **The archive** is described in [`archive`]: named sections with their
//! lengths, an end mark and a CRC-32 of everything.
//!
//! **Restore** checks the whole archive before it writes anything, builds
//! the directory beside the target and renames it into place (see
//! [`restore`]). The restored snapshot covers the archive's position and the
//! journal is empty: the daemon opens the journal with that position as its
//! floor, so new records continue after it.

pub mod archive;
mod error;
mod restore;
mod take;

pub use error::Error;
pub use restore::{Restored, restore};
pub(crate) use restore::{read_manifest, section};
pub use take::{Backup, Backups, Source, Spooled, blocking, spool_store};

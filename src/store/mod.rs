//! The daemon's store: sled behind the engine's [`Store`] port, plus what the
//! HTTP layer reads (delivery log, campaign metrics, messages, meta).
//!
//! Everything lives in one sled tree under key prefixes (see [`keys`]), so
//! one `sled::Batch` makes each commit atomic: the records, the delivery-log
//! indexes, the unsettled index and the counters move together. Commits are
//! applied synchronously and made durable by group commit (see [`flusher`]).

mod commit;
mod counters;
mod error;
mod flusher;
mod keys;
mod log;

use std::path::Path;
use std::sync::Mutex;

use pushd_actors::model::{Customer, Delivery, MessageSpec};
use pushd_actors::ports::{BoxFuture, Change, Store, StoreError};
use pushd_actors::status::Timestamp;
use serde::de::DeserializeOwned;

pub use error::Error;
pub use log::DeliveryFilter;

use flusher::Flusher;

/// pushd's sled store. Dropping it (or [`SledStore::close`]) flushes it.
pub struct SledStore {
    db: sled::Db,
    stripes: Vec<Mutex<()>>,
    flusher: Flusher,
}

impl SledStore {
    /// Opens (or creates) the durable store in directory `path`, with a page
    /// cache of at most `cache_bytes` (sled's default is 1 GiB, which would
    /// make idle customers cost far more memory than they need).
    pub fn open(path: impl AsRef<Path>, cache_bytes: u64) -> Result<SledStore, Error> {
        let config = sled::Config::new().path(path).cache_capacity(cache_bytes);
        Self::with_db(config.open()?)
    }

    /// A store in a temporary directory, removed when it is dropped.
    pub fn temporary() -> Result<SledStore, Error> {
        Self::with_db(sled::Config::new().temporary(true).open()?)
    }

    fn with_db(db: sled::Db) -> Result<SledStore, Error> {
        Ok(SledStore {
            flusher: Flusher::start(db.clone())?,
            stripes: (0..commit::SHARDS).map(|_| Mutex::new(())).collect(),
            db,
        })
    }

    /// Flushes everything and stops the flusher; later commits fail.
    pub fn close(&self) {
        self.flusher.close();
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "store flush on close failed");
        }
    }

    /// How many group-commit flushes ran since open.
    pub fn flush_count(&self) -> u64 {
        self.flusher.flushes()
    }

    /// Stores a message template; resolves when it is durable.
    pub fn put_message(&self, message: &MessageSpec) -> BoxFuture<Result<(), StoreError>> {
        let written = serde_json::to_vec(message)
            .map_err(Error::from)
            .and_then(|v| {
                Ok(self
                    .db
                    .insert(keys::record(keys::MESSAGE, &message.id), v)?)
            });
        match written {
            Ok(_) => self.flusher.durable(),
            Err(e) => Box::pin(std::future::ready(Err(e.into()))),
        }
    }

    /// A message template.
    pub fn message(&self, id: &str) -> Result<Option<MessageSpec>, Error> {
        commit::read(&self.db, &keys::record(keys::MESSAGE, id))
    }

    /// Every message template, in id order (one scan: messages are few).
    pub fn messages(&self) -> Result<Vec<MessageSpec>, Error> {
        self.db
            .scan_prefix(keys::MESSAGE)
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    /// A metadata value (API key, SDK key, ...).
    pub fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        let value = self.db.get(keys::record(keys::META, key))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets a metadata value and flushes it to disk before returning.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), Error> {
        self.db
            .insert(keys::record(keys::META, key), value.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The delivery whose id is `id` (raw bytes of a key's tail).
    fn delivery_by_key(&self, id: &[u8]) -> Result<Option<Delivery>, Error> {
        self.get(&[keys::DELIVERY, id].concat())
    }

    /// The customer a delivery belongs to, decoding only that field: what a
    /// device report needs to find its PersonActor.
    pub fn delivery_customer(&self, id: &str) -> Result<Option<String>, Error> {
        #[derive(serde::Deserialize)]
        struct Owner {
            customer_id: String,
        }
        let owner: Option<Owner> = self.get(&[keys::DELIVERY, id.as_bytes()].concat())?;
        Ok(owner.map(|o| o.customer_id))
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, Error> {
        commit::read(&self.db, key)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Store for SledStore {
    fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        Ok(self.get(&keys::record(keys::CUSTOMER, id))?)
    }

    fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(self.delivery_by_key(id.as_bytes())?)
    }

    fn unsettled_deliveries(&self, customer_id: &str) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.unsettled(customer_id)?)
    }

    fn deliveries_between(
        &self,
        customer_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.created_between(customer_id, from, to)?)
    }

    fn commit(&self, changes: Vec<Change>) -> BoxFuture<Result<(), StoreError>> {
        match self.record(changes) {
            Ok(()) => self.flusher.durable(),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn record(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        if self.flusher.is_closed() {
            return Err(Error::Closed.into());
        }
        self.apply(&changes).map_err(|e| {
            tracing::error!(error = %e, "store commit failed");
            e.into()
        })
    }
}

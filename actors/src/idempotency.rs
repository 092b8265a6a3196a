//! Idempotent sends: a send call made with a key answers, for 24 hours, the
//! first answer of that key again instead of sending again, and refuses the
//! key with another body.
//!
//! A keyed call first holds the key (a per-key lock: a second call with the
//! same key waits for the first, then replays its answer), then journals a
//! [`SendRecord`] without an answer before it makes any delivery. That
//! record fixes the call's delivery ids: the `n`th customer of the call gets
//! [`SendTicket::delivery_id`]`(n)`, and a PersonActor asked for a delivery
//! under an id it already has answers that delivery instead of making
//! another. Once every delivery of the call is durable, the record is
//! journaled again with the answer. So a call cut short (a lost connection,
//! a crash in the middle) is finished by its retry with the same key, which
//! sends nothing twice; and a call answered is replayed.
//!
//! An answer with no delivery (every customer failed) is not kept: nothing
//! was sent, and a retry with the key tries again. An answer listing some
//! customers under `failed` is kept and replayed as it is: the client sends
//! to those again under a new key.
//!
//! Records live in the store like every journaled change. A record older
//! than [`WINDOW_MS`] is ignored, and the keyed calls journal
//! [`Entry::SendRecordsExpired`], at most once per [`SWEEP_EVERY_MS`], so the
//! store drops old records from its snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::delivery_id::DeliveryId;
use crate::engine::{EngineCtx, EngineError, PartitionTag};
use crate::ports::{Change, Entry};

/// How long a key's answer is replayed, from the call's start: 24 hours.
pub const WINDOW_MS: i64 = 24 * 3600 * 1000;
/// How often expired records are dropped from the store, at most.
pub const SWEEP_EVERY_MS: i64 = 3600 * 1000;
/// Longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// A customer a send call made a delivery for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentTo {
    /// The customer.
    pub customer_id: String,
    /// Its delivery.
    pub delivery_id: String,
}

/// A customer a send call made no delivery for, with the error the call
/// answered for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotSent {
    /// The customer.
    pub customer_id: String,
    /// The API's error code.
    pub code: String,
    /// The API's error message.
    pub message: String,
}

/// What a send call answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAnswer {
    /// The deliveries made, in the call's order.
    pub deliveries: Vec<SentTo>,
    /// The customers without one.
    pub failed: Vec<NotSent>,
}

/// A keyed send call: what fixes its delivery ids, and its answer once
/// given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRecord {
    /// When the call started, Unix ms: the time in its delivery ids, and
    /// where its 24 hours start. First, so the store can read it alone.
    pub started_ms: i64,
    /// The idempotency key.
    pub key: String,
    /// A digest of the call's body; the key with another body is refused.
    pub fingerprint: String,
    /// The random part of the call's delivery ids.
    pub seed: u64,
    /// The answer, once every delivery of the call is durable.
    pub answer: Option<SendAnswer>,
}

impl SendRecord {
    /// Whether the record still holds at `now_ms`.
    pub fn live(&self, now_ms: i64) -> bool {
        now_ms < self.started_ms.saturating_add(WINDOW_MS)
    }
}

/// The keyed send calls in flight, and the way to claim a key.
pub struct IdempotentSends {
    ctx: Arc<EngineCtx>,
    held: Arc<DashMap<String, Arc<Mutex<()>>>>,
    swept_ms: AtomicI64,
}

/// What a claimed key allows.
#[derive(Debug)]
pub enum Claim {
    /// The key's call was answered: answer this again, send nothing.
    Replay(SendAnswer),
    /// Make the call's deliveries under the ticket's ids, then record.
    Send(SendTicket),
}

impl IdempotentSends {
    /// The keyed calls of an engine.
    pub fn new(ctx: Arc<EngineCtx>) -> IdempotentSends {
        IdempotentSends {
            ctx,
            held: Arc::default(),
            swept_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// Claims `key` for a call whose body digests to `fingerprint`: waits
    /// while another call holds the key, then answers whether to replay or
    /// to send. A new call's record is durable before it answers `Send`.
    /// The key with another body within 24 hours is
    /// [`EngineError::IdempotencyConflict`].
    pub async fn claim(&self, key: &str, fingerprint: &str) -> Result<Claim, EngineError> {
        let lock = self.held.entry(key.to_owned()).or_default().clone();
        let held = Held {
            key: key.to_owned(),
            guard: Some(lock.lock_owned().await),
            held: self.held.clone(),
        };
        let now = self.ctx.ports.clock.now_ms();
        let found = self.ctx.ports.store.send_record(key)?;
        let record = match found.filter(|r| r.live(now)) {
            Some(r) if r.fingerprint != fingerprint => {
                return Err(EngineError::IdempotencyConflict(key.to_owned()));
            }
            Some(SendRecord {
                answer: Some(answer),
                ..
            }) => return Ok(Claim::Replay(answer)),
            // A call cut short: its retry finishes it under the same ids.
            Some(r) => r,
            None => self.start(key, fingerprint, now).await?,
        };
        Ok(Claim::Send(SendTicket {
            ctx: self.ctx.clone(),
            record,
            _held: held,
        }))
    }

    /// Journals a new call's record (with the sweep of expired ones when one
    /// is due) and answers it once durable.
    async fn start(
        &self,
        key: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<SendRecord, EngineError> {
        let record = SendRecord {
            started_ms: now,
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            seed: self.ctx.ports.entropy.next_u64(),
            answer: None,
        };
        let mut changes = vec![Change::of(Entry::SendRecord(Box::new(record.clone())))];
        let swept = self.swept_ms.load(Ordering::Relaxed);
        if now.saturating_sub(swept) >= SWEEP_EVERY_MS
            && self
                .swept_ms
                .compare_exchange(swept, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = now.saturating_sub(WINDOW_MS);
            changes.push(Change::of(Entry::SendRecordsExpired(before)));
        }
        self.ctx.acknowledge(changes, ())?.settle().await?;
        Ok(record)
    }
}

/// The right to make a keyed call's deliveries; the key stays held until it
/// is dropped.
pub struct SendTicket {
    ctx: Arc<EngineCtx>,
    record: SendRecord,
    _held: Held,
}

impl SendTicket {
    /// The id of the delivery for the call's customer number `index`: the
    /// same on every try of the call.
    pub fn delivery_id(&self, index: usize) -> String {
        DeliveryId::keyed(self.record.started_ms, self.record.seed, index).to_string()
    }

    /// The id of the delivery for the call's customer number `index`, whose
    /// customer is in `partition`, when customers are split in partitions:
    /// the id carries the partition in its lowest 16 bits (as every
    /// delivery id of a partitioned engine does, see [`DeliveryId`]), the
    /// index in the 16 above, and the same on every try of the call, on
    /// whichever node makes it.
    pub fn partitioned_delivery_id(&self, index: usize, partition: PartitionTag) -> String {
        DeliveryId::keyed_in(self.record.started_ms, self.record.seed, index, partition).to_string()
    }

    /// Records the call's answer and resolves once it is durable; from then
    /// on the key replays it. An answer without deliveries is not kept.
    pub async fn record(self, answer: &SendAnswer) -> Result<(), EngineError> {
        if answer.deliveries.is_empty() {
            return Ok(());
        }
        let record = SendRecord {
            answer: Some(answer.clone()),
            ..self.record.clone()
        };
        let change = Change::of(Entry::SendRecord(Box::new(record)));
        self.ctx.acknowledge(vec![change], ())?.settle().await
    }
}

impl std::fmt::Debug for SendTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendTicket")
            .field("record", &self.record)
            .finish()
    }
}

/// A held key: released when dropped, and forgotten once nobody waits.
#[derive(Debug)]
struct Held {
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
    held: Arc<DashMap<String, Arc<Mutex<()>>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Only the map's own reference left: no call holds or waits for it.
        self.held
            .remove_if(&self.key, |_, lock| Arc::strong_count(lock) == 1);
    }
}

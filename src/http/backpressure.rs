//! Back-pressure on writes: a write is refused before it changes anything
//! while the disk cannot keep up, instead of memory growing without bound.
//!
//! - `503 overloaded` with `Retry-After` while more than `[store]
//!   max_journal_queue_bytes` of changes wait for the journal's disk, or
//!   more than `[store] max_undrained_records` records changed since the
//!   snapshot's last drain (a slow or failing snapshot disk);
//! - `507 insufficient_storage` while the journal's disk is full: the
//!   journal keeps what it was given and writes it once space returns (see
//!   [`crate::journal`]). A write already taken when the disk fills is
//!   answered 507 at once too, rather than waiting for space: like any
//!   5xx, it may or may not take effect.
//!
//! Reads (a message's preview among them), `/healthz`, `/readyz` and
//! `/metrics` are never refused here. The
//! device sends' own outcomes are not writes of the API: they go on (their
//! number is bounded by the sends in flight).

use std::sync::Arc;

use actix_web::ResponseError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use tokio::sync::watch;

use super::ApiError;
use super::error::RETRY_AFTER_SECS;
use crate::journal::FileJournal;
use crate::partition::Partitions;

/// What a write is checked against.
pub struct WriteGate {
    /// The local journal; a cluster node's is NATS, which bounds its own.
    journal: Option<Arc<FileJournal>>,
    /// Their stores' undrained records.
    partitions: Arc<Partitions>,
    max_journal_queue_bytes: usize,
    max_undrained_records: usize,
}

impl WriteGate {
    /// A gate over `journal` (if local) and `partitions`' stores, with the
    /// `[store]` bounds.
    pub fn new(
        journal: Option<Arc<FileJournal>>,
        partitions: Arc<Partitions>,
        store: &crate::config::StoreSection,
    ) -> WriteGate {
        WriteGate {
            journal,
            partitions,
            max_journal_queue_bytes: store.max_journal_queue_bytes,
            max_undrained_records: store.max_undrained_records,
        }
    }

    /// Why a write must be refused now, if it must.
    fn refusal(&self) -> Option<ApiError> {
        if let Some(journal) = &self.journal {
            if let Some(why) = journal.disk_full() {
                return Some(disk_full(&why));
            }
            let queued = journal.backlog();
            if queued > self.max_journal_queue_bytes {
                return Some(overloaded(format!(
                    "{queued} bytes of changes wait for the journal's disk (more than [store] \
                     max_journal_queue_bytes / PUSHD_MAX_JOURNAL_QUEUE_BYTES, {}): the disk is \
                     slower than the writes; retry in {RETRY_AFTER_SECS} s",
                    self.max_journal_queue_bytes
                )));
            }
        }
        let undrained = self.partitions.sum(|p| p.store.backlog());
        (undrained > self.max_undrained_records).then(|| {
            overloaded(format!(
                "{undrained} changed records wait for the snapshot (more than [store] \
                 max_undrained_records / PUSHD_MAX_UNDRAINED_RECORDS, {}): its drains are slow \
                 or failing (see /readyz); retry in {RETRY_AFTER_SECS} s",
                self.max_undrained_records
            ))
        })
    }

    /// Follows the journal's disk-full state, on a node with a local
    /// journal.
    fn watch_disk_full(&self) -> Option<watch::Receiver<Option<String>>> {
        self.journal.as_ref().map(|j| j.watch_disk_full())
    }
}

/// 503 `overloaded`, with `Retry-After`.
fn overloaded(message: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
}

/// 507 `insufficient_storage`.
fn disk_full(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        format!(
            "the journal's disk is full ({why}): no change is taken until space is freed; \
             pushd takes writes again by itself once it is"
        ),
    )
}

/// Whether the request may change something: any method but GET and HEAD,
/// outside the cluster's own reads and a message's preview (which only
/// reads).
pub(super) fn writes(req: &ServiceRequest) -> bool {
    let path = req.path();
    let preview = path.starts_with("/v1/messages/") && path.ends_with("/preview");
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && !path.starts_with("/v1/cluster/")
        && !preview
}

/// Passes a write through `gate`: refused if the gate refuses it, and
/// answered 507 while under way once the journal's disk fills.
pub(super) async fn through(
    gate: &WriteGate,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(e) = gate.refusal() {
        return Ok(req.into_response(e.error_response()));
    }
    let Some(mut full) = gate.watch_disk_full() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    // The request went to the handler: an error is what answers it if the
    // disk fills first (its response is the error's).
    tokio::select! {
        res = next.call(req) => Ok(res?.map_into_boxed_body()),
        Ok(why) = full.wait_for(Option::is_some) => {
            let why = why.clone().unwrap_or_default();
            Err(disk_full(&why).into())
        }
    }
}

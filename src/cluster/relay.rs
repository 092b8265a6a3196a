//! Many small calls to one node sent as one. A report that arrives at a
//! node not serving its partition would otherwise cost a whole node-to-node
//! HTTP request (a signed request, two loopback writes and reads, and the
//! owner's request pipeline) for a few hundred bytes of work. The relay
//! keeps a queue per peer: whatever is queued while its batch is in
//! flight goes in the next batch, as the journal's group commit does, so
//! under load a batch carries many items and when idle an item leaves at
//! once.
//!
//! A batch is `POST <path>` with `{"items": [...]}`, signed like every
//! node-to-node call; the peer answers `{"answers": [...]}`, one per item in
//! order. What an item means is the caller's business: the relay carries
//! JSON text, serialized once by the caller and copied into the batch. (No crate batches calls to an HTTP peer this way; tower's
//! `Buffer` queues but sends one call per item.)
//!
//! A caller on a single-threaded runtime (an HTTP worker) gets queues of
//! its own, sent from that thread over connections of its own: an item
//! and its answer then cross no thread, where a shared sender on the
//! cluster runtime cost several wake-ups of other threads per batch (the
//! queue's, the connection task's, each waiting caller's), which under a
//! CPU quota cost more than the batch's HTTP work.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot};

use super::peers::Client;
use crate::topology::Call;
use crate::topology::wire::{Answers, Batch, Unreachable};

/// Items in one batch at the most.
const MAX_ITEMS: usize = 256;

/// One queued item and who waits for its answer.
struct Pending {
    item: Box<RawValue>,
    answer: oneshot::Sender<Result<Box<RawValue>, String>>,
}

impl Pending {
    /// What it adds to a batch's body.
    fn size(&self) -> usize {
        self.item.get().len() + 1
    }
}

/// Batches items for each peer and posts them to one path.
pub struct Relay {
    peers: Client,
    path: &'static str,
    /// A batch's body stays under this (the peer's request body limit).
    max_bytes: usize,
    /// How long a batch may wait for its answer.
    timeout: Duration,
    runtime: Handle,
    /// The queues by caller thread (`None`: the shared ones, sent on
    /// `runtime`), then by peer address.
    queues: Mutex<HashMap<Option<ThreadId>, Queues>>,
}

/// One caller thread's queues, by peer address.
type Queues = HashMap<String, mpsc::UnboundedSender<Pending>>;

impl Relay {
    /// A relay posting batches to `path` through `peers`, each body under
    /// `max_bytes` and answered within `timeout`, its shared senders on
    /// `runtime`.
    pub fn new(
        peers: Client,
        path: &'static str,
        max_bytes: usize,
        timeout: Duration,
        runtime: Handle,
    ) -> Relay {
        Relay {
            peers,
            path,
            max_bytes,
            timeout,
            runtime,
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `item` to the node at `address` in its next batch; answers
    /// that node's answer to it.
    pub async fn call(
        &self,
        address: &str,
        item: Box<RawValue>,
    ) -> Result<Box<RawValue>, Unreachable> {
        let unreachable = |reason: String| Unreachable {
            address: address.to_string(),
            reason,
        };
        let (answer, answered) = oneshot::channel();
        let mut pending = Pending { item, answer };
        let local = Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread);
        let thread = local.as_ref().map(|_| std::thread::current().id());
        // A queue whose sender stopped (its runtime is going) is replaced
        // once; a second refusal means the node is stopping.
        for _ in 0..2 {
            match self.queue(thread, local.as_ref(), address).send(pending) {
                Ok(()) => {
                    return answered
                        .await
                        .map_err(|_| unreachable("the relay stopped".into()))?
                        .map_err(unreachable);
                }
                Err(mpsc::error::SendError(back)) => {
                    if let Some(queues) = self.lock().get_mut(&thread) {
                        queues.remove(address);
                    }
                    pending = back;
                }
            }
        }
        Err(unreachable("the relay stopped".into()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<ThreadId>, Queues>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queue of caller `thread` to the peer at `address`, its sender
    /// started on first use: on the caller's single-threaded runtime
    /// `local`, if any, with connections of its own, else on the cluster
    /// runtime.
    fn queue(
        &self,
        thread: Option<ThreadId>,
        local: Option<&Handle>,
        address: &str,
    ) -> mpsc::UnboundedSender<Pending> {
        let mut queues = self.lock();
        let queues = queues.entry(thread).or_default();
        if let Some(queue) = queues.get(address) {
            return queue.clone();
        }
        let (queue, queued) = mpsc::unbounded_channel();
        let sender = Sender {
            peers: match local {
                Some(_) => self.peers.with_own_connections(),
                None => self.peers.clone(),
            },
            path: self.path,
            address: address.to_string(),
            max_bytes: self.max_bytes,
            timeout: self.timeout,
        };
        local.unwrap_or(&self.runtime).spawn(sender.run(queued));
        queues.insert(address.to_string(), queue.clone());
        queue
    }
}

/// Sends one peer's queue in batches.
struct Sender {
    peers: Client,
    path: &'static str,
    address: String,
    max_bytes: usize,
    timeout: Duration,
}

impl Sender {
    /// Sends the queue one batch at a time: while one is in flight, items
    /// gather for the next, as in the journal's group commit. (With four
    /// batches in flight per peer, batches under the cluster bench's load
    /// carried 2.6 reports; with one, 8-9, at a third less CPU per relayed
    /// report.)
    async fn run(self, mut queued: mpsc::UnboundedReceiver<Pending>) {
        // An item left over from a full batch starts the next one.
        let mut next = None;
        loop {
            let first = match next.take() {
                Some(first) => first,
                None => match queued.recv().await {
                    Some(first) => first,
                    None => return,
                },
            };
            let mut size = first.size();
            let mut batch = vec![first];
            while batch.len() < MAX_ITEMS {
                let Ok(more) = queued.try_recv() else { break };
                if size + more.size() > self.max_bytes {
                    next = Some(more);
                    break;
                }
                size += more.size();
                batch.push(more);
            }
            self.send(batch).await;
        }
    }

    /// Posts `batch` and hands each item its answer (or why none came).
    async fn send(&self, batch: Vec<Pending>) {
        let (items, waiting): (Vec<Box<RawValue>>, Vec<_>) =
            batch.into_iter().map(|p| (p.item, p.answer)).unzip();
        metrics::counter!("pushd_cluster_relay_batches_total").increment(1);
        let answers = match serde_json::to_vec(&Batch { items }) {
            Ok(body) => self.post(Bytes::from(body), waiting.len()).await,
            Err(e) => Err(e.to_string()),
        };
        match answers {
            Ok(answers) => {
                for (answer, waiter) in answers.into_iter().zip(waiting) {
                    let _ = waiter.send(Ok(answer));
                }
            }
            Err(why) => {
                for waiter in waiting {
                    let _ = waiter.send(Err(why.clone()));
                }
            }
        }
    }

    async fn post(&self, body: Bytes, count: usize) -> Result<Vec<Box<RawValue>>, String> {
        let answer = self
            .peers
            .call(Call {
                timeout: self.timeout,
                address: &self.address,
                method: &Method::POST,
                path_and_query: self.path,
                caller: None,
                headers: &[],
                body,
            })
            .await
            .map_err(|e| e.reason)?;
        if answer.status != StatusCode::OK {
            let body = String::from_utf8_lossy(&answer.body);
            return Err(format!("answered {}: {body}", answer.status));
        }
        let answers: Answers<Box<RawValue>> =
            serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
        match answers.answers.len() == count {
            true => Ok(answers.answers),
            false => Err(format!(
                "answered {} of {count} items",
                answers.answers.len()
            )),
        }
    }
}

//! Group commit: one background thread makes every write applied while the
//! previous flush ran durable with a single `db.flush()`, and resolves the
//! waiters of that group together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use pushd_actors::ports::{BoxFuture, StoreError};
use tokio::sync::oneshot;

use super::Error;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

#[derive(Default)]
struct Queue {
    waiters: Vec<Waiter>,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    flushes: AtomicU64,
}

/// The flusher thread and its queue of waiters.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    /// Starts the flusher thread for `db`.
    pub fn start(db: sled::Db) -> Result<Flusher, Error> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("pushd-store-flush".into())
            .spawn(move || run(&worker, &db))
            .map_err(|e| Error::Db(e.into()))?;
        Ok(Flusher {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Resolves once everything applied before this call is durable.
    pub fn durable(&self) -> BoxFuture<Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut queue = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if queue.closing {
                return Box::pin(async { Err(Error::Closed.into()) });
            }
            queue.waiters.push(tx);
        }
        self.shared.wake.notify_one();
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(Error::Closed.into())) })
    }

    /// Whether [`Flusher::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closing
    }

    /// How many flushes ran.
    pub fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    /// Flushes what is queued, then stops the thread. Idempotent.
    pub fn close(&self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closing = true;
        self.shared.wake.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("store flusher thread panicked");
        }
    }
}

/// Under load (waiters already queued when a flush ends) the flusher waits
/// this long for more to join before flushing, so a group grows and fsyncs
/// (and sled's I/O thread hand-offs) become fewer. When idle it flushes at
/// once, so a lone request pays no extra latency.
const GATHER: std::time::Duration = std::time::Duration::from_micros(500);

fn run(shared: &Shared, db: &sled::Db) {
    loop {
        let busy = !shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .waiters
            .is_empty();
        if busy {
            std::thread::sleep(GATHER);
        }
        let group = {
            let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            while queue.waiters.is_empty() && !queue.closing {
                queue = shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if queue.waiters.is_empty() {
                return;
            }
            std::mem::take(&mut queue.waiters)
        };
        let started = Instant::now();
        let result = db
            .flush()
            .map(drop)
            .map_err(|e| StoreError::from(Error::from(e)));
        metrics::histogram!("pushd_store_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("pushd_store_flushes_total").increment(1);
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = group.len(), "store flush failed");
        }
        for waiter in group {
            let _ = waiter.send(result.clone());
        }
    }
}

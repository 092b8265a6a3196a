//! Erased customers in the event log.
//!
//! A customer's erasure reaches the log with its journal record, like the
//! events (through [`ChangeSink`](crate::store::ChangeSink)). From then on
//! reads skip every event of the customer from a journal record up to the
//! erasure's (a later one is of the id used again, and stays). The writer
//! records the erasure in `erasures.json` (a new file, fsynced, renamed
//! over the old one) once the journal made its record durable and every
//! event before it is written, so it is durable before sled covers the
//! record and the journal deletes it (the log's invariant 2). Then
//! compaction, on the writer thread, overwrites each such event in its
//! segment with a tombstone of the same length, `{"erased":true}` padded
//! with spaces, under a new checksum, and fsyncs the segment: offsets (the
//! cursors handed out) stay valid, readers skip tombstones, and the
//! customer's data is gone from the file. Only then does the erasure leave
//! `erasures.json`, which so holds an erased id only while its compaction
//! is pending (seconds). A start finds the file and compacts again.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use pushd_actors::ports::Position;
use serde::{Deserialize, Serialize};

use super::frame::Frame;
use crate::segfile::dir;

/// The file of the erasures compaction has not finished.
pub const FILE: &str = "erasures.json";
/// Where the next version of the file is written before its rename.
const TEMP: &str = "erasures.json.tmp";
/// What an erased event's body becomes (then spaces to its length).
const TOMBSTONE: &[u8] = br#"{"erased":true}"#;

/// Customers erased, each with the journal position of its last erasure:
/// their events from records up to it are erased.
pub type Erased = HashMap<String, Position>;

/// The file's content.
#[derive(Serialize, Deserialize)]
struct Saved {
    erased: Vec<SavedErasure>,
}

/// One erasure in the file.
#[derive(Serialize, Deserialize)]
struct SavedErasure {
    customer_id: String,
    position: Position,
}

/// The log's erasures: what reads skip, and what compaction has to do.
pub struct Erasures {
    dir: PathBuf,
    /// What reads skip: every erasure seen. Replaced whole, so a read keeps
    /// the view it started with while compaction finishes.
    hidden: Mutex<Arc<Erased>>,
    /// Erasures in the file whose events are not all tombstones yet.
    recorded: Mutex<Erased>,
    /// Set when there is compaction to do.
    due: AtomicBool,
    /// Readers hold it shared while they read segment bytes, compaction
    /// alone while it overwrites an event: no read sees half a tombstone.
    rewriting: RwLock<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Erasures {
    /// Loads the erasures of the log in `dir` whose compaction is pending
    /// (then due again), and drops a version of the file a crash left
    /// unfinished.
    pub fn open(dir: &Path) -> io::Result<Erasures> {
        match fs::remove_file(dir.join(TEMP)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let erased: Erased = match fs::read(dir.join(FILE)) {
            Ok(bytes) => {
                let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("{FILE}: {e}"))
                })?;
                (saved.erased.into_iter())
                    .map(|e| (e.customer_id, e.position))
                    .collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Erased::new(),
            Err(e) => return Err(e),
        };
        Ok(Erasures {
            dir: dir.to_path_buf(),
            due: AtomicBool::new(!erased.is_empty()),
            hidden: Mutex::new(Arc::new(erased.clone())),
            recorded: Mutex::new(erased),
            rewriting: RwLock::new(()),
        })
    }

    /// From now on reads skip the events of `customers` from journal
    /// records up to `position`.
    pub fn hide(&self, position: Position, customers: &[String]) {
        let mut hidden = lock(&self.hidden);
        let mut next = Erased::clone(&hidden);
        for customer in customers {
            raise(&mut next, customer, position);
        }
        *hidden = Arc::new(next);
    }

    /// What reads skip now.
    pub fn hidden(&self) -> Arc<Erased> {
        lock(&self.hidden).clone()
    }

    /// Makes the erasures of `customers` at `position` durable in the file
    /// (every event before them is written) and due for compaction.
    pub fn record(&self, position: Position, customers: &[String]) -> io::Result<()> {
        let mut recorded = lock(&self.recorded);
        for customer in customers {
            raise(&mut recorded, customer, position);
        }
        self.save(&recorded)?;
        self.due.store(true, Ordering::Release);
        Ok(())
    }

    /// The erasures to compact, if any are due (they are then no longer
    /// due until [`Erasures::record`] or [`Erasures::compacted`] says so).
    pub fn take_due(&self) -> Option<Erased> {
        if !self.due.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(lock(&self.recorded).clone()).filter(|e| !e.is_empty())
    }

    /// Whether compaction is due.
    pub fn due(&self) -> bool {
        self.due.load(Ordering::Acquire)
    }

    /// Every event of `done` is a tombstone, durably: those erasures leave
    /// the file, and reads need not check them any more. A compaction cut
    /// short passes `finished: false`, and stays due.
    pub fn compacted(&self, done: &Erased, finished: bool) -> io::Result<()> {
        if !finished {
            self.due.store(true, Ordering::Release);
            return Ok(());
        }
        let mut recorded = lock(&self.recorded);
        recorded.retain(|customer, p| done.get(customer) != Some(p));
        self.save(&recorded)?;
        let mut hidden = lock(&self.hidden);
        let mut next = Erased::clone(&hidden);
        next.retain(|customer, p| done.get(customer).is_none_or(|d| *p > *d));
        *hidden = Arc::new(next);
        Ok(())
    }

    /// The content of [`FILE`] for a copy of the log's segments as of
    /// journal `position` (a backup): the erasures at or before it whose
    /// events may not all be tombstones yet; `None` if there are none. A
    /// log opened on the copy skips those events, and compacts them.
    pub fn export(&self, position: Position) -> Option<Vec<u8>> {
        let hidden = self.hidden();
        let erased: Erased = (hidden.iter())
            .filter(|(_, p)| **p <= position)
            .map(|(c, p)| (c.clone(), *p))
            .collect();
        (!erased.is_empty()).then(|| saved(&erased))
    }

    /// Held while reading segment bytes.
    pub fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.rewriting
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Overwrites the event framed as `frame` at `at` in `file` with its
    /// tombstone, while no reader reads.
    pub fn overwrite(&self, file: &File, at: u64, frame: &Frame<'_>) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let body = tombstone(frame.body.len());
        let mut bytes = Vec::with_capacity(frame.framed_len());
        Frame {
            body: &body,
            ..frame.clone()
        }
        .encode(&mut bytes)
        .map_err(io::Error::other)?;
        debug_assert_eq!(bytes.len(), frame.framed_len(), "the same length");
        let _alone = self
            .rewriting
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        file.write_all_at(&bytes, at)
    }

    /// Writes `erased` as the file (a new file, fsynced, renamed over the
    /// old one, the directory fsynced), or removes the file once empty.
    fn save(&self, erased: &Erased) -> io::Result<()> {
        let path = self.dir.join(FILE);
        if erased.is_empty() {
            match fs::remove_file(&path) {
                Ok(()) => return dir::sync_dir(&self.dir),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let temp = self.dir.join(TEMP);
        let mut file = File::create(&temp)?;
        file.write_all(&saved(erased))?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        dir::sync_dir(&self.dir)
    }
}

/// The file's content holding `erased`, in journal order.
fn saved(erased: &Erased) -> Vec<u8> {
    let mut saved = Saved {
        erased: (erased.iter())
            .map(|(customer_id, &position)| SavedErasure {
                customer_id: customer_id.clone(),
                position,
            })
            .collect(),
    };
    saved.erased.sort_by_key(|e| e.position);
    serde_json::to_vec(&saved).expect("erasures serialize")
}

/// Sets `customer`'s erasure to `position` unless a later one is there.
fn raise(erased: &mut Erased, customer: &str, position: Position) {
    let p = erased.entry(customer.to_owned()).or_default();
    *p = (*p).max(position);
}

/// An erased event's body: the tombstone, padded with spaces to `len`
/// bytes (an event's JSON is always longer than the tombstone; a shorter
/// body is blanked).
fn tombstone(len: usize) -> Vec<u8> {
    let mut body = match len >= TOMBSTONE.len() {
        true => TOMBSTONE.to_vec(),
        false => Vec::new(),
    };
    body.resize(len, b' ');
    body
}

/// Whether an event's body is a tombstone.
pub fn is_tombstone(body: &[u8]) -> bool {
    body.starts_with(TOMBSTONE) || body.iter().all(|&b| b == b' ')
}

/// Whether the event framed as `frame` is one of `erased`'s.
pub fn erases(erased: &Erased, frame: &Frame<'_>) -> bool {
    if erased.is_empty() || is_tombstone(frame.body) {
        return false;
    }
    customer_of(frame.body)
        .and_then(|c| erased.get(c.as_ref()))
        .is_some_and(|&p| frame.position <= p)
}

/// The customer an event's JSON names.
fn customer_of(body: &[u8]) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Whose<'a> {
        #[serde(borrow)]
        customer_id: Cow<'a, str>,
    }
    serde_json::from_slice::<Whose<'_>>(body)
        .ok()
        .map(|w| w.customer_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_is_json_of_the_same_length() {
        let t = tombstone(40);
        assert_eq!(t.len(), 40);
        let v: serde_json::Value = serde_json::from_slice(&t).unwrap();
        assert_eq!(v, serde_json::json!({"erased": true}));
        assert!(is_tombstone(&t) && is_tombstone(&tombstone(3)));
        assert!(!is_tombstone(br#"{"event_id":"x","customer_id":"c"}"#));
    }

    #[test]
    fn an_event_is_erased_up_to_its_customers_erasure() {
        let erased = Erased::from([("c\"1".to_owned(), 7)]);
        let body = serde_json::to_vec(&serde_json::json!({"customer_id": "c\"1"})).unwrap();
        let frame = |position| Frame {
            offset: 0,
            seq: 1,
            position,
            time_ms: 0,
            status: 0,
            flags: 0,
            body: &body,
        };
        assert!(erases(&erased, &frame(7)));
        assert!(!erases(&erased, &frame(8)), "the id used again");
        assert!(!erases(&Erased::new(), &frame(7)));
    }

    #[test]
    fn a_copy_as_of_a_position_carries_the_erasures_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = Erasures::open(dir.path()).unwrap();
        assert!(e.export(100).is_none());
        e.hide(5, &["a".into()]);
        e.hide(9, &["b".into()]);
        assert!(e.export(4).is_none());
        let copied = tempfile::tempdir().unwrap();
        std::fs::write(copied.path().join(FILE), e.export(7).unwrap()).unwrap();
        let opened = Erasures::open(copied.path()).unwrap();
        assert_eq!(*opened.hidden(), Erased::from([("a".into(), 5)]));
        assert_eq!(opened.take_due().unwrap(), Erased::from([("a".into(), 5)]));
    }

    #[test]
    fn the_file_holds_what_is_not_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let e = Erasures::open(dir.path()).unwrap();
        assert!(e.take_due().is_none());
        e.hide(5, &["a".into()]);
        assert_eq!(e.hidden().get("a"), Some(&5));
        e.record(5, &["a".into()]).unwrap();
        e.record(9, &["b".into()]).unwrap();
        let again = Erasures::open(dir.path()).unwrap();
        let due = again.take_due().unwrap();
        assert_eq!(due, Erased::from([("a".into(), 5), ("b".into(), 9)]));
        assert!(again.take_due().is_none(), "taken");
        // "b" erased again while "a" and "b" were compacted: only "a" goes.
        again.record(12, &["b".into()]).unwrap();
        again.compacted(&due, true).unwrap();
        let left = Erasures::open(dir.path()).unwrap();
        assert_eq!(left.take_due().unwrap(), Erased::from([("b".into(), 12)]));
        left.compacted(&Erased::from([("b".into(), 12)]), true)
            .unwrap();
        assert!(!dir.path().join(FILE).exists(), "no file once all done");
        assert!(left.hidden().is_empty());
    }
}

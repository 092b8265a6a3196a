//! Turns of the engine's threads. A turn is what an actor thread does
//! between two visits to its queue of ready tasks: the messages of many
//! customers' actors, the outcomes of many sends. The records its actors
//! write in one turn reach the journal as one group: the journal's writer
//! is woken once, when the turn ends, not once a record. Each wake is a
//! system call on the engine's one serial thread (and a sleep and a wake of
//! the writer's); in the load bench they were a twentieth of the daemon's
//! CPU while it sent.
//!
//! The turn ends in a task queued behind the turn's own work on the same
//! thread, so a record waits at most for the tasks ready when it was
//! written. Off the actor threads (tests that run actors on their own
//! task, replay on start) a record is appended as it always was.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::ports::{Change, Journal, JournalError, Position};

thread_local! {
    /// Set on the actor threads (see [`Shards`](crate::registry::Shards)).
    static ACTOR_THREAD: Cell<bool> = const { Cell::new(false) };
    /// The journals written in this turn, to tell when it ends: the
    /// partitions of a cluster node share the actor threads.
    static WRITTEN: RefCell<Vec<Arc<dyn Journal>>> = const { RefCell::new(Vec::new()) };
}

/// Marks this thread as an actor thread: its appends end with its turn.
pub fn mark_actor_thread() {
    ACTOR_THREAD.set(true);
}

/// Appends `changes` to `journal`: on an actor thread, in the current
/// turn (the first append of a turn queues its end); elsewhere, at once.
pub fn append(journal: &Arc<dyn Journal>, changes: &[Change]) -> Result<Position, JournalError> {
    if !ACTOR_THREAD.get() {
        return journal.append(changes);
    }
    let position = journal.append_in_turn(changes)?;
    WRITTEN.with_borrow_mut(|written| {
        let same = |j: &Arc<dyn Journal>| std::ptr::addr_eq(Arc::as_ptr(j), Arc::as_ptr(journal));
        if written.iter().any(same) {
            return;
        }
        if written.is_empty() {
            actix::spawn(async { end() });
        }
        written.push(journal.clone());
    });
    Ok(position)
}

/// Ends the turn: every journal written in it sends its records out.
fn end() {
    for journal in WRITTEN.take() {
        journal.end_turn();
    }
}

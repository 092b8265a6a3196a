//! The group commit every [`Journal`](crate::ports::Journal) shares: the
//! records appended and not yet durable, the positions, the waiters, and
//! the hand-off of whole groups to one writer.
//!
//! Appenders encode each record straight into one buffer, under one lock,
//! and get its position back (1, 2, 3, ... in append order). A single
//! writer takes everything appended so far as one [`Group`] (the buffer is
//! swapped with a spare, so neither side allocates), makes it durable at
//! once in its own way (a file journal with one `write` and one
//! `fdatasync`, a replicated one with one publish, a test double in
//! memory), and [`finish`](GroupCommit::finish)es it: the durable position
//! moves to the group's last record and every waiter up to it is answered,
//! together. One group is out at a time, so groups complete in order.
//! Whatever is appended while one group is written forms the next, so
//! groups grow with the load and nobody sleeps to gather them.
//!
//! A group that could not be made durable fails the journal for good: the
//! state of what holds the records is unknown, so every waiter, now and
//! later, is answered with the error, every later append is refused, and
//! what was appended and not taken is dropped (nothing more is
//! acknowledged until a restart replays what really is durable).
//! [`GroupCommit::close`] refuses later appends; the writer still takes
//! what was appended, then is told to stop.
//!
//! The writer is woken only when it sleeps for want of work: a wake-up is
//! a system call on the hot path, and a busy writer takes the next group
//! by itself. It sleeps as a thread
//! ([`GroupCommit::next_group_blocking`]) or as a task
//! ([`GroupCommit::next_group`]), and is woken accordingly.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::{Notify, oneshot};

use crate::ports::{BoxFuture, JournalError, Position};

mod group;
pub use group::{Group, Part};

type Waiter = oneshot::Sender<Result<(), JournalError>>;

/// One journal's group commit. See the [module](self).
pub struct GroupCommit {
    state: Mutex<State>,
    /// Wakes a writer thread asleep in [`GroupCommit::next_group_blocking`].
    work: Condvar,
    /// Wakes a writer task asleep in [`GroupCommit::next_group`].
    notify: Notify,
    /// Wakes the threads blocked in [`GroupCommit::wait_durable`].
    synced: Condvar,
    /// `State::buf`'s length as of the last append or take, read without
    /// the lock (see [`GroupCommit::backlog`]).
    queued: std::sync::atomic::AtomicUsize,
    /// Told the durable position after each group (see
    /// [`GroupCommit::after_each_group`]).
    after_group: OnceLock<AfterGroup>,
}

/// What [`GroupCommit::after_each_group`] calls.
pub type AfterGroup = Box<dyn Fn(Position) + Send + Sync>;

/// How the writer sleeps while there is nothing to write.
enum Sleep {
    /// A thread, on [`GroupCommit::work`].
    Thread,
    /// A task, on [`GroupCommit::notify`].
    Task,
}

/// What appenders, waiters and the writer share, under one lock.
struct State {
    /// The records appended and not yet taken, back to back.
    buf: Vec<u8>,
    /// Where each record in `buf` ends.
    ends: Vec<usize>,
    /// The buffers of the last finished group, emptied, for the next take.
    spare: (Vec<u8>, Vec<usize>),
    /// Set while a group is taken and not yet finished: one at a time.
    writing: bool,
    /// The last position appended.
    last: Position,
    /// The last position made durable.
    durable: Position,
    /// Async waiters for positions not yet durable.
    waiters: Vec<(Position, Waiter)>,
    /// Why the journal failed for good, once it did.
    failed: Option<String>,
    /// Set by [`GroupCommit::close`].
    closing: bool,
    /// Groups made durable.
    groups: u64,
    /// Set while the writer sleeps for want of work: only then does an
    /// append wake it.
    idle: Option<Sleep>,
    /// Threads blocked in [`GroupCommit::wait_durable`]: only when there
    /// are some does a group wake them.
    blocked: usize,
}

impl State {
    /// The error an append meets now, if any.
    fn refusal(&self) -> Option<JournalError> {
        match (&self.failed, self.closing) {
            (Some(why), _) => Some(JournalError(why.clone())),
            (None, true) => Some(JournalError("the journal is closed".into())),
            (None, false) => None,
        }
    }

    /// Everything appended so far, as one group, unless one is out.
    fn take(&mut self) -> Option<Group> {
        if self.writing || self.ends.is_empty() {
            return None;
        }
        self.writing = true;
        let (data, ends) = std::mem::take(&mut self.spare);
        let data = std::mem::replace(&mut self.buf, data);
        let ends = std::mem::replace(&mut self.ends, ends);
        let first = self.last + 1 - ends.len() as u64;
        Some(Group::new(data, ends, first))
    }

    /// Fails the journal for good: what was not taken is dropped, and
    /// every waiter is handed back to be answered with the error.
    fn fail(&mut self, why: String) -> Vec<Waiter> {
        self.failed.get_or_insert(why);
        self.buf.clear();
        self.ends.clear();
        self.waiters.drain(..).map(|(_, w)| w).collect()
    }
}

/// What [`GroupCommit::next_group_blocking`] hands the writer.
pub enum Next {
    /// Everything appended so far, to make durable and then
    /// [`finish`](GroupCommit::finish).
    Group(Group),
    /// No records, but the writer's own work is waiting.
    Other,
    /// Closed (or failed) and nothing is left to write: the writer stops.
    Closed,
}

impl GroupCommit {
    /// A group commit whose last appended and durable record is at `last`;
    /// its buffers start with room for `capacity` bytes of records.
    pub fn new(last: Position, capacity: usize) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                buf: Vec::with_capacity(capacity),
                ends: Vec::new(),
                spare: (Vec::with_capacity(capacity), Vec::new()),
                writing: false,
                last,
                durable: last,
                waiters: Vec::new(),
                failed: None,
                closing: false,
                groups: 0,
                idle: None,
                blocked: 0,
            }),
            work: Condvar::new(),
            notify: Notify::new(),
            synced: Condvar::new(),
            queued: std::sync::atomic::AtomicUsize::new(0),
            after_group: OnceLock::new(),
        }
    }

    /// Has `tell` called on the writer's thread after each group, once its
    /// waiters are answered, with the durable position: a follower of the
    /// journal (the event log) is woken by the writer, which is awake
    /// anyway, rather than by each appender. After a failed group it is
    /// told `Position::MAX`: nothing more will be made durable, and a wait
    /// answers the failure. One follower; a second is refused (`false`).
    pub fn after_each_group(&self, tell: AfterGroup) -> bool {
        self.after_group.set(tell).is_ok()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one record: `encode` writes its bytes at the end of the
    /// buffer it is given, for the position it is given, which is answered.
    /// Refused once the journal failed or closed. If `encode` fails the
    /// buffer is cut back to where it was and nothing is appended.
    pub fn append(
        &self,
        encode: impl FnOnce(Position, &mut Vec<u8>) -> Result<(), String>,
    ) -> Result<Position, JournalError> {
        self.push(encode, true)
    }

    /// [`GroupCommit::append`], leaving a sleeping writer asleep: for a
    /// caller that appends several records in one turn of its thread and
    /// then calls [`GroupCommit::wake_writer`] once, so they go out as one
    /// group and the writer is woken once, not once a record.
    pub fn append_in_turn(
        &self,
        encode: impl FnOnce(Position, &mut Vec<u8>) -> Result<(), String>,
    ) -> Result<Position, JournalError> {
        self.push(encode, false)
    }

    /// Appends one record, waking a sleeping writer if `wake`.
    fn push(
        &self,
        encode: impl FnOnce(Position, &mut Vec<u8>) -> Result<(), String>,
        wake: bool,
    ) -> Result<Position, JournalError> {
        let mut state = self.lock();
        if let Some(refused) = state.refusal() {
            return Err(refused);
        }
        let position = state.last + 1;
        let start = state.buf.len();
        if let Err(e) = encode(position, &mut state.buf) {
            state.buf.truncate(start);
            return Err(JournalError(e));
        }
        let end = state.buf.len();
        state.ends.push(end);
        state.last = position;
        self.queued.store(end, std::sync::atomic::Ordering::Relaxed);
        let idle = if wake { state.idle.take() } else { None };
        drop(state);
        if let Some(sleep) = idle {
            self.wake(sleep);
        }
        Ok(position)
    }

    /// Resolves once every record up to `position` is durable, or with the
    /// error once the journal failed.
    pub fn durable(&self, position: Position) -> BoxFuture<Result<(), JournalError>> {
        let mut state = self.lock();
        if position <= state.durable {
            return Box::pin(std::future::ready(Ok(())));
        }
        if let Some(why) = &state.failed {
            return Box::pin(std::future::ready(Err(JournalError(why.clone()))));
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push((position, tx));
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(JournalError("the journal closed".into())))
        })
    }

    /// Blocks this thread until every record up to `position` is durable,
    /// or the journal failed.
    pub fn wait_durable(&self, position: Position) -> Result<(), JournalError> {
        let mut state = self.lock();
        loop {
            if position <= state.durable {
                return Ok(());
            }
            if let Some(why) = &state.failed {
                return Err(JournalError(why.clone()));
            }
            // A record appended in a turn not yet ended must not wait for
            // that turn: this thread may be the one to end it.
            if !state.ends.is_empty()
                && let Some(sleep) = state.idle.take()
            {
                self.wake(sleep);
            }
            state.blocked += 1;
            state = self
                .synced
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.blocked -= 1;
        }
    }

    /// For a writer thread: the next group, as soon as there is one (or
    /// [`Next::Other`] once `other` says the writer's own work waits, or
    /// [`Next::Closed`]). `other` is asked under the lock; whoever makes it
    /// true then calls [`GroupCommit::wake_writer`].
    pub fn next_group_blocking(&self, mut other: impl FnMut() -> bool) -> Next {
        let mut state = self.lock();
        let next = loop {
            if let Some(group) = self.take_from(&mut state) {
                break Next::Group(group);
            }
            if other() {
                break Next::Other;
            }
            if state.closing || state.failed.is_some() {
                break Next::Closed;
            }
            state.idle = Some(Sleep::Thread);
            state = self
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        };
        state.idle = None;
        next
    }

    /// For a writer task: the next group, as soon as there is one; `None`
    /// once closed (or failed) and nothing is left to write.
    pub async fn next_group(&self) -> Option<Group> {
        loop {
            {
                let mut state = self.lock();
                if let Some(group) = self.take_from(&mut state) {
                    state.idle = None;
                    return Some(group);
                }
                if state.closing || state.failed.is_some() {
                    state.idle = None;
                    return None;
                }
                state.idle = Some(Sleep::Task);
            }
            self.notify.notified().await;
        }
    }

    /// Everything appended so far as one group, if anything was and no
    /// other group is out, without waiting: for a writer that runs when it
    /// is called.
    pub fn take_group(&self) -> Option<Group> {
        self.take_from(&mut self.lock())
    }

    /// [`State::take`], noting the queue left (none) for
    /// [`GroupCommit::backlog`].
    fn take_from(&self, state: &mut State) -> Option<Group> {
        let group = state.take()?;
        self.queued
            .store(state.buf.len(), std::sync::atomic::Ordering::Relaxed);
        Some(group)
    }

    /// Publishes the outcome of the group last taken. Made durable: the
    /// durable position moves to its last record and its waiters (every
    /// one up to it) are answered. Not (`Err(why)`): the journal fails for
    /// good, and every waiter is answered with `why`.
    pub fn finish(&self, group: Group, outcome: Result<(), String>) {
        let (first, last) = (group.first(), group.last());
        let mut state = self.lock();
        state.spare = group.into_spare();
        state.writing = false;
        let (done, answer) = match outcome {
            Ok(()) if state.failed.is_none() => {
                debug_assert_eq!(first, state.durable + 1, "groups finish in order");
                state.durable = last;
                state.groups += 1;
                let done = state.waiters.extract_if(.., |(p, _)| *p <= last);
                (done.map(|(_, w)| w).collect(), Ok(()))
            }
            Ok(()) => (Vec::new(), Ok(())),
            Err(why) => {
                self.queued.store(0, std::sync::atomic::Ordering::Relaxed);
                (state.fail(why.clone()), Err(JournalError(why)))
            }
        };
        let blocked = state.blocked > 0;
        let reached = match &state.failed {
            Some(_) => Position::MAX,
            None => state.durable,
        };
        drop(state);
        if blocked {
            self.synced.notify_all();
        }
        for waiter in done {
            let _ = waiter.send(answer.clone());
        }
        if let Some(tell) = self.after_group.get() {
            tell(reached);
        }
    }

    /// Refuses every later append; the writer still takes what was
    /// appended, then is told to stop. Idempotent.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closing = true;
        let idle = state.idle.take();
        drop(state);
        if let Some(sleep) = idle {
            self.wake(sleep);
        }
    }

    /// Wakes the writer if it sleeps: its own work waits (see
    /// [`GroupCommit::next_group_blocking`]).
    pub fn wake_writer(&self) {
        let idle = self.lock().idle.take();
        if let Some(sleep) = idle {
            self.wake(sleep);
        }
    }

    fn wake(&self, sleep: Sleep) {
        match sleep {
            Sleep::Thread => self.work.notify_one(),
            Sleep::Task => self.notify.notify_one(),
        }
    }

    /// The last position made durable.
    pub fn last_durable(&self) -> Position {
        self.lock().durable
    }

    /// Why the journal failed for good, if it did.
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Groups made durable so far.
    pub fn groups(&self) -> u64 {
        self.lock().groups
    }

    /// Bytes of records appended and not yet taken by the writer: the
    /// queue that grows while a slow disk holds a group.
    pub fn backlog(&self) -> usize {
        self.queued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether [`GroupCommit::close`] was called.
    pub fn closing(&self) -> bool {
        self.lock().closing
    }
}

#[cfg(test)]
mod tests;

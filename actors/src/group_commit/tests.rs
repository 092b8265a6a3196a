//! The group commit against its promises: waiters answered when a group
//! covering them completes and never before, a failure answering everyone
//! and refusing what follows, appends during a group forming the next, and
//! a close draining what was appended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::{GroupCommit, Next};
use crate::ports::{BoxFuture, JournalError, Position};

type Answer = Result<(), JournalError>;

/// Appends one record holding `bytes`.
fn append(commit: &GroupCommit, bytes: &[u8]) -> Position {
    commit
        .append(|_, buf| {
            buf.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap()
}

/// The future's answer if it has one now.
fn now(future: &mut BoxFuture<Answer>) -> Option<Answer> {
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(answer) => Some(answer),
        Poll::Pending => None,
    }
}

fn failed(why: &str) -> Option<Answer> {
    Some(Err(JournalError(why.into())))
}

#[test]
fn waiters_are_answered_when_a_group_covering_them_completes_and_never_before() {
    let commit = GroupCommit::new(10, 0);
    assert_eq!(append(&commit, b"a"), 11, "positions go on after `last`");
    assert_eq!(append(&commit, b"bb"), 12);
    // Registered out of order: each is answered by the group covering it.
    let mut w12 = commit.durable(12);
    let mut w11 = commit.durable(11);
    let group = commit.take_group().unwrap();
    assert_eq!((group.first(), group.last(), group.count()), (11, 12, 2));
    assert_eq!(group.bytes(), b"abb");
    assert_eq!(append(&commit, b"c"), 13);
    let mut w13 = commit.durable(13);
    assert_eq!(now(&mut w11), None, "taken is not durable");
    assert_eq!(now(&mut w12), None);

    commit.finish(group, Ok(()));
    assert_eq!(now(&mut w11), Some(Ok(())));
    assert_eq!(now(&mut w12), Some(Ok(())));
    assert_eq!(now(&mut w13), None, "13 is in the next group");
    assert_eq!(commit.last_durable(), 12);
    assert_eq!(
        now(&mut commit.durable(12)),
        Some(Ok(())),
        "durable already"
    );

    let next = commit.take_group().unwrap();
    assert_eq!((next.first(), next.last()), (13, 13));
    commit.finish(next, Ok(()));
    assert_eq!(now(&mut w13), Some(Ok(())));
    assert_eq!(commit.groups(), 2);
    assert!(commit.take_group().is_none(), "nothing left");
}

#[test]
fn appends_during_a_group_form_the_next_group_in_the_same_buffers() {
    let commit = GroupCommit::new(0, 64);
    append(&commit, b"one");
    append(&commit, b"two");
    assert_eq!(commit.backlog(), 6, "two records wait");
    let first = commit.take_group().unwrap();
    assert_eq!(commit.backlog(), 0, "taken");
    let buffer = first.bytes().as_ptr();
    append(&commit, b"three");
    append(&commit, b"four");
    assert!(commit.take_group().is_none(), "one group at a time");
    assert_eq!(
        commit.backlog(),
        9,
        "the next group queues while one is out"
    );
    commit.finish(first, Ok(()));
    let second = commit.take_group().unwrap();
    let records: Vec<(Position, &[u8])> = second.records().collect();
    assert_eq!(records, [(3, &b"three"[..]), (4, &b"four"[..])]);
    commit.finish(second, Ok(()));
    append(&commit, b"five");
    let third = commit.take_group().unwrap();
    assert_eq!(
        third.bytes().as_ptr(),
        buffer,
        "the first group's buffer came back as the spare: nothing allocates"
    );
    commit.finish(third, Ok(()));
}

#[test]
fn a_failure_answers_every_waiter_and_refuses_later_appends() {
    let commit = GroupCommit::new(0, 0);
    append(&commit, b"a");
    let group = commit.take_group().unwrap();
    commit.finish(group, Ok(()));
    append(&commit, b"b");
    let mut w2 = commit.durable(2);
    let group = commit.take_group().unwrap();
    append(&commit, b"c");
    let mut w3 = commit.durable(3);

    commit.finish(group, Err("disk on fire".into()));
    assert_eq!(now(&mut w2), failed("disk on fire"));
    assert_eq!(now(&mut w3), failed("disk on fire"), "beyond the group too");
    assert_eq!(commit.failure().as_deref(), Some("disk on fire"));
    let refused = commit.append(|_, buf| {
        buf.push(1);
        Ok(())
    });
    assert_eq!(refused, Err(JournalError("disk on fire".into())));
    assert_eq!(now(&mut commit.durable(3)), failed("disk on fire"));
    assert_eq!(
        commit.wait_durable(3),
        Err(JournalError("disk on fire".into()))
    );
    assert_eq!(commit.wait_durable(1), Ok(()), "what was durable stays so");
    assert!(
        commit.take_group().is_none(),
        "what was not taken is dropped"
    );
    assert!(matches!(commit.next_group_blocking(|| false), Next::Closed));
    assert_eq!(commit.last_durable(), 1);
}

#[test]
fn a_record_that_fails_to_encode_leaves_nothing_behind() {
    let commit = GroupCommit::new(0, 0);
    append(&commit, b"a");
    let refused = commit.append(|_, buf| {
        buf.extend_from_slice(b"half a record");
        Err("cannot encode".into())
    });
    assert_eq!(refused, Err(JournalError("cannot encode".into())));
    assert_eq!(append(&commit, b"b"), 2, "the position is not used up");
    let group = commit.take_group().unwrap();
    let records: Vec<(Position, &[u8])> = group.records().collect();
    assert_eq!(records, [(1, &b"a"[..]), (2, &b"b"[..])]);
}

#[test]
fn a_group_is_cut_into_parts_of_whole_records() {
    let commit = GroupCommit::new(0, 0);
    for record in [&b"abc"[..], b"defg", b"0123456789", b"hi", b"jk"] {
        append(&commit, record);
    }
    let group = commit.take_group().unwrap();
    let parts: Vec<(Position, Position, &[u8])> =
        group.parts(8).map(|p| (p.first, p.last, p.bytes)).collect();
    assert_eq!(
        parts,
        [
            (1, 2, &b"abcdefg"[..]),
            (3, 3, b"0123456789"),
            (4, 5, b"hijk")
        ],
        "a record larger than a part is a part alone"
    );
    assert_eq!(group.parts(usize::MAX).count(), 1);
}

/// A writer thread: makes every group durable, keeping its records, until
/// told to stop.
fn writer_thread(commit: Arc<GroupCommit>) -> std::thread::JoinHandle<Vec<Position>> {
    std::thread::spawn(move || {
        let mut written = Vec::new();
        loop {
            match commit.next_group_blocking(|| false) {
                Next::Group(group) => {
                    written.extend(group.records().map(|(p, _)| p));
                    commit.finish(group, Ok(()));
                }
                Next::Other => unreachable!("no other work"),
                Next::Closed => return written,
            }
        }
    })
}

#[test]
fn a_writer_thread_makes_every_append_durable_and_a_close_drains_them() {
    let commit = Arc::new(GroupCommit::new(0, 1024));
    let writer = writer_thread(commit.clone());
    for i in 1..=50 {
        assert_eq!(append(&commit, b"r"), i);
    }
    commit.wait_durable(50).unwrap();
    for _ in 51..=100 {
        append(&commit, b"r");
    }
    commit.close();
    commit.close();
    assert_eq!(
        commit.append(|_, _| Ok(())),
        Err(JournalError("the journal is closed".into()))
    );
    let written = writer.join().unwrap();
    assert_eq!(
        written,
        (1..=100).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert_eq!(commit.wait_durable(100), Ok(()));
    assert!(commit.groups() <= 100);
}

#[test]
fn a_blocked_thread_waits_for_the_group_covering_it() {
    let commit = Arc::new(GroupCommit::new(0, 0));
    append(&commit, b"a");
    let group = commit.take_group().unwrap();
    append(&commit, b"b");
    let waiting = commit.clone();
    let waiter = std::thread::spawn(move || waiting.wait_durable(2));
    commit.finish(group, Ok(()));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "1 is durable, 2 is not");
    let group = commit.take_group().unwrap();
    commit.finish(group, Ok(()));
    assert_eq!(waiter.join().unwrap(), Ok(()));
}

#[test]
fn the_writers_own_work_wakes_it() {
    let commit = Arc::new(GroupCommit::new(0, 0));
    let other = Arc::new(AtomicBool::new(false));
    let writer = {
        let (commit, other) = (commit.clone(), other.clone());
        std::thread::spawn(move || {
            matches!(
                commit.next_group_blocking(|| other.load(Ordering::Acquire)),
                Next::Other
            )
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    other.store(true, Ordering::Release);
    commit.wake_writer();
    assert!(writer.join().unwrap());
}

#[tokio::test]
async fn a_writer_task_makes_every_append_durable_and_a_close_drains_them() {
    let commit = Arc::new(GroupCommit::new(0, 0));
    let writer = {
        let commit = commit.clone();
        tokio::spawn(async move {
            let mut groups = 0;
            while let Some(group) = commit.next_group().await {
                groups += 1;
                commit.finish(group, Ok(()));
            }
            groups
        })
    };
    for _ in 0..3 {
        let p = append(&commit, b"r");
        commit.durable(p).await.unwrap();
    }
    let last = append(&commit, b"r");
    let durable = commit.durable(last);
    commit.close();
    assert_eq!(durable.await, Ok(()), "appended before the close");
    assert_eq!(writer.await.unwrap(), 4);
}

#[test]
fn a_follower_is_told_the_durable_position_after_each_group_and_max_after_a_failure() {
    let commit = GroupCommit::new(4, 0);
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = told.clone();
    assert!(commit.after_each_group(Box::new(move |p| log.lock().unwrap().push(p))));
    assert!(
        !commit.after_each_group(Box::new(|_| {})),
        "one follower only"
    );
    append(&commit, b"a");
    append(&commit, b"b");
    let mut w6 = commit.durable(6);
    let group = commit.take_group().unwrap();
    assert!(
        told.lock().unwrap().is_empty(),
        "nothing before a group ends"
    );
    commit.finish(group, Ok(()));
    assert_eq!(now(&mut w6), Some(Ok(())), "waiters first");
    assert_eq!(*told.lock().unwrap(), [6]);
    append(&commit, b"c");
    let group = commit.take_group().unwrap();
    commit.finish(group, Err("disk on fire".into()));
    assert_eq!(*told.lock().unwrap(), [6, Position::MAX]);
}

/// Waits (without sleeping) until the writer thread sleeps for want of work.
fn until_asleep(commit: &GroupCommit) {
    while commit.lock().idle.is_none() {
        std::thread::yield_now();
    }
}

/// Appends one record in the current turn.
fn append_in_turn(commit: &GroupCommit) -> Position {
    commit
        .append_in_turn(|_, buf| {
            buf.push(b'r');
            Ok(())
        })
        .unwrap()
}

#[test]
fn records_appended_in_a_turn_go_out_as_one_group_when_it_ends() {
    let commit = Arc::new(GroupCommit::new(0, 0));
    let writer = writer_thread(commit.clone());
    until_asleep(&commit);
    for _ in 0..3 {
        append_in_turn(&commit);
    }
    let mut durable = commit.durable(3);
    assert!(
        commit.lock().idle.is_some(),
        "the turn has not ended: the writer still sleeps"
    );
    assert_eq!(now(&mut durable), None);
    commit.wake_writer();
    commit.wait_durable(3).unwrap();
    assert_eq!(commit.groups(), 1, "three records, one group");

    // A thread blocking on a record of a turn not ended wakes the writer:
    // it may be the thread that would end the turn.
    until_asleep(&commit);
    assert_eq!(append_in_turn(&commit), 4);
    commit.wait_durable(4).unwrap();
    commit.close();
    assert_eq!(writer.join().unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(commit.groups(), 2);
}

//! A partition's JetStream journal against a real nats-server: records come
//! back in order after a takeover, and the node that wrote before the
//! takeover can no longer write, though nothing told it so; a group larger
//! than a message is published as several.

mod support;

use pushd::cluster::Nats;
use pushd::cluster::journal::{Place, StreamJournal};
use pushd_actors::model::Customer;
use pushd_actors::ports::{Change, Entry, Journal};
use support::cluster;

fn customer(id: &str) -> Vec<Change> {
    vec![Change::of(Entry::Customer(Customer {
        id: id.into(),
        attributes: Default::default(),
        unsubscribed: false,
        devices: Vec::new(),
    }))]
}

fn place(nats: &Nats, writer: &str) -> Place {
    Place {
        js: nats.js.clone(),
        stream: nats.journal.clone(),
        subject: "pushd.journal.2".into(),
        writer: writer.into(),
    }
}

/// The customer ids the journal replays after `after`.
fn replayed(journal: &StreamJournal, after: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    journal
        .replay(after, &mut |position, entries| {
            for e in entries {
                if let Entry::Customer(c) = e {
                    out.push((position, c.id));
                }
            }
            Ok(())
        })
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_replays_every_record_and_fences_the_old_writer() {
    let dir = tempfile::tempdir().unwrap();
    let server = cluster::single(dir.path());
    let nats = Nats::connect(&cluster::settings(&server)).await.unwrap();
    let runtime = tokio::runtime::Handle::current();

    let old = StreamJournal::open(place(&nats, "old-1"), 0, &runtime, || {})
        .await
        .unwrap()
        .journal;
    assert!(
        replayed(&old, 0).is_empty(),
        "a new partition has no records"
    );
    let mut last = 0;
    for i in 0..5 {
        last = old.append(&customer(&format!("c{i}"))).unwrap();
    }
    old.durable(last).await.unwrap();
    assert_eq!(last, 5);

    // Another node takes the partition over from a snapshot covering 2.
    let new = StreamJournal::open(place(&nats, "new-2"), 2, &runtime, || {})
        .await
        .unwrap()
        .journal;
    let ids: Vec<(u64, String)> = replayed(&new, 2);
    assert_eq!(
        ids,
        [(3, "c2".into()), (4, "c3".into()), (5, "c4".into())],
        "the records after the snapshot, in order"
    );
    let next = new.append(&customer("c5")).unwrap();
    assert_eq!(next, 6, "positions go on after the last record");
    new.durable(next).await.unwrap();

    // The old writer still believes it owns the partition: its append is
    // taken, but never becomes durable, and the journal refuses what follows.
    let stale = old.append(&customer("ghost")).unwrap();
    let refused = old.durable(stale).await.unwrap_err();
    assert!(refused.0.contains("fenced"), "{refused}");
    assert!(old.append(&customer("ghost2")).is_err());

    // What a third owner reads has no trace of the fenced record.
    let third = StreamJournal::open(place(&nats, "third-3"), 0, &runtime, || {})
        .await
        .unwrap()
        .journal;
    let all: Vec<String> = replayed(&third, 0).into_iter().map(|(_, id)| id).collect();
    assert_eq!(all, ["c0", "c1", "c2", "c3", "c4", "c5"]);
}

/// One record framed as a group message holds it: length, CRC-32 of what
/// follows it, position, then the entries.
fn framed(position: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = position.to_le_bytes().to_vec();
    body.extend_from_slice(payload);
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_a_version_read_as_version_1_and_newer_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = cluster::single(dir.path());
    let nats = Nats::connect(&cluster::settings(&server)).await.unwrap();
    let runtime = tokio::runtime::Handle::current();
    let subject = "pushd.journal.2";

    // A group message as pushd 0.1 published it: no Pushd-Format header.
    let mut payload = Vec::new();
    pushd::records::encode_entries(&customer("old"), &mut payload).unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Pushd-First", "1");
    nats.js
        .publish_with_headers(subject, headers, framed(1, &payload).into())
        .await
        .unwrap()
        .await
        .unwrap();
    let journal = StreamJournal::open(place(&nats, "new-1"), 0, &runtime, || {})
        .await
        .unwrap()
        .journal;
    assert_eq!(replayed(&journal, 0), [(1, "old".to_string())]);
    let next = journal.append(&customer("new")).unwrap();
    journal.durable(next).await.unwrap();
    drop(journal);

    // A message of a newer pushd: the partition is refused, naming both.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Pushd-First", "3");
    headers.insert("Pushd-Format", "99");
    nats.js
        .publish_with_headers(subject, headers, framed(3, &payload).into())
        .await
        .unwrap()
        .await
        .unwrap();
    let refused = StreamJournal::open(place(&nats, "old-2"), 0, &runtime, || {})
        .await
        .err()
        .expect("a newer record is refused");
    let why = refused.to_string();
    assert!(
        matches!(refused, pushd::cluster::ClusterError::NewerRecords(_)),
        "{why}"
    );
    assert!(
        why.contains("version 99")
            && why.contains(&format!("1 to {}", pushd::records::JOURNAL_VERSION)),
        "{why}"
    );
}

#[tokio::test]
async fn a_group_larger_than_a_message_is_published_as_several_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = cluster::single(dir.path());
    let nats = Nats::connect(&cluster::settings(&server)).await.unwrap();
    let runtime = tokio::runtime::Handle::current();

    let journal = StreamJournal::open(place(&nats, "big-1"), 0, &runtime, || {})
        .await
        .unwrap()
        .journal;
    // On this one-thread runtime the writer runs only at the await below:
    // the ten records (about 1 MB) are one group.
    let ids: Vec<String> = (0..10)
        .map(|i| format!("{i}-{}", "x".repeat(100_000)))
        .collect();
    let mut last = 0;
    for id in &ids {
        last = journal.append(&customer(id)).unwrap();
    }
    journal.durable(last).await.unwrap();

    let opened = StreamJournal::open(place(&nats, "big-2"), 0, &runtime, || {})
        .await
        .unwrap();
    assert_eq!(
        opened.messages, 3,
        "the first writer's empty group, then seven records and three"
    );
    let read: Vec<(u64, String)> = replayed(&opened.journal, 0);
    let expected: Vec<(u64, String)> = (1..).zip(ids).collect();
    assert!(
        read == expected,
        "{} records read back, not these",
        read.len()
    );
}

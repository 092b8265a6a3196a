//! A partition's JetStream journal against a real nats-server: records come
//! back in order after a takeover, and the node that wrote before the
//! takeover can no longer write, though nothing told it so.

mod support;

use std::time::Duration;

use pushd::cluster::journal::{Place, StreamJournal};
use pushd::cluster::{Nats, Settings};
use pushd_actors::model::Customer;
use pushd_actors::ports::{Change, Entry, Journal};
use support::cluster;

fn settings(url: &str) -> Settings {
    Settings {
        servers: vec![url.to_string()],
        node: "test".into(),
        advertise: "127.0.0.1:1".into(),
        partitions: 4,
        replicas: 1,
        lease: Duration::from_secs(5),
        snapshot_every: Duration::from_secs(10),
        prefix: "pushd".into(),
    }
}

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
    let nats = Nats::connect(&settings(&server.url)).await.unwrap();
    let runtime = tokio::runtime::Handle::current();

    let old = StreamJournal::open(place(&nats, "old-1"), 0, &runtime)
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
    let new = StreamJournal::open(place(&nats, "new-2"), 2, &runtime)
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
    let third = StreamJournal::open(place(&nats, "third-3"), 0, &runtime)
        .await
        .unwrap()
        .journal;
    let all: Vec<String> = replayed(&third, 0).into_iter().map(|(_, id)| id).collect();
    assert_eq!(all, ["c0", "c1", "c2", "c3", "c4", "c5"]);
}

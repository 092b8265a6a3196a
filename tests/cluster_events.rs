//! A partition's delivery events in the cluster's events stream, against a
//! real nats-server: a drain's events go out as one message, a takeover
//! publishes none twice, an erasure takes a customer's events out of
//! batches they share with others while every other event keeps its
//! cursor, and messages and cursors of pushd before batches still read.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use pushd::cluster::Nats;
use pushd::cluster::events::{EventStream, PLACE_HEADER, PartitionEvents, RECORD_HEADER};
use pushd::cluster::journal::{Place, StreamJournal};
use pushd::store::ChangeSink;
use pushd_actors::engine::PartitionTag;
use pushd_actors::model::{Delivery, Platform};
use pushd_actors::ports::{Change, Clock, Entry, Journal, Position, SystemClock};
use pushd_actors::status::{DeliveryState, DeviceState, Outcome};
use serde_json::{Value, json};
use support::cluster;

/// A new delivery to `customer`'s one iOS device, already accepted by the
/// provider: one `sent` event.
fn sent(customer: &str) -> Change {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut state = DeliveryState::new(vec![DeviceState::attempted()]);
    state.apply_outcome(0, &Outcome::Sent, 1_000);
    let delivery: Delivery = serde_json::from_value(json!({
        "id": format!("{:026}", NEXT.fetch_add(1, Ordering::Relaxed)),
        "customer_id": customer,
        "message_id": "welcome",
        "created_at": 1_000,
        "sends": [{"token": format!("{customer}-token"), "platform": Platform::Ios, "attempts": 1}],
        "state": state,
    }))
    .unwrap();
    Change::delivery(None, delivery)
}

/// A nats-server of its own under `dir`, a connection to it, and the
/// events stream.
async fn events_stream(dir: &Path) -> (cluster::NatsServer, Nats, EventStream) {
    let server = cluster::single(dir);
    let settings = cluster::settings(&server);
    let nats = Nats::connect(&settings).await.unwrap();
    let stream = EventStream::open(nats.js.clone(), &settings, Duration::from_secs(3600))
        .await
        .unwrap();
    (server, nats, stream)
}

/// Partition 2's journal and events publisher, as a node taking the
/// partition over opens them.
async fn take_over(nats: &Nats, stream: &EventStream, writer: &str) -> Owner {
    let runtime = tokio::runtime::Handle::current();
    let place = Place {
        js: nats.js.clone(),
        stream: nats.journal.clone(),
        subject: "pushd.journal.2".into(),
        writer: writer.into(),
    };
    let journal = StreamJournal::open(place, 0, &runtime, || {})
        .await
        .unwrap()
        .journal;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let events = PartitionEvents::open(
        stream.clone(),
        PartitionTag(2),
        journal.clone(),
        clock,
        runtime,
    )
    .await
    .unwrap();
    Owner { journal, events }
}

struct Owner {
    journal: Arc<StreamJournal>,
    events: Arc<PartitionEvents>,
}

impl Owner {
    /// Appends a record of `changes`, shows it to the publisher, as the
    /// store applying it does, and answers its position.
    fn record(&self, changes: Vec<Change>) -> Position {
        let position = self.journal.append(&changes).unwrap();
        self.events.applied(position, &changes);
        position
    }

    /// Drains through `position`: publishes what the records ask, off the
    /// runtime as a store's drain does.
    async fn drain(&self, position: Position) {
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || events.persist(position))
            .await
            .unwrap()
            .unwrap();
    }
}

/// Every event the feed holds after `cursor`, a page of `limit` at a
/// time: each event's customer and id, and the cursor after the last.
async fn feed(stream: &EventStream, mut cursor: u64, limit: usize) -> (Vec<(String, String)>, u64) {
    let mut out = Vec::new();
    loop {
        let page = stream.page(cursor, limit).await.unwrap().unwrap();
        if page.events.is_empty() {
            return (out, page.next);
        }
        for e in &page.events {
            let v: Value = serde_json::from_slice(&e.body).unwrap();
            let customer = v["customer_id"].as_str().unwrap().to_string();
            out.push((customer, v["event_id"].as_str().unwrap().to_string()));
        }
        cursor = page.next;
    }
}

async fn messages(stream: &EventStream) -> u64 {
    stream.last_sequence().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_is_one_message_and_an_erasure_keeps_every_other_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, nats, stream) = events_stream(dir.path()).await;
    let owner = take_over(&nats, &stream, "node-1").await;

    // Two records of three deliveries each, drained together.
    owner.record(["c0", "c1", "c2"].map(sent).to_vec());
    let last = owner.record(["c1", "c0", "c1"].map(sent).to_vec());
    owner.drain(last).await;
    assert_eq!(messages(&stream).await, 1, "one drain, one message");
    let (all, end) = feed(&stream, 0, 100).await;
    let customers: Vec<&str> = all.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(customers, ["c0", "c1", "c2", "c1", "c0", "c1"]);
    // Paging two at a time, inside the message, reads the same.
    assert_eq!(feed(&stream, 0, 2).await, (all.clone(), end));

    // A node taking the partition over replays the records and publishes
    // none of their events again; its own go on after them.
    let next = take_over(&nats, &stream, "node-2").await;
    for (position, changes) in [(1, ["c0", "c1", "c2"]), (2, ["c1", "c0", "c1"])] {
        next.events.applied(position, &changes.map(sent));
    }
    let last = next.record(vec![sent("c2")]);
    next.drain(last).await;
    let (after, end) = feed(&stream, end, 100).await;
    assert_eq!(after.len(), 1, "only the new record's event: {after:?}");
    let all: Vec<_> = all.into_iter().chain(after).collect();

    // A reader stops after three events, in the middle of the first batch.
    let page = stream.page(0, 3).await.unwrap().unwrap();
    let middle = page.next;
    assert_eq!(page.events.len(), 3);

    // c1 is erased: its events leave the batch they share with others.
    let last = next.record(vec![Change::of(Entry::CustomerErased("c1".into()))]);
    next.drain(last).await;
    let kept: Vec<_> = all.iter().filter(|(c, _)| c != "c1").cloned().collect();
    assert_eq!(feed(&stream, 0, 100).await.0, kept, "the whole feed");
    assert_eq!(feed(&stream, 0, 1).await.0, kept, "one event a page");
    let (rest, _) = feed(&stream, middle, 100).await;
    let expected: Vec<_> = all[3..]
        .iter()
        .filter(|(c, _)| c != "c1")
        .cloned()
        .collect();
    assert_eq!(rest, expected, "the reader goes on where it was");
    assert_eq!(
        feed(&stream, end, 100).await.0,
        [],
        "nothing new at the end"
    );

    // A customer erased from a rewrite leaves it too; a batch left with no
    // event is no more.
    let last = next.record(vec![Change::of(Entry::CustomerErased("c0".into()))]);
    next.drain(last).await;
    let kept: Vec<_> = all.iter().filter(|(c, _)| c == "c2").cloned().collect();
    assert_eq!(feed(&stream, 0, 100).await.0, kept);
    assert_eq!(feed(&stream, middle, 100).await.0, kept[1..]);

    // Events after the erasures go on at the end, once.
    let last = next.record(vec![sent("c3")]);
    next.drain(last).await;
    let (tail, _) = feed(&stream, end, 100).await;
    assert_eq!(
        tail.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["c3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_messages_and_cursors_from_before_batches_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, nats, stream) = events_stream(dir.path()).await;
    // Record 1 made two events, published one message each as pushd did
    // before batches; the second never made it.
    let old = |n: usize| {
        let mut headers = HeaderMap::new();
        headers.insert(RECORD_HEADER, "1");
        headers.insert(PLACE_HEADER, format!("{n}/2").as_str());
        let body = format!(r#"{{"customer_id":"old","event_id":"old-{n}"}}"#);
        (headers, body)
    };
    let (headers, body) = old(0);
    (nats.js)
        .publish_with_headers("pushd.events.2", headers, body.into())
        .await
        .unwrap()
        .await
        .unwrap();

    // The node taking the partition over publishes the record's second
    // event, not its first.
    let owner = take_over(&nats, &stream, "node-1").await;
    let last = owner.record(vec![sent("a"), sent("b")]);
    assert_eq!(last, 1);
    owner.drain(last).await;
    let (all, _) = feed(&stream, 0, 100).await;
    assert_eq!(all[0], ("old".to_string(), "old-0".to_string()));
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1].0, "b");

    // A cursor handed out before batches (a bare sequence) reads on after
    // its message.
    assert_eq!(feed(&stream, 1, 100).await.0, all[1..]);
    assert_eq!(feed(&stream, 2, 100).await.0, []);
    assert!(
        stream.page(3_000, 10).await.unwrap().is_err(),
        "past the end"
    );
}

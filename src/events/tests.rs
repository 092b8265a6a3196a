//! The event log against its guarantees: nothing before its journal record
//! is durable, pages by cursor across segments, a torn tail cut back to a
//! whole record, retention, alignment with a journal that lost records, and
//! segments of the previous release (no header) read at their offsets, and
//! erasure (skipped at once, tombstoned in place, cursors kept).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pushd_actors::model::{Audience, MessageSpec};
use pushd_actors::ports::{Change, Clock, Entry, Journal, ManualClock, Position};
use pushd_actors::status::MessageStatus;

use super::*;
use crate::journal::FileJournal;
use crate::segfile::Layout;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A journal durability the test moves by hand.
#[derive(Default)]
struct Gate {
    durable: Mutex<Position>,
    moved: Condvar,
}

impl Gate {
    fn open_through(&self, p: Position) {
        *self.durable.lock().unwrap() = p;
        self.moved.notify_all();
    }

    fn wait(gate: Arc<Gate>) -> WaitDurable {
        Box::new(move |p| {
            let mut d = gate.durable.lock().unwrap();
            while *d < p {
                d = gate.moved.wait(d).unwrap();
            }
            Ok(())
        })
    }
}

fn always() -> WaitDurable {
    Box::new(|_| Ok(()))
}

fn open(dir: &std::path::Path, segment_bytes: u64, clock: Arc<dyn Clock>) -> Arc<EventLog> {
    let options = Options {
        segment_bytes,
        retention: Duration::from_millis(DAY_MS as u64),
    };
    EventLog::open(dir, options, clock, always()).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_764_100_000_000))
}

/// `n` events for record `position`, bodies naming both.
fn events(position: Position, n: usize, time_ms: i64) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            status: MessageStatus::Sent,
            time_ms,
            body: format!(r#"{{"record":{position},"i":{i}}}"#).into_bytes(),
        })
        .collect()
}

fn bodies(page: &Page) -> Vec<String> {
    page.events
        .iter()
        .map(|e| String::from_utf8(e.body.clone()).unwrap())
        .collect()
}

/// Every event from `after` on, `limit` at a time, with the cursors used.
fn read_all(log: &EventLog, mut after: u64, limit: usize) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let page = log.read(after, limit).unwrap();
        if page.events.is_empty() {
            return all;
        }
        assert!(page.events.len() <= limit);
        all.extend(bodies(&page));
        after = page.next;
    }
}

#[test]
fn events_wait_for_their_record_to_be_durable() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let log = EventLog::open(
        dir.path(),
        Options::default(),
        clock(),
        Gate::wait(gate.clone()),
    )
    .unwrap();
    let mut watch = log.watch();
    log.queue(1, events(1, 2, 0));
    log.queue(2, events(2, 1, 0));
    assert_eq!(
        log.tail().offset,
        0,
        "nothing is written before the journal syncs"
    );
    assert!(log.read(0, 10).unwrap().events.is_empty());
    gate.open_through(1);
    // The writer may take both records in one group and wait for record 2.
    let persisted = std::thread::spawn({
        let log = log.clone();
        move || log.persist(1)
    });
    gate.open_through(2);
    persisted.join().unwrap().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            while log.tail().next_seq < 4 {
                watch.changed().await.unwrap();
            }
        });
    let page = log.read(0, 10).unwrap();
    assert_eq!(
        bodies(&page),
        [
            r#"{"record":1,"i":0}"#,
            r#"{"record":1,"i":1}"#,
            r#"{"record":2,"i":0}"#
        ]
    );
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(page.next, log.tail().offset);
    assert_eq!(log.complete_through(), 2);
    log.close();
}

#[test]
fn pages_by_cursor_across_segments_and_refuses_foreign_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let log = open(dir.path(), 200, clock.clone());
    for p in 1..=20 {
        log.queue(p, events(p, 1 + (p as usize % 3), clock.now_ms()));
    }
    log.persist(20).unwrap();
    assert!(
        segments::list(dir.path()).unwrap().len() > 3,
        "small segments roll"
    );
    let every = read_all(&log, 0, 1000);
    assert_eq!(
        every.len(),
        (1..=20).map(|p| 1 + p % 3).sum::<u64>() as usize
    );
    for limit in [1, 2, 7] {
        assert_eq!(read_all(&log, 0, limit), every, "limit {limit}");
    }
    let first = log.read(0, 1).unwrap();
    assert!(matches!(
        log.read(first.next - 1, 5),
        Err(ReadError::BadCursor(_))
    ));
    let end = log.tail().offset;
    assert!(log.read(end, 5).unwrap().events.is_empty());
    assert!(matches!(
        log.read(end + 1, 5),
        Err(ReadError::PastEnd { .. })
    ));
    log.close();
}

#[test]
fn an_event_larger_than_a_read_chunk_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20, clock());
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(20_000));
    log.queue(1, events(1, 1, 0));
    log.queue(
        2,
        vec![NewEvent {
            status: MessageStatus::Opened,
            time_ms: 0,
            body: big.clone().into_bytes(),
        }],
    );
    log.queue(3, events(3, 1, 0));
    log.persist(3).unwrap();
    assert_eq!(read_all(&log, 0, 1), read_all(&log, 0, 100));
    let all = read_all(&log, 0, 1);
    assert_eq!(all.len(), 3);
    assert_eq!(all[1], big);
    let second = log.read(log.read(0, 1).unwrap().next, 1).unwrap();
    assert_eq!(second.events[0].status, MessageStatus::Opened);
    log.close();
}

#[test]
fn reopening_cuts_a_torn_record_and_skips_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20, clock());
    log.queue(1, events(1, 1, 0));
    log.queue(2, events(2, 2, 0));
    log.persist(2).unwrap();
    let end = log.tail().offset;
    log.close();
    // Tear record 2's last event: the whole record goes.
    let segment = segments::list(dir.path()).unwrap().pop().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment.path)
        .unwrap();
    file.set_len(segment.file_position(end) - 3).unwrap();

    let log = open(dir.path(), 1 << 20, clock());
    assert_eq!(log.complete_through(), 1);
    assert_eq!(read_all(&log, 0, 10), [r#"{"record":1,"i":0}"#]);
    // A replay of record 1 adds nothing; record 2 comes back whole.
    log.queue(1, events(1, 1, 0));
    log.queue(2, events(2, 2, 0));
    log.persist(2).unwrap();
    assert_eq!(read_all(&log, 0, 10).len(), 3);
    assert_eq!(log.read(0, 10).unwrap().events[2].seq, 3);
    log.close();
}

#[test]
fn retention_deletes_whole_old_segments_and_old_cursors_read_from_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let log = open(dir.path(), 100, clock.clone());
    let start = clock.now_ms();
    for p in 1..=6 {
        log.queue(p, events(p, 1, start + p as i64));
        log.persist(p).unwrap();
    }
    let before = segments::list(dir.path()).unwrap().len();
    assert!(before >= 3);
    assert_eq!(log.prune(), 0, "nothing is older than the retention yet");
    clock.advance(Duration::from_millis(DAY_MS as u64 + 4));
    let removed = log.prune();
    assert!(removed >= 1, "old segments go");
    assert_eq!(segments::list(dir.path()).unwrap().len(), before - removed);
    let page = log.read(0, 100).unwrap();
    assert_eq!(page.events[0].offset, log.oldest());
    assert!(page.events.len() < 6);
    clock.advance(Duration::from_millis(DAY_MS as u64));
    log.prune();
    assert_eq!(
        segments::list(dir.path()).unwrap().len(),
        1,
        "the active segment stays"
    );
    log.close();
}

fn message(id: &str) -> Change {
    Change::of(Entry::Message(Box::new(MessageSpec {
        id: id.into(),
        name: "n".into(),
        campaign_id: None,
        title: "t".into(),
        body: "b".into(),
        deep_link: None,
        audience: Audience::AllDevices,
        collapse_id: None,
        conversion: None,
        app: pushd_actors::model::DEFAULT_APP.into(),
        push: Default::default(),
        rate_per_minute: None,
        lane: Default::default(),
        created_at: 0,
    })))
}

#[tokio::test]
async fn events_of_records_the_journal_lost_are_dropped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path().join("journal"), 0).unwrap();
    let mut last = 0;
    for i in 0..3 {
        last = journal.append(&[message(&format!("m{i}"))]).unwrap();
    }
    journal.durable(last).await.unwrap();
    let log = open(&dir.path().join("events"), 1 << 20, clock());
    for p in 1..=5 {
        log.queue(p, events(p, 1, 0));
    }
    log.persist(5).unwrap();
    assert_eq!(log.complete_through(), 5);
    log.align(&journal, 0).unwrap();
    assert_eq!(log.complete_through(), 3);
    assert_eq!(read_all(&log, 0, 10).len(), 3);
    log.queue(4, events(4, 1, 0));
    log.persist(4).unwrap();
    assert_eq!(
        bodies(&log.read(0, 10).unwrap()).last().unwrap(),
        r#"{"record":4,"i":0}"#
    );
    log.close();
    journal.close();
}

/// A segment as pushd wrote it before segments had a header (format 1),
/// byte for byte: for each event `len: u32 | crc32: u32 | offset: u64 |
/// seq: u64 | position: u64 | time_ms: i64 | status: u8 | flags: u8 |
/// body (len bytes)`, all little-endian, the checksum over everything after
/// it, offsets from `base`, the last event of a record flagged 1; no zero
/// fill. `records` are (position, events); answers the bytes and each
/// event's offset.
fn legacy_segment(base: u64, records: &[(Position, usize)]) -> (Vec<u8>, Vec<u64>) {
    let (mut out, mut offsets, mut seq) = (Vec::new(), Vec::new(), 1u64);
    for &(position, n) in records {
        for i in 0..n {
            let body = format!(r#"{{"record":{position},"i":{i}}}"#);
            let offset = base + out.len() as u64;
            let mut covered = Vec::new();
            for field in [offset, seq, position, 1_764_100_000_000] {
                covered.extend_from_slice(&field.to_le_bytes());
            }
            covered.extend_from_slice(&[0, u8::from(i + 1 == n)]);
            covered.extend_from_slice(body.as_bytes());
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&covered).to_le_bytes());
            out.extend_from_slice(&covered);
            offsets.push(offset);
            seq += 1;
        }
    }
    (out, offsets)
}

#[test]
fn a_segment_without_a_header_keeps_its_offsets_and_appends_go_to_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    // As if retention had deleted the segments before it.
    let (bytes, offsets) = legacy_segment(5000, &[(1, 2), (2, 1)]);
    let legacy = segments::path_of(dir.path(), 5000);
    std::fs::write(&legacy, &bytes).unwrap();
    let log = open(dir.path(), 1 << 20, clock());
    let end = 5000 + bytes.len() as u64;
    assert_eq!(log.complete_through(), 2);
    assert_eq!(
        log.tail(),
        Tail {
            offset: end,
            next_seq: 4
        }
    );
    let page = log.read(0, 10).unwrap();
    let at: Vec<u64> = page.events.iter().map(|e| e.offset).collect();
    assert_eq!(at, offsets, "the events are at their old offsets");
    assert_eq!(
        bodies(&page),
        [
            r#"{"record":1,"i":0}"#,
            r#"{"record":1,"i":1}"#,
            r#"{"record":2,"i":0}"#
        ]
    );
    // A cursor a client saved before the upgrade reads on from there.
    let saved = offsets[1];
    assert_eq!(log.read(saved, 10).unwrap().events.len(), 2);
    assert!(matches!(
        log.read(saved - 1, 10),
        Err(ReadError::BadCursor(_))
    ));
    // Recorded now: retention keeps the legacy segment.
    log.queue(3, events(3, 2, clock().now_ms()));
    log.persist(3).unwrap();
    let page = log.read(saved, 10).unwrap();
    let at: Vec<(u64, u64)> = page.events.iter().map(|e| (e.offset, e.seq)).collect();
    assert_eq!(&at[..2], [(offsets[1], 2), (offsets[2], 3)]);
    assert_eq!(at[2], (end, 4), "new events follow on");
    log.close();

    assert_eq!(std::fs::read(&legacy).unwrap(), bytes, "left as it is");
    let found = segments::list(dir.path()).unwrap();
    assert_eq!(found.len(), 2, "new events went to a new segment");
    assert_eq!(found[1].base, end);
    assert_eq!(found[1].layout, Layout::current(&KIND));
    assert_eq!(&std::fs::read(&found[1].path).unwrap()[..8], b"PUSHDEVT");
    let log = open(dir.path(), 1 << 20, clock());
    assert_eq!(read_all(&log, saved, 1).len(), 4);
    assert_eq!(log.read(end, 1).unwrap().events[0].seq, 4);
    log.close();
}

/// An event of `customer` in record `position`, naming a secret of its own.
fn event_of(customer: &str, position: Position) -> Vec<NewEvent> {
    let body = serde_json::json!({
        "event_id": format!("d{position}-sent-{position}"),
        "customer_id": customer,
        "device_id": format!("secret-{customer}-{position}."),
    });
    vec![NewEvent {
        status: MessageStatus::Sent,
        // The test clock's time: retention keeps it.
        time_ms: 1_764_100_000_000,
        body: serde_json::to_vec(&body).unwrap(),
    }]
}

/// Every event with its offset, one page of `limit` at a time.
fn offsets_and_bodies(log: &EventLog, limit: usize) -> Vec<(u64, String)> {
    let (mut all, mut after) = (Vec::new(), 0);
    loop {
        let page = log.read(after, limit).unwrap();
        if page.events.is_empty() {
            return all;
        }
        for e in &page.events {
            all.push((e.offset, String::from_utf8(e.body.clone()).unwrap()));
        }
        after = page.next;
    }
}

/// Whether any file in `dir` holds `what`.
fn on_disk(dir: &std::path::Path, what: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        // A file renamed over another meanwhile (erasures.json) is gone.
        let Ok(bytes) = std::fs::read(entry.unwrap().path()) else {
            return false;
        };
        bytes.windows(what.len()).any(|w| w == what.as_bytes())
    })
}

#[test]
fn an_erased_customers_events_are_skipped_then_tombstoned_in_place() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: the customer's events span several.
    let log = open(dir.path(), 300, clock());
    for p in 1..=12 {
        let who = if p % 3 == 0 { "kept" } else { "gone" };
        log.queue(p, event_of(who, p));
    }
    log.persist(12).unwrap();
    assert!(segments::list(dir.path()).unwrap().len() > 2);
    let before = offsets_and_bodies(&log, 5);
    let kept: Vec<(u64, String)> = (before.iter())
        .filter(|(_, body)| body.contains(r#""customer_id":"kept""#))
        .cloned()
        .collect();
    assert_eq!(kept.len(), 4);

    log.erase(13, vec!["gone".into()]);
    assert_eq!(offsets_and_bodies(&log, 3), kept, "skipped at once");
    // The id used again after its erasure: that event stays.
    log.queue(14, event_of("gone", 14));
    log.persist(14).unwrap();
    let again = offsets_and_bodies(&log, 100).pop().unwrap();
    assert!(again.1.contains("secret-gone-14."), "{again:?}");
    let mut expected = kept.clone();
    expected.push(again);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (1..=12).any(|p| on_disk(dir.path(), &format!("secret-gone-{p}.")))
        || dir.path().join("erasures.json").exists()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "compaction did not run"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(on_disk(dir.path(), "secret-kept-3.") && on_disk(dir.path(), "secret-gone-14."));
    assert_eq!(offsets_and_bodies(&log, 2), expected, "cursors kept");
    assert_eq!(log.read(kept[1].0, 1).unwrap().events[0].offset, kept[1].0);
    log.close();

    let log = open(dir.path(), 300, clock());
    assert_eq!(offsets_and_bodies(&log, 7), expected, "reopened");
    log.close();
}

#[test]
fn a_torn_record_of_a_segment_without_a_header_is_cut_to_the_record_before() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, offsets) = legacy_segment(0, &[(1, 1), (2, 2)]);
    let legacy = segments::path_of(dir.path(), 0);
    std::fs::write(&legacy, &bytes[..bytes.len() - 3]).unwrap();
    let log = open(dir.path(), 1 << 20, clock());
    assert_eq!(log.complete_through(), 1);
    assert_eq!(log.tail().offset, offsets[1]);
    assert_eq!(read_all(&log, 0, 10), [r#"{"record":1,"i":0}"#]);
    log.queue(2, events(2, 2, clock().now_ms()));
    log.persist(2).unwrap();
    assert_eq!(
        log.read(offsets[1], 10).unwrap().events[0].offset,
        offsets[1]
    );
    assert_eq!(read_all(&log, 0, 10).len(), 3);
    log.close();
}

#[test]
fn an_empty_segment_without_a_header_is_written_afresh_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = segments::path_of(dir.path(), 777);
    std::fs::write(&legacy, []).unwrap();
    let log = open(dir.path(), 1 << 20, clock());
    assert_eq!(log.tail().offset, 777);
    log.queue(1, events(1, 1, 0));
    log.persist(1).unwrap();
    assert_eq!(log.read(777, 10).unwrap().events[0].offset, 777);
    log.close();
    let found = segments::list(dir.path()).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].layout, Layout::current(&KIND));
    let log = open(dir.path(), 1 << 20, clock());
    assert_eq!(read_all(&log, 777, 10), [r#"{"record":1,"i":0}"#]);
    log.close();
}

#[test]
fn a_segment_of_a_newer_format_or_not_of_the_log_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = segments::path_of(dir.path(), 0);
    let mut header = b"PUSHDEVT".to_vec();
    header.extend_from_slice(&(FORMAT + 1).to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    std::fs::write(&path, &header).unwrap();
    let options = Options::default();
    let err = EventLog::open(dir.path(), options, clock(), always())
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "event log segment {} is format {}; this pushd reads formats 1 to {FORMAT}",
            path.display(),
            FORMAT + 1
        )
    );
    header[..8].copy_from_slice(b"PUSHDJNL");
    std::fs::write(&path, &header).unwrap();
    let err = EventLog::open(dir.path(), options, clock(), always())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("is not a pushd event log segment"),
        "{err}"
    );
}

#[test]
fn an_erasure_recorded_before_a_crash_is_compacted_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20, clock());
    log.queue(1, event_of("gone", 1));
    log.queue(2, event_of("kept", 2));
    log.persist(2).unwrap();
    // What the writer records before compaction, as a crash would leave it.
    std::fs::write(
        dir.path().join("erasures.json"),
        r#"{"erased":[{"customer_id":"gone","position":3}]}"#,
    )
    .unwrap();
    log.close();

    let log = open(dir.path(), 1 << 20, clock());
    let read = offsets_and_bodies(&log, 10);
    assert_eq!(read.len(), 1, "skipped from the start: {read:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while on_disk(dir.path(), "secret-gone-1.") || dir.path().join("erasures.json").exists() {
        assert!(std::time::Instant::now() < deadline, "not compacted");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(offsets_and_bodies(&log, 10), read);
    log.close();
}

#[test]
fn events_in_a_segment_without_a_header_are_tombstoned_at_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    // Framed as pushd 0.1 wrote them: no header, offsets from 5000.
    let base = 5000;
    let mut bytes = Vec::new();
    for position in 1..=4 {
        let who = if position % 2 == 0 { "kept" } else { "gone" };
        let body = serde_json::json!({
            "customer_id": who,
            "device_id": format!("secret-{who}-{position}."),
        });
        let body = serde_json::to_vec(&body).unwrap();
        frame::Frame {
            offset: base + bytes.len() as u64,
            seq: position,
            position,
            time_ms: 1_764_100_000_000,
            status: 0,
            flags: frame::LAST_OF_RECORD,
            body: &body,
        }
        .encode(&mut bytes)
        .unwrap();
    }
    let legacy = segments::path_of(dir.path(), base);
    std::fs::write(&legacy, &bytes).unwrap();
    let log = open(dir.path(), 1 << 20, clock());
    let before = offsets_and_bodies(&log, 10);
    assert_eq!(before.len(), 4);
    let kept: Vec<(u64, String)> = before.into_iter().skip(1).step_by(2).collect();
    log.erase(5, vec!["gone".into()]);
    assert_eq!(offsets_and_bodies(&log, 10), kept, "skipped at once");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while on_disk(dir.path(), "secret-gone-") || dir.path().join("erasures.json").exists() {
        assert!(std::time::Instant::now() < deadline, "not compacted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = std::fs::read(&legacy).unwrap();
    assert_eq!(after.len(), bytes.len(), "overwritten in place");
    assert_eq!(offsets_and_bodies(&log, 1), kept, "cursors kept");
    log.close();
    let log = open(dir.path(), 1 << 20, clock());
    assert_eq!(offsets_and_bodies(&log, 10), kept, "reopened");
    log.close();
}

/// Waits until the log's next event number is `seq`.
fn written(log: &EventLog, watch: &mut tokio::sync::watch::Receiver<Tail>, seq: u64) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            while log.tail().next_seq < seq {
                watch.changed().await.unwrap();
            }
        });
}

#[test]
fn a_log_following_its_journal_takes_the_records_it_was_told_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let durable: WaitDurable = Box::new({
        let asked = asked.clone();
        move |p| {
            asked.lock().unwrap().push(p);
            Ok(())
        }
    });
    let log = EventLog::open(dir.path(), Options::default(), clock(), durable).unwrap();
    log.follow_journal(0);
    let mut watch = log.watch();
    log.queue(1, events(1, 2, 0));
    log.queue(2, events(2, 1, 0));
    assert!(log.read(0, 10).unwrap().events.is_empty());
    // The journal's writer, telling the log, writes the events itself: they
    // are in the log when it is told.
    log.journal_advanced(1);
    assert_eq!(log.tail().next_seq, 3, "written by the caller");
    assert_eq!(log.read(0, 10).unwrap().events.len(), 2, "record 1 only");
    assert_eq!(*asked.lock().unwrap(), [1], "record 2 was not waited for");
    log.journal_advanced(2);
    assert_eq!(log.tail().next_seq, 4);
    // A record durable when queued (a replay) wakes the writer itself.
    log.journal_advanced(3);
    log.queue(3, events(3, 1, 0));
    written(&log, &mut watch, 5);
    let all = read_all(&log, 0, 10);
    assert_eq!(all.last().unwrap(), r#"{"record":3,"i":0}"#);
    // The writer marks the record complete after readers may see its
    // events: once it stopped, it has.
    log.close();
    assert_eq!(log.complete_through(), 3);
}

//! The file journal against its guarantees: durability before the answer,
//! group commit, replay after a position, a cut torn or corrupt tail, and
//! segments of the previous release (no header) replayed and kept.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use pushd_actors::model::{Audience, MessageSpec};
use pushd_actors::ports::{Change, Entry, Journal, Position};

use super::{FORMAT, FileJournal, KIND, segments};
use crate::segfile::{Contents, HEADER_LEN, Step};

fn change(id: &str) -> Change {
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

/// The ids of every record replayed after `after`, with their positions.
fn replayed(journal: &FileJournal, after: Position) -> Vec<(Position, String)> {
    let mut seen = Vec::new();
    journal
        .replay(after, &mut |position, entries| {
            for e in entries {
                if let Entry::Message(m) = e {
                    seen.push((position, m.id));
                }
            }
            Ok(())
        })
        .unwrap();
    seen
}

async fn append_durably(journal: &FileJournal, ids: impl Iterator<Item = String>) -> Position {
    let mut last = 0;
    for id in ids {
        last = journal.append(&[change(&id)]).unwrap();
    }
    journal.durable(last).await.unwrap();
    last
}

#[tokio::test]
async fn appends_are_durable_in_order_and_replay_after_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    let last = append_durably(&journal, (1..=5).map(|i| format!("m{i}"))).await;
    assert_eq!(last, 5);
    drop(journal);
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    let all = replayed(&journal, 0);
    assert_eq!(all.len(), 5);
    assert_eq!(all[0], (1, "m1".to_string()));
    assert_eq!(
        replayed(&journal, 3),
        vec![(4, "m4".into()), (5, "m5".into())]
    );
    assert_eq!(journal.append(&[change("m6")]).unwrap(), 6, "appends go on");
}

#[tokio::test]
async fn appends_overwrite_the_zero_fill_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for round in 0..3 {
        let journal = FileJournal::open(dir.path(), 0).unwrap();
        let more: Vec<String> = (0..301).map(|i| format!("r{round}-{i:04}")).collect();
        append_durably(&journal, more.iter().cloned()).await;
        ids.extend(more);
        drop(journal);
        let segment = &segments::list(dir.path()).unwrap()[0].path;
        let (end, len) = (data_end(segment), std::fs::metadata(segment).unwrap().len());
        assert!(
            (end..=2 * end.max(4096)).contains(&len),
            "zeros ahead of the data, growing with it: {end} of {len} bytes"
        );
    }
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    let kept: Vec<String> = replayed(&journal, 0)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(kept, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), 0).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let journal = journal.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let p = journal.append(&[change(&format!("t{t}-{i}"))]).unwrap();
                    journal.durable(p).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(replayed(&journal, 0).len(), 400);
    let syncs = journal.syncs();
    assert!(
        syncs < 400,
        "8 writers shared syncs: {syncs} syncs for 400 records"
    );
}

/// Where the records of the segment at `path` end (its zero fill follows).
fn data_end(path: &std::path::Path) -> u64 {
    let kept = Contents::read(&KIND, path)
        .unwrap()
        .intact_prefix(|_| Step::Boundary);
    assert_eq!(kept.cut, None, "zeros follow the data");
    kept.end
}

/// Appends three records, then damages the last with `damage`; a reopen
/// keeps exactly the first two and appends after them.
async fn damaged_tail_is_cut(damage: impl FnOnce(&std::path::Path, u64)) {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    append_durably(&journal, ["a", "b"].into_iter().map(String::from)).await;
    let before_last = data_end(&segments::list(dir.path()).unwrap()[0].path);
    append_durably(&journal, std::iter::once("c".to_string())).await;
    drop(journal);
    let segment = segments::list(dir.path()).unwrap()[0].path.clone();
    damage(&segment, before_last);
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    let kept: Vec<String> = replayed(&journal, 0)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(kept, ["a", "b"]);
    let p = append_durably(&journal, std::iter::once("d".to_string())).await;
    assert_eq!(p, 3, "the cut record's position is reused");
    drop(journal);
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    let kept: Vec<String> = replayed(&journal, 0)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(kept, ["a", "b", "d"]);
}

#[tokio::test]
async fn a_torn_tail_is_cut_never_replayed() {
    for keep in [1, 7, 16, 20] {
        damaged_tail_is_cut(|path, before_last| {
            let file = OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(before_last + keep).unwrap();
        })
        .await;
    }
}

#[tokio::test]
async fn a_corrupt_tail_is_cut_never_replayed() {
    damaged_tail_is_cut(|path, before_last| {
        let mut bytes = std::fs::read(path).unwrap();
        let at = before_last as usize + 20;
        bytes[at] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    })
    .await;
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    append_durably(&journal, ["a", "b"].into_iter().map(String::from)).await;
    drop(journal);
    let segment = segments::list(dir.path()).unwrap()[0].path.clone();
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3], data_end(&segment))
        .unwrap();
    drop(file);
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    assert_eq!(replayed(&journal, 0).len(), 2);
    assert_eq!(journal.append(&[change("c")]).unwrap(), 3);
}

#[tokio::test]
async fn released_segments_are_deleted_and_positions_continue_past_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open_with(dir.path(), 0, 64).unwrap();
    let mut last = 0;
    for i in 0..20 {
        last = append_durably(&journal, std::iter::once(format!("m{i}"))).await;
    }
    let before = journal.segment_count();
    assert!(before > 3, "small segments roll over: {before}");
    journal.release(last);
    // The release is acted on by the writer; one more group waits it out.
    append_durably(&journal, std::iter::once("after".to_string())).await;
    journal.release(last);
    append_durably(&journal, std::iter::once("after2".to_string())).await;
    assert!(journal.segment_count() <= 2, "covered segments deleted");
    drop(journal);
    let journal = FileJournal::open(dir.path(), last).unwrap();
    let ids: Vec<String> = replayed(&journal, last)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(ids, ["after", "after2"]);
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let empty = FileJournal::open(dir.path(), 40).unwrap();
    assert_eq!(empty.append(&[change("x")]).unwrap(), 41);
}

/// A segment as pushd wrote it before segments had a header (format 1),
/// byte for byte: for each record `len: u32 | crc32: u32 | position: u64 |
/// entries in postcard (len bytes)`, the checksum over position and
/// entries; then the zero fill.
fn legacy_segment(first: Position, ids: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (position, id) in (first..).zip(ids) {
        let change = change(id);
        let payload = postcard::to_stdvec(&vec![&change.entry]).unwrap();
        let mut covered = position.to_le_bytes().to_vec();
        covered.extend_from_slice(&payload);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&covered).to_le_bytes());
        out.extend_from_slice(&covered);
    }
    out.resize(out.len() + 4096, 0);
    out
}

#[tokio::test]
async fn a_segment_without_a_header_is_replayed_and_kept_and_appends_go_to_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = segments::path_of(dir.path(), 1);
    let bytes = legacy_segment(1, &["a", "b", "c"]);
    std::fs::write(&legacy, &bytes).unwrap();
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    let ids = |journal: &FileJournal| -> Vec<(Position, String)> { replayed(journal, 0) };
    assert_eq!(
        ids(&journal),
        [(1, "a".into()), (2, "b".into()), (3, "c".into())]
    );
    let versions: Vec<u32> = Contents::read(&KIND, &legacy)
        .unwrap()
        .frames()
        .map(|f| f.version)
        .collect();
    assert_eq!(versions, [1, 1, 1], "each record says its segment's format");
    assert_eq!(
        append_durably(&journal, ["d".to_string()].into_iter()).await,
        4
    );
    drop(journal);
    assert_eq!(std::fs::read(&legacy).unwrap(), bytes, "left as it is");
    let found = segments::list(dir.path()).unwrap();
    assert_eq!(found.len(), 2, "appends went to a new segment");
    let new = std::fs::read(&found[1].path).unwrap();
    assert_eq!(&new[..8], b"PUSHDJNL");
    assert_eq!(new[8..12], FORMAT.to_le_bytes());
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    assert_eq!(ids(&journal).len(), 4);
    assert_eq!(ids(&journal)[3], (4, "d".into()));
}

#[tokio::test]
async fn a_format_2_segment_of_version_1_records_is_replayed_and_appends_go_to_format_3() {
    let dir = tempfile::tempdir().unwrap();
    let old = segments::path_of(dir.path(), 1);
    // Format 2: the header, then version-1 records framed as in format 1.
    let mut bytes = crate::segfile::header::encode(&KIND).to_vec();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    bytes.extend(legacy_segment(1, &["a", "b"]));
    std::fs::write(&old, &bytes).unwrap();
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    assert_eq!(replayed(&journal, 0), [(1, "a".into()), (2, "b".into())]);
    let erasure = Change::of(Entry::CustomerErased("c".into()));
    let position = journal.append(&[erasure]).unwrap();
    journal.durable(position).await.unwrap();
    assert_eq!(position, 3);
    drop(journal);
    assert_eq!(std::fs::read(&old).unwrap(), bytes, "left as it is");
    let found = segments::list(dir.path()).unwrap();
    assert_eq!(found.len(), 2, "the erasure went to a new segment");
    let versions: Vec<u32> = [&old, &found[1].path]
        .iter()
        .flat_map(|p| {
            Contents::read(&KIND, p)
                .unwrap()
                .frames()
                .map(|f| f.version)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(versions, [2, 2, FORMAT]);
    assert_eq!(FORMAT, 6);
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    let mut entries = Vec::new();
    journal
        .replay(0, &mut |position, e| {
            entries.push((position, e));
            Ok(())
        })
        .unwrap();
    assert_eq!(entries.len(), 3);
    assert!(matches!(&entries[2].1[..], [Entry::CustomerErased(id)] if id == "c"));
}

#[tokio::test]
async fn a_torn_tail_of_a_segment_without_a_header_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = segments::path_of(dir.path(), 1);
    let whole = legacy_segment(1, &["a", "b"]);
    let two = whole.len() - 4096;
    let mut torn = legacy_segment(1, &["a", "b", "c"]);
    torn.truncate(two + 20);
    std::fs::write(&legacy, &torn).unwrap();
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    assert_eq!(replayed(&journal, 0).len(), 2);
    assert_eq!(std::fs::metadata(&legacy).unwrap().len(), two as u64);
    assert_eq!(
        append_durably(&journal, ["c".to_string()].into_iter()).await,
        3
    );
    drop(journal);
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    assert_eq!(replayed(&journal, 0)[2], (3, "c".into()));
}

#[tokio::test]
async fn an_empty_segment_without_a_header_is_written_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = segments::path_of(dir.path(), 1);
    std::fs::write(&legacy, [0; 4096]).unwrap();
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    assert_eq!(
        append_durably(&journal, ["a".to_string()].into_iter()).await,
        1
    );
    drop(journal);
    assert_eq!(segments::list(dir.path()).unwrap().len(), 1);
    assert_eq!(&std::fs::read(&legacy).unwrap()[..8], b"PUSHDJNL");
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    assert_eq!(replayed(&journal, 0), [(1, "a".into())]);
}

#[tokio::test]
async fn a_segment_of_a_newer_format_or_not_a_journal_stops_the_open_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    append_durably(&journal, ["a".to_string()].into_iter()).await;
    drop(journal);
    let path = segments::list(dir.path()).unwrap()[0].path.clone();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&(FORMAT + 1).to_le_bytes());
    // Damaged too: a reader of the older format must not cut it.
    let end = data_end(&path) as usize;
    bytes[end - 1] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = FileJournal::open(dir.path(), 0).err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(
        err.to_string(),
        format!(
            "journal segment {} is format {}; this pushd reads formats 1 to {FORMAT}",
            path.display(),
            FORMAT + 1
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "untouched");
    bytes[..HEADER_LEN].copy_from_slice(b"PUSHDEVT\x02\0\0\0\0\0\0\0");
    std::fs::write(&path, &bytes).unwrap();
    let err = FileJournal::open(dir.path(), 0).err().unwrap();
    assert!(
        err.to_string().contains("is not a pushd journal segment"),
        "{err}"
    );
}

async fn erase_durably(journal: &FileJournal) -> Position {
    let erasure = Change::of(Entry::CustomerErased("c".into()));
    let position = journal.append(&[erasure]).unwrap();
    journal.durable(position).await.unwrap();
    position
}

/// Waits until the writer has deleted segments down to `count`.
async fn segments_left(journal: &FileJournal, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while journal.segment_count() > count {
        assert!(std::time::Instant::now() < deadline, "segment kept");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_erasure_covered_deletes_the_active_segment_of_an_idle_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    append_durably(&journal, (1..=3).map(|i| format!("m{i}"))).await;
    let erased = erase_durably(&journal).await;
    journal.release(erased - 1);
    append_durably(&journal, std::iter::once("m5".to_string())).await;
    assert_eq!(journal.segment_count(), 1, "not covered yet: kept");
    let covered = 5;
    journal.release(covered);
    segments_left(&journal, 0).await;
    let next = append_durably(&journal, std::iter::once("m6".to_string())).await;
    assert_eq!(next, 6);
    drop(journal);
    let journal = FileJournal::open(dir.path(), covered).unwrap();
    assert_eq!(replayed(&journal, 0), vec![(6, "m6".into())]);
    assert_eq!(journal.append(&[change("m7")]).unwrap(), 7);
}

#[tokio::test]
async fn an_erasure_closes_a_busy_active_segment_deleted_by_the_next_release() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), 0).unwrap();
    append_durably(&journal, (1..=3).map(|i| format!("m{i}"))).await;
    let erased = erase_durably(&journal).await;
    append_durably(&journal, std::iter::once("m5".to_string())).await;
    // Covered up to the erasure, not past it: the segment is closed.
    journal.release(erased);
    append_durably(&journal, std::iter::once("m6".to_string())).await;
    let last = append_durably(&journal, std::iter::once("m7".to_string())).await;
    assert_eq!(journal.segment_count(), 2, "closed, a new one started");
    journal.release(last);
    // The writer acts on a release between groups, after it answers them.
    segments_left(&journal, 1).await;
    append_durably(&journal, std::iter::once("m8".to_string())).await;
    let kept = replayed(&journal, 0);
    assert!(kept.iter().all(|(p, _)| *p > erased + 1), "{kept:?}");
    assert_eq!(kept.last(), Some(&(8, "m8".to_string())));
}

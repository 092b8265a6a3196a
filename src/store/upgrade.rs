//! The snapshot's format marker, and the in-place upgrade of a snapshot
//! written by an older pushd.
//!
//! Format 3 (pushd before versioned records) held version-1 records
//! without a version byte; format 4 starts every value with its record's
//! version. The upgrade from 3 prefixes every value of the record trees
//! with version 1, in batches; each batch also records the last key it
//! rewrote, so an upgrade cut short by a crash goes on where it stopped
//! (a sled batch is atomic). The last batch writes the new marker. Format
//! 5 only adds a record version (deliveries of version 3): a snapshot of
//! format 4 reads as it is and just gets the new marker, so an older pushd
//! refuses it once it may hold them. Format 7 keeps a held delivery's
//! record and status key only (the key's value names its customer), and a
//! released one's creation key has its release time: the upgrade from an
//! older format rewrites the scheduled deliveries it holds so. Format 9
//! lists `sent`, `delivered` and `opened` deliveries under one status key
//! (`keys::status_key`) and has no customer index (a customer's
//! deliveries are found through their creation keys): the upgrade from an
//! older format moves those status keys and removes the customer index,
//! first (format 6's rewrite then finds its keys where format 9 has them).
//! Formats newer than this binary's are refused, naming both.

use std::path::Path;

use super::keys::Index;
use super::overlay::Indexed;
use super::{Error, codec, keys};
use crate::records;
use pushd_actors::model::Delivery;
use pushd_actors::status::MessageStatus;

/// Values rewritten per batch.
const BATCH: usize = 512;

/// The key prefixes whose values are records.
const RECORDS: [&[u8]; 7] = [
    keys::CUSTOMER,
    keys::DELIVERY,
    keys::MESSAGE,
    keys::COUNTER,
    keys::SERIES,
    keys::REASON,
    keys::SEND,
];

/// Checks the snapshot's format: marks a new one, upgrades an older one in
/// place, refuses a newer or unknown one.
pub fn open(db: &sled::Db, path: &Path) -> Result<(), Error> {
    let key = keys::record(keys::META, codec::FORMAT_KEY);
    let found = match db.get(&key)? {
        Some(marker) => marker,
        None if db.is_empty() => {
            db.insert(key, codec::marker(codec::FORMAT))?;
            return Ok(());
        }
        None => {
            return Err(Error::Format(format!(
                "{} holds a snapshot from a pushd older than 0.1 (JSON records), which this version cannot read; move it away",
                path.display()
            )));
        }
    };
    match codec::format_of(&found) {
        Some(codec::FORMAT) => Ok(()),
        Some(codec::OLDEST) => upgrade_from_3(db, path),
        Some(format) if (codec::OLDEST..codec::FORMAT).contains(&format) => {
            let shared = share_status_keys(db)?;
            let dropped = drop_customer_index(db)?;
            // Scheduled deliveries came with format 6: older ones hold none.
            let rewritten = match format {
                6 => reindex_scheduled(db)?,
                _ => 0,
            };
            tracing::info!(snapshot = %path.display(), scheduled = rewritten, status_keys_moved = shared, customer_index_keys_removed = dropped, "snapshot upgraded from format {format} to {}", codec::FORMAT);
            db.insert(key, codec::marker(codec::FORMAT))?;
            db.flush()?;
            Ok(())
        }
        Some(format) if format > codec::FORMAT => Err(Error::NewerFormat(format!(
            "{} holds a snapshot of format {format}, written by a newer pushd; this pushd reads formats {} to {}: run the newer pushd, or restore a backup taken before the upgrade",
            path.display(),
            codec::OLDEST,
            codec::FORMAT
        ))),
        _ => Err(Error::Format(format!(
            "{} holds a snapshot in format {:?}, which this pushd (formats {} to {}) cannot read; move it away",
            path.display(),
            String::from_utf8_lossy(&found),
            codec::OLDEST,
            codec::FORMAT
        ))),
    }
}

/// Moves the status keys of `sent`, `delivered` and `opened` deliveries,
/// which formats before 9 kept apart, to the key they share. Answers how
/// many it moved. Idempotent: an upgrade cut short moves the rest before it
/// marks the format.
fn share_status_keys(db: &sled::Db) -> Result<usize, Error> {
    let shared = [
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Opened,
    ];
    let mut moved = 0;
    for status in shared {
        let to = Index::Status(status).prefix();
        let from = keys::status_prefix(status.as_str());
        moved += rewrite_keys(db, &from, "status keys", |batch, key, value| {
            batch.insert([to.as_slice(), &key[from.len()..]].concat(), value);
            batch.remove(key);
        })?;
    }
    Ok(moved)
}

/// Removes the customer index formats before 9 wrote (format 9 finds a
/// customer's deliveries through their creation keys). Answers how many
/// keys it removed. Idempotent, as the move above.
fn drop_customer_index(db: &sled::Db) -> Result<usize, Error> {
    let prefix = keys::format_8_customer_index();
    rewrite_keys(db, &prefix, "customer index keys", |batch, key, _| {
        batch.remove(key)
    })
}

/// Hands every key under `prefix` and its value to `each`, which stages
/// their rewrite in a batch; applies the batches [`BATCH`] keys at a time,
/// with progress in the log (`what` names the keys). Answers how many keys
/// there were.
fn rewrite_keys(
    db: &sled::Db,
    prefix: &[u8],
    what: &str,
    mut each: impl FnMut(&mut sled::Batch, sled::IVec, sled::IVec),
) -> Result<usize, Error> {
    let (mut batch, mut done) = (sled::Batch::default(), 0);
    for item in db.scan_prefix(prefix) {
        let (key, value) = item?;
        each(&mut batch, key, value);
        done += 1;
        if done % BATCH == 0 {
            db.apply_batch(std::mem::take(&mut batch))?;
        }
        if done % (BATCH * 200) == 0 {
            tracing::info!(keys = done, what, "snapshot upgrade in progress");
        }
    }
    db.apply_batch(batch)?;
    Ok(done)
}

/// The index keys format 6 wrote for `d`: every one a settled or
/// unsettled delivery has (a held one too), its creation key at its
/// creation.
fn format_6_keys(d: &Delivery) -> Vec<Vec<u8>> {
    let was = Indexed {
        held: false,
        listed_at: d.created_at,
        ..Indexed::of(d)
    };
    keys::index_keys_as(d, &was)
}

/// Rewrites the scheduled deliveries' index keys as format 7 has them, as
/// a drain would (the keys format 6 wrote and format 7 does not go, the
/// rest are written with their values), a batch at a time, in one pass
/// over every delivery: a held one keeps only its status key, which names
/// its customer; a released one's creation key moves from its creation to
/// its release (see `Delivery::listed_at`). Answers how many it rewrote.
/// Idempotent: an upgrade cut short does it again before it marks the
/// format.
fn reindex_scheduled(db: &sled::Db) -> Result<usize, Error> {
    let (mut batch, mut n) = (sled::Batch::default(), 0);
    let (mut rewritten, mut read) = (0, 0usize);
    for item in db.scan_prefix(keys::DELIVERY) {
        let (_, value) = item?;
        read += 1;
        if read % (BATCH * 200) == 0 {
            tracing::info!(deliveries = read, "snapshot upgrade in progress");
        }
        let d: Delivery = codec::decode(&value)?;
        if d.schedule.is_none() {
            continue;
        }
        let new = keys::index_keys(&d);
        for gone in format_6_keys(&d).into_iter().filter(|k| !new.contains(k)) {
            batch.remove(gone);
        }
        for key in new {
            batch.insert(key, keys::index_value(&d));
        }
        rewritten += 1;
        n += 1;
        if n >= BATCH {
            db.apply_batch(std::mem::take(&mut batch))?;
            n = 0;
        }
    }
    db.apply_batch(batch)?;
    Ok(rewritten)
}

/// Prefixes every record value with version 1, then marks the current
/// format.
fn upgrade_from_3(db: &sled::Db, path: &Path) -> Result<(), Error> {
    let progress_key = keys::record(keys::META, codec::UPGRADE_KEY);
    let mut after = db.get(&progress_key)?.map(|k| k.to_vec());
    tracing::info!(snapshot = %path.display(), resumed = after.is_some(), "upgrading the snapshot from format 3 to {}", codec::FORMAT);
    let mut done = 0usize;
    loop {
        let mut batch = sled::Batch::default();
        let mut last = None;
        let mut n = 0;
        let from = after
            .clone()
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        for item in db.range::<Vec<u8>, _>((from, std::ops::Bound::Unbounded)) {
            let (key, value) = item?;
            if RECORDS.iter().any(|p| key.starts_with(p)) {
                batch.insert(key.clone(), records::tag_unversioned(&value));
                n += 1;
            }
            last = Some(key.to_vec());
            if n == BATCH {
                break;
            }
        }
        let Some(last) = last else { break };
        batch.insert(progress_key.as_slice(), last.as_slice());
        db.apply_batch(batch)?;
        done += n;
        if done % (BATCH * 200) < n {
            tracing::info!(values = done, "snapshot upgrade in progress");
        }
        after = Some(last);
    }
    let shared = share_status_keys(db)?;
    let dropped = drop_customer_index(db)?;
    let mut finish = sled::Batch::default();
    finish.remove(progress_key.as_slice());
    finish.insert(
        keys::record(keys::META, codec::FORMAT_KEY),
        codec::marker(codec::FORMAT),
    );
    db.apply_batch(finish)?;
    db.flush()?;
    tracing::info!(
        values = done,
        status_keys_moved = shared,
        customer_index_keys_removed = dropped,
        "snapshot upgraded to format {}",
        codec::FORMAT
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use pushd_actors::ports::Store;
    use pushd_actors::schedule::Schedule;
    use pushd_actors::status::{DeliveryState, DeviceState, DeviceStatus};

    use super::*;
    use crate::store::SledStore;

    /// A scheduled delivery of customer `c1`, made at 1,000 s.
    fn scheduled(id: &str) -> Delivery {
        Delivery {
            id: id.into(),
            customer_id: "c1".into(),
            message_id: "m1".into(),
            campaign_id: Some("g1".into()),
            created_at: 1_000,
            attempted_at: None,
            content: None,
            data: serde_json::Value::Null,
            goal: None,
            sends: Vec::new(),
            state: DeliveryState::held(),
            failure_detail: None,
            schedule: Some(Schedule::at(500_000_000)),
        }
    }

    /// A format-6 snapshot, written as format 6 wrote it: every index key
    /// of a held delivery (its status key empty), a released one's creation
    /// key at its creation. Opened, it reads as format 7 writes it.
    #[test]
    fn format_6_scheduled_deliveries_are_rewritten_as_format_7_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        let held = scheduled("01A");
        let mut released = scheduled("01B");
        released.state = DeliveryState::new(Vec::new());
        released.schedule.as_mut().unwrap().released_ms = Some(500_000_000);
        {
            let db = sled::open(&path).unwrap();
            let marker = keys::record(keys::META, codec::FORMAT_KEY);
            db.insert(marker, codec::marker(6)).unwrap();
            for d in [&held, &released] {
                db.insert(
                    keys::record(keys::DELIVERY, &d.id),
                    codec::encode(d).unwrap(),
                )
                .unwrap();
                for key in format_6_keys(d) {
                    db.insert(key, sled::IVec::default()).unwrap();
                }
            }
            db.flush().unwrap();
        }
        let store = SledStore::open(&path, 8 << 20).unwrap();
        assert_eq!(store.index_problems().unwrap(), Vec::<String>::new());
        let listed = store.deliveries_between("c1", 500_000, 500_000).unwrap();
        assert_eq!(
            listed.iter().map(|d| &d.id[..]).collect::<Vec<_>>(),
            ["01B"]
        );
        let mut recovered = Vec::new();
        store
            .held_deliveries(&mut |d| recovered.push(d.id.clone()))
            .unwrap();
        assert_eq!(recovered, ["01A"]);
    }

    /// A format-8 snapshot, with a status key of its own for each of a
    /// `sent`, a `delivered`, an `opened` and a `converted` delivery, and
    /// their customer index keys. Opened, it lists each under its status as
    /// format 9 keeps them, and under its customer, without those keys.
    #[test]
    fn a_format_8_snapshot_is_indexed_as_format_9_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        let device = |status, at: Option<i64>| DeviceState {
            status,
            failure: None,
            sent_at: Some(1_000),
            delivered_at: at,
            opened_at: at.filter(|_| status == DeviceStatus::Opened),
        };
        let made = |id: &str, device: DeviceState| Delivery {
            state: DeliveryState::new(vec![device]),
            schedule: None,
            ..scheduled(id)
        };
        let mut converted = made("01D", device(DeviceStatus::Opened, Some(1_001)));
        assert!(converted.state.convert(1_002));
        let all = [
            made("01A", device(DeviceStatus::Sent, None)),
            made("01B", device(DeviceStatus::Delivered, Some(1_001))),
            made("01C", device(DeviceStatus::Opened, Some(1_001))),
            converted,
        ];
        {
            let db = sled::open(&path).unwrap();
            let marker = keys::record(keys::META, codec::FORMAT_KEY);
            db.insert(marker, codec::marker(8)).unwrap();
            for d in &all {
                let value = codec::encode(d).unwrap();
                db.insert(keys::record(keys::DELIVERY, &d.id), value)
                    .unwrap();
                let status = Index::Status(d.status()).prefix();
                let format_8 = keys::status_prefix(d.status().as_str());
                let customer = [
                    keys::format_8_customer_index().as_slice(),
                    &(d.customer_id.len() as u32).to_be_bytes(),
                    d.customer_id.as_bytes(),
                    d.id.as_bytes(),
                ]
                .concat();
                db.insert(customer, sled::IVec::default()).unwrap();
                for key in keys::index_keys(d) {
                    let key = match key.strip_prefix(status.as_slice()) {
                        Some(id) => [format_8.as_slice(), id].concat(),
                        None => key,
                    };
                    db.insert(key, sled::IVec::default()).unwrap();
                }
            }
            db.flush().unwrap();
        }
        let store = SledStore::open(&path, 8 << 20).unwrap();
        assert_eq!(store.index_problems().unwrap(), Vec::<String>::new());
        for d in &all {
            let filter = crate::store::DeliveryFilter {
                status: Some(d.status()),
                ..Default::default()
            };
            let (page, next) = store.list_deliveries(&filter, 10, None).unwrap();
            let ids: Vec<&str> = page.iter().map(|p| p.id.as_str()).collect();
            assert_eq!((ids, next), (vec![d.id.as_str()], None));
            assert_eq!(store.count_deliveries(&filter).unwrap(), 1);
        }
        let of_c1 = crate::store::DeliveryFilter {
            customer_id: Some("c1".into()),
            ..Default::default()
        };
        let (page, _) = store.list_deliveries(&of_c1, 2, None).unwrap();
        let ids: Vec<&str> = page.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["01D", "01C"]);
        assert_eq!(store.count_deliveries(&of_c1).unwrap(), 4);
    }
}

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
//! record and status key only (the key's value names its customer): the
//! upgrade from an older format rewrites the held deliveries it holds so.
//! Formats newer than this binary's are refused, naming both.

use std::path::Path;

use super::{Error, codec, keys};
use crate::records;
use pushd_actors::model::Delivery;

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
            let trimmed = trim_held(db)?;
            tracing::info!(snapshot = %path.display(), held = trimmed, "snapshot upgraded from format {format} to {}", codec::FORMAT);
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

/// Removes the index keys a held delivery no longer has (its customer,
/// message, campaign, creation and unsettled keys) and names its customer
/// in its status key's value, a batch at a time; answers how
/// many held deliveries it went through. Idempotent: an upgrade cut short
/// does it again before it marks the format.
fn trim_held(db: &sled::Db) -> Result<usize, Error> {
    let prefix = keys::held_prefix();
    let (mut batch, mut n, mut held) = (sled::Batch::default(), 0, 0);
    for item in db.scan_prefix(&prefix) {
        let (key, _) = item?;
        let record = [keys::DELIVERY, &key[prefix.len()..]].concat();
        let Some(value) = db.get(&record)? else {
            continue;
        };
        let d: Delivery = codec::decode(&value)?;
        if !d.state.held {
            continue;
        }
        let kept = keys::index_keys(&d);
        for gone in keys::every_index_key(&d)
            .into_iter()
            .filter(|k| !kept.contains(k))
        {
            batch.remove(gone);
            n += 1;
        }
        batch.insert(key, keys::index_value(&d));
        n += 1;
        held += 1;
        if n >= BATCH {
            db.apply_batch(std::mem::take(&mut batch))?;
            n = 0;
        }
    }
    db.apply_batch(batch)?;
    Ok(held)
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
        "snapshot upgraded to format {}",
        codec::FORMAT
    );
    Ok(())
}

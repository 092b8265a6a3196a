//! Erasure in sled: an erased customer's deliveries leave the snapshot,
//! with every delivery-log index key of theirs, in small batches.
//!
//! A drain writes a set holding an erasure like any other set (the erased
//! customer's changed deliveries included, so a drain cut short leaves
//! sled's records and counters in step and the replay after it exact). Its
//! last batch, the one recording the set's position, also records a marker
//! per customer erased in the set. Only then are the customer's deliveries
//! removed, found through its creation-time index and the status keys of
//! its held deliveries, a batch at a time; the
//! last batch removes the marker. A crash in between leaves the marker, and
//! the next open finishes the removal before anything reads. Counters and
//! series are never touched: they keep what the deliveries counted.
//!
//! A marker lists the deliveries the same set wrote for the customer after
//! its erasure (the id used again, by a send or a new customer): those
//! stay.

use std::collections::{HashMap, HashSet};

use pushd_actors::model::Delivery;

use super::snapshot::OPS_PER_BATCH;
use super::{Error, codec, keys};

/// A marker's value: the ids of the deliveries that stay, each with its
/// length in front.
pub fn marker<'a>(keep: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut value = Vec::new();
    for id in keep {
        value.extend_from_slice(&(id.len() as u32).to_be_bytes());
        value.extend_from_slice(id.as_bytes());
    }
    value
}

/// The delivery ids a marker keeps.
fn kept(mut value: &[u8]) -> Result<HashSet<String>, Error> {
    let malformed = || Error::Format("an erasure marker is malformed".into());
    let mut ids = HashSet::new();
    while !value.is_empty() {
        let len = value.get(..4).ok_or_else(malformed)?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let id = value.get(4..4 + len).ok_or_else(malformed)?;
        ids.insert(String::from_utf8(id.to_vec()).map_err(|_| malformed())?);
        value = &value[4 + len..];
    }
    Ok(ids)
}

/// Removes every delivery of each erased customer but those its set
/// keeps, with their index keys, then the customer's marker. Answers how
/// many went. Idempotent: a removal cut short is done again from the start.
pub fn remove(db: &sled::Db, erasures: &[(&str, &HashSet<String>)]) -> Result<usize, Error> {
    let mut held = held_of(db, erasures)?;
    let mut removed = 0;
    for &(customer, keep) in erasures {
        let ids = held.remove(customer).unwrap_or_default();
        removed += remove_one(db, customer, keep, ids)?;
    }
    Ok(removed)
}

/// The held deliveries of the erased customers, by customer: one pass over
/// every held delivery's status key, whose value names its customer.
fn held_of(
    db: &sled::Db,
    erasures: &[(&str, &HashSet<String>)],
) -> Result<HashMap<String, Vec<sled::IVec>>, Error> {
    let erased: HashSet<&[u8]> = erasures.iter().map(|(c, _)| c.as_bytes()).collect();
    let prefix = keys::held_prefix();
    let mut held: HashMap<String, Vec<sled::IVec>> = HashMap::new();
    for item in db.scan_prefix(&prefix) {
        let (key, customer) = item?;
        if erased.contains(customer.as_ref()) {
            let customer = String::from_utf8_lossy(&customer).into_owned();
            held.entry(customer).or_default().push(key);
        }
    }
    Ok(held)
}

/// Removes `customer`'s deliveries but `keep`, found through its creation
/// keys and the status keys `held` of its held ones.
fn remove_one(
    db: &sled::Db,
    customer: &str,
    keep: &HashSet<String>,
    held: Vec<sled::IVec>,
) -> Result<usize, Error> {
    let created = keys::created_prefix(customer);
    let held_at = keys::held_prefix().len();
    let found = (db
        .scan_prefix(&created)
        .map(|item| (item, created.len() + 8)))
    .chain(
        held.into_iter()
            .map(|key| (Ok((key, sled::IVec::default())), held_at)),
    );
    let (mut batch, mut ops) = (sled::Batch::default(), 0);
    let mut removed = HashSet::new();
    for (item, id_at) in found {
        let (key, _) = item?;
        let id = String::from_utf8_lossy(&key[id_at..]).into_owned();
        if keep.contains(&id) || removed.contains(&id) {
            continue;
        }
        let record = keys::record(keys::DELIVERY, &id);
        if let Some(value) = db.get(&record)? {
            let d: Delivery = codec::decode(&value)?;
            for key in keys::index_keys(&d) {
                batch.remove(key);
                ops += 1;
            }
        }
        batch.remove(key);
        batch.remove(record);
        ops += 2;
        removed.insert(id);
        if ops >= OPS_PER_BATCH {
            db.apply_batch(std::mem::take(&mut batch))?;
            ops = 0;
        }
    }
    batch.remove(keys::erasing(customer));
    db.apply_batch(batch)?;
    Ok(removed.len())
}

/// Finishes the removals a crash cut short (their markers are still
/// there). Answers how many customers it finished.
pub fn resume(db: &sled::Db) -> Result<usize, Error> {
    let prefix = keys::erasing_prefix();
    let mut cut = Vec::new();
    for item in db.scan_prefix(&prefix) {
        let (key, value) = item?;
        let customer = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        cut.push((customer, kept(&value)?));
    }
    let erasures: Vec<(&str, &HashSet<String>)> =
        cut.iter().map(|(c, keep)| (c.as_str(), keep)).collect();
    let removed = remove(db, &erasures)?;
    if !cut.is_empty() {
        tracing::info!(
            customers = cut.len(),
            removed,
            "erasures cut short are finished"
        );
    }
    Ok(cut.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_its_ids() {
        let ids = ["01A", "", "c/1\n"];
        let back = kept(&marker(ids)).unwrap();
        assert_eq!(back, ids.iter().map(|s| s.to_string()).collect());
        assert!(kept(&marker([])).unwrap().is_empty());
        assert!(kept(&[0, 0, 0, 9, b'x']).is_err());
    }
}

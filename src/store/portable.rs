//! A snapshot another machine can load: the whole sled tree as one flat
//! stream of records, with the journal position it covers. A cluster node
//! uploads it for its partitions, and the node that takes a partition over
//! builds its store from it, then replays the journal after that position.
//!
//! The stream is a header line, then each key and value with a 4-byte
//! length in front, then an end mark and the CRC-32 of everything before
//! it: a cut or damaged copy is refused, never half loaded.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, PoisonError};

use pushd_actors::ports::Position;

use super::{Error, SledStore, codec, keys};

/// The first bytes of an export.
const HEADER: &[u8] = b"pushd-portable-snapshot-v1\n";
/// Stands where a key's length would: no more records.
const END: u32 = u32::MAX;
/// Records per sled batch while importing.
const IMPORT_BATCH: usize = 1024;

/// A writer that keeps the CRC-32 of what passes through it.
struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Summed<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }
}

impl SledStore {
    /// Writes the snapshot as sled holds it after the last drain to `out`,
    /// and answers the journal position it covers. No drain runs meanwhile.
    /// Refused while a failed drain waits to be retried: sled then holds
    /// part of a set of changes, past the position it records.
    pub fn export(&self, out: &mut impl Write) -> Result<Position, Error> {
        let _no_drain = self
            .drain_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.lock().draining.is_some() {
            return Err(Error::Format(
                "a drain failed part-way; the snapshot is exported once it is retried".into(),
            ));
        }
        let covered = self.sled_covered()?;
        let mut sum = Summed {
            inner: out,
            crc: crc32fast::Hasher::new(),
        };
        sum.put(HEADER)?;
        for item in self.db.iter() {
            let (key, value) = item?;
            for part in [&key[..], &value[..]] {
                sum.put(&(part.len() as u32).to_be_bytes())?;
                sum.put(part)?;
            }
        }
        sum.put(&END.to_be_bytes())?;
        let crc = sum.crc.clone().finalize();
        sum.inner.write_all(&crc.to_be_bytes())?;
        sum.inner.flush()?;
        Ok(covered)
    }

    /// The position sled's own records cover (what the last drain wrote).
    pub fn sled_covered(&self) -> Result<Position, Error> {
        match self.db.get(keys::record(keys::META, codec::COVERED_KEY))? {
            Some(v) => Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                Error::Format("the snapshot's covered position is malformed".into())
            })?)),
            None => Ok(0),
        }
    }

    /// Builds a snapshot directory at `path` (which must not hold one) from
    /// an export, and answers the store over it (what [`SledStore::open`]
    /// would answer, without closing and opening sled again), with a page
    /// cache of at most `cache_bytes`. A damaged or cut export is refused.
    pub fn import(
        path: &Path,
        input: &mut impl Read,
        cache_bytes: u64,
    ) -> Result<Arc<SledStore>, Error> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        let records = parse(&bytes)?;
        let db = super::open_db(path, cache_bytes)?;
        if !db.is_empty() {
            return Err(Error::Format(format!(
                "{} already holds a snapshot",
                path.display()
            )));
        }
        for chunk in records.chunks(IMPORT_BATCH) {
            let mut batch = sled::Batch::default();
            for (key, value) in chunk {
                batch.insert(*key, *value);
            }
            db.apply_batch(batch)?;
        }
        db.flush()?;
        SledStore::over(db, path.to_path_buf())
    }
}

/// One key and its value.
type Record<'a> = (&'a [u8], &'a [u8]);

/// The next length-prefixed part of `rest`, or `None` at the end mark.
fn take<'a>(rest: &mut &'a [u8]) -> Result<Option<&'a [u8]>, Error> {
    let cut = || Error::Format("the portable snapshot is damaged: cut short".into());
    let len = u32::from_be_bytes(rest.get(..4).ok_or_else(cut)?.try_into().expect("4 bytes"));
    *rest = &rest[4..];
    if len == END {
        return Ok(None);
    }
    let part = rest.get(..len as usize).ok_or_else(cut)?;
    *rest = &rest[len as usize..];
    Ok(Some(part))
}

/// The records of an export, checked whole first.
fn parse(bytes: &[u8]) -> Result<Vec<Record<'_>>, Error> {
    let bad = |why: &str| Error::Format(format!("the portable snapshot is damaged: {why}"));
    let body = bytes
        .strip_prefix(HEADER)
        .ok_or_else(|| bad("unknown header"))?;
    if body.len() < 8 {
        return Err(bad("cut short"));
    }
    let (summed, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(summed).to_be_bytes() != crc {
        return Err(bad("checksum mismatch"));
    }
    let mut rest = &body[..body.len() - 4];
    let mut records = Vec::new();
    while let Some(key) = take(&mut rest)? {
        let value = take(&mut rest)?.ok_or_else(|| bad("a key without a value"))?;
        records.push((key, value));
    }
    if !rest.is_empty() {
        return Err(bad("bytes after the end"));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use pushd_actors::model::{Audience, Customer, MessageSpec};
    use pushd_actors::ports::{Change, Entry, Store};

    use super::*;

    fn message(id: &str) -> MessageSpec {
        MessageSpec {
            id: id.into(),
            name: id.into(),
            campaign_id: Some("spring".into()),
            title: "Hi".into(),
            body: "there".into(),
            deep_link: None,
            audience: Audience::AllDevices,
            collapse_id: None,
            conversion: None,
            app: "default".into(),
            push: Default::default(),
            created_at: 1_764_100_000,
            rate_per_minute: None,
            lane: Default::default(),
        }
    }

    #[test]
    fn an_export_loads_elsewhere_with_its_position_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path().join("a"), 1 << 20).unwrap();
        let ada = Customer {
            id: "ada".into(),
            attributes: Default::default(),
            unsubscribed: false,
            devices: Vec::new(),
        };
        store.apply(1, vec![Change::of(Entry::Customer(ada.clone()))]);
        store.apply(2, vec![Change::of(Entry::Message(Box::new(message("m1"))))]);
        store.drain().unwrap();
        // Applied after the drain: not in sled, so not in the export.
        store.apply(3, vec![Change::of(Entry::CustomerDeleted("ada".into()))]);

        let mut export = Vec::new();
        assert_eq!(store.export(&mut export).unwrap(), 2);
        let copy = dir.path().join("b");
        let loaded = SledStore::import(&copy, &mut &export[..], 1 << 20).unwrap();
        assert_eq!(loaded.covered().unwrap(), 2);
        assert_eq!(loaded.customer("ada").unwrap(), Some(ada));
        assert_eq!(loaded.message("m1").unwrap(), Some(message("m1")));

        let mut damaged = export.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 1;
        let e = SledStore::import(&dir.path().join("c"), &mut &damaged[..], 1 << 20)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("damaged"), "{e}");
        let cut = &export[..export.len() - 9];
        let e = SledStore::import(&dir.path().join("d"), &mut &cut[..], 1 << 20)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("damaged"), "{e}");
    }
}

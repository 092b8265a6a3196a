//! Recovery: bringing a store's snapshot up to the journal's end.
//!
//! The store says which journal position its state covers; every record
//! after it is applied again, in order. A record holds whole entries, and a
//! delivery's previous value is read from the store being rebuilt (the
//! snapshot plus the records replayed so far), so the store's counters move
//! by exactly what each record changed: replay is exact.

use crate::engine::EngineError;
use crate::ports::{Change, Entry, Journal, Position, Store};

/// What a replay did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// The position the store's snapshot covered.
    pub covered: Position,
    /// Records applied after it.
    pub records: u64,
    /// The journal's last intact position.
    pub last: Position,
}

/// Applies every journal record after the store's covered position.
pub fn replay(journal: &dyn Journal, store: &dyn Store) -> Result<Replayed, EngineError> {
    let covered = store.covered()?;
    let mut records = 0u64;
    let last = journal.replay(covered, &mut |position, entries| {
        debug_assert!(position > covered, "replayed a record the snapshot covers");
        let mut changes = Vec::with_capacity(entries.len());
        for entry in entries {
            let before = match &entry {
                Entry::Delivery(d) => store.delivery(&d.id)?.map(Box::new),
                _ => None,
            };
            changes.push(Change { entry, before });
        }
        store.apply(position, changes);
        records += 1;
        Ok(())
    })?;
    Ok(Replayed {
        covered,
        records,
        last,
    })
}

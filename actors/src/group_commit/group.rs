//! One group: the records a writer took at once, back to back.

use crate::ports::Position;

/// Records appended one after another and taken by the writer at once, to
/// be made durable together and handed back to
/// [`GroupCommit::finish`](super::GroupCommit::finish). Never empty.
pub struct Group {
    /// The records' bytes, back to back.
    data: Vec<u8>,
    /// Where each record ends in `data`.
    ends: Vec<usize>,
    /// The first record's position; the others follow it.
    first: Position,
}

/// A run of whole records of a group: see [`Group::parts`].
pub struct Part<'a> {
    /// The position of its first record.
    pub first: Position,
    /// The position of its last record.
    pub last: Position,
    /// Its records' bytes, back to back.
    pub bytes: &'a [u8],
}

impl Group {
    pub(super) fn new(data: Vec<u8>, ends: Vec<usize>, first: Position) -> Group {
        debug_assert!(!ends.is_empty(), "a group holds records");
        Group { data, ends, first }
    }

    /// Its buffers, emptied, to be filled again.
    pub(super) fn into_spare(mut self) -> (Vec<u8>, Vec<usize>) {
        self.data.clear();
        self.ends.clear();
        (self.data, self.ends)
    }

    /// The position of its first record.
    pub fn first(&self) -> Position {
        self.first
    }

    /// The position of its last record.
    pub fn last(&self) -> Position {
        self.first + self.count() - 1
    }

    /// How many records it holds.
    pub fn count(&self) -> u64 {
        self.ends.len() as u64
    }

    /// Its records' bytes, back to back.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Each record's position and bytes, in order.
    pub fn records(&self) -> impl Iterator<Item = (Position, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        (self.first..)
            .zip(starts.zip(&self.ends))
            .map(|(position, (start, &end))| (position, &self.data[start..end]))
    }

    /// The group cut, in order, into runs of whole records of at most
    /// `max_bytes` each; a record larger than that is a run by itself.
    pub fn parts(&self, max_bytes: usize) -> impl Iterator<Item = Part<'_>> {
        let mut next = 0;
        std::iter::from_fn(move || {
            if next == self.ends.len() {
                return None;
            }
            let start = if next == 0 { 0 } else { self.ends[next - 1] };
            let fit = self.ends[next..]
                .iter()
                .take_while(|&&end| end - start <= max_bytes)
                .count()
                .max(1);
            let (first, end) = (next, next + fit);
            next = end;
            Some(Part {
                first: self.first + first as u64,
                last: self.first + end as u64 - 1,
                bytes: &self.data[start..self.ends[end - 1]],
            })
        })
    }
}

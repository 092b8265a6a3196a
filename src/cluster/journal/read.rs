//! Reading a partition's records back from its subject when a node takes
//! the partition over.

use std::collections::VecDeque;

use pushd_actors::ports::{Entry, Position};

use super::super::ClusterError;
use super::{FIRST_HEADER, FORMAT_HEADER, Place};
use crate::journal::{FORMAT, frame};
use crate::segfile::Read;

/// The partition's records after `covered`, as read from the stream.
pub(super) struct ReadBack {
    /// The records after `covered`, in order.
    pub(super) tail: Vec<(Position, Vec<Entry>)>,
    /// The last record position any message holds (or would hold next,
    /// less one, for an empty group).
    pub(super) last: Position,
    /// The subject's last stream sequence (0: none).
    pub(super) last_seq: u64,
    /// Group messages read.
    pub(super) messages: u64,
    /// Each message's sequence and last position.
    pub(super) groups: VecDeque<(u64, Position)>,
}

/// Reads every group message of the subject and keeps the records after
/// `covered`, checking they follow on from it without a gap.
pub(super) async fn read_after(place: &Place, covered: Position) -> Result<ReadBack, ClusterError> {
    let nats = |e: &dyn std::fmt::Display| ClusterError::Nats(format!("{}: {e}", place.subject));
    let last_seq = match place
        .stream
        .get_last_raw_message_by_subject(&place.subject)
        .await
    {
        Ok(m) => m.sequence,
        Err(e)
            if e.kind()
                == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
        {
            0
        }
        Err(e) => return Err(nats(&e)),
    };
    let mut back = ReadBack {
        tail: Vec::new(),
        last: 0,
        last_seq,
        messages: 0,
        groups: VecDeque::new(),
    };
    let mut next_seq = 1;
    while last_seq > 0 && next_seq <= last_seq {
        let message = place
            .stream
            .raw_message_builder()
            .sequence(next_seq)
            .next_by_subject(place.subject.clone())
            .send()
            .await
            .map_err(|e| nats(&e))?;
        next_seq = message.sequence + 1;
        back.messages += 1;
        let first: Position = message
            .headers
            .get(FIRST_HEADER)
            .and_then(|v| v.as_str().parse().ok())
            .ok_or_else(|| {
                nats(&format!(
                    "message {} has no {FIRST_HEADER}",
                    message.sequence
                ))
            })?;
        back.last = back.last.max(first.saturating_sub(1));
        let version = match message.headers.get(FORMAT_HEADER) {
            None => 1,
            Some(v) => v.as_str().parse().map_err(|_| {
                nats(&format!(
                    "message {} has a malformed {FORMAT_HEADER}",
                    message.sequence
                ))
            })?,
        };
        if version > crate::records::JOURNAL_VERSION {
            return Err(ClusterError::NewerRecords(format!(
                "{}: message {} holds records of version {version}; this pushd reads versions 1 to {}: upgrade this node",
                place.subject,
                message.sequence,
                crate::records::JOURNAL_VERSION
            )));
        }
        let mut rest = &message.payload[..];
        // A message has no segment header: its records are read as the
        // format `frame::encode` writes.
        while let Read::Frame(f, used) = frame::read(rest, FORMAT) {
            rest = &rest[used..];
            back.last = back.last.max(f.position);
            if f.position <= covered {
                continue;
            }
            let expected = back.tail.last().map_or(covered, |(p, _)| *p) + 1;
            if f.position != expected {
                return Err(ClusterError::Gap {
                    subject: place.subject.clone(),
                    expected,
                    found: f.position,
                });
            }
            // The message's header, not a segment's, names the records'
            // version.
            let entries = crate::records::decode_entries(version, f.payload)
                .map_err(|e| nats(&format!("record {} does not decode: {e}", f.position)))?;
            back.tail.push((f.position, entries));
        }
        if !rest.is_empty() {
            return Err(nats(&format!("message {} is damaged", message.sequence)));
        }
        back.groups.push_back((message.sequence, back.last));
    }
    if back.last < covered {
        // The snapshot covers records the stream no longer lists (purged
        // up to it): go on after it.
        back.last = covered;
    }
    Ok(back)
}

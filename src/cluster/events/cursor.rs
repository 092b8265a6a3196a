//! The feed's cursor in a cluster: a place among the events of the events
//! stream, where a stream message holds a batch of events.
//!
//! A cursor names the next event to read: message `seq` of the stream and
//! the event's index in it, packed as `MARK | seq << 16 | index`. `0` is
//! the start. The mark tells these cursors from the ones pushd handed out
//! when each message held one event (a bare stream sequence, "after this
//! message"), which are still read: a client or a webhook holding one goes
//! on where it was.

/// Set in every cursor of this form: a bare sequence never reaches it.
const MARK: u64 = 1 << 62;
/// Bits of the event's index in its message.
const INDEX_BITS: u32 = 16;
/// The most events one message may hold.
pub const MAX_PER_MESSAGE: usize = (1 << INDEX_BITS) - 1;

/// A place in the events stream: the event at `index` of message `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    /// The stream sequence of the message.
    pub seq: u64,
    /// The event's index among the message's events.
    pub index: usize,
}

impl Place {
    /// The start of the stream.
    pub const START: Place = Place { seq: 0, index: 0 };

    /// The first event of message `seq`.
    pub fn message(seq: u64) -> Place {
        Place { seq, index: 0 }
    }

    /// The cursor that reads this place first.
    pub fn cursor(self) -> u64 {
        if self == Place::START {
            return 0;
        }
        debug_assert!(self.index <= MAX_PER_MESSAGE && self.seq < MARK >> INDEX_BITS);
        MARK | self.seq << INDEX_BITS | self.index as u64
    }

    /// The place a cursor reads from: one of this form, or a bare sequence
    /// handed out before batches (everything after that message).
    pub fn of_cursor(cursor: u64) -> Place {
        if cursor == 0 {
            Place::START
        } else if cursor & MARK != 0 {
            Place {
                seq: (cursor & !MARK) >> INDEX_BITS,
                index: (cursor & MAX_PER_MESSAGE as u64) as usize,
            }
        } else {
            Place::message(cursor + 1)
        }
    }
}

/// A cursor in the form pushd handed out before batches (a bare stream
/// sequence), as a cursor of this form; one of this form is kept.
pub fn upgraded(cursor: u64) -> u64 {
    Place::of_cursor(cursor).cursor()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every place goes through its cursor unchanged, and cursors
        /// order as the places they name.
        #[test]
        fn cursors_keep_places_and_their_order(
            a in (1u64..1 << 40, 0usize..=MAX_PER_MESSAGE),
            b in (1u64..1 << 40, 0usize..=MAX_PER_MESSAGE),
        ) {
            let (a, b) = (Place { seq: a.0, index: a.1 }, Place { seq: b.0, index: b.1 });
            prop_assert_eq!(Place::of_cursor(a.cursor()), a);
            prop_assert_eq!(a.cursor().cmp(&b.cursor()), a.cmp(&b));
        }

        /// A bare sequence from before batches reads on after its message,
        /// and upgrading it twice changes nothing more.
        #[test]
        fn a_bare_sequence_reads_on_after_its_message(seq in 1u64..1 << 40) {
            prop_assert_eq!(Place::of_cursor(seq), Place::message(seq + 1));
            prop_assert_eq!(upgraded(upgraded(seq)), upgraded(seq));
        }
    }

    #[test]
    fn zero_is_the_start_in_both_forms() {
        assert_eq!(Place::of_cursor(0), Place::START);
        assert_eq!(Place::START.cursor(), 0);
        assert_eq!(upgraded(0), 0);
    }
}

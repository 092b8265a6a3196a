//! Pacing: a message with a `rate_per_minute` starts at most that many
//! device sends per minute, across every send call of the message. Each
//! device send takes the next free turn of its message when its send starts
//! (turns are `60 s / rate` apart, the first one now) and waits on the
//! engine's clock until then, holding nothing at the provider. Turns are
//! handed out in the order sends ask for them, so waiting sends go in order.
//!
//! The turns live in memory: after a restart the waiting sends (unsettled
//! devices) resume and take turns afresh. Retries of a send that started
//! are not paced again.
//!
//! Written by hand: crates such as `governor` pace with their own clock and
//! answer "not yet" rather than handing out ordered turns on the engine's
//! `Clock`, which tests move by hand.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::ports::Clock;

/// Microseconds per minute.
const MINUTE_US: i64 = 60_000_000;

/// The next free turn of each paced message.
#[derive(Debug, Default)]
pub struct Pacing {
    /// Message id → the time of its next free turn, Unix microseconds.
    next: Mutex<HashMap<String, i64>>,
}

impl Pacing {
    /// Takes the next turn of `message` at `per_minute` sends a minute
    /// (at least 1) and answers how long from `now_ms` to wait for it.
    pub fn turn(&self, message: &str, per_minute: u32, now_ms: i64) -> Duration {
        let now_us = now_ms.saturating_mul(1000);
        let gap_us = MINUTE_US / i64::from(per_minute.max(1));
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        // Messages whose turns all passed need no entry.
        next.retain(|id, at| *at > now_us || id == message);
        let at = next.entry(message.to_owned()).or_insert(now_us);
        let turn = (*at).max(now_us);
        *at = turn.saturating_add(gap_us);
        Duration::from_micros((turn - now_us) as u64)
    }

    /// Resolves at the next turn of `message` on `clock`.
    pub fn wait(
        &self,
        clock: &dyn Clock,
        message: &str,
        per_minute: u32,
    ) -> impl Future<Output = ()> + Send + 'static {
        let wait = self.turn(message, per_minute, clock.now_ms());
        let sleep = (!wait.is_zero()).then(|| clock.sleep(wait));
        let waiting = Waiting::new();
        async move {
            if let Some(sleep) = sleep {
                sleep.await;
            }
            drop(waiting);
        }
    }
}

/// One send counted in `pushd_paced_sends_waiting` until its turn came or
/// its wait was dropped.
struct Waiting;

impl Waiting {
    fn new() -> Waiting {
        metrics::gauge!("pushd_paced_sends_waiting").increment(1.0);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!("pushd_paced_sends_waiting").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_a_gap_apart_in_order_and_per_message() {
        let pacing = Pacing::default();
        let ms = |d: Duration| d.as_millis();
        // 2 a minute: one now, the next 30 s later, then 60 s.
        assert_eq!(ms(pacing.turn("m", 2, 1_000)), 0);
        assert_eq!(ms(pacing.turn("m", 2, 1_000)), 30_000);
        assert_eq!(ms(pacing.turn("m", 2, 1_000)), 60_000);
        // Another message has its own turns.
        assert_eq!(ms(pacing.turn("other", 2, 1_000)), 0);
        // Later, the queue has moved on: 10 s later, the next turn is 80 s ahead.
        assert_eq!(ms(pacing.turn("m", 2, 11_000)), 80_000);
    }

    #[test]
    fn an_idle_message_starts_now_and_forgets_old_turns() {
        let pacing = Pacing::default();
        pacing.turn("m", 1, 0);
        pacing.turn("old", 1, 0);
        assert_eq!(pacing.turn("m", 1, 600_000), Duration::ZERO);
        assert_eq!(pacing.next.lock().unwrap().len(), 1, "old is forgotten");
    }

    #[test]
    fn turns_below_a_millisecond_apart() {
        let pacing = Pacing::default();
        // 120,000 a minute is 500 µs apart: 120,000 turns span a minute.
        let last = (0..120_000).map(|_| pacing.turn("m", 120_000, 0)).last();
        assert_eq!(last, Some(Duration::from_micros(119_999 * 500)));
        // A rate of 0 is taken as 1 a minute.
        assert_eq!(pacing.turn("m", 0, 0), Duration::from_secs(60));
        assert_eq!(pacing.turn("m", 0, 0), Duration::from_secs(120));
    }
}

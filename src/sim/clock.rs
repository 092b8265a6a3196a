//! The demo's clock: compressed simulated time that never reads in the
//! future.
//!
//! It stands still at its origin (some hours ago) while the demo creates
//! customers and sends, then runs `scale` times faster than real time until
//! it catches up with the wall clock, and with the wall clock from then on.
//! The daemon and the fleet share it, so deliveries, device reports and
//! events carry simulated times that are all in the past: a day of late
//! reports arrives in a minute, and none is dated ahead of now.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pushd_actors::ports::{BoxFuture, Clock, SystemClock};

/// Simulated time for the demo (see the module doc).
#[derive(Debug)]
pub struct SimClock {
    /// Where simulated time stands until started, Unix ms.
    origin_ms: i64,
    /// Simulated seconds per real second while catching up.
    scale: f64,
    /// When it started running.
    started: OnceLock<Instant>,
}

impl SimClock {
    /// A clock standing `lead` before now, `scale` times faster once
    /// started.
    pub fn new(lead: Duration, scale: f64) -> Self {
        SimClock {
            origin_ms: SystemClock.now_ms() - lead.as_millis() as i64,
            scale: scale.max(1.0),
            started: OnceLock::new(),
        }
    }

    /// Starts simulated time running (later calls change nothing).
    pub fn start(&self) {
        self.started.get_or_init(Instant::now);
    }

    /// True once simulated time caught up with the wall clock.
    pub fn caught_up(&self) -> bool {
        self.started.get().is_some() && self.now_ms() >= SystemClock.now_ms()
    }

    /// The real time to wait until this clock reads `at` (Unix seconds),
    /// if it runs at its current pace; zero once it does. Waiting in a loop
    /// on this reaches `at` however the pace changes.
    pub fn until(&self, at: i64) -> Duration {
        let ahead_ms = at.saturating_mul(1000) - self.now_ms();
        if ahead_ms <= 0 {
            return Duration::ZERO;
        }
        if self.started.get().is_none() {
            return Duration::from_millis(100);
        }
        let pace = if self.caught_up() { 1.0 } else { self.scale };
        Duration::from_millis((ahead_ms as f64 / pace).ceil() as u64).max(Duration::from_millis(1))
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        let Some(started) = self.started.get() else {
            return self.origin_ms;
        };
        let simulated =
            self.origin_ms + (started.elapsed().as_secs_f64() * 1000.0 * self.scale) as i64;
        simulated.min(SystemClock.now_ms())
    }

    /// Waits real time: retry backoff and idle eviction keep their real
    /// durations.
    fn sleep(&self, d: Duration) -> BoxFuture<()> {
        SystemClock.sleep(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stands_still_then_runs_fast_and_never_reads_ahead_of_now() {
        let clock = SimClock::new(Duration::from_secs(3600), 1_000_000.0);
        let origin = clock.now_ms();
        assert!(origin <= SystemClock.now_ms() - 3_599_000);
        assert_eq!(clock.now_ms(), origin, "stands still until started");
        assert!(!clock.caught_up());
        assert_eq!(clock.until(origin / 1000), Duration::ZERO);
        clock.start();
        // A million times faster: the hour is made up within ~4 ms, after
        // which the clock is the wall clock; never ahead of it.
        let mut last = origin;
        while !clock.caught_up() {
            let now = clock.now_ms();
            assert!(now >= last && now <= SystemClock.now_ms());
            last = now;
            std::hint::spin_loop();
        }
        assert!(clock.now_ms() <= SystemClock.now_ms());
        let in_a_second = SystemClock.now() + 1;
        let wait = clock.until(in_a_second);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }
}

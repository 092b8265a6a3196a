//! Phase 5: deliveries scheduled for one instant. Idle customers are sent a
//! message scheduled a little ahead; once their actors stopped, ΔRSS per
//! scheduled delivery says what a held delivery costs (a small record on
//! the engine's schedule, not an actor), then the release is timed: from
//! the instant to the last push at the fakes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::daemon::{Api, Daemon, Res};
use crate::workload;
use pushd::sim::FakeProviders;

/// The template of this phase.
const MESSAGE: &str = "later";
/// How long the release may take.
const RELEASE_LIMIT: Duration = Duration::from_secs(600);
/// Interval between polls.
const POLL: Duration = Duration::from_millis(100);

/// What the scheduled phase measured.
pub struct ScheduledResult {
    /// Deliveries scheduled.
    pub deliveries: usize,
    /// ΔRSS per scheduled delivery, bytes (settled, every actor stopped).
    pub bytes_per_delivery: f64,
    /// Seconds from the instant to the last push at the fakes.
    pub release_s: f64,
}

/// Registers `n` customers, schedules a delivery to each for one instant,
/// measures the memory they hold, then times their release.
pub async fn run(
    daemon: &Daemon,
    api: &Api,
    fakes: &FakeProviders,
    n: usize,
) -> Res<ScheduledResult> {
    workload::message(api, MESSAGE).await?;
    let far = Instant::now() + Duration::from_secs(3600);
    if workload::register(api, 0..n, far).await? != n {
        return Err("registration stopped early".into());
    }
    crate::memory::wait_idle(api).await?;
    let rss_before = crate::memory::settled_rss(daemon).await?;
    // Far enough ahead for the sends and the memory reading to come first.
    let lead = 60 + n as u64 / 500;
    // The instant is a whole second: `at` is that second, not `lead` from
    // now (up to a second later, which hid a fast release).
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let unix = now.as_secs() + lead;
    let at = Instant::now() + (Duration::from_secs(unix) - now);
    let rfc3339 = jiff::Timestamp::from_second(unix as i64)?.to_string();
    eprintln!("[scheduled] scheduling {n} deliveries for {rfc3339}");
    let schedule = json!({"at": rfc3339});
    workload::send_scheduled(api, MESSAGE, 0..n, Some(&schedule)).await?;
    crate::memory::wait_idle(api).await?;
    let rss_held = crate::memory::settled_rss(daemon).await?;
    if Instant::now() >= at {
        return Err("the deliveries fell due before their memory was read".into());
    }
    let bytes_per_delivery = (rss_held as f64 - rss_before as f64) / n.max(1) as f64;
    eprintln!(
        "[scheduled] {bytes_per_delivery:.0} B per scheduled delivery; waiting for the instant"
    );
    let pushes = 2 * n;
    let deadline = at + RELEASE_LIMIT;
    while fakes.requests() < pushes {
        if Instant::now() > deadline {
            return Err(format!("{} of {pushes} pushes released", fakes.requests()).into());
        }
        tokio::time::sleep(POLL).await;
    }
    let release_s = Instant::now().saturating_duration_since(at).as_secs_f64();
    eprintln!("[scheduled] {pushes} pushes released in {release_s:.1} s");
    Ok(ScheduledResult {
        deliveries: n,
        bytes_per_delivery,
        release_s,
    })
}

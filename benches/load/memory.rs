//! Phase 3: resident memory per idle customer, then per in-flight delivery
//! (the fakes hold every push, so deliveries stay `attempted`).

use std::time::{Duration, Instant};

use crate::daemon::{Api, Daemon, Res};
use crate::workload;
use pushd::sim::FakeProviders;

/// The template of this phase (and of the recovery phase that follows).
pub const MESSAGE: &str = "mem";
/// How long idle actors may take to stop.
const IDLE_LIMIT: Duration = Duration::from_secs(120);
/// How long in-flight pushes may take to reach the fakes.
const REACH_LIMIT: Duration = Duration::from_secs(30);
/// Interval between polls.
const POLL: Duration = Duration::from_millis(100);
/// Interval between RSS reads while it settles.
const SETTLE_POLL: Duration = Duration::from_millis(500);
/// The shortest wait for RSS to settle: longer than the allocator's decay
/// (`dirty_decay_ms:1000`, see `src/main.rs`).
const SETTLE_MIN: Duration = Duration::from_millis(1500);
/// How long RSS may take to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// What the memory phase measured.
pub struct MemoryResult {
    /// Customers asked for.
    pub wanted: usize,
    /// Customers registered before the deadline.
    pub customers: usize,
    /// Registration time, s.
    pub register_s: f64,
    /// RSS after start, bytes.
    pub rss_start: u64,
    /// RSS with every customer registered and every actor stopped, once
    /// settled.
    pub rss_idle: u64,
    /// RSS with `inflight` deliveries in flight, once settled.
    pub rss_inflight: u64,
    /// Deliveries in flight.
    pub inflight: usize,
    /// Push requests the fakes were holding when RSS was read.
    pub held_pushes: usize,
    /// The in-flight deliveries: `(delivery id, customer number)`.
    pub deliveries: Vec<(String, usize)>,
}

impl MemoryResult {
    /// ΔRSS per idle customer.
    pub fn per_idle_customer(&self) -> f64 {
        delta(self.rss_idle, self.rss_start) / self.customers.max(1) as f64
    }

    /// ΔRSS per in-flight delivery.
    pub fn per_inflight_delivery(&self) -> f64 {
        delta(self.rss_inflight, self.rss_idle) / self.inflight.max(1) as f64
    }
}

/// `after - before` as a float (negative if memory was returned).
fn delta(after: u64, before: u64) -> f64 {
    after as f64 - before as f64
}

/// Registers up to `m` customers (stopping at `register_limit`), waits until
/// every actor stopped, then sends to `k` of them.
pub async fn run(
    daemon: &Daemon,
    api: &Api,
    fakes: &FakeProviders,
    (m, k): (usize, usize),
    register_limit: Duration,
) -> Res<MemoryResult> {
    workload::message(api, MESSAGE).await?;
    let rss_start = daemon.rss_bytes()?;
    let t = Instant::now();
    let customers = workload::register(api, 0..m, t + register_limit).await?;
    let register_s = t.elapsed().as_secs_f64();
    eprintln!(
        "[memory] {customers} customers registered in {register_s:.1} s; waiting for idle actors to stop"
    );
    wait_idle(api).await?;
    let rss_idle = settled_rss(daemon).await?;
    let inflight = k.min(customers);
    eprintln!("[memory] sending {inflight} deliveries that the fakes will hold");
    let batches = workload::send(api, MESSAGE, 0..inflight).await?;
    let held_pushes = wait_held(fakes, 2 * inflight).await;
    let rss_inflight = settled_rss(daemon).await?;
    Ok(MemoryResult {
        wanted: m,
        customers,
        register_s,
        rss_start,
        rss_idle,
        rss_inflight,
        inflight,
        held_pushes,
        deliveries: batches.into_iter().flat_map(|b| b.deliveries).collect(),
    })
}

/// The daemon's RSS once freed memory is returned: the allocator gives
/// freed pages back to the system gradually, over about a second, so a
/// reading taken at once would count garbage of the work just done (and
/// vary with when it is taken). Polls until RSS moved less than 0.5 %
/// between two readings, at least [`SETTLE_MIN`] after the first, bounded
/// by [`SETTLE_LIMIT`].
pub async fn settled_rss(daemon: &Daemon) -> Res<u64> {
    let started = Instant::now();
    let mut rss = daemon.rss_bytes()?;
    loop {
        tokio::time::sleep(SETTLE_POLL).await;
        let now = daemon.rss_bytes()?;
        let still = now.abs_diff(rss) * 200 <= rss;
        if (still && started.elapsed() >= SETTLE_MIN) || started.elapsed() > SETTLE_LIMIT {
            return Ok(now);
        }
        rss = now;
    }
}

/// Polls the `pushd_person_actors` gauge until no actor is left.
pub async fn wait_idle(api: &Api) -> Res<()> {
    let deadline = Instant::now() + IDLE_LIMIT;
    while api.metric("pushd_person_actors").await? > 0.0 {
        if Instant::now() > deadline {
            return Err("customer actors did not stop".into());
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Waits (bounded) until the fakes hold `pushes` requests or their count
/// stops growing; answers the count. The fakes cap streams per connection,
/// so the rest wait inside pushd's HTTP/2 client.
async fn wait_held(fakes: &FakeProviders, pushes: usize) -> usize {
    let deadline = Instant::now() + REACH_LIMIT;
    let mut last = usize::MAX;
    loop {
        let now = fakes.requests();
        if now >= pushes || now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! Phase 4: SIGKILL with deliveries in flight, restart on the same data dir
//! against fast fakes, and count what was lost or sent twice.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use pushd::sim::FaultMix;
use reqwest::Method;

use crate::daemon::{API_KEY, Api, Arrival, Collector, Daemon, Res};
use crate::memory::MESSAGE;
use pushd::sim::FakeProviders;

/// How long the resumed deliveries may take to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);
/// Delivery look-ups in flight.
const CHECKS_IN_FLIGHT: usize = 32;

/// What the recovery phase measured.
pub struct RecoveryResult {
    /// Deliveries in flight at the kill.
    pub inflight: usize,
    /// Restart → `/healthz` 200, s.
    pub time_to_healthy_s: f64,
    /// Restart → every delivery final, s.
    pub recovery_s: f64,
    /// Acknowledged deliveries missing or not final afterwards.
    pub lost: usize,
    /// Pushes received beyond one per (delivery, token), both fakes' lives.
    pub duplicates: usize,
    /// Device sends pushd counted as resent after the restart.
    pub resent: u64,
}

/// Kills `daemon`, restarts it on `data_dir` against new fast fakes, and
/// checks every delivery of `acked`. `before` is what the old fakes accepted.
pub async fn run(
    daemon: Daemon,
    data_dir: &Path,
    dir: &Path,
    acked: &[(String, usize)],
    before: Vec<Arrival>,
) -> Res<RecoveryResult> {
    daemon.kill().await?;
    let fakes = FakeProviders::start(dir, FaultMix::default()).await?;
    let collector = Collector::start(&fakes);
    let t0 = Instant::now();
    let daemon = Daemon::start(data_dir, &fakes.env()).await?;
    let api = Api::new(&daemon.base)?;
    api.wait_healthy(SETTLE_LIMIT).await?;
    let time_to_healthy_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "[recovery] healthy after {time_to_healthy_s:.3} s; waiting for {} deliveries",
        acked.len()
    );
    let total = acked.len() as u64;
    api.wait_metrics(MESSAGE, SETTLE_LIMIT, |m| {
        m["attempted"] == 0 && m["sends"].as_u64() >= Some(total)
    })
    .await?;
    let recovery_s = t0.elapsed().as_secs_f64();
    let after = collector.finish().await?;
    let (lost, resent) = check(&api, acked).await?;
    Ok(RecoveryResult {
        inflight: acked.len(),
        time_to_healthy_s,
        recovery_s,
        lost,
        duplicates: duplicates(before.iter().chain(&after)),
        resent,
    })
}

/// Looks up every delivery: how many are missing or not final, and the sum
/// of the devices' `duplicates`.
async fn check(api: &Api, acked: &[(String, usize)]) -> Res<(usize, u64)> {
    stream::iter(acked)
        .map(|(id, _)| look_up(api, id))
        .buffer_unordered(CHECKS_IN_FLIGHT)
        .try_fold((0, 0), |(lost, resent), (ok, r)| {
            std::future::ready(Ok((lost + usize::from(!ok), resent + r)))
        })
        .await
}

/// One delivery: whether it exists and is final, and its resent count.
async fn look_up(api: &Api, id: &str) -> Res<(bool, u64)> {
    let (status, v) = api
        .call(API_KEY, Method::GET, &format!("/v1/deliveries/{id}"), None)
        .await?;
    let fine = status == 200 && v["status"].as_str().is_some_and(|s| s != "attempted");
    let resent = v["devices"].as_array().map_or(0, |d| {
        d.iter().filter_map(|x| x["duplicates"].as_u64()).sum()
    });
    Ok((fine, resent))
}

/// Pushes beyond the first per (delivery, token).
fn duplicates<'a>(arrivals: impl Iterator<Item = &'a Arrival>) -> usize {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for a in arrivals {
        *seen.entry((&a.delivery, &a.token)).or_default() += 1;
    }
    seen.values().map(|c| c - 1).sum()
}

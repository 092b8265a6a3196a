//! Phase 2: SDK device reports per second, against `GET /healthz` (a bare
//! handler on the same server) at the same concurrency. The baseline
//! brackets the reports: half of its calls just before them, half just
//! after, so a machine that gets slower or faster during the phase (these
//! are shared cores) moves both sides of the ratio alike, and the daemon's
//! background work left over from the reports weighs on half of the
//! baseline, not all of it.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};

use crate::cpu::{self, Spent};
use crate::daemon::{API_KEY, Api, Res, SDK_KEY, Syncs, android_token, ios_token};
use crate::workload::customer_id;

/// Requests in flight.
pub const IN_FLIGHT: usize = 64;

/// What the reports phase measured.
pub struct ReportsResult {
    /// Reports sent (all answered 200).
    pub reports: usize,
    /// How long they took.
    pub elapsed: Duration,
    /// `GET /healthz` calls made for the baseline.
    pub health_calls: usize,
    /// How long those took.
    pub health_elapsed: Duration,
    /// Store group commits while reporting.
    pub syncs: Syncs,
    /// CPU spent on the reports, and on the `/healthz` calls.
    pub cpu: Spent,
    pub health_cpu: Spent,
}

impl ReportsResult {
    /// Reports per second.
    pub fn rate(&self) -> f64 {
        self.reports as f64 / self.elapsed.as_secs_f64()
    }

    /// Bare-handler calls per second.
    pub fn baseline_rate(&self) -> f64 {
        self.health_calls as f64 / self.health_elapsed.as_secs_f64()
    }
}

/// Half as many `/healthz` calls as there are reports; then, between
/// `start` and `stop` (a profile of the reports alone), `delivered` for
/// both devices of every delivery and `opened` too for 30 % of customers;
/// then the other half of the `/healthz` calls.
pub async fn run<P>(
    api: &Api,
    pid: u32,
    deliveries: &[(String, usize)],
    start: impl FnOnce() -> Res<P>,
    stop: impl FnOnce(P),
) -> Res<ReportsResult> {
    let calls: usize = deliveries.iter().map(|(_, i)| 2 * events(*i).len()).sum();
    // Each customer's identity proof, as its app's backend hands it at
    // sign-in: made before the phase, so the harness's CPU in it is the
    // calls' own.
    let secret = pushd::keys::identity_secret(API_KEY);
    let proofs: Vec<String> = (deliveries.iter())
        .map(|(_, i)| pushd::keys::identity_proof(&secret, &customer_id(*i)))
        .collect();
    let (early_elapsed, early_cpu) = healthz_calls(api, pid, calls / 2).await?;
    let started = start()?;
    let syncs = Syncs::read(api).await?;
    eprintln!("[reports] sending {calls} reports");
    let t0 = Instant::now();
    let sent = stream::iter(deliveries.iter().zip(&proofs).flat_map(|((d, i), proof)| {
        [ios_token(*i), android_token(*i)].map(|token| device_reports(api, d, token, *i, proof))
    }))
    .buffer_unordered(IN_FLIGHT)
    .try_fold(0, |n, k| std::future::ready(Ok(n + k)));
    let (reports, cpu) = cpu::measure(Some(pid), sent).await?;
    let elapsed = t0.elapsed();
    eprintln!("[reports] {reports} reports answered; /healthz next");
    let syncs = Syncs::read(api).await?.since(syncs);
    stop(started);
    let (late_elapsed, late_cpu) = healthz_calls(api, pid, calls - calls / 2).await?;
    Ok(ReportsResult {
        reports,
        elapsed,
        health_calls: calls,
        health_elapsed: early_elapsed + late_elapsed,
        syncs,
        cpu,
        health_cpu: Spent {
            daemon: early_cpu.daemon + late_cpu.daemon,
            harness: early_cpu.harness + late_cpu.harness,
        },
    })
}

/// `calls` `/healthz` calls at [`IN_FLIGHT`]: how long they took, and
/// their CPU.
async fn healthz_calls(api: &Api, pid: u32, calls: usize) -> Res<(Duration, Spent)> {
    let t0 = Instant::now();
    let health = stream::iter(0..calls)
        .map(|_| healthz(api))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>();
    let ((), cpu) = cpu::measure(Some(pid), health).await?;
    Ok((t0.elapsed(), cpu))
}

/// The reports a device of customer `i` sends, in order.
fn events(i: usize) -> &'static [&'static str] {
    match i % 10 < 3 {
        true => &["delivered", "opened"],
        false => &["delivered"],
    }
}

/// The body of `POST /push/events`.
#[derive(serde::Serialize)]
struct Report<'a> {
    delivery_id: &'a str,
    event: &'a str,
    device_id: &'a str,
    timestamp: i64,
}

/// One device's reports, in order, each with its customer's identity
/// `proof`; answers how many were sent.
async fn device_reports(
    api: &Api,
    delivery: &str,
    token: String,
    i: usize,
    proof: &str,
) -> Res<usize> {
    let events = events(i);
    for event in events {
        let body = serde_json::to_string(&Report {
            delivery_id: delivery,
            event,
            device_id: &token,
            timestamp: 1_764_100_100,
        })?;
        let (status, v) = api.post(SDK_KEY, "/push/events", body, Some(proof)).await?;
        if status != 200 {
            return Err(format!("report refused: {status} {v}").into());
        }
    }
    Ok(events.len())
}

/// One `/healthz` call that must answer 200.
async fn healthz(api: &Api) -> Res<()> {
    match api.health().await? {
        200 => Ok(()),
        s => Err(format!("/healthz answered {s}").into()),
    }
}

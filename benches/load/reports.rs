//! Phase 2: SDK device reports per second, against `GET /healthz` (a bare
//! handler on the same server) at the same concurrency.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::Method;
use serde_json::json;

use crate::cpu::{self, Spent};
use crate::daemon::{Api, Res, SDK_KEY, Syncs, android_token, ios_token};

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

/// Reports `delivered` for both devices of every delivery, and `opened`
/// too for 30 % of customers; then, once `between` ran (the end of a
/// profile of the reports alone), as many `/healthz` calls.
pub async fn run(
    api: &Api,
    pid: u32,
    deliveries: &[(String, usize)],
    between: impl FnOnce(),
) -> Res<ReportsResult> {
    let syncs = Syncs::read(api).await?;
    let t0 = Instant::now();
    let sent = stream::iter(deliveries.iter().flat_map(|(d, i)| {
        [ios_token(*i), android_token(*i)].map(|token| device_reports(api, d, token, *i))
    }))
    .buffer_unordered(IN_FLIGHT)
    .try_fold(0, |n, k| std::future::ready(Ok(n + k)));
    let (reports, cpu) = cpu::measure(Some(pid), sent).await?;
    let elapsed = t0.elapsed();
    let syncs = Syncs::read(api).await?.since(syncs);
    between();
    let t1 = Instant::now();
    let health = stream::iter(0..reports)
        .map(|_| healthz(api))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>();
    let ((), health_cpu) = cpu::measure(Some(pid), health).await?;
    Ok(ReportsResult {
        reports,
        elapsed,
        health_calls: reports,
        health_elapsed: t1.elapsed(),
        syncs,
        cpu,
        health_cpu,
    })
}

/// One device's reports, in order; answers how many were sent.
async fn device_reports(api: &Api, delivery: &str, token: String, i: usize) -> Res<usize> {
    let events: &[&str] = if i % 10 < 3 {
        &["delivered", "opened"]
    } else {
        &["delivered"]
    };
    for event in events {
        let body = json!({"delivery_id": delivery, "event": event, "device_id": token,
            "timestamp": 1_764_100_100});
        let (status, v) = api
            .call(SDK_KEY, Method::POST, "/push/events", Some(&body))
            .await?;
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

//! Percentiles and time series.

use std::time::Duration;

use serde::Serialize;

/// One slice of time of the sends phase.
#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    /// Start of the slice, seconds since the first send call.
    pub t_s: f64,
    /// Pushes accepted by the fakes per second in this slice.
    pub per_s: f64,
    /// Median latency of those pushes, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of those pushes, ms.
    pub p99_ms: f64,
}

/// The value at quantile `q` (0..=1) of sorted `values`; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Buckets `(when, latency ms)` samples into slices of `width`.
pub fn series(samples: &[(Duration, f64)], width: Duration) -> Vec<Bucket> {
    let slot = |d: &Duration| (d.as_secs_f64() / width.as_secs_f64()) as usize;
    let slots = samples.iter().map(|(d, _)| slot(d) + 1).max().unwrap_or(0);
    let mut by_slot = vec![Vec::new(); slots];
    for (d, l) in samples {
        by_slot[slot(d)].push(*l);
    }
    by_slot
        .into_iter()
        .enumerate()
        .map(|(i, mut l)| {
            l.sort_by(f64::total_cmp);
            Bucket {
                t_s: i as f64 * width.as_secs_f64(),
                per_s: l.len() as f64 / width.as_secs_f64(),
                p50_ms: percentile(&l, 0.5),
                p99_ms: percentile(&l, 0.99),
            }
        })
        .collect()
}

//! `target/load/report.json`, `report.md` and the SVG plot of the sends phase.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::daemon::Res;
use crate::stats::Bucket;

/// The figures of one run; printed as the last line.
#[derive(Serialize)]
pub struct Summary {
    /// Quick sizes.
    pub quick: bool,
    /// `/proc/loadavg` (1 min) when the run started and ended: other work
    /// on the machine skews every figure.
    pub load_avg_start: f64,
    pub load_avg_end: f64,
    /// Device pushes per second through pushd, the bare client, and pushd / bare.
    pub sends_per_s: f64,
    pub baseline_sends_per_s: f64,
    pub send_ratio: f64,
    /// Send call start → push accepted by the fake, per push.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// `POST /v1/send/push` → 202, per batch.
    pub batch_p50_ms: f64,
    pub batch_p99_ms: f64,
    /// Per request of the bare client.
    pub baseline_p50_ms: f64,
    pub baseline_p99_ms: f64,
    /// SDK reports per second, `/healthz` per second, and their ratio.
    pub reports_per_s: f64,
    pub healthz_per_s: f64,
    pub report_ratio: f64,
    /// CPU µs per push: (daemon, harness = fakes and client) while pushd
    /// sent, and the harness's while the bare client sent.
    pub cpu_us_per_push: (f64, f64),
    pub baseline_cpu_us_per_push: f64,
    /// CPU µs per report and per `/healthz` call: (daemon, harness).
    pub cpu_us_per_report: (f64, f64),
    pub cpu_us_per_healthz: (f64, f64),
    /// ΔRSS per idle customer, and per in-flight delivery.
    pub bytes_per_idle_customer: f64,
    pub bytes_per_inflight_delivery: f64,
    /// Restart → `/healthz` 200, and restart → every delivery final.
    pub time_to_healthy_s: f64,
    pub recovery_s: f64,
    /// Acknowledged deliveries missing or not final after the restart.
    pub lost: usize,
    /// Pushes received beyond one per (delivery, token).
    pub duplicates: usize,
    /// Device sends pushd resent after the restart (its `duplicates` fields).
    pub resent: u64,
    /// Sizes used.
    pub send_customers: usize,
    pub send_pushes: usize,
    pub reports: usize,
    pub idle_customers_wanted: usize,
    pub idle_customers: usize,
    pub register_s: f64,
    pub inflight_deliveries: usize,
    /// Pushes the holding fakes had received when RSS was read.
    pub held_pushes: usize,
    /// RSS after start, with idle customers, with deliveries in flight.
    pub rss_start_mib: f64,
    pub rss_idle_mib: f64,
    pub rss_inflight_mib: f64,
    /// Journal syncs (group commits) during the sends phase, and their time.
    pub send_syncs: f64,
    pub send_sync_s: f64,
    /// Records drained into the sled snapshot per push (sends phase) and
    /// per report (reports phase).
    pub snapshot_records_per_push: f64,
    pub snapshot_records_per_report: f64,
    /// Journal syncs during the reports phase, and their time.
    pub report_syncs: f64,
    pub report_sync_s: f64,
    /// With `--webhook` (every event posted to a receiver in the harness):
    /// posts received, and events not yet posted, when the sends phase ended.
    pub webhook_posts: Option<usize>,
    pub webhook_backlog: Option<u64>,
    /// Deliveries scheduled for one instant, ΔRSS per one while held (every
    /// actor stopped), and seconds from the instant to the last push.
    pub scheduled_deliveries: usize,
    pub bytes_per_scheduled_delivery: f64,
    pub scheduled_release_s: f64,
}

/// One load target and whether the run met it.
struct Target {
    name: &'static str,
    goal: &'static str,
    value: String,
    met: bool,
}

fn targets(s: &Summary) -> Vec<Target> {
    let t = |name, goal, value: String, met| Target {
        name,
        goal,
        value,
        met,
    };
    vec![
        t(
            "send_ratio",
            "≥ 0.8",
            format!("{:.3}", s.send_ratio),
            s.send_ratio >= 0.8,
        ),
        t(
            "report_ratio",
            "≥ 0.5",
            format!("{:.3}", s.report_ratio),
            s.report_ratio >= 0.5,
        ),
        t(
            "bytes_per_idle_customer",
            "≤ 300 B",
            format!("{:.0} B", s.bytes_per_idle_customer),
            s.bytes_per_idle_customer <= 300.0,
        ),
        t(
            "bytes_per_inflight_delivery",
            "≤ 4 KiB",
            format!("{:.0} B", s.bytes_per_inflight_delivery),
            s.bytes_per_inflight_delivery <= 4096.0,
        ),
        t(
            "recovery_s",
            "≤ 2 s",
            format!("{:.3} s", s.recovery_s),
            s.recovery_s <= 2.0,
        ),
        t("lost", "= 0", s.lost.to_string(), s.lost == 0),
        t(
            "bytes_per_scheduled_delivery",
            "≤ 1 KiB",
            format!("{:.0} B", s.bytes_per_scheduled_delivery),
            s.bytes_per_scheduled_delivery <= 1024.0,
        ),
    ]
}

/// Writes report.json, report.md and sends.svg into `dir`.
pub fn write(dir: &Path, s: &Summary, series: &[Bucket], profile: Option<&str>) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let mut report = serde_json::to_value(s)?;
    report["series"] = json!(series);
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(dir.join("sends.svg"), svg(series))?;
    std::fs::write(dir.join("report.md"), markdown(s, profile))?;
    Ok(())
}

fn markdown(s: &Summary, profile: Option<&str>) -> String {
    let mut md = format!(
        "# pushd load report ({})\n\n## Targets\n\n| figure | target | value | met |\n|---|---|---|---|\n",
        if s.quick { "quick" } else { "full" }
    );
    for t in targets(s) {
        let met = if t.met { "yes" } else { "**no**" };
        let _ = writeln!(md, "| {} | {} | {} | {met} |", t.name, t.goal, t.value);
    }
    let _ = write!(
        md,
        "\nMachine load average (1 min): {:.2} at the start, {:.2} at the end; \
figures vary between runs on a shared machine.\n{}",
        s.load_avg_start,
        s.load_avg_end,
        details(s)
    );
    if let (Some(posts), Some(backlog)) = (s.webhook_posts, s.webhook_backlog) {
        let _ = writeln!(
            md,
            "- webhook (`--webhook`): every event posted to a receiver in the harness; {posts} \
posts received and {backlog} events not yet posted when the sends phase ended. Its cost is \
this run's send_ratio against a run without `--webhook`."
        );
    }
    md.push_str("\n## Sends over time\n\n![throughput and latency](sends.svg)\n");
    if let Some(p) = profile {
        let _ = write!(md, "\n## Profile of the daemon\n\n{p}");
    }
    md
}

fn details(s: &Summary) -> String {
    format!(
        "\n## Figures\n\n\
- sends: {} customers × 2 devices = {} pushes; {:.0} pushes/s through pushd, \
{:.0} pushes/s bare HTTP/2 client (ratio {:.3}).\n\
- latency per push, from the start of the `POST /v1/send/push` call that created \
its delivery to the fake provider accepting the push: p50 {:.1} ms, p99 {:.1} ms. \
Send call → 202 per batch of 500: p50 {:.1} ms, p99 {:.1} ms. \
Bare client per request: p50 {:.1} ms, p99 {:.1} ms.\n\
- journal during the sends phase: {:.0} syncs (group commits), {:.2} s writing and syncing \
in all (mean {:.1} ms), {:.1} pushes per sync.\n\
- CPU per push: pushd {:.0} µs + harness (fakes, client) {:.0} µs; bare client and fakes \
{:.0} µs. Per report: pushd {:.0} µs (harness {:.0} µs); per `/healthz`: pushd {:.0} µs \
(harness {:.0} µs).\n\
- reports: {} `POST /push/events` at {:.0}/s; `GET /healthz` at {:.0}/s (ratio {:.3}); \
{:.0} journal syncs, {:.2} s syncing, {:.1} reports per sync.\n\
- memory: {} of {} idle customers registered in {:.1} s; RSS {:.1} MiB at start, \
{:.1} MiB idle, {:.1} MiB with {} deliveries in flight ({} pushes held by the fakes).\n\
- recovery: {} deliveries in flight at SIGKILL; healthy after {:.3} s, all final after \
{:.3} s; lost {}; duplicate pushes at the providers {}; device sends resent by pushd {}.\n",
        s.send_customers,
        s.send_pushes,
        s.sends_per_s,
        s.baseline_sends_per_s,
        s.send_ratio,
        s.p50_ms,
        s.p99_ms,
        s.batch_p50_ms,
        s.batch_p99_ms,
        s.baseline_p50_ms,
        s.baseline_p99_ms,
        s.send_syncs,
        s.send_sync_s,
        1e3 * s.send_sync_s / s.send_syncs.max(1.0),
        s.send_pushes as f64 / s.send_syncs.max(1.0),
        s.cpu_us_per_push.0,
        s.cpu_us_per_push.1,
        s.baseline_cpu_us_per_push,
        s.cpu_us_per_report.0,
        s.cpu_us_per_report.1,
        s.cpu_us_per_healthz.0,
        s.cpu_us_per_healthz.1,
        s.reports,
        s.reports_per_s,
        s.healthz_per_s,
        s.report_ratio,
        s.report_syncs,
        s.report_sync_s,
        s.reports as f64 / s.report_syncs.max(1.0),
        s.idle_customers,
        s.idle_customers_wanted,
        s.register_s,
        s.rss_start_mib,
        s.rss_idle_mib,
        s.rss_inflight_mib,
        s.inflight_deliveries,
        s.held_pushes,
        s.inflight_deliveries,
        s.time_to_healthy_s,
        s.recovery_s,
        s.lost,
        s.duplicates,
        s.resent,
    )
}

/// Plot size and margins, px.
const W: f64 = 760.0;
const H: f64 = 220.0;
const LEFT: f64 = 70.0;
const PAD: f64 = 30.0;

/// Two panels over time: pushes/s, then p50/p99 latency.
fn svg(series: &[Bucket]) -> String {
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" \
font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * H + PAD
    );
    let rate: Vec<(f64, f64)> = series.iter().map(|b| (b.t_s, b.per_s)).collect();
    let p50: Vec<(f64, f64)> = series.iter().map(|b| (b.t_s, b.p50_ms)).collect();
    let p99: Vec<(f64, f64)> = series.iter().map(|b| (b.t_s, b.p99_ms)).collect();
    out += &panel(
        0.0,
        "pushes accepted by the fakes per second",
        &[(&rate, "steelblue")],
    );
    out += &panel(
        H + PAD,
        "latency, ms (send call → push at provider): p50 green, p99 red",
        &[(&p50, "seagreen"), (&p99, "firebrick")],
    );
    out + "</svg>\n"
}

/// One panel at vertical offset `top` with its lines.
fn panel(top: f64, title: &str, lines: &[(&[(f64, f64)], &str)]) -> String {
    let points = lines.iter().flat_map(|(l, _)| l.iter());
    let (tmax, vmax) = points.fold((0.0f64, 0.0f64), |(t, v), p| (t.max(p.0), v.max(p.1)));
    let (tmax, vmax) = (tmax.max(0.001), vmax.max(0.001));
    let (x0, y0, w, h) = (LEFT, top + 20.0, W - LEFT - 20.0, H - 45.0);
    let mut s = format!(
        "<text x=\"{x0}\" y=\"{}\">{title}</text>\n\
<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>\n\
<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{vmax:.0}</text>\n\
<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n\
<text x=\"{x0}\" y=\"{}\">0 s</text>\n\
<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{tmax:.1} s</text>\n",
        top + 14.0,
        x0 - 4.0,
        y0 + 10.0,
        x0 - 4.0,
        y0 + h,
        y0 + h + 15.0,
        x0 + w,
        y0 + h + 15.0,
    );
    for (line, color) in lines {
        let pts: Vec<String> = line
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x0 + t / tmax * w, y0 + h - v / vmax * h))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            pts.join(" ")
        );
    }
    s
}

/// The 1-minute load average, or 0 if unknown.
pub fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

//! The end-to-end load harness: the release `pushd` binary against
//! fake APNs/FCM on loopback.
//!
//! `cargo bench --bench load [-- --quick] [--profile | --profile-graph]` runs five phases —
//! sends (against a bare HTTP/2 client), device reports (against
//! `/healthz`), memory per idle customer and per in-flight delivery,
//! recovery after SIGKILL, and deliveries scheduled for one instant (memory
//! per held delivery, and the release's time) — then writes `target/load/report.{json,md}` and
//! `sends.svg`, and prints the summary as the last line. `--profile` runs
//! `perf record` on the daemon during the sends phase; `--webhook` runs it
//! with a webhook taking every event. `--cluster N` runs only the sends and
//! reports phases, through a cluster of one node and then of N nodes (see
//! `cluster.rs`); `--node-cpus C` caps each node at C cores (`cgroup.rs`).
//! `--scheduled N` runs only the scheduled phase, with N deliveries;
//! `--no-scheduled` runs the others without it. `--latency` runs only the
//! latency phase (`latency.rs`): transactional single sends at 50 a
//! second, with the daemon idle and then during a campaign to 50,000
//! customers (`--latency N`: to N; `--single-lane campaign`: the single
//! sends in the campaign's lane, to see what lanes change).

mod cgroup;
mod cluster;
mod conn;
mod cpu;
mod daemon;
mod latency;
mod memory;
mod output;
mod profile;
mod recovery;
mod reports;
mod scheduled;
mod sends;
mod stats;
mod usage;
mod webhook;
mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pushd::sim::FaultMix;

use crate::daemon::{Api, Collector, Daemon, Res};
use crate::output::Summary;
use crate::stats::percentile;
use pushd::sim::FakeProviders;

/// How big a run is.
struct Sizes {
    quick: bool,
    /// Customers of the sends phase (two pushes each).
    customers: usize,
    /// Idle customers of the memory phase.
    idle: usize,
    /// Deliveries in flight (memory, then recovery).
    inflight: usize,
    /// Longest the memory phase may spend registering.
    register_limit: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                quick,
                customers: 5_000,
                idle: 20_000,
                inflight: 5_000,
                register_limit: Duration::from_secs(20),
            }
        } else {
            Sizes {
                quick,
                customers: 50_000,
                idle: 1_000_000,
                inflight: 50_000,
                register_limit: Duration::from_secs(600),
            }
        }
    }
}

/// What the throughput daemon measured.
struct Throughput {
    sends: sends::SendsResult,
    sends_cpu: cpu::Spent,
    baseline: sends::Baseline,
    baseline_cpu: cpu::Spent,
    reports: reports::ReportsResult,
    profile: Option<String>,
    /// With `--webhook`: posts received and events not yet posted when
    /// the sends phase ended.
    webhook: Option<(usize, u64)>,
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes = Sizes::new(args.iter().any(|a| a == "--quick"));
    let graph = args.iter().any(|a| a == "--profile-graph");
    let profile = graph || args.iter().any(|a| a == "--profile");
    let webhook = args.iter().any(|a| a == "--webhook");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let node_cpus = flag_value(&args, "--node-cpus", "a share of a core, e.g. 0.4")?;
    if let Some(nodes) = flag_value::<usize>(&args, "--cluster", "a node count, e.g. 3")? {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/load");
        std::fs::create_dir_all(&out)?;
        // Per node: as many customers as the sends phase's.
        let customers = sizes.customers;
        let setup = cluster::Setup {
            nodes,
            customers,
            node_cpus,
            profile: profile.then_some(graph),
            direct: args.iter().any(|a| a == "--direct"),
        };
        return runtime.block_on(cluster::run(setup, &out));
    }
    if node_cpus.is_some() {
        return Err("--node-cpus caps the nodes of --cluster N; give both".into());
    }
    if let Some(n) = flag_value::<usize>(&args, "--scheduled", "a delivery count")? {
        return runtime.block_on(scheduled_only(n));
    }
    if let Some(at) = args.iter().position(|a| a == "--latency") {
        let campaign = args.get(at + 1).and_then(|n| n.parse().ok());
        let lane = match args.iter().position(|a| a == "--single-lane") {
            Some(at) => args.get(at + 1).ok_or("--single-lane takes a lane")?,
            None => "transactional",
        };
        return runtime.block_on(latency_only(campaign.unwrap_or(LATENCY_CAMPAIGN), lane));
    }
    if args.iter().any(|a| a == "--memory") {
        return runtime.block_on(memory_only(&sizes));
    }
    let scheduled = !args.iter().any(|a| a == "--no-scheduled");
    runtime.block_on(run(sizes, profile.then_some(graph), webhook, scheduled))
}

/// The value after `flag`, if given: `what` says what it must be.
fn flag_value<T: std::str::FromStr + PartialOrd + Default>(
    args: &[String],
    flag: &str,
    what: &str,
) -> Res<Option<T>> {
    let Some(at) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    match args.get(at + 1).and_then(|v| v.parse::<T>().ok()) {
        Some(v) if v > T::default() => Ok(Some(v)),
        _ => Err(format!("{flag} takes {what}").into()),
    }
}

/// `profile`: `None` for no profile, else whether to record call graphs.
/// `scheduled`: whether to run the scheduled phase (a build from before
/// scheduled sends refuses its `schedule` field).
async fn run(sizes: Sizes, profile: Option<bool>, webhook: bool, scheduled: bool) -> Res<()> {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/load");
    std::fs::create_dir_all(&out)?;
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let load_avg_start = output::load_avg();
    let t = throughput(
        &sizes,
        &subdir(dir.path(), "throughput")?,
        profile.map(|graph| (&out, graph)),
        webhook,
    )
    .await?;
    let (memory, recovery) = memory_and_recovery(&sizes, &subdir(dir.path(), "memory")?).await?;
    let mut summary = summarize(&sizes, &t, &memory, &recovery);
    if scheduled {
        let held = scheduled_phase(sizes.customers, &subdir(dir.path(), "scheduled")?).await?;
        summary.scheduled_deliveries = held.deliveries;
        summary.bytes_per_scheduled_delivery = held.bytes_per_delivery;
        summary.scheduled_release_s = held.release_s;
    }
    (summary.load_avg_start, summary.load_avg_end) = (load_avg_start, output::load_avg());
    output::write(&out, &summary, &t.sends.series, t.profile.as_deref())?;
    eprintln!(
        "[done] in {:.1} s; wrote {}",
        started.elapsed().as_secs_f64(),
        out.join("report.md").display()
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// `parent/name`, created.
fn subdir(parent: &Path, name: &str) -> Res<PathBuf> {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Phases 1 and 2 on one daemon with fast fakes.
async fn throughput(
    sizes: &Sizes,
    dir: &Path,
    profile: Option<(&PathBuf, bool)>,
    webhook: bool,
) -> Res<Throughput> {
    let fakes = FakeProviders::start(dir, FaultMix::default()).await?;
    let daemon = Daemon::start(&dir.join("data"), &fakes.env()).await?;
    let api = Api::new(&daemon.base)?;
    let receiver = match webhook {
        true => Some(webhook::configure(&api).await?),
        false => None,
    };
    let n = sizes.customers;
    eprintln!("[sends] registering {n} customers (pid {})", daemon.pid);
    let far = Instant::now() + Duration::from_secs(3600);
    if workload::register(&api, 0..n, far).await? != n {
        return Err("registration stopped early".into());
    }
    eprintln!("[sends] sending to {n} customers ({} pushes)", 2 * n);
    let perf = |phase| {
        profile
            .map(|(out, graph)| profile::Perf::start(daemon.pid, out, graph, phase))
            .transpose()
    };
    let sends_perf = perf("sends")?;
    let (sends, sends_cpu) = cpu::measure(Some(daemon.pid), sends::run(&api, &fakes, n)).await?;
    let sends_profile = sends_perf.map(profile::Perf::finish).transpose()?;
    let webhook = match &receiver {
        Some(r) => Some(webhook::figures(&api, r).await?),
        None => None,
    };
    eprintln!("[sends] {:.0} pushes/s; baseline next", sends.rate());
    let (baseline, baseline_cpu) = cpu::measure(None, sends::baseline(&fakes, n)).await?;
    eprintln!("[sends] baseline {:.0} pushes/s", baseline.rate());
    eprintln!("[reports] {} deliveries", sends.deliveries.len());
    let mut reports_profile = None;
    let reports = reports::run(
        &api,
        daemon.pid,
        &sends.deliveries,
        || perf("reports"),
        |started| reports_profile = started.map(profile::Perf::finish),
    )
    .await?;
    let reports_profile = reports_profile.transpose()?;
    let profile = sends_profile.zip(reports_profile).map(|(s, r)| {
        format!("### Sends phase\n\n```\n{s}\n```\n\n### Reports phase\n\n```\n{r}\n```\n")
    });
    eprintln!(
        "[reports] {:.0} reports/s, /healthz {:.0}/s",
        reports.rate(),
        reports.baseline_rate()
    );
    daemon.kill().await?;
    Ok(Throughput {
        sends,
        sends_cpu,
        baseline,
        baseline_cpu,
        reports,
        profile,
        webhook,
    })
}

/// Phases 3 and 4 on one data dir: fakes that hold every push, idle
/// customers, deliveries in flight, then SIGKILL and restart.
async fn memory_and_recovery(
    sizes: &Sizes,
    dir: &Path,
) -> Res<(memory::MemoryResult, recovery::RecoveryResult)> {
    let hold = FaultMix {
        latency: Duration::from_secs(3600),
        ..FaultMix::default()
    };
    let fakes = FakeProviders::start(dir, hold).await?;
    let collector = Collector::start(&fakes);
    let idle = [("PUSHD_IDLE_TIMEOUT_SECS", "1".to_owned())];
    let env: Vec<(&str, String)> = idle.iter().cloned().chain(fakes.env()).collect();
    let data = dir.join("data");
    let daemon = Daemon::start(&data, &env).await?;
    let api = Api::new(&daemon.base)?;
    eprintln!("[memory] registering up to {} idle customers", sizes.idle);
    let counts = (sizes.idle, sizes.inflight);
    let memory = memory::run(&daemon, &api, &fakes, counts, sizes.register_limit).await?;
    let before = collector.finish().await?;
    eprintln!(
        "[recovery] SIGKILL with {} deliveries in flight",
        memory.inflight
    );
    let recovery = recovery::run(
        daemon,
        &data,
        &subdir(dir, "restart")?,
        &memory.deliveries,
        before,
    )
    .await?;
    Ok((memory, recovery))
}

/// `--scheduled N`: phase 5 alone, with N deliveries; prints its figures.
async fn scheduled_only(n: usize) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let held = scheduled_phase(n, dir.path()).await?;
    let figures = serde_json::json!({
        "scheduled_deliveries": held.deliveries,
        "bytes_per_scheduled_delivery": held.bytes_per_delivery,
        "scheduled_release_s": held.release_s,
    });
    println!("{figures}");
    Ok(())
}

/// `--memory`: phases 3 and 4 alone; prints their figures.
async fn memory_only(sizes: &Sizes) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let (memory, recovery) = memory_and_recovery(sizes, dir.path()).await?;
    let figures = serde_json::json!({
        "bytes_per_idle_customer": memory.per_idle_customer(),
        "bytes_per_inflight_delivery": memory.per_inflight_delivery(),
        "held_pushes": memory.held_pushes,
        "recovery_s": recovery.recovery_s,
        "lost": recovery.lost,
        "duplicates": recovery.duplicates,
    });
    println!("{figures}");
    Ok(())
}

/// The latency phase's campaign, customers.
const LATENCY_CAMPAIGN: usize = 50_000;
/// The latency phase's single sends per second.
const SINGLES_PER_S: u32 = 50;

/// `--latency`: the latency phase alone, on a daemon of its own with fakes
/// of a provider's round trip and streams (`latency::Provider`), the
/// single sends in `lane`; prints its figures as JSON.
async fn latency_only(campaign: usize, lane: &str) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let fakes = FakeProviders::start(dir.path(), latency::Provider::mix()).await?;
    let mut env = fakes.env();
    env.extend(latency::Provider::daemon_env());
    let daemon = Daemon::start(&dir.path().join("data"), &env).await?;
    let api = Api::new(&daemon.base)?;
    let result = latency::run(&api, &fakes, campaign, SINGLES_PER_S, lane).await?;
    daemon.kill().await?;
    let (idle, during) = (&result.idle, &result.during_campaign);
    eprintln!(
        "[latency] single sends, idle: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} arrived; answered p50 {:.1} ms, p99 {:.1} ms)",
        idle.p50_ms,
        idle.p99_ms,
        idle.max_ms,
        idle.arrived,
        idle.sends,
        idle.answer_p50_ms,
        idle.answer_p99_ms
    );
    eprintln!(
        "[latency] during the campaign: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} arrived; answered p50 {:.1} ms, p99 {:.1} ms); p99 {:.1}x idle",
        during.p50_ms,
        during.p99_ms,
        during.max_ms,
        during.arrived,
        during.sends,
        during.answer_p50_ms,
        during.answer_p99_ms,
        result.p99_over_idle
    );
    eprintln!(
        "[latency] campaign {:.0} pushes/s, bare client {:.0}: ratio {:.2}",
        result.campaign_pushes_per_s, result.bare_pushes_per_s, result.campaign_ratio
    );
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Phase 5 on a daemon of its own with fast fakes: `n` deliveries
/// scheduled for one instant.
async fn scheduled_phase(n: usize, dir: &Path) -> Res<scheduled::ScheduledResult> {
    let fakes = FakeProviders::start(dir, FaultMix::default()).await?;
    let idle = [("PUSHD_IDLE_TIMEOUT_SECS", "1".to_owned())];
    let env: Vec<(&str, String)> = idle.iter().cloned().chain(fakes.env()).collect();
    let daemon = Daemon::start(&dir.join("data"), &env).await?;
    let api = Api::new(&daemon.base)?;
    let held = scheduled::run(&daemon, &api, &fakes, n).await?;
    daemon.kill().await?;
    Ok(held)
}

/// The figures of the run.
fn summarize(
    sizes: &Sizes,
    t: &Throughput,
    m: &memory::MemoryResult,
    r: &recovery::RecoveryResult,
) -> Summary {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    Summary {
        quick: sizes.quick,
        load_avg_start: 0.0,
        load_avg_end: 0.0,
        sends_per_s: t.sends.rate(),
        baseline_sends_per_s: t.baseline.rate(),
        send_ratio: t.sends.rate() / t.baseline.rate(),
        p50_ms: percentile(&t.sends.latency_ms, 0.5),
        p99_ms: percentile(&t.sends.latency_ms, 0.99),
        batch_p50_ms: percentile(&t.sends.batch_ms, 0.5),
        batch_p99_ms: percentile(&t.sends.batch_ms, 0.99),
        baseline_p50_ms: t.baseline.p(0.5),
        baseline_p99_ms: t.baseline.p(0.99),
        reports_per_s: t.reports.rate(),
        healthz_per_s: t.reports.baseline_rate(),
        report_ratio: t.reports.rate() / t.reports.baseline_rate(),
        cpu_us_per_push: t.sends_cpu.per(t.sends.pushes),
        baseline_cpu_us_per_push: t.baseline_cpu.per(t.baseline.pushes).1,
        cpu_us_per_report: t.reports.cpu.per(t.reports.reports),
        cpu_us_per_healthz: t.reports.health_cpu.per(t.reports.health_calls),
        bytes_per_idle_customer: m.per_idle_customer(),
        bytes_per_inflight_delivery: m.per_inflight_delivery(),
        time_to_healthy_s: r.time_to_healthy_s,
        recovery_s: r.recovery_s,
        lost: r.lost,
        duplicates: r.duplicates,
        resent: r.resent,
        send_customers: sizes.customers,
        send_pushes: t.sends.pushes,
        reports: t.reports.reports,
        idle_customers_wanted: m.wanted,
        idle_customers: m.customers,
        register_s: m.register_s,
        inflight_deliveries: r.inflight,
        held_pushes: m.held_pushes,
        rss_start_mib: mib(m.rss_start),
        rss_idle_mib: mib(m.rss_idle),
        rss_inflight_mib: mib(m.rss_inflight),
        snapshot_records_per_push: t.sends.syncs.snapshot_records / t.sends.pushes.max(1) as f64,
        snapshot_records_per_report: t.reports.syncs.snapshot_records
            / t.reports.reports.max(1) as f64,
        send_syncs: t.sends.syncs.count,
        send_sync_s: t.sends.syncs.seconds,
        report_syncs: t.reports.syncs.count,
        report_sync_s: t.reports.syncs.seconds,
        webhook_posts: t.webhook.map(|w| w.0),
        webhook_backlog: t.webhook.map(|w| w.1),
        scheduled_deliveries: 0,
        bytes_per_scheduled_delivery: 0.0,
        scheduled_release_s: 0.0,
    }
}

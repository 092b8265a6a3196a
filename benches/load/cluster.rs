//! `--cluster N [--node-cpus C]`: the sends and reports phases through a
//! cluster of one node, then of N nodes, each on a fresh three-server
//! JetStream cluster on loopback with fast fakes. Every node gets the same
//! work and the same offered load, as clients calling whichever node would
//! give it: its own `customers` (registered and sent to through it, at
//! [`workload::SENDS_IN_FLIGHT`] calls of its own) and an equal share of
//! the reports (at [`REPORTS_IN_FLIGHT`] of its own); it forwards what its
//! partitions do not hold. Prints sends/s and reports/s for both, their ratio, and where
//! the CPU went (`usage.rs`), and writes `target/load/cluster.json`.
//!
//! Without `--node-cpus` the ratio measures cost, not scale: every node,
//! every nats-server and the harness share the machine's cores, and a
//! cluster node does more per call than a single one (forwarding, a
//! replicated publish). With `--node-cpus C` each node runs in a cgroup of
//! its own capped at C cores (`cgroup.rs`), so one node and N nodes have C
//! cores each and the ratio is the scale-out, as long as the rest of the
//! machine keeps up (the usage figures say whether it did).

#[path = "../../tests/support/cluster.rs"]
#[allow(
    dead_code,
    reason = "the test support's helpers the harness does not use"
)]
mod nats;

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use pushd::partition::Partitioning;
use pushd::sim::{FakeProviders, FaultMix};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cgroup::NodeGroups;
use crate::conn::Poster;
use crate::daemon::{Api, Daemon, Res, SDK_KEY, ios_token};
use crate::output::load_avg;
use crate::profile::Perf;
use crate::usage::{Procs, Usage};
use crate::workload;

/// Partitions of the measured clusters.
const PARTITIONS: u16 = 24;
/// Reports in flight per node.
pub const REPORTS_IN_FLIGHT: usize = 64;
/// The template sent.
const MESSAGE: &str = "cluster";
/// How long the sends may take to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);

/// One cluster's figures.
#[derive(serde::Serialize)]
struct Row {
    nodes: usize,
    customers: usize,
    pushes: usize,
    sends_per_s: f64,
    sends_per_node_per_s: f64,
    reports: usize,
    reports_per_s: f64,
    reports_per_node_per_s: f64,
    /// Where the CPU went while sending, and while reporting.
    sends_cpu: Usage,
    reports_cpu: Usage,
}

/// What to measure: nodes, customers per node, the cap per node, whether
/// to profile the first node (`Some(call graphs)`), and whether each report
/// goes straight to the node serving its partition (`--direct`: what
/// forwarding costs, by difference) instead of to the nodes in turn.
pub struct Setup {
    pub nodes: usize,
    pub customers: usize,
    pub node_cpus: Option<f64>,
    pub profile: Option<bool>,
    pub direct: bool,
}

/// Measures one node, then `nodes`, each with `customers` per node and,
/// with `node_cpus`, capped at that many cores; prints and writes the
/// comparison (and, with `profile`, `cluster-profile.md`).
pub async fn run(setup: Setup, out: &Path) -> Res<()> {
    let Setup {
        nodes,
        customers,
        node_cpus,
        profile,
        direct,
    } = setup;
    let load_avg_start = load_avg();
    let mut rows = Vec::new();
    let mut version = None;
    let mut profiles = String::new();
    for k in [1, nodes.max(1)] {
        eprintln!("[cluster] {k} node(s), {customers} customers each");
        let groups = node_cpus.map(|c| NodeGroups::create(k, c)).transpose()?;
        version = groups.as_ref().map(NodeGroups::version);
        let perf = profile.map(|graph| (out, graph));
        let (row, profile) = measure(k, customers, groups.as_ref(), perf, direct).await?;
        report_row(&row);
        rows.push(row);
        profiles += &profile;
    }
    if profile.is_some() {
        std::fs::write(out.join("cluster-profile.md"), profiles)?;
    }
    let (one, many) = (&rows[0], &rows[1]);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let why = match node_cpus {
        Some(c) => format!(
            "each node capped at {c} of a core: {n} nodes have {:.1} cores, one has {c}; the \
             three nats-servers, the fakes and the harness share what is left of the {cores} \
             cores (see each row's sends_cpu and reports_cpu)",
            c * many.nodes as f64,
            n = many.nodes
        ),
        None => format!(
            "{cores} cores run all {n} pushd nodes, the three nats-servers, the fakes and the \
             harness: {n} nodes do not add CPU, they share it, and each call costs more in a \
             cluster (two of three calls are forwarded to another node, every journal group is \
             a replicated JetStream publish). The ratio is the cluster's overhead here; on \
             machines of their own, nodes add their cores (measure with --node-cpus).",
            n = many.nodes
        ),
    };
    let summary = json!({
        "rows": rows,
        "sends_ratio": ratio(many.sends_per_s, one.sends_per_s),
        "reports_ratio": ratio(many.reports_per_s, one.reports_per_s),
        "cores": cores,
        "node_cpus": node_cpus,
        "direct_reports": direct,
        "cgroup": version,
        "load_avg_start": load_avg_start,
        "load_avg_end": load_avg(),
        "why": why,
    });
    std::fs::write(
        out.join("cluster.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    eprintln!("[cluster] {why}");
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Progress: a row's rates and where its CPU went.
fn report_row(row: &Row) {
    eprintln!(
        "[cluster] {} node(s): {:.0} pushes/s, {:.0} reports/s",
        row.nodes, row.sends_per_s, row.reports_per_s
    );
    for (phase, u) in [("sends", &row.sends_cpu), ("reports", &row.reports_cpu)] {
        eprintln!(
            "[cluster]   {phase} {:.2} s: nodes {:.2?} cores (throttled {:.2?}), nats {:.2}, \
             harness {:.2}, other {:.2}, machine {:.2} ({:.2} niced); {:.0} publishes, \
             {:.0} forwarded",
            u.seconds,
            u.node_cores,
            u.node_throttled,
            u.nats_cores,
            u.harness_cores,
            u.other_cores,
            u.machine_cores,
            u.machine_niced_cores,
            u.publishes,
            u.forwarded
        );
        let threads: Vec<String> = (u.node0_threads.iter())
            .filter(|(_, c)| **c >= 0.005)
            .map(|(name, c)| format!("{name} {c:.2}"))
            .collect();
        eprintln!("[cluster]     node0 by thread: {}", threads.join(", "));
    }
}

/// Sends to `customers` per node and reports for every delivery through
/// `k` nodes, each in its group of `groups` if given; with `perf`, answers
/// the first node's profile of each phase; `direct`: see [`Setup`].
async fn measure(
    k: usize,
    customers: usize,
    groups: Option<&NodeGroups>,
    perf: Option<(&Path, bool)>,
    direct: bool,
) -> Res<(Row, String)> {
    let dir = tempfile::tempdir()?;
    let fakes = FakeProviders::start(dir.path(), FaultMix::default()).await?;
    let servers = nats::start(dir.path());
    let mut env = fakes.env();
    env.extend(nats::node_env(&servers));
    env.push(("PUSHD_CLUSTER_PARTITIONS", PARTITIONS.to_string()));
    let mut daemons = Vec::new();
    for i in 0..k {
        let mut env = env.clone();
        env.push(("PUSHD_CLUSTER_NODE", format!("node{i}")));
        let group = groups.map(|g| g.procs(i));
        let daemon =
            Daemon::start_in(&dir.path().join(format!("node{i}")), &env, group.as_deref()).await?;
        daemons.push(daemon);
    }
    let apis: Vec<Api> = daemons
        .iter()
        .map(|d| Api::new(&d.base))
        .collect::<Res<_>>()?;
    let procs = Procs {
        nodes: daemons.iter().map(|d| d.pid).collect(),
        apis: &apis,
        nats: servers.iter().map(nats::NatsServer::pid).collect(),
        groups,
    };
    let owners = balanced(&apis).await?;
    let ranges: Vec<Range<usize>> = (0..k).map(|i| i * customers..(i + 1) * customers).collect();
    let far = Instant::now() + Duration::from_secs(3600);
    let registered = futures_util::future::try_join_all(
        apis.iter()
            .zip(&ranges)
            .map(|(api, r)| workload::register(api, r.clone(), far)),
    )
    .await?;
    if registered.iter().sum::<usize>() != k * customers {
        return Err("registration stopped early".into());
    }
    workload::message(&apis[0], MESSAGE).await?;
    let mut profile = String::new();
    let mut record = |phase: &str, p: Option<Perf>| -> Res<()> {
        if let Some(p) = p {
            profile += &format!(
                "## {k} node(s), {phase}, node0\n\n```\n{}\n```\n\n",
                p.finish()?
            );
        }
        Ok(())
    };
    let start_perf = |phase: &str| {
        let name = format!("cluster{k}-{phase}");
        let pid = procs.nodes[0];
        perf.map(|(out, graph)| Perf::start(pid, out, graph, &name))
            .transpose()
    };

    let sends_perf = start_perf("sends")?;
    let mark = procs.mark().await?;
    let batches = futures_util::future::try_join_all(
        apis.iter()
            .zip(&ranges)
            .map(|(api, r)| workload::send(api, MESSAGE, r.clone())),
    )
    .await?;
    apis[0]
        .wait_metrics(MESSAGE, SETTLE_LIMIT, |m| {
            m["sends"] == k * customers && m["attempted"] == 0
        })
        .await?;
    let sends_cpu = procs.since(&mark).await?;
    record("sends", sends_perf)?;
    let deliveries: Vec<(String, usize)> = batches
        .into_iter()
        .flatten()
        .flat_map(|b| b.deliveries)
        .collect();

    let partitioning = Partitioning::new(PARTITIONS);
    let mut shares = vec![Vec::new(); k];
    for (n, delivery) in deliveries.iter().enumerate() {
        let node = match direct {
            true => partitioning
                .of_delivery(&delivery.0)
                .map_or(0, |p| owners[usize::from(p.0)]),
            false => n % k,
        };
        shares[node].push(delivery);
    }
    eprintln!("[cluster] {k} node(s): {} reports", deliveries.len());
    let reports_perf = start_perf("reports")?;
    let mark = procs.mark().await?;
    let reports = futures_util::future::try_join_all(
        daemons
            .iter()
            .zip(shares)
            .map(|(daemon, share)| reports(&daemon.base, share)),
    )
    .await?
    .into_iter()
    .sum();
    let reports_cpu = procs.since(&mark).await?;
    record("reports", reports_perf)?;
    for d in daemons {
        d.kill().await?;
    }
    drop(servers);
    let pushes = 2 * deliveries.len();
    let (sends_per_s, reports_per_s) = (
        pushes as f64 / sends_cpu.seconds,
        reports as f64 / reports_cpu.seconds,
    );
    let row = Row {
        nodes: k,
        customers: k * customers,
        pushes,
        sends_per_s,
        sends_per_node_per_s: sends_per_s / k as f64,
        reports,
        reports_per_s,
        reports_per_node_per_s: reports_per_s / k as f64,
        sends_cpu,
        reports_cpu,
    };
    Ok((row, profile))
}

/// A `delivered` report for each of `deliveries` through the node at
/// `base`, over [`REPORTS_IN_FLIGHT`] connections of its own, each report
/// retried while its partition moves (503, at most 50 times); answers how
/// many were recorded.
async fn reports(base: &str, deliveries: Vec<&(String, usize)>) -> Res<usize> {
    let poster = Poster::new(base, "/push/events", SDK_KEY)?;
    let mut lanes = vec![Vec::new(); REPORTS_IN_FLIGHT];
    for (n, delivery) in deliveries.into_iter().enumerate() {
        lanes[n % REPORTS_IN_FLIGHT].push(delivery);
    }
    let recorded = futures_util::future::try_join_all(lanes.into_iter().map(|lane| {
        let bodies = lane
            .into_iter()
            .map(|(delivery, i)| report_body(delivery, *i));
        let mut refused = 0;
        poster.post_all(bodies, async move |status, answer| match status {
            200 => {
                refused = 0;
                Ok(false)
            }
            503 if refused < 50 => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(true)
            }
            _ => Err(format!(
                "report refused: {status} {}",
                String::from_utf8_lossy(answer)
            )
            .into()),
        })
    }))
    .await?;
    Ok(recorded.iter().sum())
}

/// Waits (bounded) until the nodes serve every partition between them,
/// none more than its share; answers each partition's node.
async fn balanced(apis: &[Api]) -> Res<Vec<usize>> {
    let share = usize::from(PARTITIONS).div_ceil(apis.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owners = vec![usize::MAX; usize::from(PARTITIONS)];
        let mut counts = Vec::new();
        for (node, api) in apis.iter().enumerate() {
            let (_, v) = api.call(SDK_KEY, Method::GET, "/healthz", None).await?;
            let serving = v["cluster"]["serving"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for p in serving.iter().filter_map(Value::as_u64) {
                if let Some(owner) = owners.get_mut(p as usize) {
                    *owner = node;
                }
            }
            counts.push(serving.len());
        }
        if counts.iter().sum::<usize>() == usize::from(PARTITIONS)
            && counts.iter().all(|c| *c <= share)
            && owners.iter().all(|o| *o < apis.len())
        {
            return Ok(owners);
        }
        if Instant::now() > deadline {
            return Err(format!("partitions not balanced: {counts:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The body of a `delivered` report for customer `i`'s iOS device.
fn report_body(delivery: &str, i: usize) -> String {
    json!({"delivery_id": delivery, "event": "delivered",
        "device_id": ios_token(i), "timestamp": 1_764_100_100})
    .to_string()
}

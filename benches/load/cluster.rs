//! `--cluster N`: the sends and reports phases through a cluster of one
//! node, then of N nodes, each on a fresh three-server JetStream cluster on
//! loopback with fast fakes. Every node takes an equal share of the calls
//! (forwarding what its partitions do not hold). Prints sends/s and
//! reports/s for both, their ratio and why, and writes
//! `target/load/cluster.json`.
//!
//! On one machine the ratio measures cost, not scale: every node, every
//! nats-server and the harness share its cores, and a cluster node does
//! more per call than a single one (forwarding, a replicated publish).

#[path = "../../tests/support/cluster.rs"]
#[allow(
    dead_code,
    reason = "the test support's helpers the harness does not use"
)]
mod nats;

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use pushd::sim::{FakeProviders, FaultMix};
use reqwest::Method;
use serde_json::{Value, json};

use crate::daemon::{Api, Daemon, Res, SDK_KEY, ios_token};
use crate::workload;

/// Partitions of the measured clusters.
const PARTITIONS: u16 = 24;
/// Reports in flight.
const REPORTS_IN_FLIGHT: usize = 64;

/// One cluster's figures.
#[derive(serde::Serialize)]
struct Row {
    nodes: usize,
    customers: usize,
    pushes: usize,
    sends_per_s: f64,
    reports: usize,
    reports_per_s: f64,
}

/// Measures one node, then `nodes`, and prints and writes the comparison.
pub async fn run(nodes: usize, customers: usize, out: &Path) -> Res<()> {
    let mut rows = Vec::new();
    for k in [1, nodes.max(1)] {
        eprintln!("[cluster] {k} node(s), {customers} customers");
        rows.push(measure(k, customers).await?);
    }
    let (one, many) = (&rows[0], &rows[1]);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let summary = json!({
        "rows": rows,
        "sends_ratio": ratio(many.sends_per_s, one.sends_per_s),
        "reports_ratio": ratio(many.reports_per_s, one.reports_per_s),
        "cores": cores,
        "why": format!(
            "{cores} cores run all {} pushd nodes, the three nats-servers, the fakes and the \
             harness: {} nodes do not add CPU, they share it, and each call costs more in a \
             cluster (two of three calls are forwarded to another node, every journal group is \
             a replicated JetStream publish). The ratio is the cluster's overhead here; on \
             machines of their own, nodes add their cores.",
            many.nodes, many.nodes
        ),
    });
    std::fs::write(
        out.join("cluster.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    for row in &rows {
        eprintln!(
            "[cluster] {} node(s): {:.0} pushes/s, {:.0} reports/s",
            row.nodes, row.sends_per_s, row.reports_per_s
        );
    }
    eprintln!("[cluster] {}", summary["why"].as_str().unwrap_or_default());
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Sends to `customers` and reports for every delivery through `k` nodes.
async fn measure(k: usize, customers: usize) -> Res<Row> {
    let dir = tempfile::tempdir()?;
    let fakes = FakeProviders::start(dir.path(), FaultMix::default()).await?;
    let servers = nats::start(dir.path());
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let mut env = fakes.env();
    env.extend([
        ("PUSHD_CLUSTER", urls.join(",")),
        ("PUSHD_CLUSTER_PARTITIONS", PARTITIONS.to_string()),
    ]);
    let mut daemons = Vec::new();
    for i in 0..k {
        let mut env = env.clone();
        env.push(("PUSHD_CLUSTER_NODE", format!("node{i}")));
        daemons.push(Daemon::start(&dir.path().join(format!("node{i}")), &env).await?);
    }
    let apis: Vec<Api> = daemons
        .iter()
        .map(|d| Api::new(&d.base))
        .collect::<Res<_>>()?;
    balanced(&apis).await?;
    let ranges = shares(customers, k);
    let far = Instant::now() + Duration::from_secs(3600);
    let registered = futures_util::future::try_join_all(
        apis.iter()
            .zip(&ranges)
            .map(|(api, r)| workload::register(api, r.clone(), far)),
    )
    .await?;
    if registered.iter().sum::<usize>() != customers {
        return Err("registration stopped early".into());
    }
    workload::message(&apis[0], "cluster").await?;

    let started = Instant::now();
    let batches = futures_util::future::try_join_all(
        apis.iter()
            .zip(&ranges)
            .map(|(api, r)| workload::send(api, "cluster", r.clone())),
    )
    .await?;
    let sends_s = started.elapsed().as_secs_f64();
    let deliveries: Vec<(String, usize)> = batches
        .into_iter()
        .flatten()
        .flat_map(|b| b.deliveries)
        .collect();

    let started = Instant::now();
    let reports = stream::iter(deliveries.iter().enumerate())
        .map(|(n, (delivery, i))| report(&apis[n % k], delivery, *i))
        .buffer_unordered(REPORTS_IN_FLIGHT)
        .try_fold(0, |n, ()| std::future::ready(Ok(n + 1)))
        .await?;
    let reports_s = started.elapsed().as_secs_f64();
    for d in daemons {
        d.kill().await?;
    }
    drop(servers);
    Ok(Row {
        nodes: k,
        customers,
        pushes: 2 * deliveries.len(),
        sends_per_s: 2.0 * deliveries.len() as f64 / sends_s,
        reports,
        reports_per_s: reports as f64 / reports_s,
    })
}

/// `customers` split into `k` consecutive ranges.
fn shares(customers: usize, k: usize) -> Vec<Range<usize>> {
    let each = customers.div_ceil(k);
    (0..k)
        .map(|i| (i * each).min(customers)..((i + 1) * each).min(customers))
        .collect()
}

/// Waits (bounded) until the nodes serve every partition between them,
/// none more than its share.
async fn balanced(apis: &[Api]) -> Res<()> {
    let share = usize::from(PARTITIONS).div_ceil(apis.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut counts = Vec::new();
        for api in apis {
            let (_, v) = api.call(SDK_KEY, Method::GET, "/healthz", None).await?;
            counts.push(v["cluster"]["serving"].as_array().map_or(0, Vec::len));
        }
        if counts.iter().sum::<usize>() == usize::from(PARTITIONS)
            && counts.iter().all(|c| *c <= share)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("partitions not balanced: {counts:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `delivered` report for customer `i`'s iOS device, retried while its
/// partition moves.
async fn report(api: &Api, delivery: &str, i: usize) -> Res<()> {
    let body = json!({"delivery_id": delivery, "event": "delivered",
        "device_id": ios_token(i), "timestamp": 1_764_100_100});
    for _ in 0..50 {
        let (status, v): (u16, Value) = api
            .call(SDK_KEY, Method::POST, "/push/events", Some(&body))
            .await?;
        match status {
            200 => return Ok(()),
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => return Err(format!("report refused: {status} {v}").into()),
        }
    }
    Err("report kept answering 503".into())
}

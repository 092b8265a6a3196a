//! Where a phase of `--cluster` spent CPU: each node, the nats-servers,
//! the harness (fakes and clients), and the machine as a whole, in cores
//! (CPU seconds per second of the phase); with `--node-cpus`, the share of
//! scheduling periods in which each node used up its quota. A node at its
//! quota in nearly every period is saturated; a machine busy on all its
//! cores limits everything on it. Also the nodes' journal publishes and
//! forwarded calls, from their `/metrics`.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::cgroup::NodeGroups;
use crate::cpu;
use crate::daemon::{Api, Res};

/// The processes a phase accounts for.
pub struct Procs<'a> {
    /// The pushd nodes, in order, and their APIs.
    pub nodes: Vec<u32>,
    pub apis: &'a [Api],
    /// The nats-servers.
    pub nats: Vec<u32>,
    /// The nodes' groups under `--node-cpus`.
    pub groups: Option<&'a NodeGroups>,
}

/// The counters at the start of a phase.
pub struct Mark {
    cpu: CpuMark,
    counts: (f64, f64),
}

/// CPU counters at one instant.
struct CpuMark {
    at: Instant,
    nodes: Vec<f64>,
    threads: BTreeMap<String, f64>,
    nats: f64,
    harness: f64,
    machine: cpu::Machine,
    throttling: Vec<(u64, u64)>,
}

/// CPU of one phase, in cores.
#[derive(serde::Serialize)]
pub struct Usage {
    /// How long the phase took.
    pub seconds: f64,
    /// Each node's CPU, and the first node's by thread name.
    pub node_cores: Vec<f64>,
    pub node0_threads: BTreeMap<String, f64>,
    /// The three nats-servers together.
    pub nats_cores: f64,
    /// The harness process: fakes, clients.
    pub harness_cores: f64,
    /// Every process on the machine; of that, the niced ones (other work
    /// at low priority); and what neither the nodes, the nats-servers nor
    /// the harness used (other work, and the kernel's network processing
    /// not charged to a process).
    pub machine_cores: f64,
    pub machine_niced_cores: f64,
    pub other_cores: f64,
    /// Per node, the share of its scheduling periods with work in which
    /// it used up its quota (`--node-cpus` only).
    pub node_throttled: Vec<f64>,
    /// Journal groups the nodes published to JetStream, and calls they
    /// forwarded to the node serving a partition.
    pub publishes: f64,
    pub forwarded: f64,
}

impl Procs<'_> {
    /// The counters now, at the start of a phase.
    pub async fn mark(&self) -> Res<Mark> {
        let counts = self.counts().await?;
        Ok(Mark {
            cpu: self.cpu()?,
            counts,
        })
    }

    /// What was spent since `start` (the phase ends now).
    pub async fn since(&self, start: &Mark) -> Res<Usage> {
        let (a, b) = (&start.cpu, self.cpu()?);
        let counts = self.counts().await?;
        let s = (b.at - a.at).as_secs_f64().max(1e-9);
        let node_cores: Vec<f64> = (b.nodes.iter().zip(&a.nodes))
            .map(|(b, a)| (b - a) / s)
            .collect();
        let nats_cores = (b.nats - a.nats) / s;
        let harness_cores = (b.harness - a.harness) / s;
        let machine_cores = (b.machine.busy - a.machine.busy) / s;
        let ours = node_cores.iter().sum::<f64>() + nats_cores + harness_cores;
        let throttled =
            |(p0, t0): (u64, u64), (p1, t1): (u64, u64)| (t1 - t0) as f64 / (p1 - p0).max(1) as f64;
        let node0_threads = (b.threads.iter())
            .map(|(name, t)| (name.clone(), (t - a.threads.get(name).unwrap_or(&0.0)) / s))
            .collect();
        Ok(Usage {
            seconds: s,
            node_cores,
            node0_threads,
            nats_cores,
            harness_cores,
            machine_cores,
            machine_niced_cores: (b.machine.niced - a.machine.niced) / s,
            other_cores: machine_cores - ours,
            node_throttled: (a.throttling.iter().zip(&b.throttling))
                .map(|(a, b)| throttled(*a, *b))
                .collect(),
            publishes: counts.0 - start.counts.0,
            forwarded: counts.1 - start.counts.1,
        })
    }

    /// CPU seconds so far.
    fn cpu(&self) -> Res<CpuMark> {
        let seconds = |pids: &[u32]| -> Res<Vec<f64>> {
            pids.iter().map(|p| cpu::seconds(Some(*p))).collect()
        };
        let throttling = match self.groups {
            Some(g) => (0..self.nodes.len())
                .map(|i| g.throttling(i))
                .collect::<Res<_>>()?,
            None => Vec::new(),
        };
        Ok(CpuMark {
            at: Instant::now(),
            nodes: seconds(&self.nodes)?,
            threads: cpu::threads(self.nodes[0])?,
            nats: seconds(&self.nats)?.iter().sum(),
            harness: cpu::seconds(None)?,
            machine: cpu::machine()?,
            throttling,
        })
    }

    /// Journal publishes and forwarded calls so far, over every node.
    async fn counts(&self) -> Res<(f64, f64)> {
        let (mut publishes, mut forwarded) = (0.0, 0.0);
        for api in self.apis {
            publishes += api.metric("pushd_cluster_publish_seconds_count").await?;
            forwarded += api.metric("pushd_cluster_forwarded_total").await?;
        }
        Ok((publishes, forwarded))
    }
}

//! Cluster mode end to end: three nats-servers forming one JetStream
//! cluster and three pushd nodes on loopback, sending and reporting through
//! every node under load, while one pushd node is SIGKILLed, then one
//! nats-server, then another pushd node is paused (SIGSTOP) past its lease
//! and resumed. Afterwards every acknowledged delivery and report is there
//! and final, the killed node's partitions moved within 10 s, and the
//! journal shows no partition was ever written by two nodes in turn.
//!
//! Then failover without stalls or gaps: calls about a paused node's
//! partitions are answered (or refused 503) within the forward timeout and
//! the lease, never held until it resumes; a nats-server's loss costs no
//! lease and no merged read is silently short; a rolling SIGTERM restart of
//! every node under load loses nothing acknowledged and refuses (503) for
//! no longer than a second.
//!
//! Every feature works in a cluster: a keyed send answers the same through
//! any node, also after its key's partition moved; the event feed pages
//! every event once through any node, also across a node's crash; a
//! webhook registered through any node posts every partition's events, at
//! least once across a crash of the node running it. A backup taken
//! through any node restores into a new cluster that serves it all.
//!
//! The tests run one at a time (they each start five processes).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushd::sim::FaultMix;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{Daemon, SDK_KEY, android_token, cluster, fakes, ios_token, signal};

/// Held by each test: two cores run one cluster well, not several.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CUSTOMERS: usize = 90;
const PARTITIONS: u16 = 12;
const LEASE_MS: u64 = 3000;

/// What the cluster acknowledged: deliveries (202) and reports (200).
#[derive(Default)]
struct Acked {
    deliveries: Vec<String>,
    reports: Vec<(String, String)>,
}

/// Sends and reports through `node` until `stop`, retrying refusals (a
/// partition moving answers 503).
async fn load(node: Arc<Daemon>, acked: Arc<Mutex<Acked>>, stop: Arc<AtomicBool>, seed: u64) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let first = rng.gen_range(0..CUSTOMERS - 6);
        let ids: Vec<String> = (first..first + 6).map(|i| format!("c{i}")).collect();
        let Ok(resp) = client
            .post(node.url("/v1/send/push"))
            .bearer_auth(support::API_KEY)
            .json(&json!({"message_id": "promo", "customer_ids": ids}))
            .send()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if resp.status() != 202 {
            continue;
        }
        let Ok(body) = resp.json::<Value>().await else {
            continue;
        };
        let created = created_deliveries(&body);
        acked
            .lock()
            .unwrap()
            .deliveries
            .extend(created.iter().map(|(d, _)| d.clone()));
        for (delivery, i) in created.into_iter().take(2) {
            let report = delivered_report(&delivery, i);
            let resp = client
                .post(node.url("/push/events"))
                .bearer_auth(SDK_KEY)
                .json(&report)
                .send()
                .await;
            if resp.is_ok_and(|r| r.status() == 200) {
                acked
                    .lock()
                    .unwrap()
                    .reports
                    .push((delivery, android_token(i)));
            }
        }
    }
}

/// The partitions each node serves, by its `/healthz` (none for a node
/// that does not answer).
async fn serving(nodes: &[Arc<Daemon>]) -> Vec<BTreeSet<u64>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut out = Vec::new();
    for node in nodes {
        let served = match client.get(node.url("/healthz")).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or_default()["cluster"]["serving"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
            Err(_) => BTreeSet::new(),
        };
        out.push(served);
    }
    out
}

/// Waits (bounded) until `nodes` together serve every partition and
/// `each` holds of every node's set; answers how long it took.
async fn until_served(nodes: &[Arc<Daemon>], each: impl Fn(&BTreeSet<u64>) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let sets = serving(nodes).await;
        let all: BTreeSet<u64> = sets.iter().flatten().copied().collect();
        if all.len() == usize::from(PARTITIONS) && sets.iter().all(&each) {
            return started.elapsed();
        }
        if started.elapsed() >= Duration::from_secs(40) {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let mut views = Vec::new();
            for node in nodes {
                let view = match client.get(node.url("/healthz")).send().await {
                    Ok(r) => r.json::<Value>().await.unwrap_or_default()["cluster"].take(),
                    Err(e) => Value::String(e.to_string()),
                };
                views.push(view);
            }
            panic!("partitions not all served: {sets:?}; the nodes' views: {views:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The delivery once it left `attempted` (bounded), read through `node`.
async fn settled(node: &Daemon, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = node
            .call("GET", &format!("/v1/deliveries/{id}"), None)
            .await;
        match status {
            200 if v["status"] != "attempted" => return v,
            200 | 503 => {}
            _ => panic!("acknowledged delivery {id}: {status} {v}"),
        }
        assert!(
            Instant::now() < deadline,
            "delivery {id} stuck: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A PUT that succeeds, retried while its partition moves (503), as a
/// client would.
async fn put(node: &Daemon, path: &str, body: Value) {
    for _ in 0..100 {
        let (status, v) = node.call("PUT", path, Some(body.clone())).await;
        match status {
            200 => return,
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("PUT {path}: {status} {v}"),
        }
    }
    panic!("PUT {path} kept answering 503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_a_nats_server_die_and_nothing_acknowledged_is_lost() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let seed = support::seed("cluster test");
    let mix = FaultMix {
        latency: Duration::from_millis(10),
        seed,
        ..FaultMix::default()
    };
    let fakes = fakes(dir.path(), mix).await;
    let mut nats = cluster::start(dir.path());
    let cluster_env = cluster::node_env(&nats);
    let node_env = |i: usize| {
        let mut env = fakes.env();
        env.extend(cluster_env.clone());
        env.extend([
            ("PUSHD_CLUSTER_NODE", format!("node{i}")),
            ("PUSHD_CLUSTER_PARTITIONS", PARTITIONS.to_string()),
            ("PUSHD_CLUSTER_LEASE_MS", LEASE_MS.to_string()),
            ("PUSHD_CLUSTER_SNAPSHOT_SECS", "2".into()),
        ]);
        env
    };
    let nodes: Vec<Arc<Daemon>> = (0..3)
        .map(|i| {
            let data = dir.path().join(format!("node{i}"));
            Arc::new(Daemon::start(&data, &node_env(i)))
        })
        .collect();
    // The load evens out: a third of the partitions each.
    let third = usize::from(PARTITIONS) / 3;
    until_served(&nodes, |s| s.len() == third).await;

    // Set up through every node: each forwards what it does not serve.
    set_up(&nodes).await;

    let acked = Arc::new(Mutex::new(Acked::default()));
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (node, acked, stop) = (nodes[i].clone(), acked.clone(), stops[i].clone());
            tokio::spawn(load(node, acked, stop, seed ^ i as u64))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A pushd node dies: its partitions move to the two others.
    let before = serving(&nodes).await;
    println!("serving before the kill: {before:?}");
    signal(nodes[0].pid(), "-KILL");
    stops[0].store(true, Ordering::Relaxed);
    let moved = until_served(&nodes[1..], |_| true).await;
    println!("node0's partitions {:?} moved in {moved:?}", before[0]);
    assert!(moved < Duration::from_secs(10), "took {moved:?}");

    // A nats-server dies: the stream keeps a majority.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let dead = nats.remove(2);
    dead.kill();
    tokio::time::sleep(Duration::from_millis(3000)).await;

    // A node paused past its lease is fenced off when it resumes: the
    // calls it takes meanwhile are answered only if durable elsewhere.
    let paused = nodes[1].clone();
    stops[1].store(true, Ordering::Relaxed);
    signal(paused.pid(), "-STOP");
    let during: Vec<_> = (0..4)
        .map(|k| {
            let (node, acked, stop) = (
                paused.clone(),
                acked.clone(),
                Arc::new(AtomicBool::new(false)),
            );
            let stopper = stop.clone();
            tokio::spawn(async move {
                let worker = tokio::spawn(load(node, acked, stop, seed ^ (100 + k)));
                tokio::time::sleep(Duration::from_millis(300)).await;
                stopper.store(true, Ordering::Relaxed);
                worker.await.unwrap();
            })
        })
        .collect();
    let taken = until_served(&nodes[2..], |_| true).await;
    println!("node1's partitions moved to node2 in {taken:?} while it was paused");
    signal(paused.pid(), "-CONT");
    for d in during {
        d.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for stop in &stops {
        stop.store(true, Ordering::Relaxed);
    }
    for w in workers {
        w.await.unwrap();
    }

    // Every acknowledged delivery and report is there, and final.
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    println!(
        "acknowledged: {} deliveries, {} reports",
        acked.deliveries.len(),
        acked.reports.len()
    );
    assert!(acked.deliveries.len() > 50, "too little load to judge");
    let live = &nodes[1..];
    let half = usize::from(PARTITIONS) / 2;
    until_served(live, |s| s.len() == half).await;
    let mut details: HashMap<String, Value> = HashMap::new();
    for (k, id) in acked.deliveries.iter().enumerate() {
        details.insert(id.clone(), settled(&live[k % 2], id).await);
    }
    for (delivery, token) in &acked.reports {
        let d = &details[delivery];
        let device = d["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["token"] == token.as_str())
            .unwrap();
        assert!(
            !device["delivered_at"].is_null(),
            "acknowledged report lost: {delivery} {token}: {d}"
        );
    }
    let (_, metrics) = live[0]
        .call("GET", "/v1/messages/promo/metrics", None)
        .await;
    assert!(
        metrics["sends"].as_u64().unwrap() >= acked.deliveries.len() as u64,
        "{metrics}"
    );

    no_partition_had_two_writers(&nats[0]).await;
}

/// Reads the journal stream: on each partition's subject, once a writer's
/// message follows another's, the earlier writer never writes again.
async fn no_partition_had_two_writers(server: &cluster::NatsServer) {
    let options = cluster::access(server).options().await.unwrap();
    let client = options.connect(&server.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("pushd-journal").await.unwrap();
    let info = stream.get_info().await.unwrap();
    let mut writers: HashMap<String, Vec<String>> = HashMap::new();
    let mut seq = info.state.first_sequence.max(1);
    let mut messages = 0;
    while seq <= info.state.last_sequence {
        let Ok(m) = stream
            .raw_message_builder()
            .sequence(seq)
            .next_by_subject("pushd.journal.*".to_string())
            .send()
            .await
        else {
            break;
        };
        seq = m.sequence + 1;
        messages += 1;
        let id = m.headers.get("Nats-Msg-Id").unwrap().as_str().to_string();
        let writer = id.rsplit_once('-').unwrap().0.to_string();
        let seen = writers.entry(m.subject.to_string()).or_default();
        if seen.last() != Some(&writer) {
            assert!(
                !seen.contains(&writer),
                "{} written by {writer} again after {seen:?}",
                m.subject
            );
            seen.push(writer);
        }
    }
    println!("journal: {messages} messages kept, writers per partition {writers:?}");
    assert!(messages > 0);
}

/// Three nats-servers forming one JetStream cluster, and what starts the
/// pushd nodes over them.
struct Rig {
    dir: tempfile::TempDir,
    _fakes: pushd::sim::FakeProviders,
    nats: Vec<cluster::NatsServer>,
    env: Vec<(&'static str, String)>,
}

impl Rig {
    /// The servers and fake providers, with `settings` for every node.
    async fn start(test: &str, settings: &[(&'static str, &str)]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mix = FaultMix {
            latency: Duration::from_millis(10),
            seed: support::seed(test),
            ..FaultMix::default()
        };
        let fakes = fakes(dir.path(), mix).await;
        let nats = cluster::start(dir.path());
        let mut env = fakes.env();
        env.extend(cluster::node_env(&nats));
        env.extend([
            ("PUSHD_CLUSTER_PARTITIONS", PARTITIONS.to_string()),
            ("PUSHD_CLUSTER_SNAPSHOT_SECS", "2".into()),
        ]);
        env.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
        Rig {
            dir,
            _fakes: fakes,
            nats,
            env,
        }
    }

    /// Starts node `i` (again after a stop: the same name and directory).
    async fn node(&self, i: usize) -> Arc<Daemon> {
        let mut env = self.env.clone();
        env.push(("PUSHD_CLUSTER_NODE", format!("node{i}")));
        let data = self.dir.path().join(format!("node{i}"));
        let started = tokio::task::spawn_blocking(move || Daemon::start(&data, &env));
        Arc::new(started.await.unwrap())
    }

    /// Starts three nodes; answers once each serves a third of the
    /// partitions and the customers and the message `promo` are set up.
    async fn nodes(&self) -> Vec<Arc<Daemon>> {
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(self.node(i).await);
        }
        let third = usize::from(PARTITIONS) / 3;
        until_served(&nodes, |s| s.len() == third).await;
        set_up(&nodes).await;
        nodes
    }
}

/// A metric's value in a node's `/metrics` text.
async fn metric(node: &Daemon, name: &str) -> f64 {
    let text = node.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// A client that never gives up first: a call held is seen as held.
fn patient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_about_a_paused_nodes_partitions_are_answered_or_refused_in_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lease = Duration::from_millis(4000);
    let forward_timeout = Duration::from_millis(1000);
    let rig = Rig::start(
        "paused owner",
        &[
            ("PUSHD_CLUSTER_LEASE_MS", "4000"),
            ("PUSHD_CLUSTER_FORWARD_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let nodes = rig.nodes().await;
    let partitioning = pushd::partition::Partitioning::new(PARTITIONS);
    let paused_serves = serving(&nodes).await.remove(0);
    let theirs: Vec<String> = (0..CUSTOMERS)
        .map(|i| format!("c{i}"))
        .filter(|c| paused_serves.contains(&u64::from(partitioning.of_customer(c).0)))
        .collect();
    assert!(!theirs.is_empty(), "node0 serves {paused_serves:?}");

    // What the behaviour guarantees: the forward timeout, plus a lease for
    // the partition to move, plus (generously) its takeover on a loaded
    // machine.
    let bound = forward_timeout + lease + Duration::from_secs(6);
    signal(nodes[0].pid(), "-STOP");
    let paused_at = Instant::now();
    // Paused past the bound: a call waiting for node0 would take longer.
    let resumed = {
        let pid = nodes[0].pid();
        tokio::spawn(async move {
            tokio::time::sleep(bound + Duration::from_secs(1)).await;
            signal(pid, "-CONT");
        })
    };
    // Before its lease lapses, a read over every partition lacks node0's
    // share: 503, or with partial=true the rest and node0's partitions named.
    let (status, body) = nodes[1]
        .call("GET", "/v1/messages/promo/metrics", None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "cluster_unavailable", "{body}");
    let (status, body) = nodes[2]
        .call("GET", "/v1/messages/promo/metrics?partial=true", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], true, "{body}");
    let missing: BTreeSet<u64> = (body["missing_partitions"].as_array().unwrap().iter())
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(missing, paused_serves, "{body}");
    let moved = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (1..3)
        .map(|k| {
            let (node, theirs, moved) = (nodes[k].clone(), theirs.clone(), moved.clone());
            tokio::spawn(async move {
                let client = patient_client();
                let mut calls = Vec::new();
                // Every customer once more after the move: by its new owner.
                let mut rounds_after_move = 0;
                while rounds_after_move < 2 {
                    if moved.load(Ordering::Relaxed) {
                        rounds_after_move += 1;
                    }
                    for (n, c) in theirs.iter().enumerate() {
                        let path = format!("/v1/customers/{c}");
                        let request = match n % 2 {
                            0 => client.get(node.url(&path)),
                            _ => client
                                .put(node.url(&path))
                                .json(&json!({"attributes": {"seen": n}})),
                        };
                        let started = Instant::now();
                        let resp = request.bearer_auth(support::API_KEY).send().await.unwrap();
                        let status = resp.status().as_u16();
                        let retry_after = resp.headers().contains_key("retry-after");
                        let body: Value = resp.json().await.unwrap_or_default();
                        let took = started.elapsed();
                        calls.push((c.clone(), status, body, retry_after, took));
                    }
                }
                calls
            })
        })
        .collect();
    until_served(&nodes[1..], |_| true).await;
    println!(
        "node0's partitions moved {:?} after it was paused",
        paused_at.elapsed()
    );
    moved.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    for caller in callers {
        calls.extend(caller.await.unwrap());
    }
    resumed.await.unwrap();

    let refused = calls.iter().filter(|c| c.1 == 503).count();
    println!(
        "{} calls while node0 was paused, {refused} refused",
        calls.len()
    );
    for (customer, status, body, retry_after, took) in &calls {
        assert!(
            *took < bound,
            "a call about {customer} took {took:?} (bound {bound:?}): {status} {body}"
        );
        match status {
            200 => {}
            503 => {
                assert_eq!(body["error"]["code"], "partition_unavailable", "{body}");
                assert!(retry_after, "503 without Retry-After: {body}");
            }
            _ => panic!("a call about {customer}: {status} {body}"),
        }
    }
    // After the move, the new owners answer every customer.
    let last_round: Vec<_> = calls.iter().rev().take(theirs.len() * 2).collect();
    for (customer, status, body, _, _) in last_round {
        assert_eq!(*status, 200, "{customer} after the move: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_nats_server_drops_no_lease_and_no_merged_read_is_short() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The default lease and forward timeout.
    let mut rig = Rig::start("nats server lost", &[]).await;
    let nodes = rig.nodes().await;
    let before = serving(&nodes).await;

    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let seed = support::seed("nats server lost load");
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (node, acked, stop) = (nodes[i].clone(), acked.clone(), stop.clone());
            tokio::spawn(load(node, acked, stop, seed ^ i as u64))
        })
        .collect();
    // The highest `sends` a complete read showed: no later read may show
    // less (a partition's share left out).
    let floor = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let (node, stop, floor) = (nodes[i].clone(), stop.clone(), floor.clone());
            tokio::spawn(async move {
                let client = patient_client();
                let (mut complete, mut refused, mut partial) = (0, 0, 0);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let asks_partial = n % 2 == 0;
                    let path = match asks_partial {
                        true => "/v1/messages/promo/metrics?partial=true",
                        false => "/v1/messages/promo/metrics",
                    };
                    let at_least = floor.load(Ordering::SeqCst);
                    let resp = client
                        .get(node.url(path))
                        .bearer_auth(support::API_KEY)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap();
                    match status {
                        503 => {
                            assert_eq!(body["error"]["code"], "cluster_unavailable", "{body}");
                            refused += 1;
                            continue;
                        }
                        200 => {}
                        _ => panic!("{path}: {status} {body}"),
                    }
                    let sends = body["sends"].as_u64().unwrap();
                    let missing = body["missing_partitions"].as_array().cloned();
                    if asks_partial && body["partial"] == true {
                        assert!(!missing.unwrap().is_empty(), "{body}");
                        partial += 1;
                        continue;
                    }
                    if asks_partial {
                        assert_eq!(missing, Some(Vec::new()), "{body}");
                        assert_eq!(body["partial"], false, "{body}");
                    }
                    assert!(
                        sends >= at_least,
                        "a read through node{i} answered 200 with sends {sends} after one \
                         showed {at_least}: a share left out ({body})"
                    );
                    floor.fetch_max(sends, Ordering::SeqCst);
                    complete += 1;
                }
                (complete, refused, partial)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let dead = rig.nats.remove(1);
    dead.kill();
    // Past a whole lease (10 s): a renewal that kept failing would have
    // dropped its partition by now.
    tokio::time::sleep(Duration::from_secs(14)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let mut reads = (0, 0, 0);
    for r in readers {
        let (c, f, p) = r.await.unwrap();
        reads = (reads.0 + c, reads.1 + f, reads.2 + p);
    }
    println!(
        "merged reads: {} complete, {} refused (503), {} partial",
        reads.0, reads.1, reads.2
    );
    assert!(reads.0 > 30, "too few complete reads to judge: {reads:?}");
    assert!(
        acked.lock().unwrap().deliveries.len() > 50,
        "too little load to judge"
    );
    for (i, node) in nodes.iter().enumerate() {
        let lost = metric(node, "pushd_cluster_leases_lost_total").await;
        assert_eq!(lost, 0.0, "node{i} dropped a lease");
    }
    assert_eq!(serving(&nodes).await, before, "partitions moved");
}

/// What a load worker saw of refusals: the longest time from receiving a
/// 503 (or a send with a customer refused as unavailable) until receiving
/// the next answer that was not one.
#[derive(Default)]
struct Refusals {
    count: usize,
    since: Option<Instant>,
    longest: Duration,
    /// What the refusals of the longest run said.
    why: Vec<String>,
    run: Vec<String>,
}

impl Refusals {
    /// Notes an answer just received: `refused` with why, or not.
    fn saw(&mut self, refused: Option<String>) {
        let at = Instant::now();
        match refused {
            Some(why) => {
                self.count += 1;
                self.since.get_or_insert(at);
                self.run.push(why);
            }
            None => {
                if let Some(since) = self.since.take() {
                    let run = at.saturating_duration_since(since);
                    if run >= self.longest {
                        self.longest = run;
                        self.why = std::mem::take(&mut self.run);
                    }
                }
                self.run.clear();
            }
        }
    }
}

/// [`load`] through whichever node `live` lists (a node restarting is
/// not listed), noting refusals.
async fn load_live(
    live: Arc<Mutex<Vec<Option<String>>>>,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Refusals {
    let client = patient_client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut refusals = Refusals::default();
    let unavailable =
        |code: &Value| code == "partition_unavailable" || code == "cluster_unavailable";
    while !stop.load(Ordering::Relaxed) {
        let base = {
            let live = live.lock().unwrap();
            let up: Vec<&String> = live.iter().flatten().collect();
            up[rng.gen_range(0..up.len())].clone()
        };
        let first = rng.gen_range(0..CUSTOMERS - 6);
        let ids: Vec<String> = (first..first + 6).map(|i| format!("c{i}")).collect();
        let Ok(resp) = client
            .post(format!("{base}/v1/send/push"))
            .bearer_auth(support::API_KEY)
            .json(&json!({"message_id": "promo", "customer_ids": ids}))
            .send()
            .await
        else {
            continue;
        };
        let status = resp.status().as_u16();
        let Ok(body) = resp.json::<Value>().await else {
            continue;
        };
        let refused = (body["failed"].as_array().into_iter().flatten())
            .find(|f| unavailable(&f["error"]["code"]))
            .map(|f| f["error"]["message"].to_string());
        let refused = match status {
            503 => Some(body["error"]["message"].to_string()),
            _ => refused,
        };
        refusals.saw(refused);
        assert!(
            matches!(status, 202 | 503),
            "a send answered {status}: {body}"
        );
        let created = created_deliveries(&body);
        acked
            .lock()
            .unwrap()
            .deliveries
            .extend(created.iter().map(|(d, _)| d.clone()));
        if let Some((delivery, i)) = created.into_iter().next() {
            let report = delivered_report(&delivery, i);
            let Ok(resp) = client
                .post(format!("{base}/push/events"))
                .bearer_auth(SDK_KEY)
                .json(&report)
                .send()
                .await
            else {
                continue;
            };
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let refused = (status == 503).then(|| format!("report: {text}"));
            refusals.saw(refused);
            match status {
                200 => acked
                    .lock()
                    .unwrap()
                    .reports
                    .push((delivery, android_token(i))),
                503 => {}
                _ => panic!("a report answered {status}"),
            }
        }
    }
    refusals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing_and_refuses_briefly() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The default lease and forward timeout.
    let rig = Rig::start("rolling restart", &[]).await;
    let mut nodes = rig.nodes().await;
    let live = Arc::new(Mutex::new(
        nodes.iter().map(|n| Some(n.url(""))).collect::<Vec<_>>(),
    ));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let seed = support::seed("rolling restart load");
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (live, acked, stop) = (live.clone(), acked.clone(), stop.clone());
            tokio::spawn(load_live(live, acked, stop, seed ^ i as u64))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let third = usize::from(PARTITIONS) / 3;
    for i in 0..3 {
        // Out of the load balancer first, then SIGTERM; back with the same
        // name and directory.
        live.lock().unwrap()[i] = None;
        let node = Arc::try_unwrap(nodes.remove(i)).unwrap_or_else(|_| panic!("node{i} shared"));
        let stopping = Instant::now();
        let code = tokio::task::spawn_blocking(move || node.terminate())
            .await
            .unwrap();
        assert_eq!(code, Some(0), "node{i} exit");
        println!("node{i} stopped in {:?}", stopping.elapsed());
        let node = rig.node(i).await;
        live.lock().unwrap()[i] = Some(node.url(""));
        nodes.insert(i, node);
        let even = until_served(&nodes, |s| s.len() == third).await;
        println!("node{i} back, load even in {even:?}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut longest = Duration::ZERO;
    let mut why = Vec::new();
    let mut refused = 0;
    for w in workers {
        let r = w.await.unwrap();
        if r.longest >= longest {
            (longest, why) = (r.longest, r.why);
        }
        refused += r.count;
    }

    let acked = std::mem::take(&mut *acked.lock().unwrap());
    println!(
        "acknowledged: {} deliveries, {} reports; {refused} refusals, the longest run {longest:?}",
        acked.deliveries.len(),
        acked.reports.len()
    );
    assert!(acked.deliveries.len() > 50, "too little load to judge");
    assert!(
        longest <= Duration::from_secs(1),
        "refused (503) for {longest:?} in a row: {why:?}"
    );
    let mut details: HashMap<String, Value> = HashMap::new();
    for (k, id) in acked.deliveries.iter().enumerate() {
        details.insert(id.clone(), settled(&nodes[k % 3], id).await);
    }
    for (delivery, token) in &acked.reports {
        let d = &details[delivery];
        let device = (d["devices"].as_array().unwrap().iter())
            .find(|x| x["token"] == token.as_str())
            .unwrap();
        assert!(
            !device["delivered_at"].is_null(),
            "acknowledged report lost: {delivery} {token}: {d}"
        );
    }
}

/// A keyed send through `node` (`POST /v1/send/push` with an
/// `Idempotency-Key`): its status, whether it was a replay
/// (`Idempotent-Replayed`), and its body.
async fn keyed_send(node: &Daemon, key: &str, body: &Value) -> (u16, bool, Value) {
    let resp = node
        .client
        .post(node.url("/v1/send/push"))
        .bearer_auth(support::API_KEY)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    (status, replayed, resp.json().await.expect("a JSON answer"))
}

/// The delivery log's rows of message `message` (every node's share),
/// read through `node`, retried while a partition moves.
async fn logged(node: &Daemon, message: &str) -> Vec<Value> {
    let path = format!("/v1/deliveries?message_id={message}&limit=1000");
    for _ in 0..100 {
        match node.call("GET", &path, None).await {
            (200, v) => return v["deliveries"].as_array().unwrap().clone(),
            (503, _) => tokio::time::sleep(Duration::from_millis(100)).await,
            (status, v) => panic!("GET {path}: {status} {v}"),
        }
    }
    panic!("GET {path} kept answering 503");
}

/// A keyed send's record lives in the partition its key hashes to: the
/// same key through another node answers the same deliveries (a replay,
/// nothing sent again), the key with another body is refused, and after
/// the key's owner hands its partitions over (SIGTERM) a retry through
/// either remaining node still replays the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_send_replays_through_any_node_and_after_its_partition_moves() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("keyed sends", &[]).await;
    let mut nodes = rig.nodes().await;
    put(
        &nodes[0],
        "/v1/messages/keyed",
        json!({"name": "Keyed", "title": "T", "body": "b"}),
    )
    .await;
    // A key node 2 keeps, sent through node 0 and retried through node 1.
    let served = serving(&nodes).await;
    let key = (0..)
        .map(|i| format!("order-{i}"))
        .find(|k| {
            let tag = crc32fast::hash(k.as_bytes()) % u32::from(PARTITIONS);
            served[2].contains(&u64::from(tag))
        })
        .unwrap();
    let customers: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    let body = json!({"message_id": "keyed", "customer_ids": customers});

    let (status, replayed, first) = keyed_send(&nodes[0], &key, &body).await;
    assert_eq!((status, replayed), (202, false), "{first}");
    let made = created_deliveries(&first);
    assert_eq!(made.len(), customers.len(), "{first}");
    for (id, i) in &made {
        let d = settled(&nodes[1], id).await;
        assert_eq!(d["customer_id"], format!("c{i}"), "{d}");
    }

    let (status, replayed, again) = keyed_send(&nodes[1], &key, &body).await;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again, first, "the same deliveries through another node");
    let other = json!({"message_id": "keyed", "customer_ids": ["c1"]});
    let (status, _, refused) = keyed_send(&nodes[1], &key, &other).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "idempotency_conflict");

    // The key's owner hands its partitions over and leaves.
    let owner = Arc::try_unwrap(nodes.remove(2)).unwrap_or_else(|_| panic!("node2 shared"));
    let code = tokio::task::spawn_blocking(move || owner.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "node2 exit");
    until_served(&nodes, |_| true).await;
    for node in &nodes {
        let (status, replayed, after) = keyed_send(node, &key, &body).await;
        assert_eq!((status, replayed), (202, true), "{after}");
        assert_eq!(after, first, "the same deliveries after the key moved");
    }
    let mut logged: Vec<String> = (logged(&nodes[0], "keyed").await.iter())
        .map(|d| d["delivery_id"].as_str().unwrap().to_string())
        .collect();
    logged.sort();
    let mut expected: Vec<String> = made.into_iter().map(|(id, _)| id).collect();
    expected.sort();
    assert_eq!(
        logged, expected,
        "one delivery per customer, none sent again"
    );
}

/// A send through `node` that succeeds, retried while a partition moves
/// (its customers listed in `failed`) as a client would; answers the
/// deliveries made.
async fn send_all(node: &Daemon, message: &str, customers: &[String]) -> Vec<String> {
    let mut made = Vec::new();
    let mut left = customers.to_vec();
    for _ in 0..100 {
        let body = json!({"message_id": message, "customer_ids": left});
        let (status, v) = node.call("POST", "/v1/send/push", Some(body)).await;
        assert!(status == 202 || status == 503, "send: {status} {v}");
        made.extend(created_deliveries(&v).into_iter().map(|(id, _)| id));
        left = (v["failed"].as_array().into_iter().flatten())
            .map(|f| f["customer_id"].as_str().unwrap().to_string())
            .collect();
        if left.is_empty() && status == 202 {
            return made;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("customers {left:?} kept failing");
}

/// Pages the event feed through `node` from `cursor` (`limit` events a
/// page) until every delivery of `deliveries` has its `sent` event among
/// `seen` (bounded); answers the cursor to read on from.
async fn feed_until_sent(
    node: &Daemon,
    mut cursor: String,
    seen: &mut Vec<Value>,
    deliveries: &[String],
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent: BTreeSet<&str> = (seen.iter())
            .filter(|e| e["event"] == "sent")
            .filter_map(|e| e["delivery_id"].as_str())
            .collect();
        if deliveries.iter().all(|d| sent.contains(d.as_str())) {
            return cursor;
        }
        let (events, next) = node.feed_page(&cursor, 7).await;
        if events.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the feed lacks sent events: {} seen of {}",
                sent.len(),
                deliveries.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen.extend(events);
        cursor = next;
    }
}

/// The event feed of a cluster: any node pages every partition's events,
/// each once, with one cursor that means the same on every node, also
/// across a node's crash (its partitions taken over, their journals
/// replayed): a page read through one node goes on through another, and
/// reading the feed whole again answers the same events in the same order;
/// an erased customer's events leave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_pages_every_event_once_through_any_node_across_a_crash() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lease = LEASE_MS.to_string();
    let rig = Rig::start("event feed", &[("PUSHD_CLUSTER_LEASE_MS", &lease)]).await;
    let mut nodes = rig.nodes().await;
    let customers: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
    let before = send_all(&nodes[0], "promo", &customers).await;
    let mut seen = Vec::new();
    let cursor = feed_until_sent(&nodes[1], String::new(), &mut seen, &before).await;

    // Node 2 crashes; the others take its partitions over.
    Arc::try_unwrap(nodes.remove(2))
        .unwrap_or_else(|_| panic!("node2 shared"))
        .kill();
    until_served(&nodes, |_| true).await;
    let after = send_all(&nodes[1], "promo", &customers).await;
    feed_until_sent(&nodes[0], cursor, &mut seen, &after).await;

    let ids: Vec<&str> = seen
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "an event twice in the feed");
    for d in before.iter().chain(&after) {
        let sent = (seen.iter())
            .filter(|e| e["delivery_id"] == d.as_str() && e["event"] == "sent")
            .count();
        assert_eq!(sent, 1, "delivery {d}: {sent} sent events");
    }
    // The whole feed again, through the other node: the same events.
    let (again, _) = nodes[1].feed_page("", 1000).await;
    let again: Vec<&str> = again
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        again.get(..ids.len()),
        Some(&ids[..]),
        "the same feed through every node"
    );

    // An erased customer's events leave the feed.
    let (status, v) = nodes[0]
        .call("DELETE", "/v1/customers/c3?erase=true", None)
        .await;
    assert_eq!(status, 204, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (whole, _) = nodes[1].feed_page("", 1000).await;
        let left = whole.iter().filter(|e| e["customer_id"] == "c3").count();
        let others = whole.iter().filter(|e| e["customer_id"] != "c3").count();
        if left == 0 {
            assert_eq!(others, ids.len() - 2, "only c3's two sent events went");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} events of c3 still in the feed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A cursor the feed never handed out is refused, as on a single node.
    let (status, v) = nodes[0]
        .call("GET", "/v1/events?after=999999999", None)
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_field");
}

/// The events posted to `posts` (each with how many times it was posted),
/// by event id, taken until every delivery of `deliveries` has its `sent`
/// event among them (bounded).
async fn posted_until_sent(
    posts: &mut tokio::sync::mpsc::UnboundedReceiver<pushd::sim::Post>,
    seen: &mut HashMap<String, (Value, usize)>,
    deliveries: &[String],
) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let sent: BTreeSet<&str> = (seen.values())
            .filter(|(e, _)| e["event"] == "sent")
            .filter_map(|(e, _)| e["delivery_id"].as_str())
            .collect();
        let missing = deliveries
            .iter()
            .filter(|d| !sent.contains(d.as_str()))
            .count();
        if missing == 0 {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(post)) = tokio::time::timeout(left, posts.recv()).await else {
            panic!(
                "{missing} of {} deliveries' sent events not posted",
                deliveries.len()
            );
        };
        assert!(
            post.signature
                .as_deref()
                .is_some_and(|s| s.starts_with("t=")),
            "a post without its signature"
        );
        let event = post.json();
        let id = event["event_id"].as_str().unwrap().to_string();
        seen.entry(id).or_insert((event, 0)).1 += 1;
    }
}

/// Webhooks in a cluster: one registered through a node is read, the same,
/// through every node; its events, of every partition, are posted signed;
/// when the node running it crashes, the node taking its partition over
/// goes on from its saved cursor, so every event in the feed is posted at
/// least once; when that node stops on SIGTERM, its workers stop first and
/// the next node posts none of their events again; and a deletion through
/// any node is seen through another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_posts_every_partitions_events_through_a_move_of_its_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lease = LEASE_MS.to_string();
    let settings = [
        ("PUSHD_CLUSTER_LEASE_MS", lease.as_str()),
        ("PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ("PUSHD_WEBHOOK_TIMEOUT_MS", "500"),
        ("PUSHD_WEBHOOK_BACKOFF_BASE_MS", "10"),
        ("PUSHD_WEBHOOK_BACKOFF_MAX_MS", "50"),
    ];
    let rig = Rig::start("cluster webhooks", &settings).await;
    let mut nodes = rig.nodes().await;
    // Each node's number, as `nodes` loses some.
    let mut numbers = vec![0, 1, 2];
    let (receiver, mut posts) = pushd::sim::WebhookReceiver::recording().await.unwrap();
    let url = format!("http://{}/hook", receiver.addr());
    let body = json!({"url": url, "secret": "whsec_cluster", "events": ["sent", "delivered"]});
    put(&nodes[0], "/v1/webhooks/crm", body).await;
    for node in &nodes {
        let (status, v) = node.call("GET", "/v1/webhooks/crm", None).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["url"], url.as_str());
        assert_eq!(v["events"], json!(["sent", "delivered"]));
        let (status, v) = node.call("GET", "/v1/webhooks", None).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["webhooks"].as_array().map(Vec::len), Some(1), "{v}");
    }

    let customers: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
    let before = send_all(&nodes[1], "promo", &customers).await;
    let mut seen = HashMap::new();
    posted_until_sent(&mut posts, &mut seen, &before).await;
    assert!(
        seen.values()
            .all(|(e, _)| e["event"] == "sent" || e["event"] == "delivered"),
        "only the kinds asked for"
    );

    // The node running the webhook (serving the partition its id hashes
    // to) crashes; the node taking the partition runs it on.
    let partition = u64::from(
        pushd::partition::Partitioning::new(PARTITIONS)
            .of_customer("crm")
            .0,
    );
    let runner = (serving(&nodes).await)
        .iter()
        .position(|s| s.contains(&partition))
        .expect("a node runs the webhook");
    numbers.remove(runner);
    Arc::try_unwrap(nodes.remove(runner))
        .unwrap_or_else(|_| panic!("node shared"))
        .kill();
    until_served(&nodes, |_| true).await;
    let after = send_all(&nodes[0], "promo", &customers).await;
    posted_until_sent(&mut posts, &mut seen, &after).await;

    // Every sent event in the feed was posted (at least once).
    let (feed, _) = nodes[1].feed_page("", 1000).await;
    let fed: Vec<&str> = (feed.iter())
        .filter(|e| e["event"] == "sent")
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(fed.len(), before.len() + after.len());
    for id in fed {
        assert!(seen.contains_key(id), "event {id} not posted");
    }
    // Its figures, saved by the node running it, reach every node within
    // about a second: at least the posts of the sends after the move.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = nodes[1].call("GET", "/v1/webhooks/crm", None).await;
        assert_eq!(status, 200, "{v}");
        if v["stats"]["delivered"].as_u64() >= Some(after.len() as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "figures not saved: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Its node stops on SIGTERM: the workers stop first, their cursor saved,
    // so the node taking the partition over posts none of these again.
    let runner = (serving(&nodes).await)
        .iter()
        .position(|s| s.contains(&partition))
        .expect("a node runs the webhook");
    let stopped = numbers.remove(runner);
    let node = Arc::try_unwrap(nodes.remove(runner)).unwrap_or_else(|_| panic!("node shared"));
    let code = tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "a clean stop");
    until_served(&nodes, |_| true).await;
    let counted: HashMap<String, usize> =
        (seen.iter()).map(|(id, (_, n))| (id.clone(), *n)).collect();
    let last = send_all(&nodes[0], "promo", &customers).await;
    posted_until_sent(&mut posts, &mut seen, &last).await;
    let again: Vec<&String> = (seen.iter())
        .filter(|(id, (e, n))| after_sent(e, &after) && counted.get(*id) != Some(n))
        .map(|(id, _)| id)
        .collect();
    assert!(
        again.is_empty(),
        "posted again after a clean hand-over: {again:?}"
    );

    // Deleted through one node, gone through the other.
    let (status, v) = nodes[0].call("DELETE", "/v1/webhooks/crm", None).await;
    assert_eq!(status, 204, "{v}");
    let node = rig.node(stopped).await;
    let (status, v) = node.call("GET", "/v1/webhooks/crm", None).await;
    assert_eq!(status, 404, "{v}");
}

/// Whether event `e` is the `sent` event of one of `deliveries`.
fn after_sent(e: &Value, deliveries: &[String]) -> bool {
    e["event"] == "sent" && deliveries.iter().any(|d| e["delivery_id"] == d.as_str())
}

/// The deliveries a send answered, each with its customer's index
/// (customer `c<i>`).
fn created_deliveries(body: &Value) -> Vec<(String, usize)> {
    (body["deliveries"].as_array().into_iter().flatten())
        .map(|d| {
            let customer = d["customer_id"].as_str().unwrap();
            let i: usize = customer[1..].parse().unwrap();
            (d["delivery_id"].as_str().unwrap().to_string(), i)
        })
        .collect()
}

/// A `delivered` report for the Android device of customer `c<i>`.
fn delivered_report(delivery: &str, i: usize) -> Value {
    json!({"delivery_id": delivery, "event": "delivered",
        "device_id": android_token(i), "timestamp": 1_764_100_100})
}

/// The customers (two devices each) and the message `promo`, set up
/// through every node in turn: each forwards what it does not serve.
async fn set_up(nodes: &[Arc<Daemon>]) {
    for i in 0..CUSTOMERS {
        let node = &nodes[i % 3];
        let customer = format!("/v1/customers/c{i}");
        let attributes = json!({"attributes": {"first_name": format!("N{i}")}});
        put(node, &customer, attributes).await;
        for (token, platform) in [(ios_token(i), "ios"), (android_token(i), "android")] {
            let device = json!({"device": {"id": token, "platform": platform}});
            put(node, &format!("{customer}/devices"), device).await;
        }
    }
    let message = json!({"name": "Promo", "campaign_id": "spring",
        "title": "Hi {{customer.first_name}}", "body": "b"});
    put(&nodes[1], "/v1/messages/promo", message).await;
}

/// A node-to-node call (marked forwarded, or scoped to a node's own
/// partitions) is done only when signed with the cluster secret, for the
/// node it reaches, within a minute: the client's key alone does not do,
/// and a refused call changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_call_without_the_cluster_secrets_signature_is_refused() {
    use pushd::cluster::trust::NodeCredential;
    use pushd::topology::wire::SignedCall;
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("node credential", &[]).await;
    let node = rig.node(0).await;
    until_served(std::slice::from_ref(&node), |_| true).await;
    let address = node.base.trim_start_matches("http://").to_string();
    let path = "/v1/customers/forged";
    let body = br#"{"attributes":{"first_name":"Mallory"}}"#;
    let sign = |secret: &[u8], address: &str, at: i64| {
        NodeCredential::new(secret).unwrap().sign_at(
            &SignedCall {
                method: "PUT",
                path_and_query: path,
                body,
                address,
                caller: "backend",
            },
            at,
        )
    };
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let secret = cluster::SECRET.as_bytes();
    let forged = [
        ("unsigned", None),
        ("another secret", Some(sign(&[7; 32], &address, now))),
        ("another node", Some(sign(secret, "127.0.0.1:1", now))),
        ("too old", Some(sign(secret, &address, now - 61))),
    ];
    let client = reqwest::Client::new();
    let call = |marker: (&'static str, &'static str), signature: Option<String>| {
        let mut request = client
            .put(node.url(path))
            .bearer_auth(support::API_KEY)
            .header(marker.0, marker.1)
            .header("Pushd-Node-Caller", "backend")
            .header("content-type", "application/json")
            .body(&body[..]);
        if let Some(signature) = signature {
            request = request.header("Pushd-Node-Signature", signature);
        }
        request.send()
    };
    for (what, signature) in forged {
        for marker in [("Pushd-Forwarded", "1"), ("Pushd-Scope", "local")] {
            let answer = call(marker, signature.clone()).await.unwrap();
            assert_eq!(answer.status(), 401, "{what}, {marker:?}");
            let v: Value = answer.json().await.unwrap();
            assert_eq!(v["error"]["code"], "node_credential_invalid", "{what}: {v}");
        }
    }
    let (status, v) = node.call("GET", path, None).await;
    assert_eq!(status, 404, "a refused call changed nothing: {v}");
    assert!(metric(&node, "pushd_cluster_node_calls_refused_total").await >= 8.0);

    // Signed right, the same call is done (on behalf of the caller named).
    let signed = sign(secret, &address, now);
    let answer = call(("Pushd-Forwarded", "1"), Some(signed)).await.unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let (status, v) = node.call("GET", path, None).await;
    assert_eq!(
        (status, &v["attributes"]["first_name"]),
        (200, &json!("Mallory"))
    );
}

/// `pushd serve` with `env` (and the tests' keys) until it exits, which it
/// must within 30 s: its status and what it printed on stderr.
fn refused_start(data: &std::path::Path, env: &[(&'static str, String)]) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pushd"));
    command
        .arg("serve")
        .env_clear()
        .env("PUSHD_LISTEN", "127.0.0.1:0")
        .env("PUSHD_DATA_DIR", data)
        .env("PUSHD_API_KEY", support::API_KEY)
        .env("PUSHD_SDK_KEY", SDK_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pushd kept running with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A node that NATS refuses (a wrong password) or that has no cluster
/// secret does not start, and says which setting to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_nats_password_or_no_secret_does_not_start() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let nats = cluster::start(dir.path());
    let with = |name: &'static str, value: Option<&str>| {
        let mut env: Vec<_> = cluster::node_env(&nats)
            .into_iter()
            .filter(|(k, _)| *k != name)
            .collect();
        env.extend(value.map(|v| (name, v.to_string())));
        env
    };
    let data = dir.path().join("node");
    let (ok, stderr) = refused_start(&data, &with("PUSHD_CLUSTER_PASSWORD", Some("wrong")));
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("authorization violation"), "{stderr}");
    assert!(stderr.contains("PUSHD_CLUSTER_PASSWORD"), "{stderr}");

    let (ok, stderr) = refused_start(&data, &with("PUSHD_CLUSTER_SECRET", None));
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("openssl rand -hex 32"), "{stderr}");
    assert!(stderr.contains("PUSHD_CLUSTER_SECRET_FILE"), "{stderr}");

    let (ok, stderr) = refused_start(&data, &with("PUSHD_CLUSTER_SECRET", Some("short")));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("PUSHD_CLUSTER_SECRET) must be at least 32 bytes"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_asked_of_any_node_is_answered_for_the_customers_partition() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("preview", &[]).await;
    let nodes = rig.nodes().await;
    let partitioning = pushd::partition::Partitioning::new(PARTITIONS);
    let served = serving(&nodes).await;
    // A customer of each node's partitions, previewed on every node.
    for partitions in &served {
        let i = (0..CUSTOMERS)
            .find(|i| partitions.contains(&u64::from(partitioning.of_customer(&format!("c{i}")).0)))
            .expect("each node serves customers");
        for node in &nodes {
            let body = json!({"customer_id": format!("c{i}")});
            let (status, v) = node
                .call("POST", "/v1/messages/promo/preview", Some(body))
                .await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["content"]["title"], format!("Hi N{i}"), "{v}");
            let tokens: Vec<&str> = (v["devices"].as_array().unwrap().iter())
                .map(|d| d["token"].as_str().unwrap())
                .collect();
            assert_eq!(tokens, [ios_token(i), android_token(i)], "{v}");
            assert_eq!(v["would_send"], true, "{v}");
        }
    }
    let (status, log) = nodes[0]
        .call("GET", "/v1/deliveries?message_id=promo", None)
        .await;
    assert_eq!((status, &log["deliveries"]), (200, &json!([])), "{log}");
}

/// A bulk import through one node: each customer lands on the node serving
/// it with every field as given (the other nodes' items are forwarded as
/// they came), and a malformed item anywhere refuses the whole call before
/// any node imports anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_through_one_node_lands_whole_on_every_customers_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("bulk import", &[]).await;
    let nodes = rig.nodes().await;
    let item = |i: usize| {
        json!({"id": format!("b{i}"), "attributes": {"plan": format!("p{i}")},
            "unsubscribed": i.is_multiple_of(2), "devices": [
                {"id": ios_token(i), "platform": "ios", "app": "shop",
                 "environment": "sandbox", "last_used": 1_764_100_000 + i, "opted_in": false,
                 "attributes": {"model": "phone"}},
                {"id": android_token(i), "platform": "android", "last_used": 1_764_000_000}]})
    };
    // An android device in sandbox (customers[17].devices[1]) refuses it all.
    let mut items: Vec<Value> = (0..24).map(item).collect();
    items[17]["devices"][1]["environment"] = json!("sandbox");
    let (status, v) = nodes[0]
        .call("POST", "/v1/batch", Some(json!({"customers": items})))
        .await;
    assert_eq!(status, 400, "{v}");
    let why = v["error"]["message"].as_str().unwrap();
    assert!(
        why.contains("customers[17].devices[1].environment"),
        "{why}"
    );
    for node in &nodes {
        let (status, _) = node.call("GET", "/v1/customers/b3", None).await;
        assert_eq!(status, 404, "nothing imported");
    }

    let items: Vec<Value> = (0..24).map(item).collect();
    let (status, v) = nodes[0]
        .call("POST", "/v1/batch", Some(json!({"customers": items})))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["imported"], 24, "{v}");
    let ids: Vec<&str> = (v["results"].as_array().unwrap().iter())
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..24).map(|i| format!("b{i}")).collect();
    assert_eq!(ids, expected, "results in the request's order");
    for i in 0..24 {
        let (status, c) = nodes[(i + 1) % 3]
            .call("GET", &format!("/v1/customers/b{i}"), None)
            .await;
        assert_eq!(status, 200, "{c}");
        assert_eq!(c["attributes"]["plan"], format!("p{i}"), "{c}");
        assert_eq!(c["unsubscribed"], i.is_multiple_of(2), "{c}");
        let ios = &c["devices"][0];
        assert_eq!(ios["id"], ios_token(i), "{c}");
        assert_eq!(
            (
                &ios["app"],
                &ios["environment"],
                &ios["last_used"],
                &ios["opted_in"]
            ),
            (
                &json!("shop"),
                &json!("sandbox"),
                &json!(1_764_100_000 + i),
                &json!(false)
            ),
            "{c}"
        );
        assert_eq!(ios["attributes"]["model"], "phone", "{c}");
        assert_eq!(c["devices"][1]["last_used"], 1_764_000_000, "{c}");
    }
}

/// Segment's batch (`/ingest/v1/batch`) through one node: each customer's
/// events are applied by the node serving it, and a `messageId` once,
/// whichever node the retry comes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingested_batch_reaches_every_customers_node_and_applies_each_message_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("ingest", &[]).await;
    let nodes = rig.nodes().await;
    let partitioning = pushd::partition::Partitioning::new(PARTITIONS);
    let served = serving(&nodes).await;
    let ids: Vec<String> = (0..30).map(|i| format!("seg{i}")).collect();
    for partitions in &served {
        let here = |id: &String| partitions.contains(&u64::from(partitioning.of_customer(id).0));
        assert!(ids.iter().any(here), "every node serves some of them");
    }
    let events: Vec<Value> = (ids.iter().enumerate())
        .map(|(i, id)| {
            json!({"type": "identify", "userId": id, "messageId": format!("msg-{i}"),
                "traits": {"plan": format!("gold{i}")},
                "context": {"device": {"token": format!("seg-token-{i}")}, "os": {"name": "iOS"}}})
        })
        .collect();
    let batch = json!({"batch": events});
    let (status, taken) = nodes[1]
        .call("POST", "/ingest/v1/batch", Some(batch.clone()))
        .await;
    assert_eq!(status, 200, "{taken}");
    assert_eq!(
        (&taken["success"], &taken["applied"], &taken["duplicates"]),
        (&json!(true), &json!(30), &json!(0)),
        "{taken}"
    );
    for (i, id) in ids.iter().enumerate() {
        let (status, c) = nodes[2]
            .call("GET", &format!("/v1/customers/{id}"), None)
            .await;
        assert_eq!(status, 200, "{c}");
        assert_eq!(c["attributes"]["plan"], format!("gold{i}"), "{c}");
        let token = &c["devices"][0]["id"];
        assert_eq!(token, &json!(format!("seg-token-{i}")), "{c}");
    }
    // The retry, through the same node and through another: every event
    // is one its customer's node already applied.
    for node in [&nodes[1], &nodes[0]] {
        let (status, again) = node
            .call("POST", "/ingest/v1/batch", Some(batch.clone()))
            .await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(
            (&again["applied"], &again["duplicates"]),
            (&json!(0), &json!(30)),
            "{again}"
        );
    }
}

/// A report reaching a node that does not serve its delivery's partition
/// is checked there and recorded by the owner (relayed in batches): every
/// one answered 200 and the deliveries read `delivered` through any node;
/// a wrong identity proof is refused as the owner would, and the batch
/// route takes only signed node calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_through_any_node_are_recorded_by_the_partitions_owner() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("relayed reports", &[]).await;
    let nodes = rig.nodes().await;
    let partitioning = pushd::partition::Partitioning::new(PARTITIONS);
    let served = serving(&nodes).await;
    let ids: Vec<String> = (0..CUSTOMERS).map(|i| format!("c{i}")).collect();
    let sent = nodes[0]
        .ok(
            "POST",
            "/v1/send/push",
            json!({"message_id": "promo", "customer_ids": ids}),
        )
        .await;
    let deliveries = created_deliveries(&sent);
    assert_eq!(deliveries.len(), CUSTOMERS, "{sent}");
    let not_owner = |delivery: &str| {
        let tag = u64::from(partitioning.of_delivery(delivery).unwrap().0);
        let owner = served.iter().position(|s| s.contains(&tag)).unwrap();
        &nodes[(owner + 1) % 3]
    };
    // All at once, so the relays have something to batch.
    let reports = deliveries.iter().map(|(delivery, i)| async move {
        let node = not_owner(delivery);
        let report = delivered_report(delivery, *i);
        let answer = node
            .call_as(SDK_KEY, "POST", "/push/events", Some(report))
            .await;
        (delivery, answer)
    });
    for (delivery, (status, v)) in futures_util::future::join_all(reports).await {
        assert_eq!(status, 200, "{delivery}: {v}");
    }
    for (delivery, _) in &deliveries {
        for node in &nodes {
            let (status, v) = node
                .call("GET", &format!("/v1/deliveries/{delivery}"), None)
                .await;
            assert_eq!(
                (status, v["status"].as_str()),
                (200, Some("delivered")),
                "{v}"
            );
        }
    }
    let mut relayed = 0.0;
    let mut batches = 0.0;
    for node in &nodes {
        relayed += metric(node, "pushd_cluster_forwarded_total").await;
        batches += metric(node, "pushd_cluster_relay_batches_total").await;
    }
    println!("{relayed} forwarded calls, {batches} batches of reports");
    assert!(batches >= 1.0 && batches <= relayed, "{batches} batches");

    // The owner checks an identity proof against the delivery's customer.
    let (delivery, i) = &deliveries[0];
    let (status, v) = not_owner(delivery)
        .call_with(
            SDK_KEY,
            &[(pushd::http::CUSTOMER_AUTH, "00ff")],
            "POST",
            "/push/events",
            Some(json!({"delivery_id": delivery, "event": "opened",
                "device_id": ios_token(*i), "timestamp": 1_764_100_200})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let (_, v) = nodes[0]
        .call("GET", &format!("/v1/deliveries/{delivery}"), None)
        .await;
    assert_eq!(
        v["status"], "delivered",
        "a refused report changed nothing: {v}"
    );

    // A client cannot pass a batch off as a node's.
    let batch = json!({"items": [{"delivery_id": delivery, "device_id": ios_token(*i),
        "event": "opened", "at": 1_764_100_200, "caller": "backend", "proof": null}]});
    let (status, v) = nodes[0]
        .call("POST", "/v1/cluster/reports", Some(batch))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("node_credential_invalid")),
        "{v}"
    );
    let (_, v) = nodes[0]
        .call("GET", &format!("/v1/deliveries/{delivery}"), None)
        .await;
    assert_eq!(v["status"], "delivered", "{v}");
}

/// A node the NATS servers know by its public nkey connects with the seed
/// alone; another user's seed is refused by NATS and a seed that is not a
/// user's by pushd, each naming the setting to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_known_to_nats_by_its_nkey_serves_and_a_stranger_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let node_key = nkeys::KeyPair::new_user();
    let nats = [cluster::single_with_nkey(
        dir.path(),
        &node_key.public_key(),
    )];
    let with_seed = |seed: String| {
        let mut env: Vec<_> = cluster::node_env(&nats)
            .into_iter()
            .filter(|(k, _)| !["PUSHD_CLUSTER_USER", "PUSHD_CLUSTER_PASSWORD"].contains(k))
            .collect();
        env.extend([
            ("PUSHD_CLUSTER_NKEY_SEED", seed),
            ("PUSHD_CLUSTER_REPLICAS", "1".to_string()),
            ("PUSHD_CLUSTER_PARTITIONS", PARTITIONS.to_string()),
        ]);
        env
    };
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let (ok, stderr) = refused_start(&dir.path().join("stranger"), &with_seed(stranger));
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("authorization violation"), "{stderr}");
    assert!(stderr.contains("PUSHD_CLUSTER_NKEY_SEED"), "{stderr}");

    let account = nkeys::KeyPair::new_account().seed().unwrap();
    let (ok, stderr) = refused_start(&dir.path().join("account"), &with_seed(account));
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("not a user seed"), "{stderr}");

    let env = with_seed(node_key.seed().unwrap());
    let data = dir.path().join("node");
    let node = tokio::task::spawn_blocking(move || Daemon::start(&data, &env))
        .await
        .unwrap();
    let node = Arc::new(node);
    until_served(std::slice::from_ref(&node), |s| {
        s.len() == usize::from(PARTITIONS)
    })
    .await;
    let (status, v) = node
        .call("PUT", "/v1/customers/c1", Some(json!({"attributes": {}})))
        .await;
    assert_eq!(status, 200, "{v}");
}

/// `GET path` through `node`, which must answer 200.
async fn read(node: &Daemon, path: &str) -> Value {
    let (status, v) = node.call("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// A date range reaches every node's share of a merged read: metrics, time
/// series and the log's page and total for a range are the sums over every
/// partition, each side of a boundary counts its own deliveries, and a range
/// holding everything answers what the counters do, through any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_range_reaches_every_nodes_share_of_a_merged_read() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("ranged merged reads", &[]).await;
    let nodes = rig.nodes().await;
    let send = |customers: std::ops::Range<usize>| {
        let ids: Vec<String> = customers.map(|i| format!("c{i}")).collect();
        let node = nodes[0].clone();
        async move {
            let body = json!({"message_id": "promo", "customer_ids": ids});
            let (status, v) = node.call("POST", "/v1/send/push", Some(body)).await;
            assert_eq!(status, 202, "{v}");
            let mut settled_ones = Vec::new();
            for (id, i) in created_deliveries(&v) {
                let report = delivered_report(&id, i);
                let (s, r) = node
                    .call_as(SDK_KEY, "POST", "/push/events", Some(report))
                    .await;
                assert_eq!(s, 200, "{r}");
                settled_ones.push(settled(&node, &id).await);
            }
            settled_ones
        }
    };
    let early = send(0..30).await;
    let newest = early
        .iter()
        .filter_map(|d| d["created_at"].as_i64())
        .max()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    if let Some(wait) = Duration::from_secs((newest + 1) as u64).checked_sub(now) {
        tokio::time::sleep(wait).await;
    }
    let late = send(30..45).await;
    let boundary = late
        .iter()
        .filter_map(|d| d["created_at"].as_i64())
        .min()
        .unwrap();
    assert!(newest < boundary);
    let mut late_ids: Vec<&str> = late
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap())
        .collect();
    late_ids.sort_by(|a, b| b.cmp(a));

    let wide = format!("from=0&to={}", boundary + 3600);
    for node in &nodes {
        for read_path in [
            "/v1/messages/promo/metrics",
            "/v1/campaigns/spring/metrics",
            "/v1/messages/promo/timeseries",
            "/v1/campaigns/spring/timeseries",
        ] {
            let all = read(node, read_path).await;
            assert_eq!(
                read(node, &format!("{read_path}?{wide}")).await,
                all,
                "{read_path}"
            );
        }
        let before = read(node, &format!("/v1/messages/promo/metrics?to={boundary}")).await;
        let after = read(node, &format!("/v1/messages/promo/metrics?from={boundary}")).await;
        assert_eq!(
            (before["sends"].as_u64(), after["sends"].as_u64()),
            (Some(30), Some(15))
        );
        assert_eq!(
            (before["delivered"].as_u64(), after["delivered"].as_u64()),
            (Some(30), Some(15))
        );
        let series = read(
            node,
            &format!("/v1/messages/promo/timeseries?from={boundary}"),
        )
        .await;
        let delivered: i64 = series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["delivered"].as_i64().unwrap())
            .sum();
        assert_eq!(delivered, 15, "{series}");

        let log = read(
            node,
            &format!("/v1/deliveries?from={boundary}&limit=1000&total=true"),
        )
        .await;
        let ids: Vec<&str> = log["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["delivery_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, late_ids, "every node's deliveries of the range");
        assert_eq!(log["total"], 15);
        let page = read(
            node,
            &format!("/v1/deliveries?to={boundary}&limit=5&total=true"),
        )
        .await;
        assert_eq!(
            (
                page["total"].as_u64(),
                page["deliveries"].as_array().unwrap().len()
            ),
            (Some(30), 5)
        );
        assert_eq!(
            read(node, "/v1/deliveries?limit=1&total=true").await["total"],
            45
        );
        assert_eq!(log["deliveries"][0]["platforms"], json!(["ios", "android"]));
    }
}

/// Scheduled deliveries of a partition whose node dies move with it: the
/// node that takes the partition over puts them back on its schedule and
/// sends each once (at its time, or late by how long the partition was
/// unowned), rendered as the message is then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_deliveries_move_with_their_partition_and_go_out_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("scheduled", &[("PUSHD_CLUSTER_LEASE_MS", "3000")]).await;
    let nodes = rig.nodes().await;
    let partitioning = pushd::partition::Partitioning::new(PARTITIONS);
    let served = serving(&nodes).await;
    let customers: Vec<String> = (0..CUSTOMERS)
        .map(|i| format!("c{i}"))
        .filter(|c| served[0].contains(&u64::from(partitioning.of_customer(c).0)))
        .collect();
    assert!(!customers.is_empty(), "node0 serves customers");
    let due = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 12;
    let at = jiff::Timestamp::from_second(due).unwrap().to_string();
    // Sent through another node: forwarded, with its schedule, to node0.
    let body = json!({"message_id": "promo", "customer_ids": customers, "schedule": {"at": at}});
    let (status, sent) = nodes[1].call("POST", "/v1/send/push", Some(body)).await;
    assert_eq!(status, 202, "{sent}");
    let ids: Vec<String> = (sent["deliveries"].as_array().unwrap().iter())
        .map(|d| d["delivery_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), customers.len(), "{sent}");
    for id in &ids {
        let (_, d) = nodes[2]
            .call("GET", &format!("/v1/deliveries/{id}"), None)
            .await;
        assert_eq!(
            (d["status"].as_str(), d["scheduled_for"].as_i64()),
            (Some("scheduled"), Some(due)),
            "{d}"
        );
    }
    // Any node names their release time, from the owner's share.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, m) = nodes[2]
            .call("GET", "/v1/messages/promo/metrics", None)
            .await;
        if m["next_release_at"] == due {
            break;
        }
        assert!(Instant::now() < deadline, "no next release: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The message changes while they wait: they go out as it is then.
    let message = json!({"name": "Promo", "campaign_id": "spring",
        "title": "Later {{customer.first_name}}", "body": "b"});
    put(&nodes[2], "/v1/messages/promo", message).await;

    signal(nodes[0].pid(), "-KILL");
    let moved = until_served(&nodes[1..], |_| true).await;
    println!("node0's partitions moved in {moved:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        let d = loop {
            let d = settled(&nodes[1], id).await;
            if d["status"] != "scheduled" {
                break d;
            }
            assert!(Instant::now() < deadline, "still scheduled: {d}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(d["late_seconds"].as_i64().is_some(), "{d}");
        assert!(
            d["content"]["title"]
                .as_str()
                .unwrap()
                .starts_with("Later "),
            "{d}"
        );
        for device in d["devices"].as_array().unwrap() {
            assert_eq!(device["duplicates"], 0, "sent once: {d}");
        }
    }
}

/// `pushd restore ARCHIVE` with `env` (a cluster's settings, or none):
/// whether it succeeded, and what it printed.
fn restore(
    archive: &std::path::Path,
    data: &std::path::Path,
    env: &[(&'static str, String)],
) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pushd"));
    command
        .arg("restore")
        .arg(archive)
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("PUSHD_DATA_DIR", data);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("pushd runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// What a user checks after a restore: each delivery's status and the
/// message's figures, read through `node`.
async fn state_of(node: &Daemon, deliveries: &[(String, usize)]) -> (Vec<Value>, Value) {
    let mut statuses = Vec::new();
    for (id, _) in deliveries {
        let (status, v) = node
            .call("GET", &format!("/v1/deliveries/{id}"), None)
            .await;
        assert_eq!(status, 200, "{id}: {v}");
        statuses.push(json!([id, v["status"], v["devices"]]));
    }
    let (status, metrics) = node.call("GET", "/v1/messages/promo/metrics", None).await;
    assert_eq!(status, 200, "{metrics}");
    (statuses, metrics)
}

/// A backup taken through any node holds every partition's acknowledged
/// state (each exported by the node serving it), the templates and the
/// webhooks; `pushd restore` puts it into a new cluster (new NATS servers,
/// as many partitions), whose nodes then serve the same deliveries,
/// figures, customers, template and webhook, and go on sending. A restore
/// into a cluster that holds state, or of a cluster's archive into a data
/// directory, is refused and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_through_any_node_restores_into_a_new_cluster() {
    let _one = ONE_AT_A_TIME.lock().await;
    let settings = [("PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")];
    let kept = tempfile::tempdir().unwrap();
    let archive = kept.path().join("cluster.pushd");
    let (deliveries, before) = {
        let rig = Rig::start("cluster backup", &settings).await;
        let nodes = rig.nodes().await;
        let hook = json!({"url": "http://127.0.0.1:9/hook", "secret": "whsec_kept",
            "events": ["delivered"]});
        put(&nodes[2], "/v1/webhooks/crm", hook).await;
        let ids: Vec<String> = (0..CUSTOMERS).map(|i| format!("c{i}")).collect();
        let send = json!({"message_id": "promo", "customer_ids": ids});
        let (status, body) = nodes[0].call("POST", "/v1/send/push", Some(send)).await;
        assert_eq!(status, 202, "{body}");
        let deliveries = created_deliveries(&body);
        assert_eq!(deliveries.len(), CUSTOMERS, "{body}");
        for (id, i) in &deliveries {
            nodes[i % 3].settled(id).await;
            if i % 2 == 0 {
                let report = delivered_report(id, *i);
                let (status, v) = (nodes[(i + 1) % 3])
                    .call_as(SDK_KEY, "POST", "/push/events", Some(report))
                    .await;
                assert_eq!(status, 200, "{v}");
            }
        }
        // A partition's store is for a node to ask for, not a client.
        let (status, v) = (nodes[0])
            .call("GET", "/v1/cluster/partitions/0/store", None)
            .await;
        let code = &v["error"]["code"];
        assert_eq!(
            (status, code),
            (401, &json!("node_credential_invalid")),
            "{v}"
        );
        let before = state_of(&nodes[1], &deliveries).await;
        let delivered = before.1["delivered"].as_u64();
        assert_eq!(delivered, Some(CUSTOMERS as u64 / 2), "{}", before.1);
        // A webhook defined through another node just before: in the backup.
        let late = json!({"url": "http://127.0.0.1:9/late", "secret": "whsec_late",
            "events": ["opened"]});
        put(&nodes[0], "/v1/webhooks/late", late).await;
        let response = reqwest::Client::new()
            .get(nodes[1].url("/v1/backup"))
            .bearer_auth(support::API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        std::fs::write(&archive, response.bytes().await.unwrap()).unwrap();
        (deliveries, before)
    };
    // The old cluster is gone (its nodes and NATS servers stopped). A data
    // directory is not where a cluster's archive goes.
    let data = kept.path().join("data");
    let (restored, said) = restore(&archive, &data, &[]);
    assert!(!restored, "{said}");
    assert!(said.contains("this archive is a cluster's"), "{said}");
    assert!(!data.exists(), "a refused restore wrote {}", data.display());
    let rig = Rig::start("cluster backup restored", &settings).await;
    let (restored, said) = restore(&archive, &data, &rig.env);
    assert!(restored, "{said}");
    assert!(
        said.contains(&format!("{PARTITIONS} partitions, 1 templates, 2 webhooks")),
        "{said}"
    );
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(rig.node(i).await);
    }
    until_served(&nodes, |_| true).await;
    for node in &nodes {
        assert_eq!(state_of(node, &deliveries).await, before);
    }
    let (status, v) = nodes[2].call("GET", "/v1/customers/c5", None).await;
    assert_eq!(
        (status, &v["attributes"]["first_name"]),
        (200, &json!("N5")),
        "{v}"
    );
    let (status, v) = nodes[0].call("GET", "/v1/messages/promo", None).await;
    assert_eq!(
        (status, &v["title"]),
        (200, &json!("Hi {{customer.first_name}}")),
        "{v}"
    );
    let (status, v) = nodes[1].call("GET", "/v1/webhooks/crm", None).await;
    assert_eq!((status, &v["events"]), (200, &json!(["delivered"])), "{v}");
    let (status, v) = nodes[2].call("GET", "/v1/webhooks/late", None).await;
    assert_eq!((status, &v["events"]), (200, &json!(["opened"])), "{v}");
    // The restored partitions go on: a new send is made and sent.
    let send = json!({"message_id": "promo", "customer_ids": ["c7"]});
    let (status, body) = nodes[1].call("POST", "/v1/send/push", Some(send)).await;
    assert_eq!(status, 202, "{body}");
    let new = &created_deliveries(&body)[0].0;
    assert!(deliveries.iter().all(|(id, _)| id != new));
    nodes[0].settled(new).await;
    // A cluster that holds state is not restored into.
    let (restored, said) = restore(&archive, &data, &rig.env);
    assert!(!restored, "{said}");
    assert!(said.contains("holds state already"), "{said}");
    let m = nodes[2]
        .metrics_until("promo", |m| m["sends"] == json!(CUSTOMERS + 1))
        .await;
    assert_eq!(m["delivered"], before.1["delivered"], "{m}");
}

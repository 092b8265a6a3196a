//! Cluster mode end to end: three nats-servers forming one JetStream
//! cluster and three pushd nodes on loopback, sending and reporting through
//! every node under load, while one pushd node is SIGKILLed, then one
//! nats-server, then another pushd node is paused (SIGSTOP) past its lease
//! and resumed. Afterwards every acknowledged delivery and report is there
//! and final, the killed node's partitions moved within 10 s, and the
//! journal shows no partition was ever written by two nodes in turn.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushd::sim::FaultMix;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{Daemon, SDK_KEY, android_token, cluster, fakes, ios_token};

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
        let created: Vec<(String, usize)> = body["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let customer = d["customer_id"].as_str().unwrap();
                let i: usize = customer[1..].parse().unwrap();
                (d["delivery_id"].as_str().unwrap().to_string(), i)
            })
            .collect();
        acked
            .lock()
            .unwrap()
            .deliveries
            .extend(created.iter().map(|(d, _)| d.clone()));
        for (delivery, i) in created.into_iter().take(2) {
            let report = json!({"delivery_id": delivery, "event": "delivered",
                "device_id": android_token(i), "timestamp": 1_764_100_100});
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
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "partitions not all served: {sets:?}"
        );
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

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_a_nats_server_die_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let seed = support::seed("cluster test");
    let mix = FaultMix {
        latency: Duration::from_millis(10),
        seed,
        ..FaultMix::default()
    };
    let fakes = fakes(dir.path(), mix).await;
    let mut nats = cluster::start(dir.path());
    let servers: Vec<String> = nats.iter().map(|s| s.url.clone()).collect();
    let node_env = |i: usize| {
        let mut env = fakes.env();
        env.extend([
            ("PUSHD_CLUSTER", servers.join(",")),
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

    no_partition_had_two_writers(&nats[0].url).await;
}

/// Reads the journal stream: on each partition's subject, once a writer's
/// message follows another's, the earlier writer never writes again.
async fn no_partition_had_two_writers(url: &str) {
    let client = async_nats::connect(url).await.unwrap();
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

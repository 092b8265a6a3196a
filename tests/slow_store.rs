//! A slow disk under the store holds the reads that need it, never the
//! HTTP workers: `/healthz` and the app's reports answer while the
//! delivery log, message list and campaign counters wait for a drain.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Daemon, SDK_KEY, Strace, fakes, ios_token};

/// The event log's segment files under `data`.
fn event_segments(data: &std::path::Path) -> Vec<String> {
    let dir = data.join("events").canonicalize().unwrap();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "events"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

/// Every `fdatasync` of the event log is held 5 s (strace), so a drain
/// (which syncs the event log before it writes sled) holds the store's
/// drain lock that long. Reads that drain first wait for it; while they
/// wait, `/healthz` and a report are answered. Skipped (saying so) where
/// strace is missing; CI installs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_waiting_on_a_slow_store_leave_healthz_and_reports_answering() {
    if !support::strace_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fakes = fakes(dir.path(), pushd::sim::FaultMix::default()).await;
    let d = std::sync::Arc::new(Daemon::start(&data, &fakes.env()));
    d.message("welcome", "onboarding", "Hi").await;
    d.customer("c1", json!({}), &[(&ios_token(1), "ios")]).await;
    let first = d.send("welcome", &["c1"]).await.remove(0);
    assert_eq!(d.settled(&first).await["status"], "sent");
    // The events of that send reach the log at the next drain, which a
    // read of the delivery log makes.
    assert_eq!(d.call("GET", "/v1/deliveries", None).await.0, 200);
    let segment = event_segments(&data).pop().expect("an event log segment");

    let (strace, traced) = Strace::attach_watching(
        d.pid(),
        &[
            "-P",
            &segment,
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:delay_enter=5000000",
        ],
    );
    // A send makes new events; the next drain (the snapshot thread's, or
    // a read's) syncs them and is held.
    let second = d.send("welcome", &["c1"]).await.remove(0);

    let _traced = support::entered(traced, "fdatasync(").await;

    // Reads that drain first, more than the daemon has HTTP workers: each
    // waits for the held drain.
    let mut reads = Vec::new();
    let paths: Vec<&str> = (["/v1/deliveries", "/v1/messages", "/v1/campaigns"].into_iter())
        .cycle()
        .take(9)
        .collect();
    for &path in &paths {
        let d = d.clone();
        reads.push(tokio::spawn(async move { d.call("GET", path, None).await }));
    }
    // Not a threshold: time for every read to reach the daemon, so that a
    // daemon draining on its workers would have them all held.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let health = d.client.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let report = json!({"delivery_id": second, "event": "delivered", "device_id": ios_token(1)});
    let (status, body) = d
        .call_as(SDK_KEY, "POST", "/push/events", Some(report))
        .await;
    assert_eq!(status, 200, "{body}");
    let finished: Vec<&str> = (reads.iter().zip(&paths))
        .filter(|(r, _)| r.is_finished())
        .map(|(_, p)| *p)
        .collect();
    assert!(
        finished.is_empty(),
        "every read waits for the held drain while /healthz and the report are answered: \
         {finished:?} did not"
    );

    // Once the disk answers, so do the reads.
    drop(strace);
    for read in reads {
        let (status, body) = read.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

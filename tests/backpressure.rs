//! Writes are bounded: while the disk cannot keep up, a write is refused
//! before it changes anything (`503 overloaded` with `Retry-After`), and
//! while the journal's disk is full it is refused `507
//! insufficient_storage`; once the disk answers again, writes are taken
//! without a restart and nothing acknowledged is lost. The disk's faults
//! are made with strace on the running daemon's threads; skipped (saying
//! so) where strace is missing (CI installs it).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Daemon, Strace, entered};

/// `PUT /v1/customers/{id}`: its status, `Retry-After` and body.
async fn put(d: &Daemon, id: &str) -> (u16, Option<String>, Value) {
    let resp = d
        .client
        .put(d.url(&format!("/v1/customers/{id}")))
        .bearer_auth(support::API_KEY)
        .json(&json!({"attributes": {"plan": "pro"}}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = (resp.headers().get("retry-after")).map(|v| v.to_str().unwrap().to_string());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

/// Puts `id` until it is taken, waiting as each refusal's `Retry-After`
/// says (a second when it says nothing); bounded at 30 s.
async fn put_until_taken(d: &Daemon, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, retry, body) = put(d, id).await;
        if status == 200 {
            return;
        }
        assert!(matches!(status, 503 | 507), "{status} {body}");
        assert!(Instant::now() < deadline, "never taken again: {body}");
        let secs = retry.map_or(1, |r| r.parse().unwrap());
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}

async fn status(d: &Daemon, path: &str) -> u16 {
    d.call("GET", path, None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_journal_queue_bound_a_write_is_refused_503_with_retry_after() {
    if !support::strace_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [("PUSHD_MAX_JOURNAL_QUEUE_BYTES", "1".to_string())];
    let d = std::sync::Arc::new(Daemon::start(&dir.path().join("data"), &env));
    assert_eq!(put(&d, "before").await.0, 200);

    // The journal's syncs are held 4 s: the first write waits in one...
    let (strace, traced) = Strace::attach_thread(
        d.pid(),
        "pushd-journal",
        &[
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:delay_enter=4000000",
        ],
    );
    let held = tokio::spawn({
        let d = d.clone();
        async move { put(&d, "held").await }
    });
    let _traced = entered(traced, "fdatasync(").await;
    // ...the next queues behind it (readers see it at once)...
    let queued = tokio::spawn({
        let d = d.clone();
        async move { put(&d, "queued").await }
    });
    while status(&d, "/v1/customers/queued").await != 200 {
        tokio::task::yield_now().await;
    }
    // ...and past the bound one is refused before it changes anything.
    let (code, retry, body) = put(&d, "refused").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("PUSHD_MAX_JOURNAL_QUEUE_BYTES"),
        "{message}"
    );
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(status(&d, "/v1/customers/refused").await, 404);
    assert_eq!(status(&d, "/healthz").await, 200, "reads still answer");

    // Once the disk answers, the waiting writes are acknowledged and new
    // ones taken.
    drop(strace);
    assert_eq!(held.await.unwrap().0, 200);
    assert_eq!(queued.await.unwrap().0, 200);
    put_until_taken(&d, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_undrained_records_bound_a_write_is_refused_until_drains_catch_up() {
    if !support::strace_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [("PUSHD_MAX_UNDRAINED_RECORDS", "2".to_string())];
    let d = Daemon::start(&dir.path().join("data"), &env);
    assert_eq!(put(&d, "before").await.0, 200);

    // The snapshot thread's syncs (a checkpoint's, the event log's in a
    // drain) are held 4 s: drains stop while writes go on.
    let (strace, traced) = Strace::attach_thread(
        d.pid(),
        "pushd-snapshot",
        &[
            "-e",
            "trace=fdatasync,fsync",
            "-e",
            "inject=fdatasync,fsync:delay_enter=4000000",
        ],
    );
    let _traced = entered(traced, "sync(").await;
    let mut refused = None;
    for i in 0..10 {
        let (code, retry, body) = put(&d, &format!("w{i}")).await;
        if code != 200 {
            refused = Some((i, code, retry, body));
            break;
        }
    }
    let (i, code, retry, body) = refused.expect("a write past the bound is refused");
    assert_eq!((code, retry.as_deref()), (503, Some("1")), "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("PUSHD_MAX_UNDRAINED_RECORDS"), "{message}");
    assert_eq!(status(&d, &format!("/v1/customers/w{i}")).await, 404);

    drop(strace);
    put_until_taken(&d, "after").await;
    for w in 0..i {
        assert_eq!(status(&d, &format!("/v1/customers/w{w}")).await, 200);
    }
}

/// A full disk under the journal (strace answers its writes `ENOSPC`):
/// the write under way and the next are answered 507, `/readyz` says why;
/// once space returns the journal writes what it kept, by itself, and
/// takes writes again; a restart finds all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_disk_answers_507_and_writes_resume_once_space_returns() {
    if !support::strace_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = Daemon::start(&data, &[]);
    assert_eq!(put(&d, "before").await.0, 200);

    let (strace, _traced) = Strace::attach_thread(
        d.pid(),
        "pushd-journal",
        &["-e", "trace=pwrite64", "-e", "inject=pwrite64:error=ENOSPC"],
    );
    let (code, _, body) = put(&d, "kept").await;
    assert_eq!(code, 507, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    let (code, _, body) = put(&d, "refused").await;
    assert_eq!(code, 507, "{body}");
    let (code, ready) = d.call("GET", "/readyz", None).await;
    assert_eq!(code, 503, "{ready}");
    let reasons = ready["reasons"].to_string();
    assert!(reasons.contains("disk is full"), "{reasons}");
    assert_eq!(status(&d, "/healthz").await, 200);

    drop(strace);
    put_until_taken(&d, "after").await;
    assert_eq!(d.call("GET", "/readyz", None).await.0, 200);
    // The write answered 507 while under way was kept and written once
    // space returned; the one refused at the door changed nothing.
    assert_eq!(status(&d, "/v1/customers/kept").await, 200);
    assert_eq!(status(&d, "/v1/customers/refused").await, 404);

    drop(d);
    let d = Daemon::start(&data, &[]);
    for (id, expected) in [
        ("before", 200),
        ("kept", 200),
        ("after", 200),
        ("refused", 404),
    ] {
        assert_eq!(
            status(&d, &format!("/v1/customers/{id}")).await,
            expected,
            "{id}"
        );
    }
}

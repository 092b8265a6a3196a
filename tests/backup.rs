//! Backups through the real binary: `GET /v1/backup` taken while sends and
//! reports run, restored with `pushd restore` into a new directory and
//! served by a new daemon, which holds everything acknowledged before the
//! call; damaged archives and a non-empty target refused, writing nothing;
//! only the API key downloads a backup.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushd::sim::{FaultMix, WebhookReceiver};
use serde_json::{Value, json};
use support::{API_KEY, Daemon, SDK_KEY, android_token, fakes, ios_token, recount};
use tokio::sync::watch;

const CUSTOMERS: usize = 12;

/// Message statuses in the order a delivery reaches them.
const ORDER: [&str; 4] = ["attempted", "sent", "delivered", "opened"];

fn rank(status: &str) -> usize {
    ORDER
        .iter()
        .position(|s| *s == status)
        .unwrap_or_else(|| panic!("unexpected status {status}"))
}

/// Downloads `GET /v1/backup` with `key` to `to`; answers the status and
/// the response headers.
async fn download(d: &Daemon, key: &str, to: &Path) -> (u16, reqwest::header::HeaderMap) {
    let mut resp = d
        .client
        .get(d.url("/v1/backup"))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.expect("the body") {
        bytes.extend_from_slice(&chunk);
    }
    std::fs::write(to, bytes).unwrap();
    (status, headers)
}

/// Runs `pushd restore ARCHIVE --data-dir DIR`.
/// `pushd restore`, run under the usual umask 022 (so what it creates is
/// private only because it makes it so).
fn restore(archive: &Path, data_dir: &Path) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushd"));
    // SAFETY: umask(2) in the child before exec; it touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    cmd.arg("restore")
        .arg(archive)
        .arg("--data-dir")
        .arg(data_dir)
        .env_clear()
        .env("RUST_LOG", "warn")
        .current_dir(archive.parent().unwrap())
        .output()
        .expect("pushd runs")
}

/// Every directory under `path` is 0700 and every file 0600.
fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_dir() {
        assert_eq!(mode, 0o700, "{}", path.display());
        for entry in std::fs::read_dir(path).unwrap() {
            assert_private(&entry.unwrap().path());
        }
    } else if meta.is_file() {
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What the load saw acknowledged: each delivery with the furthest status
/// it is known to have reached.
#[derive(Default)]
struct Seen {
    known: Mutex<HashMap<String, &'static str>>,
}

impl Seen {
    fn reached(&self, id: &str, status: &'static str) {
        let mut known = self.known.lock().unwrap();
        let at = known.entry(id.to_string()).or_insert(status);
        if rank(status) > rank(at) {
            *at = status;
        }
    }

    fn now(&self) -> HashMap<String, &'static str> {
        self.known.lock().unwrap().clone()
    }
}

/// Sends to one customer after another until `stop`, noting each
/// delivery acknowledged and telling `sent` how many.
async fn sender(
    d: Arc<Daemon>,
    from: usize,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    sent: Arc<watch::Sender<usize>>,
    queue: Arc<Mutex<Vec<(String, usize)>>>,
) {
    let mut i = from;
    while !stop.load(Ordering::Acquire) {
        let customer = format!("c{}", i % CUSTOMERS);
        let id = d.send("welcome", &[&customer]).await.remove(0);
        seen.reached(&id, "attempted");
        queue.lock().unwrap().push((id, i % CUSTOMERS));
        sent.send_modify(|n| *n += 1);
        i += 2;
    }
}

/// Reports `delivered` (Android) then `opened` (iOS) for the sent
/// deliveries until `stop`, noting each status reached.
async fn reporter(
    d: Arc<Daemon>,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    reported: Arc<watch::Sender<usize>>,
    queue: Arc<Mutex<Vec<(String, usize)>>>,
    mut sent: watch::Receiver<usize>,
) {
    while !stop.load(Ordering::Acquire) {
        let next = queue.lock().unwrap().pop();
        let Some((id, i)) = next else {
            // Woken by the next send (or by the end of the load).
            let _ = sent.changed().await;
            continue;
        };
        let v = d.settled(&id).await;
        assert_eq!(v["status"], "sent", "{v}");
        seen.reached(&id, "sent");
        for (token, event) in [(android_token(i), "delivered"), (ios_token(i), "opened")] {
            let body = json!({"delivery_id": id, "event": event, "device_id": token});
            let (s, v) = d.call_as(SDK_KEY, "POST", "/push/events", Some(body)).await;
            assert_eq!(s, 200, "{v}");
            seen.reached(&id, event);
        }
        reported.send_modify(|n| *n += 1);
    }
}

/// Every delivery of campaign `onboarding`, by id.
async fn all_deliveries(d: &Daemon) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut cursor = String::new();
    loop {
        let (s, page) = d
            .call(
                "GET",
                &format!("/v1/deliveries?campaign_id=onboarding&limit=1000{cursor}"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{page}");
        for x in page["deliveries"].as_array().unwrap() {
            ids.insert(x["delivery_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return ids,
        }
    }
}

/// Every event of the feed.
async fn all_events(d: &Daemon) -> Vec<Value> {
    let (mut events, mut after) = (Vec::new(), String::new());
    loop {
        let (page, next) = d.feed_page(&after, 1000).await;
        if page.is_empty() {
            return events;
        }
        events.extend(page);
        after = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Arc::new(Daemon::start(&dir.path().join("data"), &fakes.env()));
    d.message("welcome", "onboarding", "Hi {{customer.first_name}}")
        .await;
    for i in 0..CUSTOMERS {
        let (ios, android) = (ios_token(i), android_token(i));
        d.customer(
            &format!("c{i}"),
            json!({"first_name": format!("N{i}")}),
            &[(&ios, "ios"), (&android, "android")],
        )
        .await;
    }
    let receiver = WebhookReceiver::start().await.unwrap();
    let hook = json!({"url": receiver.url(), "secret": "s3cret"});
    d.ok("PUT", "/v1/webhooks/h", hook).await;

    // The load: two senders and a reporter, until `stop`.
    let (seen, stop) = (Arc::new(Seen::default()), Arc::new(AtomicBool::new(false)));
    let queue = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(watch::Sender::new(0usize));
    let reported = Arc::new(watch::Sender::new(0usize));
    let mut load = tokio::task::JoinSet::new();
    for from in 0..2 {
        load.spawn(sender(
            d.clone(),
            from,
            seen.clone(),
            stop.clone(),
            sent.clone(),
            queue.clone(),
        ));
    }
    load.spawn(reporter(
        d.clone(),
        seen.clone(),
        stop.clone(),
        reported.clone(),
        queue.clone(),
        sent.subscribe(),
    ));
    let mut sends = sent.subscribe();
    sends.wait_for(|n| *n >= 30).await.unwrap();
    reported.subscribe().wait_for(|n| *n >= 3).await.unwrap();

    // What was acknowledged before the backup call, as it stood then.
    let before = seen.now();
    let archive = dir.path().join("backup.pushd");
    let (status, headers) = download(&d, API_KEY, &archive).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/octet-stream");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"pushd-backup-")
            && disposition.ends_with("Z.pushd\""),
        "{disposition}"
    );
    let size = std::fs::metadata(&archive).unwrap().len();
    assert_eq!(headers["content-length"], size.to_string().as_str());
    stop.store(true, Ordering::Release);
    sent.send_modify(|_| {});
    while let Some(task) = load.join_next().await {
        task.unwrap();
    }
    let original = d.ok("GET", "/v1/webhooks/h", Value::Null).await;
    Arc::into_inner(d).unwrap().kill();

    let data = dir.path().join("restored");
    let out = restore(&archive, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("journal position"), "{said}");
    assert_private(&data);
    let d = Daemon::start(&data, &fakes.env());

    // Every delivery acknowledged before the call, at least as far along.
    for (id, status) in &before {
        let (s, v) = d.call("GET", &format!("/v1/deliveries/{id}"), None).await;
        assert_eq!(
            s, 200,
            "{id} acknowledged before the backup is missing: {v}"
        );
        let now = v["status"].as_str().unwrap();
        assert!(
            rank(now) >= rank(status),
            "{id}: {status} before, {now} restored"
        );
    }
    for i in 0..CUSTOMERS {
        let (s, c) = d.call("GET", &format!("/v1/customers/c{i}"), None).await;
        assert_eq!(s, 200, "{c}");
        assert_eq!(c["devices"].as_array().unwrap().len(), 2, "{c}");
    }
    let m = d.ok("GET", "/v1/messages/welcome", Value::Null).await;
    assert_eq!(m["title"], "Hi {{customer.first_name}}");
    let h = d.ok("GET", "/v1/webhooks/h", Value::Null).await;
    assert_eq!(h["url"], original["url"]);

    // The event feed holds the events of what the backup holds: a sent
    // event for each delivery known sent before it, none of a delivery it
    // does not hold.
    let restored = all_deliveries(&d).await;
    assert!(restored.len() >= before.len());
    let events = all_events(&d).await;
    let sent_events: HashSet<&str> = events
        .iter()
        .filter(|e| e["event"] == "sent")
        .map(|e| e["delivery_id"].as_str().unwrap())
        .collect();
    for (id, status) in &before {
        if rank(status) >= rank("sent") {
            assert!(sent_events.contains(id.as_str()), "no sent event of {id}");
        }
    }
    for e in &events {
        assert!(restored.contains(e["delivery_id"].as_str().unwrap()), "{e}");
    }

    // The metrics are the restored deliveries' recount (once those sent
    // again on start settle).
    let mut details = Vec::new();
    for id in &restored {
        details.push(d.settled(id).await);
    }
    let m = d
        .ok("GET", "/v1/messages/welcome/metrics", Value::Null)
        .await;
    for (k, n) in recount(&details) {
        assert_eq!(m[k], n, "{k}: {m}");
    }

    // New changes continue the journal after the backup's position: a
    // delivery sent now survives a crash and its replay.
    let new = d.send("welcome", &["c0"]).await.remove(0);
    d.settled(&new).await;
    d.kill();
    let d = Daemon::start(&data, &fakes.env());
    let v = d.settled(&new).await;
    assert_eq!(v["status"], "sent", "{v}");
    // Its event is in the feed once its record is durable: at once if the
    // journal held it at the kill, after a send again if not.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !all_events(&d)
        .await
        .iter()
        .any(|e| e["delivery_id"] == new.as_str() && e["event"] == "sent")
    {
        assert!(
            Instant::now() < deadline,
            "the new delivery's event follows the restored ones"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_archives_and_a_non_empty_target_are_refused_writing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Generated keys, kept in keys.toml: the backup carries them.
    let d = Daemon::launch(&dir.path().join("data"), &[]);
    let key = d
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("generated api_key: "))
        .and_then(|l| l.split_whitespace().next())
        .expect("a generated API key")
        .to_string();
    let body = json!({"attributes": {"first_name": "Ada"}});
    let (s, v) = d
        .call_as(&key, "PUT", "/v1/customers/ada", Some(body))
        .await;
    assert_eq!(s, 200, "{v}");
    let archive = dir.path().join("good.pushd");
    assert_eq!(download(&d, &key, &archive).await.0, 200);
    d.kill();
    let good = std::fs::read(&archive).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let damaged = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };

    // Cut short: refused, the target never made.
    let cut = damaged("cut.pushd", &good[..good.len() - 100]);
    let out = restore(&cut, &work.join("cut"));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("damaged") && e.contains("cut short"), "{e}");
    assert!(e.contains("nothing was written"), "{e}");

    // A flipped byte (in the store's records): refused, the empty target
    // left empty.
    let store = good
        .windows(7)
        .position(|w| w == b"\x00\x05store")
        .expect("a store section");
    let mut flipped = good.clone();
    flipped[store + 7 + 8 + 40] ^= 0x01;
    let flipped = damaged("flipped.pushd", &flipped);
    std::fs::create_dir(work.join("empty")).unwrap();
    let out = restore(&flipped, &work.join("empty"));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("damaged") && e.contains("checksum does not match"),
        "{e}"
    );
    assert!(listing(&work.join("empty")).is_empty());

    // A newer format: refused, naming both versions.
    let newer = [&b"pushd-backup-v2\n"[..], &good[16..]].concat();
    let out = restore(&damaged("newer.pushd", &newer), &work.join("newer"));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("pushd-backup-v2") && e.contains("pushd-backup-v1"),
        "{e}"
    );

    // A target that holds something: refused, left as it was.
    let full = work.join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("notes.txt"), "mine").unwrap();
    let out = restore(&archive, &full);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(listing(&full), ["notes.txt"]);

    // Nothing was left behind by the refusals: no target, no temporary.
    assert_eq!(listing(&work), ["empty", "full"]);

    // The good archive restores, keys included.
    let data: PathBuf = work.join("good");
    let out = restore(&archive, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = Daemon::launch(&data, &[]);
    assert!(
        d.banner.iter().all(|l| !l.starts_with("generated")),
        "the restored keys are used: {:?}",
        d.banner
    );
    let (s, v) = d.call_as(&key, "GET", "/v1/customers/ada", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["attributes"]["first_name"], "Ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_api_key_downloads_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), &[]);
    let to = dir.path().join("backup.pushd");
    for key in [SDK_KEY, "wrong", ""] {
        let (status, headers) = download(&d, key, &to).await;
        assert_eq!(status, 401, "key {key:?}");
        assert_eq!(headers["content-type"], "application/json");
        let body: Value = serde_json::from_slice(&std::fs::read(&to).unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (s, v) = d.call("POST", "/v1/backup", None).await;
    assert_eq!(s, 405, "{v}");
}

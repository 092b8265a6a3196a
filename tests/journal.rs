//! The journal under the daemon: a torn or corrupt tail (a crash in the
//! middle of a write, a flipped bit) is cut at recovery, never replayed,
//! and every change acknowledged before it is kept; segments without a
//! header (the previous release's) open, one of a newer format stops the
//! start.

mod support;

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::Daemon;

/// The journal segments of a data dir, oldest first.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    segments.sort();
    segments
}

/// The newest journal segment of a data dir.
fn last_segment(data: &Path) -> PathBuf {
    segments(data).pop().expect("a journal segment")
}

/// Bytes of a segment's header (magic `PUSHDJNL`, format, reserved);
/// segments written before formats were numbered have none.
const HEADER: usize = 16;

/// Where the records of a segment end: after its header, each is 16 bytes
/// (length, checksum, position) and its payload; zeros fill the file after
/// them.
fn data_end(bytes: &[u8]) -> usize {
    let mut at = if bytes.starts_with(b"PUSHDJNL") {
        HEADER
    } else {
        0
    };
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += 16 + len;
    }
    assert!(bytes[at..].iter().all(|&b| b == 0), "zeros after the data");
    at
}

/// Acknowledged customers `c0..c{n}`, then a SIGKILL before any checkpoint.
async fn acknowledged(data: &Path, n: usize) {
    let d = Daemon::start(data, &[]);
    for i in 0..n {
        d.customer(&format!("c{i}"), json!({"n": i}), &[]).await;
    }
    d.kill();
}

async fn exists(d: &Daemon, id: &str) -> bool {
    let (status, v) = d.call("GET", &format!("/v1/customers/{id}"), None).await;
    assert!(status == 200 || status == 404, "{status} {v}");
    status == 200
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_every_acknowledged_change_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    acknowledged(&data, 10).await;
    // A record whose write was cut short: a header promising 500 bytes,
    // and 7 of them.
    let mut torn = Vec::new();
    torn.extend_from_slice(&500u32.to_le_bytes());
    torn.extend_from_slice(&[0xab; 4 + 8 + 7]);
    let segment = last_segment(&data);
    let end = data_end(&std::fs::read(&segment).unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .write_all_at(&torn, end as u64)
        .unwrap();

    let d = Daemon::start(&data, &[]);
    for i in 0..10 {
        assert!(exists(&d, &format!("c{i}")).await, "c{i} lost");
    }
    // Appends go on after the cut, and survive another crash.
    d.customer("after", json!({}), &[]).await;
    d.kill();
    let d = Daemon::start(&data, &[]);
    assert!(exists(&d, "after").await);
    assert!(exists(&d, "c9").await);
}

#[tokio::test]
async fn a_corrupt_record_is_never_replayed_and_what_came_before_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    acknowledged(&data, 10).await;
    // Flip a bit near the end of the data: inside the last record (c9's
    // device-less customer), whose checksum no longer matches.
    let segment = last_segment(&data);
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = data_end(&bytes) - 3;
    bytes[at] ^= 0x10;
    std::fs::write(&segment, bytes).unwrap();

    let d = Daemon::start(&data, &[]);
    for i in 0..9 {
        assert!(exists(&d, &format!("c{i}")).await, "c{i} lost");
    }
    let (_, v) = d.call("GET", "/v1/customers/c9", None).await;
    // Unless a snapshot had taken it before the crash, c9 is gone: its
    // record is cut, not replayed half-read.
    assert!(
        v["attributes"]["n"] == 9 || v["error"]["code"] == "not_found",
        "{v}"
    );
    d.customer("after", json!({}), &[]).await;
    assert!(exists(&d, "after").await);
}

#[tokio::test]
async fn a_data_dir_of_segments_without_a_header_opens_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    acknowledged(&data, 10).await;
    // As the previous release wrote them: the same records, no header.
    let mut legacy = Vec::new();
    for segment in segments(&data) {
        let bytes = std::fs::read(&segment).unwrap();
        assert!(bytes.starts_with(b"PUSHDJNL"), "new segments have a header");
        std::fs::write(&segment, &bytes[HEADER..]).unwrap();
        legacy.push((segment, bytes[HEADER..].to_vec()));
    }
    // Records are kept in the last segment a change went to until a later
    // checkpoint deletes it, once a newer segment holds data.
    assert!(
        legacy.iter().any(|(_, b)| b.iter().any(|&b| b != 0)),
        "a segment holds records"
    );

    let d = Daemon::start(&data, &[]);
    for i in 0..10 {
        assert!(exists(&d, &format!("c{i}")).await, "c{i} lost");
    }
    d.customer("after", json!({}), &[]).await;
    d.kill();
    for (segment, bytes) in &legacy {
        if bytes.iter().any(|&b| b != 0) {
            assert_eq!(&std::fs::read(segment).unwrap(), bytes, "kept as it is");
        }
    }
    let last = last_segment(&data);
    assert!(std::fs::read(&last).unwrap().starts_with(b"PUSHDJNL"));
    let d = Daemon::start(&data, &[]);
    assert!(exists(&d, "after").await);
    assert!(exists(&d, "c9").await);
}

#[test]
fn a_segment_of_a_newer_format_stops_the_start_naming_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("journal")).unwrap();
    let segment = data.join("journal").join("00000000000000000001.journal");
    let mut header = b"PUSHDJNL".to_vec();
    header.extend_from_slice(&99u32.to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    std::fs::write(&segment, &header).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pushd"))
        .arg("serve")
        .env_clear()
        .env("PUSHD_LISTEN", "127.0.0.1:0")
        .env("PUSHD_DATA_DIR", &data)
        .env("PUSHD_API_KEY", support::API_KEY)
        .env("PUSHD_SDK_KEY", support::SDK_KEY)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "journal segment {} is format 99; this pushd reads formats 1 to 6",
            segment.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(&segment).unwrap(), header, "untouched");
}

/// Under `strace`, a report's journal record is written and `fdatasync`ed
/// before its `200` goes out. Skipped (saying so) where strace is missing;
/// CI installs it.
#[tokio::test]
async fn a_report_is_synced_before_its_answer() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    if !support::strace_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.txt");
    let mut child = Command::new("strace")
        .args([
            "-f",
            "-tt",
            "-s",
            "64",
            "-e",
            "trace=fdatasync,write,pwrite64,sendto",
            "-o",
        ])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_pushd"))
        .arg("serve")
        .env_clear()
        .env("PUSHD_LISTEN", "127.0.0.1:0")
        .env("PUSHD_DATA_DIR", dir.path().join("data"))
        .env("PUSHD_API_KEY", support::API_KEY)
        .env("PUSHD_SDK_KEY", support::SDK_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = lines
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("pushd listening on ").map(str::to_owned))
        .expect("pushd listens");
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, key: &str, body: serde_json::Value| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    use reqwest::Method;
    let api = support::API_KEY;
    call(Method::PUT, "/v1/customers/c1", api, json!({}))
        .await
        .unwrap();
    let device = json!({"device": {"id": "tok", "platform": "ios"}});
    call(Method::PUT, "/v1/customers/c1/devices", api, device)
        .await
        .unwrap();
    call(
        Method::PUT,
        "/v1/messages/m",
        api,
        json!({"title": "t", "body": "b"}),
    )
    .await
    .unwrap();
    let sent: serde_json::Value = call(
        Method::POST,
        "/v1/send/push",
        api,
        json!({"message_id": "m", "customer_ids": ["c1"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let delivery = sent["deliveries"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let report = json!({"delivery_id": delivery, "event": "delivered", "device_id": "tok"});
    let answer = call(Method::POST, "/push/events", support::SDK_KEY, report)
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // strace and pushd: the whole process group.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();

    // The report's record is the last journal write naming the delivery
    // (strace shows a write's first 64 bytes, the id among them; the
    // journal writes at an offset, `pwrite64`); then a sync of that file;
    // then the report's answer, `{"status":"ok"}`.
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let record = lines
        .iter()
        .rposition(|l| l.contains(" pwrite64(") && l.contains(&delivery[..12]))
        .expect("the report's journal record is written");
    let fd = lines[record]
        .split("pwrite64(")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap();
    let synced = lines[record..]
        .iter()
        .position(|l| l.contains(&format!("fdatasync({fd}")))
        .map(|i| record + i)
        .expect("the journal is synced after the record");
    let answered = lines[record..]
        .iter()
        .position(|l| {
            l.contains("sendto(") && l.contains("HTTP/1.1 200") && l.contains("content-length: 15")
        })
        .map(|i| record + i)
        .expect("the report's 200 is sent");
    assert!(
        synced < answered,
        "the 200 went out before the sync:\n{}",
        lines[record..=answered].join("\n")
    );
}

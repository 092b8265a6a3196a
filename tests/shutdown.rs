//! SIGTERM always ends the daemon within `shutdown_timeout_secs`: when the
//! disk holds its last syncs (a full or failing disk can, for ever), it
//! exits with status 1 and says why, and the next start replays the
//! journal: nothing acknowledged is lost.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{API_KEY, Daemon, SDK_KEY, Strace};

/// Every `fsync` and `fdatasync` of the running daemon waits 100 s
/// (strace holds it): SIGTERM with `PUSHD_SHUTDOWN_TIMEOUT_SECS=3` still
/// ends it, status 1, with the message. Skipped (saying so) where strace is
/// missing; CI installs it.
#[tokio::test]
async fn sigterm_ends_the_daemon_in_time_while_the_disk_hangs() {
    if !support::strace_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushd"))
        .arg("serve")
        .env_clear()
        .env("PUSHD_LISTEN", "127.0.0.1:0")
        .env("PUSHD_DATA_DIR", &data)
        .env("PUSHD_API_KEY", API_KEY)
        .env("PUSHD_SDK_KEY", SDK_KEY)
        .env("PUSHD_SHUTDOWN_TIMEOUT_SECS", "3")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pushd starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("pushd printed its address").unwrap();
        if let Some(addr) = line.strip_prefix("pushd listening on ") {
            break addr.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let (line_tx, said) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let client = reqwest::Client::new();
    let answer = client
        .put(format!("{base}/v1/customers/kept"))
        .bearer_auth(API_KEY)
        .json(&json!({"attributes": {"plan": "pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let strace = Strace::attach(
        child.id(),
        &[
            "-e",
            "trace=fsync,fdatasync",
            "-e",
            "inject=fsync,fdatasync:delay_enter=100000000",
        ],
    );

    let terminated = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    // Bounded by the fault's own effect (100 s), not by the timeout. The
    // thread strace holds in its sync finishes exiting once strace lets go.
    let limit = Duration::from_secs(60);
    let words = loop {
        let left = limit.checked_sub(terminated.elapsed()).unwrap_or_default();
        let line = said
            .recv_timeout(left)
            .expect("SIGTERM did not end the daemon while its disk hung");
        if line.starts_with("pushd: ") {
            break line;
        }
    };
    assert!(
        words.contains("not written within shutdown_timeout_secs")
            && words.contains("the next start replays it"),
        "{words}"
    );
    drop(strace);
    assert_eq!(child.wait().unwrap().code(), Some(1));

    let d = Daemon::start(&data, &[]);
    assert_eq!(d.call("GET", "/v1/customers/kept", None).await.0, 200);
}

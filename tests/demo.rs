//! `pushd demo` end to end: the daemon, the fake providers and the fleet in
//! one command; the overview it prints agrees with the API's metrics.

use std::process::Command;

#[test]
fn demo_sends_to_the_fleet_and_shows_the_overview() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_pushd"))
        .args([
            "demo",
            "--customers",
            "150",
            "--watch-seconds",
            "3",
            "--exit",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("demo"))
        .env_remove("PUSHD_LISTEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("150 deliveries accepted"), "{stdout}");
    assert!(
        stdout.contains(&format!("dashboard: http://127.0.0.1:{port}/")),
        "{stdout}"
    );
    let people = stdout
        .lines()
        .rfind(|l| l.starts_with("people"))
        .expect("overview table");
    let counts: Vec<i64> = people
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    let (sends, sent, delivered) = (counts[0], counts[1], counts[2]);
    assert_eq!(sends, 150);
    assert!(sent > 100 && sent <= sends, "{people}");
    assert!(
        delivered > 0 && delivered <= sent,
        "reports arrived: {people}"
    );
}

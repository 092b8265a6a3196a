//! `pushd demo` end to end: the daemon, the fake providers and the fleet in
//! one command; the overview it prints agrees with the API's metrics, its
//! live table redraws cleanly in a terminal, and it wipes only its own data
//! directory.

use std::path::Path;
use std::process::{Command, Output};

/// `pushd demo` on 150 customers, watching at most `watch` seconds, with
/// `--exit`, on a port the system picks. Simulated time runs at 7,200×
/// (default 1,800×), so those seconds cover hours of the fleet's reports:
/// its purchases come up to an hour and a half after a push is shown, and
/// at the default a 3 s watch saw 2 to 4 of them, and once none.
fn demo_args(data_dir: &Path, watch: &str) -> Vec<String> {
    [
        "demo",
        "--customers",
        "150",
        "--time-scale",
        "7200",
        "--watch-seconds",
        watch,
        "--exit",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ]
    .into_iter()
    .map(String::from)
    .chain([data_dir.display().to_string()])
    .collect()
}

fn demo(data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pushd"))
        .args(demo_args(data_dir, "3"))
        .env_remove("PUSHD_LISTEN")
        .output()
        .unwrap()
}

#[test]
fn demo_sends_to_the_fleet_and_shows_the_overview() {
    let dir = tempfile::tempdir().unwrap();
    let out = demo(&dir.path().join("demo"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pushd demo: daemon at http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("150 deliveries accepted"), "{stdout}");
    assert!(
        stdout.contains("simulated time:"),
        "time is explained: {stdout}"
    );
    assert!(stdout.contains("simulated clock:"), "{stdout}");
    assert!(
        !stdout.contains("dashboard: http"),
        "--exit prints no URL that is already dead: {stdout}"
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
    let (sends, sent, delivered, converted) = (counts[0], counts[1], counts[2], counts[4]);
    assert_eq!(sends, 150);
    assert!(sent > 100 && sent <= sends, "{people}");
    assert!(
        delivered > 0 && delivered <= sent,
        "reports arrived: {people}"
    );
    // The fleet's purchases go with the SDK key and each person's identity
    // proof (a data directory of this release requires it).
    assert!(converted > 0, "purchases converted: {people}");
    assert!(
        stdout.contains("delivered of sent, all devices / opted-in devices: iOS"),
        "the opt-in-aware rates: {stdout}"
    );
    // A silent push to the second app, and development builds on the sandbox.
    let silent = number_after(
        &stdout,
        "silent push shop-cart-sync (app shop, background): ",
    );
    assert!(silent > 0, "{stdout}");
    let apps = stdout
        .lines()
        .find(|l| l.starts_with("app default: "))
        .expect("the apps line");
    let on_sandbox = number_after(apps, "fake APNs (");
    assert!(on_sandbox > 0, "pushes reached the sandbox: {apps}");
    let shop = number_after(apps, "app shop: ") + number_after(apps, " by APNs, ");
    assert!(shop > 0, "the shop's own fakes took its pushes: {apps}");
}

/// The whole number right after the first `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> i64 {
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} in {text}"))
        + prefix.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a number after {prefix:?} in {text}"))
}

#[test]
fn the_live_table_redraws_in_place_in_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("typescript");
    let command: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_pushd").to_string())
        .chain(demo_args(&dir.path().join("demo"), "4"))
        .collect();
    // util-linux `script` runs the demo on a pseudo-terminal and keeps what
    // it wrote there.
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &command.join(" ")])
        .arg(&transcript)
        .env_remove("PUSHD_LISTEN")
        .env("COLUMNS", "200")
        .env("LINES", "60")
        .output()
        .unwrap();
    let bytes = std::fs::read(&transcript).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&bytes));
    let mut terminal = vt100::Parser::new(200, 200, 0);
    terminal.process(&bytes);
    let rows: Vec<String> = terminal
        .screen()
        .rows(0, 200)
        .map(|r| r.trim_end().to_string())
        .collect();
    let fleet: Vec<&String> = rows.iter().filter(|r| r.starts_with("fleet:")).collect();
    assert_eq!(fleet.len(), 1, "one table, redrawn in place: {rows:#?}");
    let words: Vec<&str> = fleet[0].split(' ').collect();
    assert_eq!(
        words[words.len() - 3..],
        ["still", "to", "come"],
        "nothing left of a longer line: {fleet:?}"
    );
    let clock: Vec<&String> = rows
        .iter()
        .filter(|r| r.starts_with("simulated clock:"))
        .collect();
    assert_eq!(clock.len(), 1, "{rows:#?}");
    assert!(
        clock[0].ends_with("after the send") || clock[0].ends_with("caught up with real time"),
        "{clock:?}"
    );
    let rates = rows
        .iter()
        .find(|r| r.trim_start().starts_with("sending"))
        .expect("the sending bar");
    assert!(rates.ends_with("/s"), "{rates}");
    let rate = rates.rsplit(' ').next().unwrap().trim_end_matches("/s");
    assert!(
        rate.chars().all(|c| c.is_ascii_digit() || c == ','),
        "a whole rate: {rates}"
    );
}

#[test]
fn the_demo_wipes_only_a_directory_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("notes.txt"), "keep me").unwrap();
    let out = demo(&precious);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refusing to wipe"), "{stderr}");
    assert!(precious.join("notes.txt").exists(), "nothing was removed");
}

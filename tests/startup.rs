//! Start-up as a user meets it: the real binary's messages when the listen
//! address is taken or invalid, when the keys clash, where the keys are
//! kept and `pushd keys`, and plain logs when stderr is not a terminal.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::json;
use support::Daemon;

/// `pushd <args>` in `dir` with only these variables; waits for it to end.
fn pushd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushd"));
    cmd.args(args).current_dir(dir).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("pushd runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A key on the command line is readable by every user (`ps`): refused,
/// naming the variable to use instead, before anything is created.
#[test]
fn keys_given_as_flags_are_refused_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let key = "k3y-that-would-show-in-ps-0123456789";
    for (args, var) in [
        (vec!["serve", "--api-key", key], "PUSHD_API_KEY"),
        (vec!["serve", &format!("--sdk-key={key}")], "PUSHD_SDK_KEY"),
        (vec!["keys", "--api-key", key], "PUSHD_API_KEY"),
    ] {
        let out = pushd(dir.path(), &args, &[("PUSHD_LISTEN", "127.0.0.1:0")]);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(var) && err.contains("ps"), "{args:?}: {err}");
        assert!(!err.contains(key), "the refusal repeats the key: {err}");
        assert!(
            !dir.path().join("data").exists(),
            "{args:?} made a data dir"
        );
    }
    // The same key in the environment is taken.
    let env = [
        ("PUSHD_API_KEY", key),
        ("PUSHD_SDK_KEY", "another-key-0123456789"),
    ];
    let out = pushd(dir.path(), &["keys"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_taken_port_fails_fast_naming_the_address_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let out = pushd(
        dir.path(),
        &["serve"],
        &[
            ("PUSHD_LISTEN", &addr),
            ("PUSHD_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(
        err.contains("--listen") && err.contains("PUSHD_LISTEN"),
        "{err}"
    );
    assert!(!data.exists(), "nothing was created before the bind failed");
}

#[test]
fn a_bad_listen_value_names_the_setting_and_shows_a_valid_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = pushd(dir.path(), &["serve", "--listen", "localhost:80x0"], &[]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("\"localhost:80x0\" is not valid"), "{err}");
    assert!(
        err.contains("PUSHD_LISTEN") && err.contains("127.0.0.1:8080"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists());
}

/// A cluster node needs the same keys as every other node: without them
/// configured it is refused, naming both settings, before it makes keys of
/// its own (no keys file is written) or reaches NATS.
#[test]
fn a_cluster_node_without_configured_keys_is_refused_and_writes_no_keys() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-cluster-secret-of-at-least-32-bytes-0123456789";
    for only in [None, Some(("PUSHD_API_KEY", "an-api-key-0123456789"))] {
        let mut env = vec![
            ("PUSHD_CLUSTER", "nats://127.0.0.1:1"),
            ("PUSHD_CLUSTER_SECRET", secret),
            ("PUSHD_DATA_DIR", "data"),
        ];
        env.extend(only);
        let out = pushd(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &env);
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("a cluster node needs api_key and sdk_key set"),
            "{err}"
        );
        assert!(
            err.contains("PUSHD_API_KEY") && err.contains("PUSHD_SDK_KEY"),
            "{err}"
        );
        assert!(!dir.path().join("data/keys.toml").exists(), "{err}");
    }
}

#[test]
fn equal_api_and_sdk_keys_are_refused_naming_both_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = pushd(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("PUSHD_API_KEY", "the-same-key-0123456789"),
            ("PUSHD_SDK_KEY", "the-same-key-0123456789"),
        ],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("api_key and sdk_key are the same"), "{err}");
    assert!(
        err.contains("PUSHD_API_KEY") && err.contains("PUSHD_SDK_KEY"),
        "{err}"
    );
}

#[test]
fn configured_keys_shorter_than_16_characters_are_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let long = "a-long-enough-key-0123";
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (short, setting, variable) in [
        ("PUSHD_API_KEY", "api_key", "PUSHD_API_KEY"),
        ("PUSHD_SDK_KEY", "sdk_key", "PUSHD_SDK_KEY"),
    ] {
        let other = if short == "PUSHD_API_KEY" {
            "PUSHD_SDK_KEY"
        } else {
            "PUSHD_API_KEY"
        };
        // 15 characters, even if more bytes.
        let env = [
            (short, "fifteen-chars-é"),
            (other, long),
            ("PUSHD_DATA_DIR", data.to_str().unwrap()),
        ];
        // A taken port: were the key taken, serve would stop there, not run.
        for args in [&["serve", "--listen", &addr][..], &["keys"]] {
            let out = pushd(dir.path(), args, &env);
            let err = stderr(&out);
            assert!(!out.status.success(), "{args:?} {short}: {err}");
            assert!(
                err.contains(&format!(
                    "{setting} ({variable}) must be at least 16 characters, not 15"
                )),
                "{err}"
            );
        }
    }
    assert!(!data.exists(), "a refused start creates nothing");
}

#[test]
fn pushd_keys_quotes_the_keys_so_eval_only_assigns() {
    let dir = tempfile::tempdir().unwrap();
    let api = "it's-$(touch api-ran)-`touch api-ticks`";
    let sdk = "'; touch sdk-ran; echo '\"$HOME\"";
    let script = format!(
        "eval \"$({} keys)\" && printf '%s\\n%s' \"$PUSHD_API_KEY\" \"$PUSHD_SDK_KEY\"",
        env!("CARGO_BIN_EXE_pushd")
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env_clear()
        .env("PUSHD_DATA_DIR", dir.path().join("data"))
        .env("PUSHD_API_KEY", api)
        .env("PUSHD_SDK_KEY", sdk)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{api}\n{sdk}")
    );
    let made: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(made.is_empty(), "eval ran something: {made:?}");
}

#[tokio::test]
async fn keys_are_kept_in_a_private_file_and_pushd_keys_prints_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let none = pushd(
        dir.path(),
        &["keys"],
        &[("PUSHD_DATA_DIR", data.to_str().unwrap())],
    );
    assert!(!none.status.success());
    assert!(stderr(&none).contains("no keys yet"), "{}", stderr(&none));

    let d = Daemon::launch(&data, &[]);
    let file = data.join("keys.toml");
    let banner = d.banner.join("\n");
    assert!(
        banner.contains(&format!("keys: kept in {}", file.display())),
        "{banner}"
    );
    assert!(banner.contains("pushd keys"), "{banner}");
    assert!(
        banner.contains(&format!("dashboard: {}/", d.base)),
        "{banner}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner reads the keys");

    // `eval "$(pushd keys)"` exports keys that work against the daemon.
    let script = format!(
        "eval \"$({} keys)\" && printf '%s %s' \"$PUSHD_API_KEY\" \"$PUSHD_SDK_KEY\"",
        env!("CARGO_BIN_EXE_pushd")
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .env_clear()
        .env("PUSHD_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    let (api, sdk) = printed.split_once(' ').unwrap();
    assert!(
        banner.contains(&format!("generated api_key: {api}")),
        "{banner}"
    );
    let (s, _) = d
        .call_as(api, "PUT", "/v1/customers/c1", Some(json!({})))
        .await;
    assert_eq!(s, 200, "the printed API key works");
    let (s, _) = d
        .call_as(sdk, "PUT", "/v1/customers/c1", Some(json!({})))
        .await;
    assert_eq!(s, 401, "the printed SDK key is the SDK key");
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushd"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_clear()
        .env("RUST_LOG", "info")
        .env("PUSHD_API_KEY", support::API_KEY)
        .env("PUSHD_SDK_KEY", support::SDK_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().starts_with("pushd listening on") {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("recovered"), "{log}");
    assert!(!log.contains('\u{1b}'), "no escape codes: {log:?}");
}

/// Every directory and file under `dir` (itself included) with its mode.
fn modes(dir: &Path) -> Vec<(std::path::PathBuf, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        }
        out.push((path, meta.is_dir(), meta.permissions().mode() & 0o777));
    }
    out
}

/// `pushd` started from a shell whose umask is 022.
fn umask_022(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("pushd-umask-022");
    let body = format!(
        "#!/bin/sh\numask 022\nexec {} \"$@\"\n",
        env!("CARGO_BIN_EXE_pushd")
    );
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn the_data_directory_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = umask_022(dir.path());

    // A new data directory: generated keys, the snapshot, journal, events.
    let data = dir.path().join("data");
    let d = Daemon::launch_bin(&bin, &data, &[]);
    let api = d
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("generated api_key: "));
    let api = api
        .expect("keys generated")
        .split_whitespace()
        .next()
        .unwrap();
    let (s, _) = d
        .call_as(api, "PUT", "/v1/customers/c1", Some(json!({})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(d.terminate(), Some(0));
    let all = modes(&data);
    assert!(all.len() > 5, "{all:?}");
    for (path, is_dir, mode) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:o}", path.display());
    }

    // An existing one with looser modes is tightened at start.
    let old = dir.path().join("old");
    std::fs::create_dir_all(old.join("journal")).unwrap();
    std::fs::write(old.join("journal/stray"), "x").unwrap();
    for (path, mode) in [(&old, 0o755), (&old.join("journal"), 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let stray = old.join("journal/stray");
    std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = Daemon::start(&old, &[]);
    assert_eq!(d.terminate(), Some(0));
    for (path, is_dir, mode) in modes(&old) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
}

/// A second daemon on a data directory another one serves stops at once,
/// saying the directory is in use and what to do, and the first one goes
/// on serving.
#[tokio::test]
async fn a_second_daemon_on_the_same_data_directory_says_it_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Daemon::start(&data, &[]);
    let out = pushd(
        dir.path(),
        &["serve"],
        &[
            ("PUSHD_LISTEN", "127.0.0.1:0"),
            ("PUSHD_DATA_DIR", data.to_str().unwrap()),
            ("PUSHD_API_KEY", "a-second-api-key-0123456789"),
            ("PUSHD_SDK_KEY", "a-second-sdk-key-0123456789"),
        ],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("in use by another process"), "{err}");
    assert!(
        err.contains("another pushd") && err.contains("--data-dir"),
        "{err}"
    );
    assert!(!err.contains("WouldBlock"), "{err}");
    let (status, _) = first.call("GET", "/v1/messages", None).await;
    assert_eq!(status, 200);
}

/// A data directory the user running pushd may not read or write is named,
/// with the fix, whether or not the keys come from the environment (they
/// do here, so nothing is to be read from `keys.toml`).
#[test]
fn a_data_directory_pushd_may_not_use_names_its_path_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushd"));
    // As root, permissions stop nothing: run as another user (the binary is
    // copied where that user may run it).
    if unsafe { libc::geteuid() } == 0 {
        let bin = dir.path().join("pushd");
        std::fs::copy(env!("CARGO_BIN_EXE_pushd"), &bin).unwrap();
        cmd = Command::new(&bin);
        cmd.uid(65534).gid(65534);
    }
    let out = cmd
        .args(["serve", "--data-dir", data.to_str().unwrap()])
        .current_dir(dir.path())
        .env_clear()
        .env("PUSHD_LISTEN", "127.0.0.1:0")
        .env("PUSHD_API_KEY", "an-api-key-from-the-environment")
        .env("PUSHD_SDK_KEY", "an-sdk-key-from-the-environment")
        .output()
        .expect("pushd runs");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(data.to_str().unwrap()), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("user pushd runs as"), "{err}");
    assert!(!err.contains("keys.toml"), "{err}");
}

/// The README's walkthrough runs against `serve --simulated-providers`:
/// pushes reach fake APNs and FCM over the wire and come back `sent`, a
/// token starting with `dead` bounces, and reports move the delivery on as
/// in production.
#[tokio::test]
async fn simulated_providers_send_bounce_a_dead_token_and_take_reports() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_args(&dir.path().join("data"), &["--simulated-providers"], &[]);
    let live = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let dead = format!("dead{}", "0".repeat(60));
    d.customer(
        "c1",
        json!({"first_name": "Ada"}),
        &[(live, "ios"), (&dead, "ios"), ("fcm-token-1", "android")],
    )
    .await;
    d.message("welcome", "onboarding", "Hi {{customer.first_name}}")
        .await;
    let id = d.send("welcome", &["c1"]).await.remove(0);
    let settled = |v: &serde_json::Value| {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|dev| dev["status"] != "attempted")
    };
    let v = d.delivery_until(&id, settled).await;
    let status_of = |token: &str| {
        let devices = v["devices"].as_array().unwrap();
        let dev = devices.iter().find(|dev| dev["token"] == token).unwrap();
        dev["status"].as_str().unwrap().to_string()
    };
    assert_eq!(status_of(live), "sent", "{v}");
    assert_eq!(status_of("fcm-token-1"), "sent", "{v}");
    assert_eq!(status_of(&dead), "bounced", "{v}");
    assert_eq!(v["status"], "sent", "{v}");
    let report = json!({"delivery_id": id, "event": "opened", "device_id": live});
    let (status, body) = d
        .call_as(support::SDK_KEY, "POST", "/push/events", Some(report))
        .await;
    assert_eq!(status, 200, "{body}");
    let v = d.delivery_until(&id, |v| v["status"] == "opened").await;
    assert_eq!(v["status"], "opened", "{v}");
}

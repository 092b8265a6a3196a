//! Black-box test support: the real `pushd` binary on a free loopback port,
//! on its own temporary data dir, driven over HTTP.
#![allow(dead_code, reason = "each test binary uses part of the support module")]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod cluster;

pub const API_KEY: &str = "test-api-key-0123456789";
pub const SDK_KEY: &str = "test-sdk-key-0123456789";

/// The `Pushd-Customer-Auth` header an app signed in as `customer` sends,
/// as the test backend (holding [`API_KEY`]) computes it.
pub fn customer_auth(customer: &str) -> (&'static str, String) {
    let secret = pushd::keys::identity_secret(API_KEY);
    (
        "Pushd-Customer-Auth",
        pushd::keys::identity_proof(&secret, customer),
    )
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Child,
    pub base: String,
    /// What it printed before its address (generated keys, ...).
    pub banner: Vec<String>,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
}

impl Daemon {
    /// Starts `pushd serve` on `data_dir` with the test keys and extra
    /// environment variables.
    pub fn start(data_dir: &Path, env: &[(&str, String)]) -> Daemon {
        let keys = [
            ("PUSHD_API_KEY", API_KEY.to_string()),
            ("PUSHD_SDK_KEY", SDK_KEY.to_string()),
        ];
        Daemon::launch(data_dir, &[&keys[..], env].concat())
    }

    /// [`Daemon::start`] with `args` after `serve`.
    pub fn start_with_args(data_dir: &Path, args: &[&str], env: &[(&str, String)]) -> Daemon {
        let keys = [
            ("PUSHD_API_KEY", API_KEY.to_string()),
            ("PUSHD_SDK_KEY", SDK_KEY.to_string()),
        ];
        let bin = Path::new(env!("CARGO_BIN_EXE_pushd"));
        let mut cmd = Daemon::command(bin, data_dir, &[&keys[..], env].concat());
        cmd.args(args);
        Daemon::spawn(cmd, data_dir)
    }

    /// Starts `pushd serve` on `data_dir` with only these extra variables.
    pub fn launch(data_dir: &Path, env: &[(&str, String)]) -> Daemon {
        Daemon::launch_bin(Path::new(env!("CARGO_BIN_EXE_pushd")), data_dir, env)
    }

    /// [`Daemon::start`] under an open files limit of `soft` (the hard
    /// limit `hard`), set in the child before `pushd` runs.
    pub fn start_with_open_files(
        data_dir: &Path,
        env: &[(&str, String)],
        soft: u64,
        hard: u64,
    ) -> Daemon {
        use std::os::unix::process::CommandExt;
        let keys = [
            ("PUSHD_API_KEY", API_KEY.to_string()),
            ("PUSHD_SDK_KEY", SDK_KEY.to_string()),
        ];
        let bin = Path::new(env!("CARGO_BIN_EXE_pushd"));
        let mut cmd = Daemon::command(bin, data_dir, &[&keys[..], env].concat());
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit(2) is async-signal-safe and only reads `limit`.
        unsafe {
            cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        Daemon::spawn(cmd, data_dir)
    }

    /// [`Daemon::launch`] with another `pushd` binary (an older release).
    pub fn launch_bin(bin: &Path, data_dir: &Path, env: &[(&str, String)]) -> Daemon {
        Daemon::spawn(Daemon::command(bin, data_dir, env), data_dir)
    }

    /// `bin serve` on `data_dir` with the tests' settings and `env`.
    fn command(bin: &Path, data_dir: &Path, env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env_clear()
            .env("PUSHD_LISTEN", "127.0.0.1:0")
            .env("PUSHD_DATA_DIR", data_dir)
            .env("PUSHD_BACKOFF_BASE_MS", "5")
            .env("PUSHD_BACKOFF_MAX_MS", "50")
            .env("RUST_LOG", "warn")
            // The webhook receivers of the tests are on loopback; a test
            // of the refusal sets it back to false.
            .env("PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `cmd` and waits for the address it prints.
    fn spawn(mut cmd: Command, data_dir: &Path) -> Daemon {
        let mut child = cmd.spawn().expect("pushd starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let base = loop {
            let line = lines
                .next()
                .expect("pushd printed its address")
                .expect("stdout line");
            if let Some(addr) = line.strip_prefix("pushd listening on ") {
                break addr.trim().to_string();
            }
            banner.push(line);
        };
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Daemon {
            child,
            base,
            banner,
            data_dir: data_dir.to_path_buf(),
            client: reqwest::Client::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().ok()?.code()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the API key and a JSON body; answers status and body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(API_KEY, method, path, body).await
    }

    pub async fn call_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_with(key, &[], method, path, body).await
    }

    /// [`Daemon::call_as`] with extra request headers.
    pub async fn call_with(
        &self,
        key: &str,
        headers: &[(&str, &str)],
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, self.url(path)).bearer_auth(key);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, v) = self.call(method, path, Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    pub async fn customer(&self, id: &str, attrs: Value, devices: &[(&str, &str)]) {
        self.ok(
            "PUT",
            &format!("/v1/customers/{id}"),
            json!({"attributes": attrs}),
        )
        .await;
        for (i, (token, platform)) in devices.iter().enumerate() {
            let device = json!({"device": {"id": token, "platform": platform, "last_used": 1_764_100_000 + i as i64}});
            self.ok("PUT", &format!("/v1/customers/{id}/devices"), device)
                .await;
        }
    }

    pub async fn message(&self, id: &str, campaign: &str, title: &str) {
        let body = json!({"name": id, "campaign_id": campaign, "title": title,
            "body": "Body for {{customer.id}}", "deep_link": "myapp://home",
            "audience": "all_devices",
            "conversion": {"event": "purchase", "window_seconds": 86400}});
        self.ok("PUT", &format!("/v1/messages/{id}"), body).await;
    }

    /// Sends and answers the delivery ids in order.
    pub async fn send(&self, message: &str, customers: &[&str]) -> Vec<String> {
        let v = self
            .ok(
                "POST",
                "/v1/send/push",
                json!({"message_id": message, "customer_ids": customers}),
            )
            .await;
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["delivery_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// A page of the event feed (`GET /v1/events`) from cursor `after`
    /// (empty: the oldest event): its events and the cursor to read on from.
    pub async fn feed_page(&self, after: &str, limit: usize) -> (Vec<Value>, String) {
        let after = match after {
            "" => String::new(),
            cursor => format!("&after={cursor}"),
        };
        let resp = self
            .client
            .get(self.url(&format!("/v1/events?limit={limit}{after}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let next = resp.headers()["pushd-next-cursor"]
            .to_str()
            .expect("a cursor")
            .to_string();
        let text = resp.text().await.unwrap_or_default();
        let events = text.lines().map(|l| serde_json::from_str(l).unwrap());
        (events.collect(), next)
    }

    /// The text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        let resp = self.client.get(self.url("/metrics")).send().await;
        resp.expect("request").text().await.expect("a body")
    }

    /// Polls a delivery until `done` holds (bounded: 20 s).
    pub async fn delivery_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, v) = self
                .call("GET", &format!("/v1/deliveries/{id}"), None)
                .await;
            assert_eq!(status, 200, "{v}");
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "delivery {id} stuck: {v}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls a message's metrics until `done` holds (bounded: 60 s).
    pub async fn metrics_until(&self, message: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        let path = format!("/v1/messages/{message}/metrics");
        loop {
            let (status, m) = self.call("GET", &path, None).await;
            assert_eq!(status, 200, "{m}");
            if done(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "message {message} stuck: {m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until the delivery leaves `attempted`.
    pub async fn settled(&self, id: &str) -> Value {
        self.delivery_until(id, |v| v["status"] != "attempted")
            .await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends signal `sig` (`-KILL`, `-STOP`, ...) to process `pid`, by `kill`:
/// a daemon shared with other tasks, or one a tracer holds, is signalled
/// without being reaped.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// Whether `strace` can be run; says so when not (a test that needs it is
/// then skipped; CI installs it).
pub fn strace_installed() -> bool {
    let found = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok();
    if !found {
        eprintln!("skipped: strace is not installed");
    }
    found
}

/// `strace` attached to every thread of process `pid` with `args` (which
/// syscalls to trace and what to inject), once it says it is attached.
/// Killed when dropped: the faults it injects end with it.
pub struct Strace(Child);

impl Strace {
    /// Attaches strace to `pid` and its threads with `args`; what it traces
    /// is not kept.
    pub fn attach(pid: u32, args: &[&str]) -> Strace {
        Strace::spawn(pid, args, true, true).0
    }

    /// Attaches to the daemon's thread named `thread` alone (say
    /// `pushd-journal`), as [`Strace::attach_watching`] does.
    pub fn attach_thread(
        pid: u32,
        thread: &str,
        args: &[&str],
    ) -> (Strace, std::sync::mpsc::Receiver<String>) {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let tid = tasks
            .map(|t| t.unwrap().path())
            .find(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == thread))
            .unwrap_or_else(|| panic!("no thread {thread} in {pid}"));
        let tid: u32 = tid.file_name().unwrap().to_str().unwrap().parse().unwrap();
        Strace::spawn(tid, args, false, false)
    }

    /// Attaches as [`Strace::attach`] does; what strace says (every traced
    /// call) comes on the receiver as it is written, a call's entry before
    /// its end (a delayed call's entry shows while it is held: see
    /// [`entered`]).
    pub fn attach_watching(pid: u32, args: &[&str]) -> (Strace, std::sync::mpsc::Receiver<String>) {
        Strace::spawn(pid, args, false, true)
    }

    fn spawn(
        pid: u32,
        args: &[&str],
        quiet: bool,
        threads: bool,
    ) -> (Strace, std::sync::mpsc::Receiver<String>) {
        let mut command = Command::new("strace");
        if threads {
            command.arg("-f");
        }
        command.args(args);
        if quiet {
            command.args(["-o", "/dev/null"]);
        }
        let mut child = command
            .args(["-p", &pid.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace runs");
        let mut said = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        said.read_line(&mut first).expect("strace says it attached");
        assert!(first.contains("attached"), "strace: {first}");
        // Keep reading what it says: a closed pipe would end it (SIGPIPE).
        let (sends, watched) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = said.read(&mut chunk) {
                let _ = sends.send(String::from_utf8_lossy(&chunk[..n]).into_owned());
            }
        });
        (Strace(child), watched)
    }
}

/// Waits (off the runtime) until what `traced` says shows `call` entered,
/// say `fdatasync(`; answers the receiver to wait on again.
pub async fn entered(
    traced: std::sync::mpsc::Receiver<String>,
    call: &'static str,
) -> std::sync::mpsc::Receiver<String> {
    let wait = tokio::task::spawn_blocking(move || {
        let mut said = String::new();
        for chunk in &traced {
            said.push_str(&chunk);
            if said.contains(call) {
                return traced;
            }
        }
        panic!("strace ended before {call}: {said}");
    });
    wait.await.unwrap()
}

impl Drop for Strace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The seed of a randomised test: `PUSHD_TEST_SEED` when set (to replay a
/// failed run), else a fresh one. Printed either way, so a failure's output
/// names the seed that replays it.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("PUSHD_TEST_SEED")
        .map(|s| s.parse().expect("PUSHD_TEST_SEED is a number"))
        .unwrap_or_else(|_| rand::random::<u32>().into());
    eprintln!("{test} seed {seed} (PUSHD_TEST_SEED={seed} replays it)");
    seed
}

/// Fake APNs and FCM on loopback, with credentials in `dir`.
pub async fn fakes(dir: &Path, mix: pushd::sim::FaultMix) -> pushd::sim::FakeProviders {
    pushd::sim::FakeProviders::start(dir, mix).await.unwrap()
}

/// The fakes' environment with fast webhook posts and retries, so a
/// receiver's failures are seen in milliseconds.
pub fn fast_webhook_env(fakes: &pushd::sim::FakeProviders) -> Vec<(&'static str, String)> {
    let mut env = fakes.env();
    env.extend([
        ("PUSHD_WEBHOOK_TIMEOUT_MS", "300".to_string()),
        ("PUSHD_WEBHOOK_BACKOFF_BASE_MS", "10".to_string()),
        ("PUSHD_WEBHOOK_BACKOFF_MAX_MS", "40".to_string()),
    ]);
    env
}

/// An APNs-shaped token (64 hex digits) for customer number `i`.
pub fn ios_token(i: usize) -> String {
    format!("{i:064x}")
}

/// An FCM-shaped token for customer number `i`.
pub fn android_token(i: usize) -> String {
    format!("fcm-token-{i:08}")
}

/// The counters of the metrics contract, recounted from delivery details (each
/// delivery by the furthest status it reached).
pub fn recount(details: &[Value]) -> std::collections::HashMap<&'static str, i64> {
    let mut c = std::collections::HashMap::new();
    for d in details {
        let status = d["status"].as_str().unwrap();
        let devices = d["devices"].as_array().unwrap();
        let any = |k: &str| devices.iter().any(|x| !x[k].is_null()) as i64;
        let reached = devices
            .iter()
            .any(|x| matches!(x["status"].as_str(), Some("sent" | "delivered" | "opened")));
        let counts = [
            ("sends", 1),
            ("sent", reached as i64),
            ("delivered", any("delivered_at")),
            ("opened", any("opened_at")),
            ("converted", !d["converted_at"].is_null() as i64),
            (
                "suppressed",
                (d["failure_reason"] == "devices_suppressed") as i64,
            ),
        ];
        for (k, n) in counts {
            *c.entry(k).or_default() += n;
        }
        for s in ["attempted", "failed", "undeliverable", "bounced"] {
            *c.entry(s).or_default() += (status == s) as i64;
        }
    }
    c
}

//! The real `pushd` binary as a child process, a client for its API, and
//! the fake APNs/FCM it is pointed at.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pushd::sim::{Fake, FakeProviders, ReceivedPush};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The management key every daemon of the harness uses.
pub const API_KEY: &str = "load-api-key-0123456789";
/// The SDK key every daemon of the harness uses.
pub const SDK_KEY: &str = "load-sdk-key-0123456789";
/// How long a daemon may take to print its address.
const START_LIMIT: Duration = Duration::from_secs(120);
/// Interval between polls of an endpoint.
const POLL: Duration = Duration::from_millis(20);

/// The harness's error type.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A running `pushd serve`; SIGKILLed when dropped.
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Its process id.
    pub pid: u32,
}

impl Daemon {
    /// Starts the release binary (or the one `PUSHD_LOAD_BIN` names, to
    /// measure another build with the same harness) on `data_dir` with extra
    /// environment, and waits for its "pushd listening on" line. The
    /// harness's `PUSHD_*` variables and `_RJEM_MALLOC_CONF` (jemalloc's
    /// options) pass through, for tuning experiments; the harness's own
    /// settings win.
    pub async fn start(data_dir: &Path, env: &[(&str, String)]) -> Res<Daemon> {
        Daemon::start_in(data_dir, env, None).await
    }

    /// [`Daemon::start`], the process started inside the cgroup whose
    /// `cgroup.procs` file is `group`, if given: it sees the group's CPU
    /// quota from its first instruction and sizes its thread pools by it, as
    /// in a container (moved in later, it would have sized them by the
    /// machine). A shell puts itself in the group and `exec`s the daemon:
    /// std's only hook between fork and exec (`pre_exec`) is `unsafe` and
    /// may not allocate, which writing the file does.
    pub async fn start_in(
        data_dir: &Path,
        env: &[(&str, String)],
        group: Option<&Path>,
    ) -> Res<Daemon> {
        let bin = std::env::var_os("PUSHD_LOAD_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_pushd").into());
        let mut cmd = match group {
            Some(procs) => {
                let mut sh = Command::new("/bin/sh");
                sh.arg("-c")
                    .arg(r#"echo $$ > "$1" && shift && exec "$@""#)
                    .arg("sh")
                    .arg(procs)
                    .arg(bin);
                sh
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| passes_through(k)))
            .env("PUSHD_LISTEN", "127.0.0.1:0")
            .env("PUSHD_DATA_DIR", data_dir)
            .env("PUSHD_API_KEY", API_KEY)
            .env("PUSHD_SDK_KEY", SDK_KEY)
            .env("RUST_LOG", "warn")
            // `--webhook`'s receiver is on loopback.
            .env("PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child.id().ok_or("pushd has no pid")?;
        let stdout = child.stdout.take().ok_or("pushd has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(START_LIMIT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("pushd listening on ") {
                    return Ok(addr.trim().to_owned());
                }
            }
            Err::<String, Box<dyn std::error::Error + Send + Sync>>(
                "pushd exited before listening".into(),
            )
        })
        .await??;
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Daemon { child, base, pid })
    }

    /// Resident set size, from `/proc/<pid>/status` (VmRSS).
    pub fn rss_bytes(&self) -> Res<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or("no VmRSS")?;
        Ok(kib * 1024)
    }

    /// SIGKILL, as a crash, and reaps it.
    pub async fn kill(mut self) -> Res<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Whether the daemon inherits the harness's variable `name`.
fn passes_through(name: &str) -> bool {
    (name.starts_with("PUSHD_") && name != "PUSHD_LOAD_BIN") || name == "_RJEM_MALLOC_CONF"
}

/// A client for one daemon's API (HTTP/1.1, keep-alive).
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    /// A client for the daemon at `base`.
    pub fn new(base: &str) -> Res<Api> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Api {
            client,
            base: base.to_owned(),
        })
    }

    /// A request with `key` and an optional JSON body: status and body.
    pub async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Res<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// `POST` of a body already serialized, answering the status and, only
    /// when it is not 200, the body (the load phases send many small calls:
    /// the harness builds and reads no more than it must, so its CPU goes
    /// to the wire, not to JSON). An SDK call carries its customer's
    /// `Pushd-Customer-Auth` proof, as an app does.
    pub async fn post(
        &self,
        key: &str,
        path: &str,
        body: String,
        proof: Option<&str>,
    ) -> Res<(u16, String)> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(proof) = proof {
            request = request.header(pushd::http::CUSTOMER_AUTH, proof);
        }
        let resp = request.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        match status {
            200 => Ok((status, String::new())),
            _ => Ok((status, String::from_utf8_lossy(&bytes).into_owned())),
        }
    }

    /// A management call that must answer 2xx; its body.
    pub async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Res<Value> {
        let (status, v) = self.call(API_KEY, method.clone(), path, body).await?;
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path}: {status} {v}").into());
        }
        Ok(v)
    }

    /// `GET /healthz`'s status.
    pub async fn health(&self) -> Res<u16> {
        let resp = self
            .client
            .get(format!("{}/healthz", self.base))
            .send()
            .await?;
        let status = resp.status().as_u16();
        resp.bytes().await?;
        Ok(status)
    }

    /// Polls `/healthz` until 200, for at most `limit`.
    pub async fn wait_healthy(&self, limit: Duration) -> Res<()> {
        let deadline = Instant::now() + limit;
        while !matches!(self.health().await, Ok(200)) {
            if Instant::now() > deadline {
                return Err("daemon never became healthy".into());
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Polls a message's metrics until `done` holds, for at most `limit`.
    pub async fn wait_metrics(
        &self,
        message: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Res<Value> {
        let deadline = Instant::now() + limit;
        let path = format!("/v1/messages/{message}/metrics");
        loop {
            let m = self.ok(reqwest::Method::GET, &path, None).await?;
            if done(&m) {
                return Ok(m);
            }
            if Instant::now() > deadline {
                return Err(format!("{message} did not settle in {limit:?}: {m}").into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A Prometheus sample's value (summed over labels) from `/metrics`.
    pub async fn metric(&self, name: &str) -> Res<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.split([' ', '{']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

/// The journal's group commits so far: syncs (one write and one fdatasync
/// each) and seconds spent on them; and the records drained into the sled
/// snapshot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Syncs {
    /// `pushd_journal_sync_seconds_count`.
    pub count: f64,
    /// `pushd_journal_sync_seconds_sum`.
    pub seconds: f64,
    /// `pushd_snapshot_records_total`.
    pub snapshot_records: f64,
}

impl Syncs {
    /// The daemon's counters now.
    pub async fn read(api: &Api) -> Res<Syncs> {
        Ok(Syncs {
            count: api.metric("pushd_journal_sync_seconds_count").await?,
            seconds: api.metric("pushd_journal_sync_seconds_sum").await?,
            snapshot_records: api.metric("pushd_snapshot_records_total").await?,
        })
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Syncs) -> Syncs {
        Syncs {
            count: self.count - earlier.count,
            seconds: self.seconds - earlier.seconds,
            snapshot_records: self.snapshot_records - earlier.snapshot_records,
        }
    }
}

/// One push a fake accepted, and when the harness saw it.
pub struct Arrival {
    /// `CIO-Delivery-ID`.
    pub delivery: String,
    /// The device token.
    pub token: String,
    /// When it arrived.
    pub at: Instant,
}

/// Records every push both fakes accept until stopped.
pub struct Collector {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Arrival>>,
}

impl Collector {
    /// Subscribes to both fakes.
    pub fn start(fakes: &FakeProviders) -> Collector {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(collect(
            fakes.apns.subscribe(),
            fakes.fcm.subscribe(),
            stopped,
        ));
        Collector { stop, task }
    }

    /// Stops and answers every arrival so far.
    pub async fn finish(self) -> Res<Vec<Arrival>> {
        let _ = self.stop.send(());
        Ok(self.task.await?)
    }
}

/// Drains both channels until `stopped`, then whatever is left.
async fn collect(
    mut apns: UnboundedReceiver<ReceivedPush>,
    mut fcm: UnboundedReceiver<ReceivedPush>,
    mut stopped: oneshot::Receiver<()>,
) -> Vec<Arrival> {
    let record = |p: ReceivedPush, out: &mut Vec<Arrival>| {
        out.push(Arrival {
            delivery: p.delivery_id.unwrap_or_default(),
            token: p.token,
            at: Instant::now(),
        })
    };
    let mut out = Vec::new();
    loop {
        tokio::select! {
            Some(p) = apns.recv() => record(p, &mut out),
            Some(p) = fcm.recv() => record(p, &mut out),
            _ = &mut stopped => break,
        }
    }
    while let Ok(p) = apns.try_recv() {
        record(p, &mut out);
    }
    while let Ok(p) = fcm.try_recv() {
        record(p, &mut out);
    }
    out
}

/// An APNs-shaped token (64 hex digits) for customer number `i`.
pub fn ios_token(i: usize) -> String {
    format!("{i:064x}")
}

/// An FCM-shaped token for customer number `i`.
pub fn android_token(i: usize) -> String {
    format!("fcm-token-{i:08}")
}

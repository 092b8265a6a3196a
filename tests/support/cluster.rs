//! A JetStream cluster of three `nats-server` processes on loopback, for
//! the cluster tests (`.ci/run` installs Debian's `nats-server`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One running nats-server; killed when dropped.
pub struct NatsServer {
    child: Child,
    /// Its client URL.
    pub url: String,
}

impl NatsServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cluster secret every test node shares (hex, as `openssl rand -hex
/// 32` makes one).
pub const SECRET: &str = "5f1c0e4a9b7d2c8e3f6a1b4d7c0e9f2a5b8c1d4e7f0a3b6c9d2e5f8a1b4c7d0e";

/// What a pushd node of the cluster of `servers` is given: the servers
/// and the cluster secret.
pub fn node_env(servers: &[NatsServer]) -> Vec<(&'static str, String)> {
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    vec![
        ("PUSHD_CLUSTER", urls.join(",")),
        ("PUSHD_CLUSTER_SECRET", SECRET.to_string()),
    ]
}

/// A loopback port the system has just handed out. nats-server must know
/// its route ports before it starts (a JetStream cluster needs configured
/// routes), so they are asked of the system here rather than guessed.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails the test unless `nats-server` is installed.
fn installed() {
    assert!(
        Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "nats-server is not installed: apt-get install nats-server (.ci/run does)"
    );
}

/// One nats-server with JetStream, alone, under `dir`.
pub fn single(dir: &Path) -> NatsServer {
    installed();
    let home = dir.join("nats");
    let conf = format!(
        "listen: 127.0.0.1:-1\nports_file_dir: \"{home}\"\njetstream {{ store_dir: \"{home}/js\" }}\n",
        home = home.display()
    );
    launch(&home, &conf)
}

/// Starts a nats-server in `home` with configuration `conf`, logging to
/// `home/nats.log`.
fn launch(home: &Path, conf: &str) -> NatsServer {
    std::fs::create_dir_all(home).unwrap();
    let path = home.join("nats.conf");
    std::fs::write(&path, conf).unwrap();
    let log = std::fs::File::create(home.join("nats.log")).unwrap();
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(&path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("nats-server starts");
    let url = client_url(home);
    NatsServer { child, url }
}

/// Starts three nats-servers forming one JetStream cluster under `dir`;
/// answers once each takes clients.
pub fn start(dir: &Path) -> Vec<NatsServer> {
    installed();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_urls: Vec<String> = routes
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect();
    (0..3)
        .map(|i| {
            let home = dir.join(format!("nats{i}"));
            let conf = format!(
                "server_name: s{i}\nlisten: 127.0.0.1:-1\nports_file_dir: \"{home}\"\n\
                 max_payload: 8MB\njetstream {{ store_dir: \"{home}/js\" }}\n\
                 cluster {{ name: test, listen: 127.0.0.1:{port}, routes: [{routes}] }}\n",
                home = home.display(),
                port = routes[i],
                routes = route_urls.join(", "),
            );
            launch(&home, &conf)
        })
        .collect()
}

/// The client URL a server wrote to its ports file.
fn client_url(home: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ports: Option<PathBuf> = std::fs::read_dir(home)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "ports"));
        if let Some(text) = ports.and_then(|p| std::fs::read_to_string(p).ok())
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(url) = v["nats"][0].as_str()
        {
            return url.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "nats-server in {home:?} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! A JetStream cluster of three `nats-server` processes on loopback, for
//! the cluster tests (`.ci/run` installs Debian's `nats-server`). The
//! servers take clients over TLS only (a CA and a certificate for
//! 127.0.0.1 made with `openssl` per test) and only as [`USER`] with
//! [`PASSWORD`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One running nats-server; killed when dropped.
pub struct NatsServer {
    child: Child,
    /// Its client URL.
    pub url: String,
    /// The CA its certificate chains to.
    pub ca_file: PathBuf,
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

/// The NATS user the test servers take.
pub const USER: &str = "pushd-node";
/// [`USER`]'s password.
pub const PASSWORD: &str = "nats-test-password-3b9f";

/// What a pushd node of the cluster of `servers` is given: the servers,
/// the NATS user and password, the servers' CA (TLS required) and the
/// cluster secret.
pub fn node_env(servers: &[NatsServer]) -> Vec<(&'static str, String)> {
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    vec![
        ("PUSHD_CLUSTER", urls.join(",")),
        ("PUSHD_CLUSTER_USER", USER.to_string()),
        ("PUSHD_CLUSTER_PASSWORD", PASSWORD.to_string()),
        (
            "PUSHD_CLUSTER_TLS_CA_FILE",
            servers[0].ca_file.display().to_string(),
        ),
        ("PUSHD_CLUSTER_TLS_REQUIRED", "true".to_string()),
        ("PUSHD_CLUSTER_SECRET", SECRET.to_string()),
    ]
}

/// How a client of `server` connects: as [`USER`], over TLS.
pub fn access(server: &NatsServer) -> pushd::cluster::access::NatsAccess {
    pushd::cluster::access::NatsAccess {
        auth: pushd::cluster::access::NatsAuth::UserPassword {
            user: USER.into(),
            password: PASSWORD.into(),
        },
        tls_ca_file: Some(server.ca_file.clone()),
        client_certificate: None,
        tls_required: true,
    }
}

/// The settings of a node named `test` of one server, 4 partitions.
pub fn settings(server: &NatsServer) -> pushd::cluster::Settings {
    pushd::cluster::Settings {
        servers: vec![server.url.clone()],
        node: "test".into(),
        advertise: "127.0.0.1:1".into(),
        partitions: 4,
        replicas: 1,
        lease: Duration::from_secs(5),
        forward_timeout: Duration::from_secs(2),
        snapshot_every: Duration::from_secs(10),
        prefix: "pushd".into(),
        access: access(server),
    }
}

/// A CA and a certificate for 127.0.0.1 it signed (with its key), made
/// with `openssl` under `dir/tls`.
struct Certificates {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn certificates(dir: &Path) -> Certificates {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let at = |name: &str| tls.join(name);
    // Each call's arguments, space-separated (none holds a space).
    let openssl = |args: &str| {
        let out = Command::new("openssl")
            .args(args.split(' '))
            .current_dir(&tls)
            .output()
            .expect("openssl is installed (.ci/run installs it)");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 -days 2 -subj /CN=pushd-test-CA {ec} -keyout ca.key -out ca.pem \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    ));
    openssl(&format!(
        "req -subj /CN=127.0.0.1 {ec} -keyout server.key -out server.csr"
    ));
    std::fs::write(
        at("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        "x509 -req -days 2 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
         -extfile server.ext -out server.pem",
    );
    Certificates {
        ca: at("ca.pem"),
        cert: at("server.pem"),
        key: at("server.key"),
    }
}

/// The configuration that makes a server take clients over TLS only, and
/// only as [`USER`].
fn secured(certificates: &Certificates) -> String {
    format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", timeout: 5 }}\n\
         authorization {{ user: \"{USER}\", password: \"{PASSWORD}\" }}\n",
        certificates.cert.display(),
        certificates.key.display(),
    )
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
    let certificates = certificates(dir);
    single_with(dir, &secured(&certificates), &certificates)
}

/// One nats-server (TLS as [`single`]) that takes only the user whose
/// public nkey is `public_key`.
pub fn single_with_nkey(dir: &Path, public_key: &str) -> NatsServer {
    let certificates = certificates(dir);
    let security = format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", timeout: 5 }}\n\
         authorization {{ users: [ {{ nkey: \"{public_key}\" }} ] }}\n",
        certificates.cert.display(),
        certificates.key.display(),
    );
    single_with(dir, &security, &certificates)
}

fn single_with(dir: &Path, security: &str, certificates: &Certificates) -> NatsServer {
    installed();
    let home = dir.join("nats");
    let conf = format!(
        "listen: 127.0.0.1:-1\nports_file_dir: \"{home}\"\njetstream {{ store_dir: \"{home}/js\" }}\n{security}",
        home = home.display(),
    );
    launch(&home, &conf, certificates).unwrap_or_else(|why| panic!("{why}"))
}

/// Starts a nats-server in `home` with configuration `conf`, logging to
/// `home/nats.log`; fails with the log's text if the server exits before
/// it takes clients (as when a port it was given was taken meanwhile).
fn launch(home: &Path, conf: &str, certificates: &Certificates) -> Result<NatsServer, String> {
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
    // Held as a server before it is waited on, so one that never takes
    // clients is killed (on drop) whether the wait fails or panics.
    let mut server = NatsServer {
        child,
        url: String::new(),
        ca_file: certificates.ca.clone(),
    };
    server.url = client_url(home, &mut server.child)?;
    Ok(server)
}

/// Starts three nats-servers forming one JetStream cluster under `dir`;
/// answers once each takes clients. The route ports are picked free and
/// then handed to the servers, so another process may take one between:
/// then all three start again on fresh ports.
pub fn start(dir: &Path) -> Vec<NatsServer> {
    installed();
    let certificates = certificates(dir);
    let mut failures = Vec::new();
    for _ in 0..5 {
        match start_on(dir, &certificates) {
            Ok(servers) => return servers,
            Err(why) => failures.push(why),
        }
        for i in 0..3 {
            let _ = std::fs::remove_dir_all(dir.join(format!("nats{i}")));
        }
    }
    panic!("the nats-servers did not start: {failures:#?}");
}

/// One try of [`start`]: three servers on fresh route ports.
fn start_on(dir: &Path, certificates: &Certificates) -> Result<Vec<NatsServer>, String> {
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
                 cluster {{ name: test, listen: 127.0.0.1:{port}, routes: [{routes}] }}\n\
                 {secured}",
                home = home.display(),
                port = routes[i],
                routes = route_urls.join(", "),
                secured = secured(certificates),
            );
            launch(&home, &conf, certificates)
        })
        .collect()
}

/// The client URL a server wrote to its ports file, or the server's log if
/// it exited first.
fn client_url(home: &Path, child: &mut Child) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ports: Option<PathBuf> = std::fs::read_dir(home)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "ports"));
        if let Some(text) = ports.and_then(|p| std::fs::read_to_string(p).ok())
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(url) = v["nats"][0].as_str()
        {
            return Ok(url.to_string());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(home.join("nats.log")).unwrap_or_default();
            return Err(format!("nats-server in {home:?} exited ({status}):\n{log}"));
        }
        assert!(
            Instant::now() < deadline,
            "nats-server in {home:?} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! The HTTP server's limits against slow clients (issue 21, item 4): a body
//! trickled a byte at a time is answered 408 and its connection closed;
//! thousands of slow clients leave `/healthz` and the API answering;
//! connections past `max_connections` (set, or sized from a low open files
//! limit) are refused at once instead of waiting unaccepted.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::{API_KEY, Daemon, SDK_KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How long an answer that should come is waited for: far beyond the
/// attacks' own effects (a 1 s body timeout; an immediate refusal), far
/// below "never", which is what they did before.
const PATIENCE: Duration = Duration::from_secs(20);

/// Between two looks at something that gives no signal when it changes
/// (`/metrics`, or an answer that is not yet the one awaited).
const POLL: Duration = Duration::from_millis(10);

/// The request head of a slow client: the SDK key and a megabyte body to
/// come, of which only `{` is sent with it. A customer's events carry the
/// customer's proof (an app that has it trickles too); anyone with the SDK
/// key can trickle a report to `/push/events`.
fn slow_head(method: &str, path: &str, key: &str) -> String {
    let proof = match path.strip_prefix("/v1/customers/") {
        Some(rest) if rest.ends_with("/events") => {
            let (name, value) = support::customer_auth(rest.trim_end_matches("/events"));
            format!("{name}: {value}\r\n")
        }
        _ => String::new(),
    };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: pushd\r\nAuthorization: Bearer {key}\r\n{proof}\
         Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{"
    )
}

/// Clients that send a request head and then its body a byte every
/// `every`. What each receives until its connection closes (EOF or reset)
/// is reported on `closed` with its number.
struct SlowClients {
    tasks: JoinSet<()>,
    report: mpsc::UnboundedSender<(usize, Vec<u8>)>,
    closed: mpsc::UnboundedReceiver<(usize, Vec<u8>)>,
    opened: usize,
}

impl SlowClients {
    fn new() -> Self {
        let (report, closed) = mpsc::unbounded_channel();
        SlowClients {
            tasks: JoinSet::new(),
            report,
            closed,
            opened: 0,
        }
    }

    /// Opens `n` more clients to `addr`, one after the other, each sending
    /// `head` and then trickling.
    async fn open(&mut self, addr: SocketAddr, n: usize, head: &str, every: Duration) {
        for _ in 0..n {
            let mut stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
                .await
                .expect("the connection is taken (into the listen backlog at least)")
                .expect("connects");
            stream.write_all(head.as_bytes()).await.expect("head sent");
            let (mut reader, mut writer) = stream.into_split();
            let (i, report) = (self.opened, self.report.clone());
            self.tasks.spawn(async move {
                let mut got = Vec::new();
                // An error (a reset) ends the connection as EOF does.
                let _ = reader.read_to_end(&mut got).await;
                let _ = report.send((i, got));
            });
            self.tasks.spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    if writer.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
            self.opened += 1;
        }
    }

    /// The next client whose connection closed, and what it received;
    /// `what` says why one should close.
    async fn next_closed(&mut self, what: &str) -> (usize, Vec<u8>) {
        let closed = tokio::time::timeout(PATIENCE, self.closed.recv()).await;
        closed
            .unwrap_or_else(|_| panic!("no slow client closed within {PATIENCE:?}: {what}"))
            .expect("reports")
    }

    /// Whether every client still open has received nothing and is still
    /// connected: no close is reported.
    fn none_closed(&mut self) -> bool {
        self.closed.try_recv().is_err()
    }
}

/// Status, lower-case head and JSON body of a raw HTTP/1.1 answer.
fn parse(raw: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP answer, not {text:?}"));
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.into()));
    (status, head.to_lowercase(), body)
}

/// `GET path` with the API key on a connection of its own, which the
/// daemon closes after answering (`Connection: close`): no request of the
/// test holds a connection past its answer. Status and JSON body, or
/// `None` when the connection was closed unanswered.
async fn get(d: &Daemon, path: &str) -> Option<(u16, Value)> {
    let (status, _, body) = get_raw(d, path).await?;
    Some((
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    ))
}

/// [`get`]'s status, head and body text.
async fn get_raw(d: &Daemon, path: &str) -> Option<(u16, String, String)> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: pushd\r\nAuthorization: Bearer {API_KEY}\r\n\
         Connection: close\r\n\r\n"
    );
    let exchange = async {
        let mut stream = TcpStream::connect(addr(d)).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got).await;
        Some(got)
    };
    let got = tokio::time::timeout(PATIENCE, exchange).await.ok()??;
    if got.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head.to_lowercase(), body.to_string()))
}

/// `GET path` again until it answers `status` (each try bounded; all of
/// them by [`PATIENCE`]).
async fn get_until(d: &Daemon, path: &str, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = get(d, path).await;
        match answer {
            Some((s, body)) if s == status => return body,
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path} did not answer {status}: {answer:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A series' value in `/metrics`.
async fn metric(d: &Daemon, name: &str) -> Option<f64> {
    let (_, _, text) = get_raw(d, "/metrics").await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `/metrics` until `name` holds a value `done` accepts.
async fn metric_until(d: &Daemon, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let value = metric(d, name).await;
        if let Some(v) = value.filter(|v| done(*v)) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed {value:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn addr(d: &Daemon) -> SocketAddr {
    d.base.trim_start_matches("http://").parse().unwrap()
}

/// The test's own open files limit raised to its hard limit (it holds a
/// socket per slow client); answers the hard limit.
fn raise_own_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the one struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_max
}

/// The open files limit (soft) of process `pid`.
fn open_files_of(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_a_byte_at_a_time_is_answered_408_and_its_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &[("PUSHD_HTTP_BODY_TIMEOUT_SECS", "1".to_string())],
    );
    d.customer("c1", json!({}), &[]).await;
    let bodies = [
        ("POST", "/v1/customers/c1/events", SDK_KEY),
        ("POST", "/push/events", SDK_KEY),
        ("PUT", "/v1/customers/c2", API_KEY),
        ("POST", "/v1/send/push", API_KEY),
    ];
    let mut clients = SlowClients::new();
    for (method, path, key) in bodies {
        // A byte every 100 ms: never idle for long, yet never whole.
        let head = slow_head(method, path, key);
        clients
            .open(addr(&d), 1, &head, Duration::from_millis(100))
            .await;
        let (_, got) = clients
            .next_closed("a trickled body is answered 408 and closed")
            .await;
        let (status, head, body) = parse(&got);
        assert_eq!(status, 408, "{method} {path}: {head} {body}");
        assert!(head.contains("connection: close"), "{head}");
        assert_eq!(body["error"]["code"], "request_timeout", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("body_timeout_secs")
                && message.contains("PUSHD_HTTP_BODY_TIMEOUT_SECS"),
            "{message}"
        );
    }
    // A body sent whole is read as always, and nothing of the slow ones
    // was kept.
    let (name, proof) = support::customer_auth("c1");
    let (status, body) = d
        .call_with(
            SDK_KEY,
            &[(name, &proof)],
            "POST",
            "/v1/customers/c1/events",
            Some(json!({"name": "purchase"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(d.call("GET", "/v1/customers/c2", None).await.0, 404);
    let timeouts = metric(&d, "pushd_http_body_timeouts_total").await;
    assert_eq!(timeouts, Some(bodies.len() as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_slow_clients_leave_healthz_and_the_api_answering() {
    const CLIENTS: usize = 3000;
    let hard = raise_own_open_files();
    assert!(
        hard >= 2 * CLIENTS as u64 + 1024,
        "this test needs an open files hard limit of {} (ulimit -Hn), not {hard}",
        2 * CLIENTS + 1024
    );
    let dir = tempfile::tempdir().unwrap();
    // Started with the usual soft limit: pushd raises it to the hard one.
    let env = [("PUSHD_HTTP_BODY_TIMEOUT_SECS", "300".to_string())];
    let d = Daemon::start_with_open_files(dir.path(), &env, 1024, hard);
    d.customer("c1", json!({"plan": "pro"}), &[]).await;

    let mut clients = SlowClients::new();
    let head = slow_head("POST", "/push/events", SDK_KEY);
    clients
        .open(addr(&d), CLIENTS, &head, Duration::from_secs(1))
        .await;
    let (status, body) = get(&d, "/healthz").await.expect("healthz answers");
    assert_eq!((status, &body), (200, &json!({"status": "ok"})));
    let (status, body) = get(&d, "/v1/customers/c1").await.expect("the API answers");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attributes"]["plan"], "pro");
    // Every slow client is connected and served (its body still awaited).
    let open = metric_until(&d, "pushd_http_connections", |n| n > CLIENTS as f64).await;
    assert!(
        clients.none_closed(),
        "no slow client was refused ({open} open)"
    );
    assert_eq!(
        metric(&d, "pushd_http_connections_refused_total").await,
        Some(0.0)
    );
    assert_eq!(open_files_of(d.pid()), hard, "raised to the hard limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_refused_at_once_and_healthz_still_answers() {
    const MAX: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("PUSHD_HTTP_MAX_CONNECTIONS", MAX.to_string()),
        ("PUSHD_HTTP_BODY_TIMEOUT_SECS", "300".to_string()),
    ];
    let d = Daemon::start(dir.path(), &env);
    d.customer("c1", json!({}), &[]).await;

    let mut clients = SlowClients::new();
    let head = slow_head("POST", "/push/events", SDK_KEY);
    let every = Duration::from_secs(1);
    clients.open(addr(&d), MAX, &head, every).await;
    let body = take_every_connection(&d, &mut clients, &head).await;
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("PUSHD_HTTP_MAX_CONNECTIONS"), "{message}");

    // One more at a time: each is answered 503 at once, and closed; then
    // a burst past the reserve, each answered so or closed unanswered.
    for _ in 0..5 {
        clients.open(addr(&d), 1, &head, every).await;
        let (_, got) = clients
            .next_closed("past the limit, a client is refused")
            .await;
        let (status, head, body) = parse(&got);
        assert_eq!(status, 503, "{head} {body}");
        assert!(head.contains("connection: close"), "{head}");
        assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    }
    clients.open(addr(&d), 50, &head, every).await;
    for _ in 0..50 {
        let (_, got) = clients
            .next_closed("past the limit, a client is refused")
            .await;
        assert_refused(&got);
    }
    // Monitoring still answers; the API says why it does not; the slow
    // clients served are still connected.
    let (status, _) = get(&d, "/healthz").await.expect("healthz answers");
    assert_eq!(status, 200);
    // (A slot a keep-alive connection of the setup held may have freed
    // meanwhile on a slow machine: it is filled again first.)
    let body = take_every_connection(&d, &mut clients, &head).await;
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    let open = metric(&d, "pushd_http_connections").await.unwrap();
    assert!(open > MAX as f64, "{open}");

    drop(clients);
    get_until(&d, "/v1/customers/c1", 200).await;
    let refused = metric(&d, "pushd_http_connections_refused_total").await;
    assert!(refused >= Some(56.0), "{refused:?}");
    let max = metric(&d, "pushd_http_connections_max").await;
    assert_eq!(max, Some(MAX as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_open_files_limit_slow_clients_are_refused_before_accept_fails() {
    const OPEN_FILES: u64 = 512;
    const CLIENTS: usize = 600;
    raise_own_open_files();
    let dir = tempfile::tempdir().unwrap();
    let env = [("PUSHD_HTTP_BODY_TIMEOUT_SECS", "300".to_string())];
    let d = Daemon::start_with_open_files(dir.path(), &env, OPEN_FILES, OPEN_FILES);
    d.customer("c1", json!({}), &[]).await;

    let mut clients = SlowClients::new();
    let head = slow_head("POST", "/push/events", SDK_KEY);
    clients
        .open(addr(&d), CLIENTS, &head, Duration::from_secs(1))
        .await;
    // Accepting goes on, so monitoring gets in.
    get_until(&d, "/healthz", 200).await;
    let max = metric_until(&d, "pushd_http_connections_max", |_| true).await as usize;
    assert!(max < OPEN_FILES as usize, "{max}");
    // Those past the limit are refused: answered 503 or closed at once.
    // (The few connections of the checks above may have been counted
    // among them while pushd was still accepting the slow ones.)
    for _ in max + 4..CLIENTS {
        let (_, got) = clients
            .next_closed("past the limit, a client is refused")
            .await;
        assert_refused(&got);
    }
    let body = take_every_connection(&d, &mut clients, &head).await;
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    let open = metric(&d, "pushd_http_connections").await.unwrap();
    assert!(open > max as f64, "{open} of {max}");

    drop(clients);
    get_until(&d, "/v1/customers/c1", 200).await;
}

/// What a client past the limit got: a 503 `too_many_connections`, or
/// nothing (closed as it was accepted).
fn assert_refused(got: &[u8]) {
    if !got.is_empty() {
        let (status, _, body) = parse(got);
        assert_eq!(
            (status, &body["error"]["code"]),
            (503, &json!("too_many_connections"))
        );
    }
}

/// Opens slow clients while an API call still finds a free connection (a
/// check of the test, or the setup's keep-alive connection, may have held
/// one while the slow clients came); answers the body of the 503 the call
/// gets once slow clients hold every connection.
async fn take_every_connection(d: &Daemon, clients: &mut SlowClients, head: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = get(d, "/v1/customers/c1").await;
        match answer {
            Some((503, body)) => return body,
            Some((200, _)) => clients.open(addr(d), 1, head, Duration::from_secs(1)).await,
            // Closed as it was accepted, past the reserve.
            None => tokio::time::sleep(POLL).await,
            Some(other) => panic!("GET /v1/customers/c1: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the API still answers with slow clients on every connection: {answer:?}"
        );
    }
}

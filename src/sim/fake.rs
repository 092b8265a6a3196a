//! What both fakes share: the h2c server loop, scripted and random faults,
//! and the record of what was received.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pushd_actors::model::{Environment, Platform};
use pushd_actors::ports::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::{JoinHandle, JoinSet};

/// A failure a fake can answer with, in the platform's own words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// APNs 410 `Unregistered`; FCM 404 `UNREGISTERED`.
    Unregistered,
    /// APNs 400 `BadDeviceToken`; FCM 400 `INVALID_ARGUMENT` naming `message.token`.
    BadDeviceToken,
    /// 429 with `Retry-After: retry_after_secs`.
    TooManyRequests {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// 500 (FCM `INTERNAL`).
    InternalError,
    /// 503 (FCM `UNAVAILABLE`).
    Unavailable,
    /// The stream is reset (RST_STREAM) without an answer.
    Reset,
    /// APNs 403 `ExpiredProviderToken`; FCM 401 `UNAUTHENTICATED`.
    ExpiredCredentials,
    /// The provider finds the message too big although pushd's own count
    /// let it through: APNs 413 `PayloadTooLarge`; FCM 400
    /// `INVALID_ARGUMENT` "Android message is too big" (not about the token).
    MessageTooBig,
}

/// How a fake treats pushes to one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Every push fails with the fault.
    Fail(Fault),
    /// The next `n` pushes fail with the fault, later ones go through.
    FailTimes {
        /// How many pushes fail.
        n: u32,
        /// How they fail.
        fault: Fault,
    },
    /// Every push is answered after the delay.
    Delay(Duration),
}

/// The random mix of outcomes for tokens without a script; seeded, so a run
/// is repeatable for the same order of requests.
#[derive(Clone, Debug, Default)]
pub struct FaultMix {
    /// Share of pushes answered "unregistered".
    pub unregistered: f64,
    /// Share of pushes answered 503.
    pub transient: f64,
    /// Delay before every answer.
    pub latency: Duration,
    /// The RNG seed.
    pub seed: u64,
    /// Close each connection gracefully (HTTP/2 GOAWAY, its streams in
    /// flight answered) once it took this many requests, as hypercorn does
    /// after 1,000.
    pub goaway_every: Option<usize>,
    /// Share of requests after which their connection is closed gracefully.
    pub goaway: f64,
    /// Tokens starting with this are always answered "unregistered" (the
    /// app was uninstalled): how `pushd serve --simulated-providers` shows
    /// a bounce.
    pub unregistered_prefix: Option<String>,
}

/// One push a fake accepted.
#[derive(Clone, Debug)]
pub struct ReceivedPush {
    /// Which fake took it.
    pub platform: Platform,
    /// Which APNs endpoint it came in on (always production for FCM).
    pub environment: Environment,
    /// The device token.
    pub token: String,
    /// `CIO-Delivery-ID` from the payload, if present.
    pub delivery_id: Option<String>,
    /// The JSON body as sent (APNs payload, or FCM's `{"message": ...}`).
    pub payload: Value,
    /// Request headers, names lowercase.
    pub headers: BTreeMap<String, String>,
}

/// The fake's answer to one request.
pub(crate) enum Reply {
    /// An HTTP response.
    Respond(Response<Full<Bytes>>),
    /// Reset the stream.
    Reset,
}

/// The error that makes hyper reset a stream.
#[derive(Debug)]
struct ResetStream;

impl std::fmt::Display for ResetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted stream reset")
    }
}

impl std::error::Error for ResetStream {}

/// What a fake does with a scripted or random push: wait, then maybe fail.
pub(crate) struct Decision {
    /// How long to wait before answering.
    pub(crate) delay: Duration,
    /// The failure to answer with, if any.
    pub(crate) fault: Option<Fault>,
}

/// Counters, scripts and records shared by a fake's connections.
/// What a fake saw and how it answers; reached through [`Fake`].
pub struct Recorder {
    platform: Platform,
    requests: AtomicUsize,
    connections: AtomicUsize,
    goaways: AtomicUsize,
    calls: Mutex<HashMap<String, u32>>,
    script: Mutex<HashMap<String, Behavior>>,
    mix: FaultMix,
    rng: Mutex<StdRng>,
    pushes: Mutex<HashMap<String, Vec<ReceivedPush>>>,
    credentials: Mutex<HashSet<String>>,
    subscribers: Mutex<Vec<UnboundedSender<ReceivedPush>>>,
}

impl Recorder {
    /// An empty record for `platform`'s fake, drawing faults from `mix`.
    pub(crate) fn new(platform: Platform, mix: FaultMix) -> Recorder {
        Recorder {
            platform,
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            goaways: AtomicUsize::new(0),
            calls: Mutex::new(HashMap::new()),
            script: Mutex::new(HashMap::new()),
            rng: Mutex::new(StdRng::seed_from_u64(mix.seed)),
            mix,
            pushes: Mutex::new(HashMap::new()),
            credentials: Mutex::new(HashSet::new()),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// Counts one push request.
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }

    /// Push requests received, whatever their answer.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Counts one push request for `token` (one that named a token).
    pub(crate) fn call(&self, token: &str) {
        let mut calls = self.calls.lock().expect("calls lock");
        *calls.entry(token.to_owned()).or_default() += 1;
    }

    /// Push requests for `token`, whatever their answer.
    pub(crate) fn calls(&self, token: &str) -> u32 {
        let calls = self.calls.lock().expect("calls lock");
        calls.get(token).copied().unwrap_or_default()
    }

    /// TCP connections accepted.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections closed with a GOAWAY.
    pub(crate) fn goaways(&self) -> usize {
        self.goaways.load(Ordering::SeqCst)
    }

    /// Whether a connection that just took its `served`th request goes
    /// away: at `goaway_every`, or by the `goaway` share. Counts it if so.
    fn goes_away(&self, served: usize) -> bool {
        let every = self.mix.goaway_every == Some(served);
        let goes = every
            || (self.mix.goaway > 0.0
                && self.rng.lock().expect("rng lock").r#gen::<f64>() < self.mix.goaway);
        if goes {
            self.goaways.fetch_add(1, Ordering::SeqCst);
        }
        goes
    }

    /// Notes a bearer credential (JWT or access token) a push came with.
    pub(crate) fn saw_credential(&self, credential: &str) {
        let mut seen = self.credentials.lock().expect("credentials lock");
        if !seen.contains(credential) {
            seen.insert(credential.to_owned());
        }
    }

    /// Distinct credentials seen.
    pub(crate) fn distinct_credentials(&self) -> usize {
        self.credentials.lock().expect("credentials lock").len()
    }

    /// Sets how pushes to `token` are treated.
    pub(crate) fn script(&self, token: &str, behavior: Behavior) {
        self.script
            .lock()
            .expect("script lock")
            .insert(token.to_owned(), behavior);
    }

    /// What to do with a push to `token`: its script, else the random mix.
    pub(crate) fn decide(&self, token: &str) -> Decision {
        let immediate = |fault| Decision {
            delay: Duration::ZERO,
            fault,
        };
        match self.script.lock().expect("script lock").get_mut(token) {
            Some(Behavior::Fail(fault)) => return immediate(Some(*fault)),
            Some(Behavior::FailTimes { n, fault }) if *n > 0 => {
                *n -= 1;
                return immediate(Some(*fault));
            }
            Some(Behavior::FailTimes { .. }) => return immediate(None),
            Some(Behavior::Delay(delay)) => {
                return Decision {
                    delay: *delay,
                    fault: None,
                };
            }
            None => {}
        }
        if let Some(prefix) = &self.mix.unregistered_prefix
            && token.starts_with(prefix.as_str())
        {
            return Decision {
                delay: self.mix.latency,
                fault: Some(Fault::Unregistered),
            };
        }
        let roll: f64 = self.rng.lock().expect("rng lock").r#gen();
        let fault = if roll < self.mix.unregistered {
            Some(Fault::Unregistered)
        } else if roll < self.mix.unregistered + self.mix.transient {
            Some(Fault::Unavailable)
        } else {
            None
        };
        Decision {
            delay: self.mix.latency,
            fault,
        }
    }

    /// A random hex string of `len` digits (ids, access tokens).
    pub(crate) fn random_hex(&self, len: usize) -> String {
        let mut rng = self.rng.lock().expect("rng lock");
        (0..len)
            .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
            .collect()
    }

    /// Records a push accepted on `environment`'s endpoint and hands it to
    /// every subscriber.
    pub(crate) fn deliver(
        &self,
        environment: Environment,
        token: &str,
        payload: Value,
        delivery_id: Option<String>,
        parts: &Parts,
    ) {
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let push = ReceivedPush {
            platform: self.platform,
            environment,
            token: token.to_owned(),
            delivery_id,
            payload,
            headers,
        };
        self.subscribers
            .lock()
            .expect("subscribers lock")
            .retain(|tx| tx.send(push.clone()).is_ok());
        self.pushes
            .lock()
            .expect("pushes lock")
            .entry(push.token.clone())
            .or_default()
            .push(push);
    }

    /// The pushes accepted for `token`, in arrival order.
    pub(crate) fn pushes(&self, token: &str) -> Vec<ReceivedPush> {
        let pushes = self.pushes.lock().expect("pushes lock");
        pushes.get(token).cloned().unwrap_or_default()
    }

    /// Pushes accepted, all tokens.
    pub(crate) fn accepted(&self) -> usize {
        let pushes = self.pushes.lock().expect("pushes lock");
        pushes.values().map(Vec::len).sum()
    }

    /// A channel receiving every push accepted from now on.
    pub(crate) fn subscribe(&self) -> UnboundedReceiver<ReceivedPush> {
        let (tx, rx) = unbounded_channel();
        self.subscribers.lock().expect("subscribers lock").push(tx);
        rx
    }
}

/// Handles one request: its head and whole body.
pub(crate) type Handler = Arc<dyn Fn(Parts, Bytes) -> BoxFuture<Reply> + Send + Sync>;

/// A running h2c server; stops (with its connections) when dropped.
pub(crate) struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds 127.0.0.1:0 and serves HTTP/2 with prior knowledge, with the
    /// handler `make_handler` builds from the server's endpoint.
    pub(crate) async fn start(
        recorder: Arc<Recorder>,
        make_handler: impl FnOnce(&str) -> Handler,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let handler = make_handler(&format!("http://{addr}"));
        let task = tokio::spawn(accept_loop(listener, recorder, handler));
        Ok(Server { addr, task })
    }

    /// `http://127.0.0.1:port`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections until aborted; aborting drops (and stops) them all.
async fn accept_loop(listener: TcpListener, recorder: Arc<Recorder>, handler: Handler) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // As providers' servers do: an answer goes out at once, not
                // held back (Nagle) until the last one is acknowledged.
                let _ = stream.set_nodelay(true);
                recorder.connections.fetch_add(1, Ordering::SeqCst);
                let (handler, recorder) = (handler.clone(), recorder.clone());
                connections.spawn(serve_connection(stream, handler, recorder));
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Serves one HTTP/2 connection, closing it gracefully (GOAWAY, then the
/// streams in flight are answered) when the recorder says so.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    handler: Handler,
    recorder: Arc<Recorder>,
) {
    let served = AtomicUsize::new(0);
    let going = AtomicBool::new(false);
    let goaway = Arc::new(tokio::sync::Notify::new());
    let notify = goaway.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        if !going.load(Ordering::SeqCst) && recorder.goes_away(n) {
            going.store(true, Ordering::SeqCst);
            notify.notify_one();
        }
        async move {
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return Err(ResetStream),
            };
            match handler(parts, body).await {
                Reply::Respond(response) => Ok(response),
                Reply::Reset => Err(ResetStream),
            }
        }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(1000)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = goaway.notified() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "fake provider connection ended");
    }
}

/// A response with a JSON body and extra headers.
pub(crate) fn json_response(status: u16, body: &Value, headers: &[(&str, String)]) -> Reply {
    let mut all = vec![("content-type", "application/json".to_owned())];
    all.extend_from_slice(headers);
    respond(status, Bytes::from(body.to_string()), &all)
}

/// A response with the body and headers given.
pub(crate) fn respond(status: u16, body: Bytes, headers: &[(&str, String)]) -> Reply {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    match builder.body(Full::new(body)) {
        Ok(response) => Reply::Respond(response),
        Err(_) => Reply::Reset,
    }
}

/// What tests, the harness and the demo ask of either fake.
pub trait Fake {
    /// The fake's record of requests and its script.
    fn recorder(&self) -> &Recorder;

    /// Sets how pushes to `token` are answered.
    fn script(&self, token: &str, behavior: Behavior) {
        self.recorder().script(token, behavior);
    }

    /// Push requests received, whatever their answer.
    fn requests(&self) -> usize {
        self.recorder().requests()
    }

    /// Pushes accepted.
    fn accepted(&self) -> usize {
        self.recorder().accepted()
    }

    /// Pushes accepted for `token`, in arrival order.
    fn pushes(&self, token: &str) -> Vec<ReceivedPush> {
        self.recorder().pushes(token)
    }

    /// Push requests for `token`, whatever their answer.
    fn calls(&self, token: &str) -> u32 {
        self.recorder().calls(token)
    }

    /// TCP connections accepted.
    fn connections(&self) -> usize {
        self.recorder().connections()
    }

    /// Connections closed with a GOAWAY.
    fn goaways(&self) -> usize {
        self.recorder().goaways()
    }

    /// Every push accepted from now on.
    fn subscribe(&self) -> UnboundedReceiver<ReceivedPush> {
        self.recorder().subscribe()
    }
}

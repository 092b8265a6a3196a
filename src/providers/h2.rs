//! HTTP/2 connections to one provider endpoint, on the `h2` crate: what the
//! APNs and FCM clients send pushes through.
//!
//! Written on `h2` rather than reqwest (which still fetches FCM's OAuth
//! tokens) or hyper's client, for what the load harness measured: reqwest
//! keeps one connection per host, while APNs recommends several and one
//! connection's stream limit caps a provider's throughput; its per-request
//! layers (URL parsing, redirect and timeout wrappers, a ~10 KB future per
//! request) cost about as much CPU and memory as the rest of a push; and
//! hyper's client spawns a task per request to stream its body (~3 KB each
//! while the answer is awaited). Here a request is its head and one data
//! frame, and capacity is reserved first (see [`Endpoint::reserve`]), so a
//! push waiting for a stream holds nothing but its place in line.
//!
//! Capacity has two lanes ([`Lane`]). A share of the streams
//! ([`Limits::transactional_share`]) is kept for transactional pushes: a
//! campaign push first waits for one of the other streams, in a line of its
//! own, and only then for a stream. So while a campaign saturates the
//! endpoint, a transactional push finds a kept stream free at once (unless
//! transactional pushes fill them), and never waits in the campaign's line.
//!
//! Connections open on demand, up to `max_connections`: a request goes to the
//! open connection with the fewest streams in flight, and a new connection is
//! opened once every open one is full. A connection that is closed (reset,
//! keep-alive timeout), going away (the provider's GOAWAY) or older than
//! `max_age` takes no new request: the next one opens a fresh connection,
//! while the old one's streams in flight finish on it.
//!
//! A request the provider never processed ([`H2Error::Unprocessed`]: above
//! a GOAWAY's last stream id, refused with `REFUSED_STREAM`, or never sent
//! because its connection was already going away) is safe to send again at
//! once; one reset or cut off after it was sent may have been pushed.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, Request, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use pushd_actors::model::Lane;

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings keep NATs and provider load balancers from dropping a
/// connection silently, and find one that died without a word.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// How long a keep-alive ping may go unanswered before the connection is
/// given up.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How many connections, and how many streams on each.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests in flight on one connection (APNs and FCM accept about 1,000).
    pub streams_per_connection: usize,
    /// Connections opened at most.
    pub max_connections: usize,
    /// One request's time on the wire, connecting included.
    pub timeout: Duration,
    /// A connection this old takes no new request (providers and their
    /// load balancers close old connections).
    pub max_age: Duration,
    /// The share of the streams campaign pushes never take, kept for
    /// transactional ones (0 to less than 1).
    pub transactional_share: f64,
    /// The platform (`ios`, `android`), for metrics.
    pub platform: &'static str,
}

impl Limits {
    /// The endpoint's streams: every connection's.
    fn streams(&self) -> usize {
        self.streams_per_connection.max(1) * self.max_connections.max(1)
    }

    /// The streams campaign pushes may take: all but the kept share,
    /// rounded up, and at least one.
    fn campaign_streams(&self) -> usize {
        let streams = self.streams();
        let kept = (streams as f64 * self.transactional_share.clamp(0.0, 1.0)).ceil() as usize;
        streams.saturating_sub(kept).max(1)
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// Connecting failed.
    #[error("connect to {0}: {1}")]
    Connect(String, String),
    /// The provider never processed the request: safe to send again at once.
    #[error("not processed: {0}")]
    Unprocessed(h2::Error),
    /// The connection or the stream failed, perhaps after the provider
    /// processed the request.
    #[error("{0}")]
    Http(#[from] h2::Error),
    /// No answer in time.
    #[error("timeout after {0:?}")]
    Timeout(Duration),
}

/// A provider endpoint's connections. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint(Arc<Inner>);

struct Inner {
    /// `scheme://authority`, for the request URIs.
    base: String,
    host: String,
    port: u16,
    /// Present for `https://`: TLS with ALPN `h2`.
    tls: Option<tokio_rustls::TlsConnector>,
    limits: Limits,
    /// Streams anyone may use: `streams_per_connection × max_connections`.
    capacity: Arc<Semaphore>,
    /// What a campaign push takes before a stream: all but the kept share.
    campaign: Arc<Semaphore>,
    connections: Mutex<Vec<Connection>>,
    /// Held while a connection is being opened, so a burst opens one.
    connecting: tokio::sync::Mutex<()>,
}

/// One open connection.
#[derive(Clone)]
struct Connection {
    sender: SendRequest<Bytes>,
    state: Arc<ConnState>,
}

/// What a connection's requests and its driver share.
struct ConnState {
    /// Streams in flight.
    in_flight: AtomicUsize,
    /// Why it takes no new request ([`OPEN`] while it does).
    retired: AtomicU8,
    opened: Instant,
    /// The endpoint's platform, for metrics.
    platform: &'static str,
}

/// A connection taking requests.
const OPEN: u8 = 0;
/// The provider sent GOAWAY.
const GOAWAY: u8 = 1;
/// The connection ended (reset, unanswered pings).
const CLOSED: u8 = 2;
/// Older than [`Limits::max_age`].
const AGED: u8 = 3;

impl ConnState {
    /// Retires the connection for `reason` unless it already is, counting
    /// it in `pushd_provider_reconnects_total`.
    fn retire(&self, reason: u8) {
        let retired =
            self.retired
                .compare_exchange(OPEN, reason, Ordering::AcqRel, Ordering::Acquire);
        if retired.is_err() {
            return;
        }
        let reason = match reason {
            GOAWAY => "goaway",
            AGED => "age",
            _ => "closed",
        };
        metrics::counter!("pushd_provider_reconnects_total", "platform" => self.platform, "reason" => reason)
            .increment(1);
        tracing::debug!(
            platform = self.platform,
            reason,
            "provider connection retired"
        );
    }
}

/// Room for one request on an endpoint, held from before the request is
/// built until its answer is read.
pub struct Reserved {
    _permit: OwnedSemaphorePermit,
    /// A campaign push's place among the streams campaigns may take.
    _campaign: Option<OwnedSemaphorePermit>,
}

/// A stream ready to take one request (see [`Endpoint::ready`]).
pub struct Ready {
    sender: SendRequest<Bytes>,
    stream: Stream,
    deadline: Instant,
    timeout: Duration,
}

impl Ready {
    /// Sends `head` and `body` and reads the whole answer, by the deadline.
    /// A failure the provider cannot have seen is [`H2Error::Unprocessed`]
    /// (and a GOAWAY retires the connection).
    ///
    /// The request is handed to the connection before the returned future
    /// first runs, so that future, which a push holds for as long as the
    /// provider takes to answer, carries only the stream's handles: not the
    /// request head, nor the wait for a stream (the load bench's memory
    /// phase holds thousands of pushes at the fakes).
    pub fn send(
        mut self,
        head: Request<()>,
        body: Bytes,
    ) -> impl Future<Output = Result<(StatusCode, HeaderMap, Bytes), H2Error>> {
        let sent = match self.sender.send_request(head, false) {
            Ok((answer, mut out)) => out
                .send_data(body, true)
                .map(|()| (answer, out))
                .map_err(|e| self.stream.failed(e)),
            Err(e) => Err(self.stream.unsent(e)),
        };
        let Ready {
            stream,
            deadline,
            timeout,
            ..
        } = self;
        async move {
            let (answer, _out) = sent?;
            let read = async {
                let (parts, mut incoming) = answer.await?.into_parts();
                let mut read = BytesMut::new();
                while let Some(chunk) = incoming.data().await {
                    let chunk = chunk?;
                    let _ = incoming.flow_control().release_capacity(chunk.len());
                    read.extend_from_slice(&chunk);
                }
                Ok::<_, H2Error>((parts.status, parts.headers, read.freeze()))
            };
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Err(H2Error::Http(e))) => Err(stream.failed(e)),
                Ok(answered) => answered,
                Err(_) => Err(H2Error::Timeout(timeout)),
            }
        }
    }
}

/// A stream in use on a connection; counted down when dropped.
struct Stream(Arc<ConnState>);

impl Stream {
    /// Classifies a request its connection would not start: one going away
    /// or gone sent nothing, and takes no more requests.
    fn unsent(&self, e: h2::Error) -> H2Error {
        if !(e.is_go_away() || e.is_io()) {
            return H2Error::Http(e);
        }
        self.0.retire(if e.is_go_away() { GOAWAY } else { CLOSED });
        H2Error::Unprocessed(e)
    }

    /// Classifies a failure of this stream. The provider never processed
    /// it if the stream was above a GOAWAY's last stream id (or opened
    /// after a GOAWAY), or refused; a GOAWAY also retires the connection.
    fn failed(&self, e: h2::Error) -> H2Error {
        let goaway = e.is_go_away() && e.is_remote();
        let refused =
            e.is_reset() && e.is_remote() && e.reason() == Some(h2::Reason::REFUSED_STREAM);
        if goaway {
            self.0.retire(GOAWAY);
        }
        match goaway || refused {
            true => H2Error::Unprocessed(e),
            false => H2Error::Http(e),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoint {
    /// Connections to `url` (`http://` is HTTP/2 with prior knowledge,
    /// `https://` TLS with ALPN `h2`), opened when first needed.
    pub fn new(url: &str, limits: Limits) -> Result<Endpoint, String> {
        let uri: Uri = url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("invalid endpoint {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "endpoint {url:?} must start with http:// or https://"
                ));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("endpoint {url:?} has no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let base = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map_or("", |a| a.as_str())
        );
        let (streams, campaign) = (limits.streams(), limits.campaign_streams());
        Ok(Endpoint(Arc::new(Inner {
            base,
            host,
            port,
            tls: https.then(tls_connector),
            limits,
            capacity: Arc::new(Semaphore::new(streams)),
            campaign: Arc::new(Semaphore::new(campaign)),
            connections: Mutex::new(Vec::new()),
            connecting: tokio::sync::Mutex::new(()),
        })))
    }

    /// The absolute URI of `path` on this endpoint.
    pub fn uri(&self, path: &str) -> Result<Uri, String> {
        format!("{}{path}", self.0.base)
            .parse()
            .map_err(|e| format!("invalid request path {path:?}: {e}"))
    }

    /// Waits for room for one request in `lane` (first come, first served
    /// within the lane): a campaign push waits for room outside the kept
    /// share first.
    pub async fn reserve(&self, lane: Lane) -> Reserved {
        let campaign = match lane {
            Lane::Campaign => Some(self.0.campaign.clone().acquire_owned().await),
            Lane::Transactional => None,
        };
        let permit = self.0.capacity.clone().acquire_owned().await;
        Reserved {
            _permit: permit.expect("the capacity semaphore is never closed"),
            _campaign: campaign.map(|p| p.expect("the campaign semaphore is never closed")),
        }
    }

    /// Waits for a stream ready to take one request, in a slot reserved on
    /// this endpoint. The endpoint's timeout starts now, on the wire, and
    /// covers the request until its answer is read.
    pub async fn ready(&self, _room: &Reserved) -> Result<Ready, H2Error> {
        let timeout = self.0.limits.timeout;
        let deadline = Instant::now() + timeout;
        let ready = async {
            let (sender, stream) = self.stream().await?;
            match sender.ready().await {
                Ok(sender) => Ok((sender, stream)),
                Err(e) => Err(stream.unsent(e)),
            }
        };
        let (sender, stream) = tokio::time::timeout_at(deadline, ready)
            .await
            .map_err(|_| H2Error::Timeout(timeout))??;
        Ok(Ready {
            sender,
            stream,
            deadline,
            timeout,
        })
    }

    /// A stream on the least busy open connection, opening one if every
    /// open connection is full (or closed) and the limit allows.
    async fn stream(&self) -> Result<(SendRequest<Bytes>, Stream), H2Error> {
        if let Some(found) = self.pick(false) {
            return Ok(found);
        }
        let _one = self.0.connecting.lock().await;
        if let Some(found) = self.pick(false) {
            return Ok(found);
        }
        let full = self.lock().len() >= self.0.limits.max_connections.max(1);
        if full && let Some(found) = self.pick(true) {
            return Ok(found);
        }
        // Boxed: connecting (TCP, TLS, the HTTP/2 handshake) is rare but its
        // future is kilobytes, which every request's future would carry.
        let connection = Box::pin(self.connect()).await?;
        connection.state.in_flight.fetch_add(1, Ordering::Relaxed);
        let stream = (connection.sender.clone(), Stream(connection.state.clone()));
        self.lock().push(connection);
        Ok(stream)
    }

    /// The open connection with the fewest streams in flight (dropping
    /// retired ones); unless `any`, only one with a free stream.
    fn pick(&self, any: bool) -> Option<(SendRequest<Bytes>, Stream)> {
        let limits = &self.0.limits;
        let mut connections = self.lock();
        connections.retain(|c| {
            if c.state.opened.elapsed() >= limits.max_age {
                c.state.retire(AGED);
            }
            c.state.retired.load(Ordering::Acquire) == OPEN
        });
        let least = connections
            .iter()
            .min_by_key(|c| c.state.in_flight.load(Ordering::Relaxed))?;
        let busy = least.state.in_flight.load(Ordering::Relaxed);
        if !any && busy >= limits.streams_per_connection {
            return None;
        }
        least.state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((least.sender.clone(), Stream(least.state.clone())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.0
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens one connection and starts its driver task.
    async fn connect(&self) -> Result<Connection, H2Error> {
        let inner = &self.0;
        let failed = |e: String| H2Error::Connect(inner.base.clone(), e);
        let open = async {
            let tcp = TcpStream::connect((inner.host.as_str(), inner.port))
                .await
                .map_err(|e| failed(e.to_string()))?;
            tcp.set_nodelay(true).map_err(|e| failed(e.to_string()))?;
            match &inner.tls {
                None => handshake(tcp, inner.limits.platform).await,
                Some(tls) => {
                    let name = rustls_pki_types::ServerName::try_from(inner.host.clone())
                        .map_err(|e| failed(e.to_string()))?;
                    let stream = tls
                        .connect(name, tcp)
                        .await
                        .map_err(|e| failed(format!("tls: {e}")))?;
                    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                        return Err(failed("the server does not speak HTTP/2".into()));
                    }
                    handshake(stream, inner.limits.platform).await
                }
            }
        };
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| failed(format!("no answer in {CONNECT_TIMEOUT:?}")))??;
        metrics::counter!("pushd_provider_connections_total").increment(1);
        tracing::debug!(endpoint = %inner.base, "provider connection opened");
        Ok(connection)
    }
}

/// The HTTP/2 handshake over `io` to `platform`'s provider. A task drives
/// the connection, pinging it while it lives, and retires it when it ends.
async fn handshake<T>(io: T, platform: &'static str) -> Result<Connection, H2Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut connection) = h2::client::handshake(io).await?;
    let state = Arc::new(ConnState {
        in_flight: AtomicUsize::new(0),
        retired: AtomicU8::new(OPEN),
        opened: Instant::now(),
        platform,
    });
    let ping = connection.ping_pong();
    let done = state.clone();
    tokio::spawn(async move {
        // It ends well only after the provider's GOAWAY (or ours, once
        // retired and idle).
        let drive = async {
            match connection.await {
                Ok(()) => GOAWAY,
                Err(e) => {
                    tracing::debug!(error = %e, "provider connection closed");
                    if e.is_go_away() && e.is_remote() {
                        GOAWAY
                    } else {
                        CLOSED
                    }
                }
            }
        };
        let reason = match ping {
            Some(ping) => {
                tokio::select! {
                    reason = drive => reason,
                    () = keep_alive(ping) => {
                        tracing::debug!("provider connection stopped answering pings");
                        CLOSED
                    }
                }
            }
            None => drive.await,
        };
        done.retire(reason);
    });
    Ok(Connection { sender, state })
}

/// Pings every [`KEEP_ALIVE`]; returns when a ping goes unanswered.
async fn keep_alive(mut ping: h2::PingPong) {
    loop {
        tokio::time::sleep(KEEP_ALIVE).await;
        let answered = tokio::time::timeout(PING_TIMEOUT, ping.ping(h2::Ping::opaque())).await;
        if !matches!(answered, Ok(Ok(_))) {
            return;
        }
    }
}

/// TLS for `https://` endpoints: the Mozilla roots, ALPN `h2`.
fn tls_connector() -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

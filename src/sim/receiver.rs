//! A webhook receiver on loopback (HTTP/1.1, as most receivers are): it
//! hands every post (its `Pushd-Signature` and body) to whoever listens,
//! and answers as scripted — a status, a redirect, an endless body, or
//! nothing at all, so the post times out. Tests and the load harness point
//! webhooks at it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::{JoinHandle, JoinSet};

/// How the receiver answers a post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// This HTTP status, empty body.
    Status(u16),
    /// No answer: the connection stays open until the sender gives up.
    Silence,
    /// This redirect status (3xx) with `Location: http://<addr>/hook`.
    Redirect(u16, SocketAddr),
    /// This status and a chunked body that never ends, until the sender
    /// drops the connection.
    Endless(u16),
}

/// One post received.
#[derive(Clone, Debug)]
pub struct Post {
    /// The `Pushd-Signature` header, if any.
    pub signature: Option<String>,
    /// The body as sent.
    pub body: Bytes,
    /// How the receiver answered it.
    pub answer: Answer,
}

impl Post {
    /// Whether the receiver took it (answered 2xx).
    pub fn taken(&self) -> bool {
        matches!(
            self.answer,
            Answer::Status(200..=299) | Answer::Endless(200..=299)
        )
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

struct Script {
    next: VecDeque<Answer>,
    otherwise: Answer,
}

struct Shared {
    script: Mutex<Script>,
    posts: AtomicUsize,
    listener: Option<UnboundedSender<Post>>,
}

/// A running receiver; stops when dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts on 127.0.0.1:0, answering 200 and only counting posts.
    pub async fn start() -> std::io::Result<WebhookReceiver> {
        WebhookReceiver::launch(None).await
    }

    /// Starts on 127.0.0.1:0, answering 200; every post also goes to the
    /// receiver answered.
    pub async fn recording() -> std::io::Result<(WebhookReceiver, UnboundedReceiver<Post>)> {
        let (tx, rx) = unbounded_channel();
        Ok((WebhookReceiver::launch(Some(tx)).await?, rx))
    }

    async fn launch(listener: Option<UnboundedSender<Post>>) -> std::io::Result<WebhookReceiver> {
        let socket = TcpListener::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                next: VecDeque::new(),
                otherwise: Answer::Status(200),
            }),
            posts: AtomicUsize::new(0),
            listener,
        });
        let task = tokio::spawn(accept_loop(socket, shared.clone()));
        Ok(WebhookReceiver { addr, shared, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give a webhook.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next posts with `answers`, in order, then as before.
    pub fn answer_next(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script().next.extend(answers);
    }

    /// Answers every post not scripted by [`answer_next`](Self::answer_next)
    /// with `answer`.
    pub fn answer_otherwise(&self, answer: Answer) {
        self.script().otherwise = answer;
    }

    /// Posts received so far, whatever the answer.
    pub fn posts(&self) -> usize {
        self.shared.posts.load(Ordering::SeqCst)
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.shared
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(socket: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                connections.spawn(serve(stream, shared.clone()));
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let shared = shared.clone();
        async move {
            let signature = request
                .headers()
                .get("pushd-signature")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = request.into_body().collect().await?.to_bytes();
            shared.posts.fetch_add(1, Ordering::SeqCst);
            let answer = {
                let mut script = shared.script.lock().unwrap_or_else(PoisonError::into_inner);
                script.next.pop_front().unwrap_or(script.otherwise)
            };
            if let Some(tx) = &shared.listener {
                let _ = tx.send(Post {
                    signature,
                    body,
                    answer,
                });
            }
            let empty = || Full::new(Bytes::new()).boxed();
            let response = match answer {
                Answer::Status(status) => Response::builder().status(status).body(empty()),
                Answer::Redirect(status, to) => Response::builder()
                    .status(status)
                    .header("location", format!("http://{to}/hook"))
                    .body(empty()),
                Answer::Endless(status) => {
                    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                    let frames = futures_util::stream::repeat_with(move || {
                        Ok::<_, Infallible>(Frame::data(chunk.clone()))
                    });
                    Response::builder()
                        .status(status)
                        .body(BoxBody::new(StreamBody::new(frames)))
                }
                Answer::Silence => std::future::pending().await,
            };
            Ok::<_, hyper::Error>(response.expect("a valid answer"))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

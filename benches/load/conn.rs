//! One keep-alive HTTP/1.1 connection to a node, driven by the task that
//! sends on it: the cluster's reports phase opens [`REPORTS_IN_FLIGHT`]
//! of them per node, each sending its next report when the last is
//! answered.
//!
//! reqwest (the harness's client elsewhere) checks a connection out of a
//! shared pool and hands each request to a connection task of its own, a
//! wake-up of another task (often on the other thread) per call: in this
//! phase that cost the harness 54 µs of CPU per report, a quarter of a
//! node's, taken from the same 2 cores the three capped nodes need.
//! hyper's connection polled in the caller's own task does the same call
//! without them, for 37 µs.
//!
//! [`REPORTS_IN_FLIGHT`]: crate::cluster::REPORTS_IN_FLIGHT

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::daemon::Res;

/// Posts JSON bodies to one path of one node, one at a time.
pub struct Poster {
    address: String,
    uri: Uri,
    bearer: HeaderValue,
}

impl Poster {
    /// A poster of `path` at `base` (`http://host:port`) with bearer `key`.
    pub fn new(base: &str, path: &str, key: &str) -> Res<Poster> {
        let address = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("{base}: not http://"))?
            .to_string();
        Ok(Poster {
            uri: format!("{base}{path}").parse()?,
            bearer: format!("Bearer {key}").parse()?,
            address,
        })
    }

    /// Opens a connection and posts each body `bodies` gives, in turn;
    /// `answered` gets each status and, unless 200, the answer's body, and
    /// says whether to post the same body again. Answers how many bodies
    /// were answered 200.
    pub async fn post_all<B, A>(&self, mut bodies: B, mut answered: A) -> Res<usize>
    where
        B: Iterator<Item = String>,
        A: AsyncFnMut(u16, &[u8]) -> Res<bool>,
    {
        let stream = tokio::net::TcpStream::connect(&self.address).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let host = HeaderValue::from_str(&self.address)?;
        let send = async {
            let mut ok = 0;
            let mut next = bodies.next().map(Bytes::from);
            while let Some(body) = next.take() {
                sender.ready().await?;
                let request = Request::post(self.uri.clone())
                    .header(HOST, host.clone())
                    .header(AUTHORIZATION, self.bearer.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(body.clone()))?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let answer = response.into_body().collect().await?.to_bytes();
                match answered(status, &answer).await? {
                    true => next = Some(body),
                    false => {
                        ok += usize::from(status == 200);
                        next = bodies.next().map(Bytes::from);
                    }
                }
            }
            drop(sender);
            Res::Ok(ok)
        };
        // The connection is polled in this task: it ends when the sender
        // is dropped.
        let (sent, closed) = tokio::join!(send, connection);
        closed?;
        sent
    }
}

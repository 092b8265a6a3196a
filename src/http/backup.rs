//! `GET /v1/backup`: an archive of the whole state (see [`crate::backup`]),
//! streamed as it is written. The size is known before the first byte, so
//! it goes with a `Content-Length`: a reader cut off mid-way sees a short
//! body, and the archive's own end mark and CRC refuse it too.
//!
//! On a cluster node, the node taking the backup asks each partition's
//! node for that partition's store: `GET /v1/cluster/partitions/{p}/store`,
//! a node-to-node call, answered with the store's portable export and the
//! journal position it covers (header [`COVERED`]).

use std::io::{self, Seek, Write};

use actix_web::http::Method;
use actix_web::http::header::{ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::auth::{ApiKey, NodeCall};
use super::error::ApiError;
use super::{AppState, endpoint};
use crate::backup::Spooled;
use crate::topology;
use crate::topology::wire::{COVERED, Refused};

/// Chunks in flight between the writer and the connection.
const CHUNKS_IN_FLIGHT: usize = 4;
/// The writer's buffer: the size of most chunks.
const CHUNK_BYTES: usize = 64 << 10;

async fn backup(_: ApiKey, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let backup = state.backup.clone().take().await?;
    let (size, name) = (backup.size(), backup.file_name());
    let body = streamed(move |pipe| match backup.write(pipe) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            tracing::warn!("backup not sent whole: the client went away");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "backup failed while it was sent; the client gets a cut archive");
            Err(e)
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(name)],
        })
        .no_chunking(size)
        .streaming(body))
}

/// `GET /v1/cluster/partitions/{partition}/store`: this node's partition's
/// share of a cluster's backup, which another node is taking; only a node
/// may ask (signed with the cluster secret). 503 `partition_unavailable`
/// where this node does not serve the partition (the asking node asks its
/// owner again).
async fn partition_store(
    req: HttpRequest,
    state: web::Data<AppState>,
    partition: web::Path<u16>,
) -> Result<HttpResponse, ApiError> {
    if req.extensions().get::<NodeCall>().is_none() {
        return Err(Refused::Missing.into());
    }
    let partition = partition.into_inner();
    let Some(spooled) = state.backup.clone().export_partition(partition).await? else {
        return Err(topology::Error::PartitionUnavailable {
            partition,
            why: "this node does not serve it now".into(),
        }
        .into());
    };
    let Spooled {
        mut file,
        len,
        position,
    } = spooled;
    let body = streamed(move |pipe| {
        file.rewind()?;
        io::copy(&mut file, pipe).map(drop)
    });
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((COVERED, position.to_string()))
        .no_chunking(len)
        .streaming(body))
}

/// The body `write` writes (on the blocking pool), a chunk at a time, as
/// the connection takes it.
fn streamed(
    write: impl FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    actix_web::rt::task::spawn_blocking(move || {
        let mut pipe = io::BufWriter::with_capacity(CHUNK_BYTES, Pipe(tx.clone()));
        match write(&mut pipe).and_then(|()| pipe.flush()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                let _ = tx.blocking_send(Err(e));
            }
            _ => {}
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
}

/// Hands what is written to the response, a chunk at a time, waiting while
/// the connection is behind; fails with `BrokenPipe` once it is gone.
struct Pipe(mpsc::Sender<io::Result<Bytes>>);

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/backup", [(Method::GET, web::to(backup))]));
    cfg.service(endpoint(
        "/v1/cluster/partitions/{partition}/store",
        [(Method::GET, web::to(partition_store))],
    ));
}

//! `GET /v1/backup`: an archive of the whole state at one journal position
//! (see [`crate::backup`]), streamed as it is written. The size is known
//! before the first byte, so it goes with a `Content-Length`: a reader cut
//! off mid-way sees a short body, and the archive's own end mark and CRC
//! refuse it too.

use std::io::{self, Write};

use actix_web::http::Method;
use actix_web::http::header::{ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::auth::ApiKey;
use super::error::ApiError;
use super::{AppState, endpoint};

/// Chunks in flight between the writer and the connection.
const CHUNKS_IN_FLIGHT: usize = 4;
/// The writer's buffer: the size of most chunks.
const CHUNK_BYTES: usize = 64 << 10;

async fn backup(_: ApiKey, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let source = state.backup()?;
    let backup = super::reach::off_workers(move || Ok(source.take()?)).await?;
    let (size, name) = (backup.size(), backup.file_name());
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    actix_web::rt::task::spawn_blocking(move || {
        let pipe = io::BufWriter::with_capacity(CHUNK_BYTES, Pipe(tx.clone()));
        match backup.write(pipe) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                tracing::warn!("backup not sent whole: the client went away");
            }
            Err(e) => {
                tracing::error!(error = %e, "backup failed while it was sent; the client gets a cut archive");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
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

/// Registers the route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/backup", [(Method::GET, web::to(backup))]));
}

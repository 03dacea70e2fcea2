//! `crius.v1.Admin`: what the `crius` CLI needs and CRI has no RPC for — image archive
//! import and export, and a content-store check. Served on the CRI socket itself, so it
//! is reachable by exactly those who may reach CRI (0660 root), and goes through the same
//! [`handle`] wrapper (span, outcome log, error → status) as the CRI services.
//!
//! Archives are streamed, never held whole in memory: imported chunks flow through a
//! bounded channel into a blocking [`Read`] the domain consumes on its own thread, and
//! the exporter's blocking [`Write`] feeds a bounded channel the response streams from.

use std::io::{self, Read, Write};
use std::sync::Arc;

use crius_core::Runtime;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::cri::{handle, CriError, Ids, ResponseStream};

/// The generated `crius.v1` types and service stubs (from `proto-admin/`). Generated
/// code is exempt from the workspace lints.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    missing_debug_implementations,
    missing_docs
)]
pub mod wire {
    tonic::include_proto!("crius.v1");
}

use wire::admin_server::Admin;

/// Archive bytes per streamed message: well under the 16 MiB message limit.
pub const CHUNK: usize = 1 << 20;

/// Chunks buffered between the network and the blocking reader or writer.
const IN_FLIGHT: usize = 4;

/// The Admin service over the domain runtime.
#[derive(Debug, Clone)]
pub struct AdminService {
    runtime: Arc<Runtime>,
}

impl AdminService {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    type ExportImageStream = ResponseStream<wire::ExportImageChunk>;

    async fn import_image(
        &self,
        r: Request<Streaming<wire::ImportImageChunk>>,
    ) -> Result<Response<wire::ImportImageResponse>, Status> {
        let stream = r.into_inner();
        handle("ImportImage", Ids::default(), async {
            let (tx, rx) = mpsc::channel(IN_FLIGHT);
            let pump = tokio::spawn(pump_chunks(stream, tx));
            let imported = self.runtime.images().import(ChannelReader::new(rx)).await;
            // The archive may end before the client's last (padding) chunk arrives.
            pump.abort();
            let images = imported.map_err(crius_core::Error::from)?;
            Ok(wire::ImportImageResponse {
                images: images.iter().map(summary).collect(),
            })
        })
        .await
    }

    async fn export_image(
        &self,
        r: Request<wire::ExportImageRequest>,
    ) -> Result<Response<Self::ExportImageStream>, Status> {
        let reference = r.into_inner().reference;
        handle(
            "ExportImage",
            Ids {
                image: &reference,
                ..Ids::default()
            },
            async {
                if reference.is_empty() {
                    return Err(CriError::InvalidArgument(
                        "reference must name the image to export".into(),
                    ));
                }
                let runtime = self.runtime.clone();
                let wanted = reference.clone();
                // Answer NotFound as the RPC's status, before any byte is streamed.
                let found = crate::cri::blocking(move || {
                    runtime
                        .images()
                        .status(&wanted)
                        .map_err(|e| CriError::Core(e.into()))
                })
                .await?;
                let image = found.ok_or_else(|| {
                    CriError::Core(crius_core::Error::NotFound(format!(
                        "image {reference:?} not found; `crius image ls` lists the images"
                    )))
                })?;
                Ok(self.stream_export(image.id.to_string()))
            },
        )
        .await
    }

    async fn fsck(
        &self,
        _: Request<wire::FsckRequest>,
    ) -> Result<Response<wire::FsckResponse>, Status> {
        handle("Fsck", Ids::default(), async {
            let runtime = self.runtime.clone();
            let bad = crate::cri::blocking(move || {
                runtime
                    .images()
                    .fsck()
                    .map_err(|e| CriError::Core(e.into()))
            })
            .await?;
            Ok(wire::FsckResponse {
                bad_blobs: bad.iter().map(bad_blob).collect(),
            })
        })
        .await
    }
}

impl AdminService {
    /// Runs the export on a blocking thread writing into the response stream. A failure
    /// after the first byte can only travel in the stream, so it is logged here, once.
    fn stream_export(&self, id: String) -> ResponseStream<wire::ExportImageChunk> {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = ChannelWriter::new(tx.clone());
            let result = runtime
                .images()
                .export(&id, &mut out)
                .map_err(crius_core::Error::from)
                .and_then(|()| {
                    out.finish().map_err(|error| crius_core::Error::Io {
                        what: format!("stream the archive of {id}"),
                        error,
                    })
                });
            if let Err(e) = result {
                let e = CriError::Core(e);
                tracing::error!(image = %id, error = %e, "export failed mid-stream");
                let _ = tx.blocking_send(Err(Status::from(e)));
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Forwards the client's chunks to the reader; a transport error becomes the reader's
/// I/O error so the import fails with it.
async fn pump_chunks(
    mut stream: Streaming<wire::ImportImageChunk>,
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
) {
    loop {
        let item = match stream.message().await {
            Ok(Some(chunk)) if chunk.data.is_empty() => continue,
            Ok(Some(chunk)) => Ok(chunk.data),
            Ok(None) => return,
            Err(status) => Err(io::Error::other(format!(
                "archive stream broke: {}",
                status.message()
            ))),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// A blocking [`Read`] over chunks arriving on a channel; end of stream when the sender
/// is gone. Must be read from a blocking thread, never a tokio worker.
#[derive(Debug)]
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        Self {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk?;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A blocking [`Write`] that sends [`CHUNK`]-sized messages down a channel; a closed
/// channel (the client went away) is a broken pipe.
#[derive(Debug)]
struct ChannelWriter {
    tx: mpsc::Sender<Result<wire::ExportImageChunk, Status>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Result<wire::ExportImageChunk, Status>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(wire::ExportImageChunk { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "export client went away"))
    }

    fn finish(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are sent when full or at the end; flushing early would only make
        // smaller messages.
        Ok(())
    }
}

/// The wire form of a domain image.
pub fn summary(i: &crius_core::Image) -> wire::ImageSummary {
    wire::ImageSummary {
        id: i.id.to_string(),
        repo_tags: i.repo_tags.clone(),
        repo_digests: i.repo_digests.clone(),
        size: i.size,
    }
}

fn bad_blob(b: &crius_core::BadBlob) -> wire::BadBlob {
    wire::BadBlob {
        digest: b.digest.to_string(),
        reason: b.reason.clone(),
    }
}

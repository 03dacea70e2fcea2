//! The CRI gRPC services: thin translations between CRI messages and `crius-core`.
//!
//! Every RPC goes through [`handle`], which opens one span named after the RPC carrying
//! the pod, container and image ids, logs the outcome once, and maps the domain error to
//! a gRPC status by its kind. Handlers are one line: convert, call the domain, convert.
//! The services are only served once the runtime is fully opened, so no call can observe
//! a half-initialised daemon.

mod container;
mod convert;
mod events;
mod image;
mod pod;
mod runtime;
mod stats;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use tonic::{Code, Response, Status};
use tracing::Instrument;

pub use image::ImageService;
pub use runtime::RuntimeService;

/// A server-streaming response.
pub type ResponseStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Errors at the gRPC edge: the domain's, plus what only the edge can detect.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error(transparent)]
    Core(#[from] crius_core::Error),
    #[error("streaming server: {0}")]
    Stream(#[from] crius_stream::Error),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} is not implemented yet by crius")]
    Unimplemented(&'static str),
    #[error("{0}")]
    Internal(String),
}

impl CriError {
    fn code(&self) -> Code {
        use crius_core::ErrorKind as K;
        match self {
            CriError::Core(e) => match e.kind() {
                K::InvalidArgument => Code::InvalidArgument,
                K::NotFound => Code::NotFound,
                K::AlreadyExists => Code::AlreadyExists,
                K::FailedPrecondition => Code::FailedPrecondition,
                K::ResourceExhausted => Code::ResourceExhausted,
                K::DeadlineExceeded => Code::DeadlineExceeded,
                K::Unavailable => Code::Unavailable,
                K::Internal => Code::Internal,
            },
            CriError::Stream(e) => {
                use crius_stream::ErrorKind as S;
                match e.kind() {
                    S::InvalidArgument => Code::InvalidArgument,
                    S::NotFound => Code::NotFound,
                    S::AlreadyExists => Code::AlreadyExists,
                    S::FailedPrecondition => Code::FailedPrecondition,
                    S::ResourceExhausted => Code::ResourceExhausted,
                    S::DeadlineExceeded => Code::DeadlineExceeded,
                    S::Unavailable => Code::Unavailable,
                    S::Internal => Code::Internal,
                }
            }
            CriError::InvalidArgument(_) => Code::InvalidArgument,
            CriError::Unimplemented(_) => Code::Unimplemented,
            CriError::Internal(_) => Code::Internal,
        }
    }
}

impl From<CriError> for Status {
    fn from(e: CriError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// The ids an RPC is about, recorded on its span.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Ids<'a> {
    pub pod: &'a str,
    pub container: &'a str,
    pub image: &'a str,
}

/// Runs one RPC inside its span, logs the outcome once and maps the error.
pub(crate) async fn handle<T, F>(
    rpc: &'static str,
    ids: Ids<'_>,
    call: F,
) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, CriError>>,
{
    let span = tracing::info_span!(
        "rpc",
        rpc,
        pod_id = ids.pod,
        container_id = ids.container,
        image = ids.image
    );
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let _entered = span.enter();
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match result {
        Ok(reply) => {
            tracing::debug!(elapsed_us, "ok");
            Ok(Response::new(reply))
        }
        Err(e) => {
            let status = Status::from(e);
            if status.code() == Code::Internal {
                tracing::error!(elapsed_us, code = ?status.code(), error = status.message(), "failed");
            } else {
                tracing::info!(elapsed_us, code = ?status.code(), error = status.message(), "failed");
            }
            Err(status)
        }
    }
}

/// Runs blocking domain work (the store, the monitor client, the filesystem) on tokio's
/// blocking pool so it never stalls the async workers.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, CriError>
where
    F: FnOnce() -> Result<T, CriError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CriError::Internal(format!("blocking task failed: {e}")))?
}

/// The answer of an RPC whose issue has not landed yet; it names the RPC.
pub(crate) async fn unimplemented<T>(rpc: &'static str) -> Result<Response<T>, Status> {
    handle(rpc, Ids::default(), async move {
        Err(CriError::Unimplemented(rpc))
    })
    .await
}

//! The daemon's [`StreamBackend`]: what the streaming server calls once a client
//! connected to a URL that `Exec`, `Attach` or `PortForward` issued.
//!
//! - exec: the pod's monitor starts the process (with the container's own process
//!   settings, see `crius_core`); without a terminal its stdio are socketpairs whose far
//!   ends the monitor hands to the process, with one the pty master comes back. Bytes are
//!   copied here between those and the client's streams.
//! - attach: the monitor writes the container's output into socketpairs given to it and
//!   takes the client's stdin on the fd it returns.
//! - port-forward: a TCP connection to the port on the pod's loopback, made inside its
//!   network namespace by crius-net on a short-lived thread, then copied both ways.
//!
//! Every session is cancellation safe: when the client leaves, the streaming server
//! drops the future, and a guard asks the monitor to kill the exec'd process (or drop the
//! attacher), so nothing outlives its client.

use std::sync::Arc;
use std::time::Duration;

use crius_core::Runtime;
use crius_stream::{
    AttachRequest, BoxFuture, ErrorKind, ExecRequest, PortStream, StreamBackend, Streams,
};

/// How long a port-forward waits for the pod's server to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves streaming sessions through the domain runtime.
#[derive(Debug, Clone)]
pub struct DaemonStreams {
    runtime: Arc<Runtime>,
}

impl DaemonStreams {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }
}

impl StreamBackend for DaemonStreams {
    fn exec(&self, req: ExecRequest, streams: Streams) -> BoxFuture<'_, crius_stream::Result<i32>> {
        let _ = (req, streams);
        Box::pin(async {
            Err(crius_stream::Error::backend(
                ErrorKind::Internal,
                "exec is not wired yet",
            ))
        })
    }

    fn attach(
        &self,
        req: AttachRequest,
        streams: Streams,
    ) -> BoxFuture<'_, crius_stream::Result<()>> {
        let _ = (req, streams);
        Box::pin(async {
            Err(crius_stream::Error::backend(
                ErrorKind::Internal,
                "attach is not wired yet",
            ))
        })
    }

    fn port_forward(
        &self,
        pod_id: String,
        port: u16,
        mut stream: PortStream,
    ) -> BoxFuture<'_, crius_stream::Result<()>> {
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let tcp =
                blocking(move || runtime.connect_pod_port(&pod_id, port, CONNECT_TIMEOUT)).await?;
            tcp.set_nonblocking(true)?;
            let mut tcp = tokio::net::TcpStream::from_std(tcp)?;
            // Each direction ends with a FIN to the other side; done when both ended.
            tokio::io::copy_bidirectional(&mut tcp, &mut stream).await?;
            Ok(())
        })
    }
}

/// Runs blocking domain work (store, monitor socket, netns thread) on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> crius_core::Result<T> + Send + 'static,
) -> crius_stream::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| {
            crius_stream::Error::backend(ErrorKind::Internal, format!("blocking task failed: {e}"))
        })?
        .map_err(core_error)
}

/// A domain error as the streaming server reports it to the client.
fn core_error(e: crius_core::Error) -> crius_stream::Error {
    use crius_core::ErrorKind as K;
    let kind = match e.kind() {
        K::InvalidArgument => ErrorKind::InvalidArgument,
        K::NotFound => ErrorKind::NotFound,
        K::AlreadyExists => ErrorKind::AlreadyExists,
        K::FailedPrecondition => ErrorKind::FailedPrecondition,
        K::ResourceExhausted => ErrorKind::ResourceExhausted,
        K::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        K::Unavailable => ErrorKind::Unavailable,
        K::Internal => ErrorKind::Internal,
    };
    crius_stream::Error::backend(kind, e.to_string())
}

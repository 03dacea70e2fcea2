//! The contract between the streaming server and whoever runs processes.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::Result;

/// A boxed, sendable future, so that [`StreamBackend`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The read side handed to a backend (the client's stdin).
pub type BoxReader = Box<dyn AsyncRead + Send + Unpin>;

/// The write side handed to a backend (the client's stdout or stderr).
pub type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A byte stream for one forwarded connection: read what the client sends,
/// write what goes back to it. Shutting down the write side ends the client's
/// stream; a read of 0 bytes means the client closed its side.
pub type PortStream = tokio::io::DuplexStream;

/// A terminal size, as clients send it on the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's streams for one exec or attach session.
///
/// A stream is `Some` exactly when the issued request asked for it. Dropping
/// (or shutting down) `stdout`/`stderr` closes that stream for the client;
/// `stdin` reads 0 bytes once the client closed its stdin.
#[derive(Default)]
pub struct Streams {
    /// The client's stdin.
    pub stdin: Option<BoxReader>,
    /// Where the process's stdout goes.
    pub stdout: Option<BoxWriter>,
    /// Where the process's stderr goes (always `None` with a tty).
    pub stderr: Option<BoxWriter>,
    /// Terminal resize events (only with a tty).
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// An exec the daemon validated and wants served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The container to run the command in.
    pub container_id: String,
    /// The command and its arguments (not empty).
    pub cmd: Vec<String>,
    /// Allocate a terminal; stdout and stderr then share it.
    pub tty: bool,
    /// Forward the client's stdin.
    pub stdin: bool,
    /// Forward stdout to the client.
    pub stdout: bool,
    /// Forward stderr to the client (must be false with `tty`).
    pub stderr: bool,
}

/// An attach the daemon validated and wants served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// The container whose stdio to attach to.
    pub container_id: String,
    /// The container runs with a terminal.
    pub tty: bool,
    /// Forward the client's stdin.
    pub stdin: bool,
    /// Forward stdout to the client.
    pub stdout: bool,
    /// Forward stderr to the client (must be false with `tty`).
    pub stderr: bool,
}

/// A port-forward the daemon validated and wants served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    /// The pod whose network namespace the ports live in.
    pub pod_id: String,
    /// Ports the client may forward. Over SPDY an empty list allows any port
    /// the client names; over WebSocket the list says which channels exist.
    pub ports: Vec<u16>,
}

/// What the streaming server calls to do the real work.
///
/// Contract:
/// - `exec` runs `req.cmd` in the container, copies the given streams until
///   the process exits and returns its exit code (0 for success). An error
///   means the process could not be run; its message reaches the client.
/// - `attach` copies the container's stdio until the client detaches (stdin
///   closed and output no longer wanted) or the container exits.
/// - `port_forward` connects to `port` inside the pod's network namespace
///   and copies both ways until both sides are closed; an error (for example
///   a refused connection) reaches the client on the error stream.
/// - Resize events arrive in order; the receiver closes with the session.
/// - When the client's connection ends first, the returned future is
///   dropped: implementations must be cancellation safe (release what they
///   hold on drop; whether an exec'd process is then killed is theirs to
///   decide).
/// - Calls run concurrently (many sessions, many forwarded connections per
///   port-forward session); implementations must not block the runtime
///   thread.
pub trait StreamBackend: Send + Sync + 'static {
    /// Runs a command in a container; returns its exit code.
    fn exec(&self, req: ExecRequest, streams: Streams) -> BoxFuture<'_, Result<i32>>;
    /// Attaches to a running container's stdio.
    fn attach(&self, req: AttachRequest, streams: Streams) -> BoxFuture<'_, Result<()>>;
    /// Forwards one client connection to `port` in the pod.
    fn port_forward(
        &self,
        pod_id: String,
        port: u16,
        stream: PortStream,
    ) -> BoxFuture<'_, Result<()>>;
}

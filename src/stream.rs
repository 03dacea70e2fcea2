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

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::time::Duration;

use crius_core::container::StreamsRequest;
use crius_core::Runtime;
use crius_monitor::{ExecFds, SessionHandle};
use crius_stream::{
    AttachRequest, BoxFuture, BoxWriter, ErrorKind, ExecRequest, PortStream, StreamBackend,
    Streams, TermSize,
};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// How long a port-forward waits for the pod's server to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Once the process exited (or the attach ended), how long its output may take to drain:
/// a background child still holding the stream must not hold the session open forever.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// End-of-transmission: what a terminal's line discipline turns into end of file.
const EOT: u8 = 0x04;

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
        let runtime = self.runtime.clone();
        Box::pin(async move {
            if req.tty {
                exec_tty(runtime, req, streams).await
            } else {
                exec_pipes(runtime, req, streams).await
            }
        })
    }

    fn attach(
        &self,
        req: AttachRequest,
        streams: Streams,
    ) -> BoxFuture<'_, crius_stream::Result<()>> {
        Box::pin(attach(self.runtime.clone(), req, streams))
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

/// An exec without a terminal: one socketpair per stream, the far end the process's.
async fn exec_pipes(
    runtime: Arc<Runtime>,
    req: ExecRequest,
    streams: Streams,
) -> crius_stream::Result<i32> {
    let (stdin, stdin_theirs) = pair(req.stdin)?;
    let (stdout, stdout_theirs) = pair(req.stdout)?;
    let (stderr, stderr_theirs) = pair(req.stderr)?;
    let fds = ExecFds {
        stdin: stdin_theirs,
        stdout: stdout_theirs,
        stderr: stderr_theirs,
    };
    let flags = stdio_flags(req.stdin, req.stdout, req.stderr, false);
    let session =
        blocking(move || runtime.start_exec(&req.container_id, req.cmd, flags, fds)).await?;
    let guard = CancelOnDrop::new(session.handle().map_err(monitor_error)?);
    let input = async move {
        if let (Some(from), Some(to)) = (streams.stdin, stdin) {
            // The process reads end of file once the client closed its stdin.
            pump(from, to).await;
        }
    };
    let output = async move {
        tokio::join!(
            pump_opt(stdout, streams.stdout),
            pump_opt(stderr, streams.stderr)
        );
    };
    let wait = tokio::task::spawn_blocking(move || session.wait());
    let code = drive(wait, input, output).await?;
    guard.disarm();
    Ok(code)
}

/// An exec with a terminal: the pty master comes back from the monitor.
async fn exec_tty(
    runtime: Arc<Runtime>,
    req: ExecRequest,
    streams: Streams,
) -> crius_stream::Result<i32> {
    let flags = stdio_flags(req.stdin, req.stdout, false, true);
    let mut session =
        blocking(move || runtime.start_exec(&req.container_id, req.cmd, flags, ExecFds::default()))
            .await?;
    let guard = CancelOnDrop::new(session.handle().map_err(monitor_error)?);
    let master = session.pty_master.take().ok_or_else(|| {
        crius_stream::Error::backend(ErrorKind::Internal, "the monitor returned no pty master")
    })?;
    let reader = pipe::Receiver::from_owned_fd_unchecked(nonblocking(master.try_clone()?)?)?;
    let writer = pipe::Sender::from_owned_fd_unchecked(nonblocking(master.try_clone()?)?)?;
    let input = async move {
        let stdin = async move {
            if let Some(from) = streams.stdin {
                // End of the client's stdin becomes end of file for the process.
                let mut to = writer;
                if copy(from, &mut to).await.is_ok() {
                    let _ = to.write_all(&[EOT]).await;
                }
            }
        };
        tokio::join!(stdin, resize_loop(streams.resize, Some(master)));
    };
    // Reading a master whose slave side is all closed fails with EIO: the process ended.
    let output = pump_opt(Some(reader), streams.stdout);
    let wait = tokio::task::spawn_blocking(move || session.wait());
    let code = drive(wait, input, output).await?;
    guard.disarm();
    Ok(code)
}

/// Attach: the monitor writes the container's output into socketpairs, the client's
/// stdin goes to the fd it returns.
async fn attach(
    runtime: Arc<Runtime>,
    req: AttachRequest,
    streams: Streams,
) -> crius_stream::Result<()> {
    let (stdout, stdout_theirs) = pair(req.stdout)?;
    let (stderr, stderr_theirs) = pair(req.stderr)?;
    let id = req.container_id.clone();
    let mut session =
        blocking(move || runtime.start_attach(&id, req.stdin, stdout_theirs, stderr_theirs))
            .await?;
    let handle = Arc::new(session.handle().map_err(monitor_error)?);
    let _guard = CancelOnDrop::new(session.handle().map_err(monitor_error)?);
    let tty = session.tty;
    // Taken, not cloned: the container sees end of file only once every write end is
    // closed, and the session itself lives until the attach ends.
    let stdin_fd = session.stdin.take();
    let resize_fd = match (&stdin_fd, tty) {
        (Some(fd), true) => Some(fd.try_clone()?),
        _ => None,
    };
    let stdin = match stdin_fd {
        Some(fd) => Some(pipe::Sender::from_owned_fd_unchecked(nonblocking(fd)?)?),
        None => None,
    };
    let wants_output = req.stdout || req.stderr;
    let input = async move {
        let stdin = async move {
            match (streams.stdin, stdin) {
                (Some(from), Some(to)) => {
                    pump(from, to).await;
                    // The fd is closed by now; with stdin_once the monitor closes its own.
                    let _ = tokio::task::spawn_blocking(move || handle.stdin_closed()).await;
                }
                // The container has no stdin: the client's input goes nowhere.
                (Some(from), None) => pump(from, tokio::io::sink()).await,
                (None, _) => {}
            }
        };
        let resize = resize_loop(streams.resize, resize_fd);
        if wants_output {
            tokio::join!(stdin, resize);
        } else {
            // Without output to deliver, the client detaches by closing its stdin.
            stdin.await;
        }
    };
    let output = async move {
        tokio::join!(
            pump_opt(stdout, streams.stdout),
            pump_opt(stderr, streams.stderr)
        );
    };
    let wait = tokio::task::spawn_blocking(move || session.wait());
    tokio::pin!(input, output, wait);
    let (mut input_done, output_done) = (false, !wants_output);
    loop {
        tokio::select! {
            ended = &mut wait => {
                if let Ok(Ok(reason)) = ended {
                    tracing::debug!(container_id = %req.container_id, reason, "attach ended");
                }
                break;
            }
            () = &mut input, if !input_done => {
                input_done = true;
                if !wants_output {
                    break;
                }
            }
            // The client stopped reading (or the monitor closed the sinks): detached.
            () = &mut output, if !output_done => return Ok(()),
        }
    }
    if !output_done {
        let _ = tokio::time::timeout(OUTPUT_GRACE, &mut output).await;
    }
    Ok(())
}

/// Runs a session's copies until the process exits, then lets its output drain.
async fn drive(
    wait: tokio::task::JoinHandle<crius_monitor::Result<i32>>,
    input: impl Future<Output = ()>,
    output: impl Future<Output = ()>,
) -> crius_stream::Result<i32> {
    tokio::pin!(input, output, wait);
    let (mut input_done, mut output_done) = (false, false);
    let exited = loop {
        tokio::select! {
            exited = &mut wait => break exited,
            () = &mut input, if !input_done => input_done = true,
            () = &mut output, if !output_done => output_done = true,
        }
    };
    let code = exited
        .map_err(|e| {
            crius_stream::Error::backend(ErrorKind::Internal, format!("exec wait failed: {e}"))
        })?
        .map_err(monitor_error)?;
    if !output_done
        && tokio::time::timeout(OUTPUT_GRACE, &mut output)
            .await
            .is_err()
    {
        tracing::debug!("exec output still open after the process exited; closing it");
    }
    Ok(code)
}

/// Applies the client's terminal sizes to the pty behind `fd`, in order.
async fn resize_loop(resize: Option<mpsc::Receiver<TermSize>>, fd: Option<OwnedFd>) {
    let Some(mut resize) = resize else {
        return;
    };
    while let Some(size) = resize.recv().await {
        let Some(fd) = &fd else {
            continue;
        };
        if let Err(e) = crius_monitor::terminal::resize(fd.as_fd(), size.width, size.height) {
            tracing::debug!(error = %e, "terminal resize failed");
        }
    }
}

/// Cancels a monitor session when dropped (the client left, or the session failed),
/// unless disarmed after the session ended normally.
struct CancelOnDrop(Option<SessionHandle>);

impl CancelOnDrop {
    fn new(handle: SessionHandle) -> Self {
        Self(Some(handle))
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.cancel();
        }
    }
}

/// A connected socketpair when `wanted`: criusd's end (async) and the process's end.
fn pair(wanted: bool) -> io::Result<(Option<UnixStream>, Option<OwnedFd>)> {
    if !wanted {
        return Ok((None, None));
    }
    let (ours, theirs) = StdUnixStream::pair()?;
    ours.set_nonblocking(true)?;
    Ok((Some(UnixStream::from_std(ours)?), Some(theirs.into())))
}

/// Sets O_NONBLOCK (tokio's readiness model needs it).
fn nonblocking(fd: OwnedFd) -> io::Result<OwnedFd> {
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(fd)
}

fn stdio_flags(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> StreamsRequest {
    StreamsRequest {
        stdin,
        stdout,
        stderr,
        tty,
    }
}

/// Copies `from` into `to` until either ends, then shuts `to` down (end of file for its
/// reader). I/O errors end the copy: either side is gone.
async fn pump(from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let _ = copy(from, &mut to).await;
    let _ = to.shutdown().await;
}

async fn pump_opt(from: Option<impl AsyncRead + Unpin>, to: Option<BoxWriter>) {
    match (from, to) {
        (Some(from), Some(to)) => pump(from, to).await,
        // Nobody reads it: drain so the writer never blocks.
        (Some(from), None) => pump(from, tokio::io::sink()).await,
        (None, Some(mut to)) => {
            let _ = to.shutdown().await;
        }
        (None, None) => {}
    }
}

/// `tokio::io::copy` with a larger buffer, flushing each chunk so interactive output is
/// never held back.
async fn copy(
    mut from: impl AsyncRead + Unpin,
    to: &mut (impl AsyncWrite + Unpin),
) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
    }
}

fn monitor_error(e: crius_monitor::Error) -> crius_stream::Error {
    core_error(crius_core::Error::from(e))
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

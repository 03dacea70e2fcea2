//! The blocking client criusd uses to talk to a pod's monitor (one connection per
//! thread; criusd runs it on a blocking thread, never on a tokio worker).

use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use crate::error::{Error, Result};
use crate::fdpass;
use crate::protocol::{
    self, checked_len, decode, encode, read_frame, write_frame, ContainerEvent, ContainerStats,
    ContainerStatus, CreateContainer, ExecSync, Request, Response, PROTOCOL_VERSION,
};

/// A connection to one monitor, after the `Hello` handshake.
///
/// Every call waits at most the connect timeout (plus the request's own grace period
/// for `StopContainer`, `StopPod` and `ExecSync`). A call that timed out leaves the
/// connection out of step with the monitor, so later calls fail with `Unavailable`:
/// reconnect.
///
/// ```no_run
/// # fn main() -> Result<(), crius_monitor::Error> {
/// use std::time::Duration;
/// let mut client = crius_monitor::MonitorClient::connect(
///     "/run/crius/pods/p1/monitor.sock".as_ref(),
///     Duration::from_secs(5),
/// )?;
/// for status in client.list()? {
///     println!("{} {:?}", status.id, status.state);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MonitorClient {
    stream: UnixStream,
    timeout: Duration,
    monitor_pid: i32,
    broken: bool,
}

/// The result of [`MonitorClient::exec_sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code (128 + signal when killed).
    pub exit_code: i32,
    /// Collected stdout (at most the cap).
    pub stdout: Vec<u8>,
    /// Collected stderr (at most the cap).
    pub stderr: Vec<u8>,
    /// The process was killed at the timeout.
    pub timed_out: bool,
    /// Output beyond the cap was dropped.
    pub truncated: bool,
}

impl MonitorClient {
    /// Connects to the monitor socket and performs the `Hello` handshake.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| Error::io(format!("connect {}", socket.display()), e))?;
        let mut client = Self {
            stream,
            timeout,
            monitor_pid: 0,
            broken: false,
        };
        match client.call_with_timeout(
            Request::Hello {
                version: PROTOCOL_VERSION,
            },
            Some(timeout),
        )? {
            Response::Hello {
                version,
                monitor_pid,
            } if version == PROTOCOL_VERSION => {
                client.monitor_pid = monitor_pid;
                Ok(client)
            }
            Response::Hello { version, .. } => Err(Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            }),
            other => Err(unexpected("Hello", &other)),
        }
    }

    /// The monitor's pid, from its `Hello`.
    pub fn monitor_pid(&self) -> i32 {
        self.monitor_pid
    }

    /// Sends `request` and reads its answer; `Response::Error` becomes
    /// [`Error::Remote`] with the monitor's kind and message.
    pub fn call(&mut self, request: Request) -> Result<Response> {
        let timeout = self.timeout_for(&request);
        self.call_with_timeout(request, timeout)
    }

    /// [`call`](Self::call) with an explicit read timeout (`None`: wait forever).
    pub fn call_with_timeout(
        &mut self,
        request: Request,
        timeout: Option<Duration>,
    ) -> Result<Response> {
        if self.broken {
            return Err(Error::io(
                "monitor connection",
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "out of step after an earlier failed call; reconnect",
                ),
            ));
        }
        let result = self.exchange(&request, timeout);
        if matches!(
            result,
            Err(Error::Timeout(_) | Error::Io { .. } | Error::Closed | Error::Malformed(_))
        ) {
            self.broken = true;
        }
        match result? {
            Response::Error { kind, message } => Err(Error::Remote { kind, message }),
            other => Ok(other),
        }
    }

    fn exchange(&mut self, request: &Request, timeout: Option<Duration>) -> Result<Response> {
        self.stream
            .set_write_timeout(Some(self.timeout))
            .and_then(|()| self.stream.set_read_timeout(timeout))
            .map_err(|e| Error::io("set socket timeout", e))?;
        write_frame(&mut self.stream, request)?;
        read_frame(&mut self.stream)
    }

    fn timeout_for(&self, request: &Request) -> Option<Duration> {
        let grace = |ms: u64| self.timeout.saturating_add(Duration::from_millis(ms));
        match request {
            Request::StopContainer { timeout_ms, .. } | Request::StopPod { timeout_ms } => {
                Some(grace(*timeout_ms))
            }
            Request::ExecSync(e) if e.timeout_ms == 0 => None,
            Request::ExecSync(e) => Some(grace(e.timeout_ms)),
            Request::Shutdown => Some(grace(10_000)),
            _ => Some(self.timeout),
        }
    }

    /// Creates a container; returns its init pid.
    pub fn create(&mut self, request: CreateContainer) -> Result<i32> {
        match self.call(Request::CreateContainer(request))? {
            Response::Created { pid } => Ok(pid),
            other => Err(unexpected("Created", &other)),
        }
    }

    /// Starts a created container.
    pub fn start(&mut self, id: &str) -> Result<()> {
        self.ok(Request::StartContainer { id: id.into() })
    }

    /// Sends `signal` to the container's init.
    pub fn signal(&mut self, id: &str, signal: i32) -> Result<()> {
        self.ok(Request::Signal {
            id: id.into(),
            signal,
        })
    }

    /// Sends `signal`, SIGKILL after `timeout`; returns once the container exited.
    pub fn stop(&mut self, id: &str, timeout: Duration, signal: i32) -> Result<()> {
        self.ok(Request::StopContainer {
            id: id.into(),
            timeout_ms: millis(timeout),
            signal,
        })
    }

    /// Removes an exited container (unknown ids succeed).
    pub fn remove(&mut self, id: &str) -> Result<()> {
        self.ok(Request::RemoveContainer { id: id.into() })
    }

    /// The container's status.
    pub fn state(&mut self, id: &str) -> Result<ContainerStatus> {
        match self.call(Request::ContainerState { id: id.into() })? {
            Response::State(s) => Ok(s),
            other => Err(unexpected("State", &other)),
        }
    }

    /// Every container of the pod, sorted by id.
    pub fn list(&mut self) -> Result<Vec<ContainerStatus>> {
        match self.call(Request::ListContainers)? {
            Response::Containers(list) => Ok(list),
            other => Err(unexpected("Containers", &other)),
        }
    }

    /// Runs a process in a running container and collects its output.
    pub fn exec_sync(&mut self, request: ExecSync) -> Result<ExecOutput> {
        match self.call(Request::ExecSync(request))? {
            Response::ExecResult {
                exit_code,
                stdout,
                stderr,
                timed_out,
                truncated,
            } => Ok(ExecOutput {
                exit_code,
                stdout,
                stderr,
                timed_out,
                truncated,
            }),
            other => Err(unexpected("ExecResult", &other)),
        }
    }

    /// The container's cgroup usage.
    pub fn stats(&mut self, id: &str) -> Result<ContainerStats> {
        match self.call(Request::Stats { id: id.into() })? {
            Response::Stats(s) => Ok(s),
            other => Err(unexpected("Stats", &other)),
        }
    }

    /// Reopens the container's log file.
    pub fn reopen_log(&mut self, id: &str) -> Result<()> {
        self.ok(Request::ReopenLog { id: id.into() })
    }

    /// Applies new resources to the container's cgroup.
    pub fn update_resources(&mut self, id: &str, resources: LinuxResources) -> Result<()> {
        self.ok(Request::UpdateResources {
            id: id.into(),
            resources,
        })
    }

    /// Stops every container of the pod; returns once all exited.
    pub fn stop_pod(&mut self, timeout: Duration) -> Result<()> {
        self.ok(Request::StopPod {
            timeout_ms: millis(timeout),
        })
    }

    /// Kills and removes every container, releases the pins; the monitor exits.
    pub fn shutdown(&mut self) -> Result<()> {
        self.ok(Request::Shutdown)
    }

    /// Turns this connection into a blocking stream of container events.
    pub fn subscribe(mut self) -> Result<EventStream> {
        self.ok(Request::Subscribe)?;
        self.stream
            .set_read_timeout(None)
            .map_err(|e| Error::io("set socket timeout", e))?;
        Ok(EventStream {
            stream: self.stream,
        })
    }

    /// Starts an interactive exec; the connection becomes the exec's.
    ///
    /// Without a terminal, `fds` holds the process's ends for each of `request`'s stdio
    /// flags that is true (and no other); they are sent and closed here. With
    /// `process.terminal`, `fds` must be empty and the session carries the pty master.
    pub fn exec(mut self, request: protocol::Exec, fds: ExecFds) -> Result<ExecSession> {
        let terminal = request.process.terminal().unwrap_or(false);
        let wanted = [request.stdin, request.stdout, request.stderr];
        let given = [&fds.stdin, &fds.stdout, &fds.stderr];
        for (name, (want, fd)) in ["stdin", "stdout", "stderr"]
            .into_iter()
            .zip(wanted.into_iter().zip(given))
        {
            if fd.is_some() && (terminal || !want) {
                return Err(Error::InvalidRequest(format!(
                    "exec in {}: an fd for {name} is only passed without a terminal and with {name}=true",
                    request.id
                )));
            }
            if fd.is_none() && want && !terminal {
                return Err(Error::InvalidRequest(format!(
                    "exec in {}: {name}=true needs the process's {name} fd",
                    request.id
                )));
            }
        }
        let sent: Vec<BorrowedFd<'_>> = [&fds.stdin, &fds.stdout, &fds.stderr]
            .into_iter()
            .flatten()
            .map(AsFd::as_fd)
            .collect();
        let (response, mut received) = self.exchange_fds(&Request::Exec(request), &sent)?;
        drop(fds);
        match response {
            Response::ExecStarted { pid, terminal } => {
                let pty_master = if terminal {
                    if received.len() != 1 {
                        return Err(Error::Unexpected {
                            expected: "ExecStarted with the pty master",
                            got: format!("ExecStarted with {} fds", received.len()),
                        });
                    }
                    received.pop()
                } else {
                    None
                };
                self.untimed()?;
                Ok(ExecSession {
                    pid,
                    pty_master,
                    stream: self.stream,
                })
            }
            other => Err(unexpected("ExecStarted", &other)),
        }
    }

    /// Attaches to a running container; `stdout`/`stderr` are the sinks (write ends).
    ///
    /// `request.stdout`/`request.stderr` must match the sinks given. The monitor makes
    /// the sinks non-blocking (a flag of the shared file description), so pass ends
    /// nobody else writes. The session's `stdin` is set when `request.stdin` was asked
    /// and the container has a stdin.
    pub fn attach(
        mut self,
        request: protocol::Attach,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    ) -> Result<AttachSession> {
        if request.stdout != stdout.is_some() || request.stderr != stderr.is_some() {
            return Err(Error::InvalidRequest(format!(
                "attach to {}: the stdout/stderr flags must match the sinks passed",
                request.id
            )));
        }
        let sent: Vec<BorrowedFd<'_>> = [&stdout, &stderr]
            .into_iter()
            .flatten()
            .map(AsFd::as_fd)
            .collect();
        let (response, mut received) = self.exchange_fds(&Request::Attach(request), &sent)?;
        drop((stdout, stderr));
        match response {
            Response::Attached { tty, stdin } => {
                let stdin = if stdin {
                    if received.len() != 1 {
                        return Err(Error::Unexpected {
                            expected: "Attached with the stdin fd",
                            got: format!("Attached with {} fds", received.len()),
                        });
                    }
                    received.pop()
                } else {
                    None
                };
                self.untimed()?;
                Ok(AttachSession {
                    tty,
                    stdin,
                    stream: self.stream,
                })
            }
            other => Err(unexpected("Attached", &other)),
        }
    }

    /// Sends `request` with `fds` and reads the answer with the descriptors it carries,
    /// within the connect timeout.
    fn exchange_fds(
        &mut self,
        request: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Response, Vec<OwnedFd>)> {
        if self.broken {
            return Err(Error::io(
                "monitor connection",
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "out of step after an earlier failed call; reconnect",
                ),
            ));
        }
        self.stream
            .set_write_timeout(Some(self.timeout))
            .and_then(|()| self.stream.set_read_timeout(Some(self.timeout)))
            .map_err(|e| Error::io("set socket timeout", e))?;
        let frame = encode(request)?;
        let n = retry_eintr(|| fdpass::send(self.stream.as_fd(), &frame, fds, false))
            .map_err(|e| sys_io("send request", e))?;
        if n < frame.len() {
            use std::io::Write;
            self.stream
                .write_all(&frame[n..])
                .map_err(|e| Error::io("send request", e))?;
        }
        let (response, fds) = read_frame_with_fds(self.stream.as_fd())?;
        match response {
            Response::Error { kind, message } => Err(Error::Remote { kind, message }),
            other => Ok((other, fds)),
        }
    }

    /// Session reads wait as long as the session lasts (an exec may run for hours).
    fn untimed(&self) -> Result<()> {
        self.stream
            .set_read_timeout(None)
            .map_err(|e| Error::io("set socket timeout", e))
    }

    fn ok(&mut self, request: Request) -> Result<()> {
        match self.call(request)? {
            Response::Ok => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }
}

/// Container events pushed by the monitor; blocks in `next`. Ends (`None`) when the
/// monitor closes the connection (it shut down or died).
#[derive(Debug)]
pub struct EventStream {
    stream: UnixStream,
}

impl EventStream {
    /// Bounds how long `next` blocks (`None`: forever); a timeout yields
    /// `Some(Err(Error::Timeout))` and the stream stays usable.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(|e| Error::io("set socket timeout", e))
    }
}

impl Iterator for EventStream {
    type Item = Result<ContainerEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        match read_frame::<_, Response>(&mut self.stream) {
            Ok(Response::Event(event)) => Some(Ok(event)),
            Ok(other) => Some(Err(unexpected("Event", &other))),
            Err(Error::Closed) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// The process's ends of an interactive exec's stdio (criusd keeps the other ends).
#[derive(Debug, Default)]
pub struct ExecFds {
    /// A readable fd that becomes the process's stdin.
    pub stdin: Option<OwnedFd>,
    /// A writable fd that becomes its stdout.
    pub stdout: Option<OwnedFd>,
    /// A writable fd that becomes its stderr.
    pub stderr: Option<OwnedFd>,
}

/// A running interactive exec (from [`MonitorClient::exec`]).
#[derive(Debug)]
pub struct ExecSession {
    /// The exec process's pid (in the monitor's pid namespace).
    pub pid: i32,
    /// The pty master, for an exec with a terminal.
    pub pty_master: Option<OwnedFd>,
    stream: UnixStream,
}

impl ExecSession {
    /// Blocks until ExecExited; returns the exit code (128 + signal when killed).
    /// `Err(Error::Closed)` if cancelled or the monitor went away.
    pub fn wait(mut self) -> Result<i32> {
        match read_frame::<_, Response>(&mut self.stream)? {
            Response::ExecExited { exit_code } => Ok(exit_code),
            other => Err(unexpected("ExecExited", &other)),
        }
    }

    /// A handle on a clone of the connection, usable from another thread while `wait`
    /// blocks.
    pub fn handle(&self) -> Result<SessionHandle> {
        SessionHandle::new(&self.stream)
    }
}

/// An attach to a container's stdio (from [`MonitorClient::attach`]).
#[derive(Debug)]
pub struct AttachSession {
    /// The container has a terminal: all its output arrives on the stdout sink.
    pub tty: bool,
    /// Where to write the container's stdin (asked for and the container has one). A
    /// tty container's is a dup of the monitor's non-blocking pty master: expect EAGAIN.
    pub stdin: Option<OwnedFd>,
    stream: UnixStream,
}

impl AttachSession {
    /// Blocks until AttachEnded (returns its reason) or the connection closes
    /// (`Err(Error::Closed)`: cancelled, or the monitor went away).
    pub fn wait(mut self) -> Result<String> {
        match read_frame::<_, Response>(&mut self.stream)? {
            Response::AttachEnded { reason } => Ok(reason),
            other => Err(unexpected("AttachEnded", &other)),
        }
    }

    /// A handle on a clone of the connection, usable from another thread while `wait`
    /// blocks.
    pub fn handle(&self) -> Result<SessionHandle> {
        SessionHandle::new(&self.stream)
    }
}

/// Controls an exec or attach session from another thread.
#[derive(Debug)]
pub struct SessionHandle {
    stream: UnixStream,
}

impl SessionHandle {
    fn new(stream: &UnixStream) -> Result<Self> {
        let stream = stream
            .try_clone()
            .map_err(|e| Error::io("clone monitor connection", e))?;
        Ok(Self { stream })
    }

    /// Ends the session: shuts the socket down both ways; the monitor kills an exec's
    /// process or drops the attacher, and `wait` returns.
    pub fn cancel(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Attach only: tells the monitor the client's stdin ended (sends CloseStdin).
    /// Close the session's `stdin` fd first: the container sees EOF once every write
    /// end is closed.
    pub fn stdin_closed(&self) -> Result<()> {
        write_frame(&mut &self.stream, &Request::CloseStdin)
    }
}

/// Reads one frame and the descriptors that came with its bytes (reading exactly the
/// frame, so a later pushed frame stays in the socket).
fn read_frame_with_fds(sock: BorrowedFd<'_>) -> Result<(Response, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    let mut header = [0u8; 4];
    read_exact_fds(sock, &mut header, &mut fds, true)?;
    let len = checked_len(header)?;
    let mut body = vec![0u8; len];
    read_exact_fds(sock, &mut body, &mut fds, false)?;
    Ok((decode(&body)?, fds))
}

fn read_exact_fds(
    sock: BorrowedFd<'_>,
    mut buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    at_start: bool,
) -> Result<()> {
    let mut first = at_start;
    while !buf.is_empty() {
        let (n, got) = match fdpass::recv(sock, buf, false) {
            Ok(r) => r,
            Err(nix::Error::EINTR) => continue,
            Err(e @ (nix::Error::EAGAIN | nix::Error::ETIMEDOUT)) => {
                return Err(Error::Timeout(format!("read answer: {e}")))
            }
            Err(e) => return Err(sys_io("read answer", e)),
        };
        fds.extend(got);
        if n == 0 {
            return Err(if first {
                Error::Closed
            } else {
                Error::io("read answer", std::io::ErrorKind::UnexpectedEof.into())
            });
        }
        first = false;
        buf = &mut buf[n..];
    }
    Ok(())
}

fn retry_eintr<T>(mut f: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match f() {
            Err(nix::Error::EINTR) => {}
            other => return other,
        }
    }
}

fn sys_io(context: &str, e: nix::Error) -> Error {
    Error::io(context, std::io::Error::from(e))
}

fn unexpected(expected: &'static str, got: &Response) -> Error {
    match got {
        Response::Error { kind, message } => Error::Remote {
            kind: *kind,
            message: message.clone(),
        },
        other => Error::Unexpected {
            expected,
            got: other.name().to_string(),
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;

    use super::*;
    use crate::error::ErrorKind;

    /// A fake monitor answering each request with the next scripted response
    /// (`None`: read the request and never answer).
    fn fake(script: Vec<Option<Response>>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for answer in script {
                if read_frame::<_, Request>(&mut s).is_err() {
                    return;
                }
                match answer {
                    Some(r) => write_frame(&mut s, &r).unwrap(),
                    None => std::thread::sleep(Duration::from_secs(5)),
                }
            }
        });
        (dir, path)
    }

    fn hello(version: u32) -> Option<Response> {
        Some(Response::Hello {
            version,
            monitor_pid: 42,
        })
    }

    #[test]
    fn a_version_mismatch_is_refused_at_connect() {
        let (_d, path) = fake(vec![hello(PROTOCOL_VERSION + 1)]);
        let err = MonitorClient::connect(&path, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, Error::VersionMismatch { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    }

    #[test]
    fn a_remote_error_keeps_its_kind_and_the_connection() {
        let (_d, path) = fake(vec![
            hello(PROTOCOL_VERSION),
            Some(Response::Error {
                kind: ErrorKind::NotFound,
                message: "container x not found".into(),
            }),
            Some(Response::Containers(Vec::new())),
        ]);
        let mut c = MonitorClient::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(c.monitor_pid(), 42);
        let err = c.state("x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), "container x not found");
        assert!(c.list().unwrap().is_empty());
    }

    #[test]
    fn a_timed_out_call_poisons_the_connection() {
        let (_d, path) = fake(vec![hello(PROTOCOL_VERSION), None]);
        let mut c = MonitorClient::connect(&path, Duration::from_millis(200)).unwrap();
        let err = c.list().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
        let err = c.list().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }

    #[test]
    fn an_answer_of_the_wrong_kind_is_unexpected() {
        let (_d, path) = fake(vec![hello(PROTOCOL_VERSION), Some(Response::Ok)]);
        let mut c = MonitorClient::connect(&path, Duration::from_secs(5)).unwrap();
        let err = c.list().unwrap_err();
        assert!(matches!(err, Error::Unexpected { .. }), "{err}");
    }

    #[test]
    fn connecting_to_a_missing_socket_is_unavailable() {
        let err = MonitorClient::connect(
            Path::new("/nonexistent/monitor.sock"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
}

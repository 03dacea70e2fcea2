//! The monitor's socket protocol, version [`PROTOCOL_VERSION`].
//!
//! Framing: a 4-byte big-endian body length, then a `serde_json` body of at most
//! [`MAX_FRAME`] bytes. A larger announced length is refused before anything is
//! allocated. Each connection starts with [`Request::Hello`], answered by
//! [`Response::Hello`]; a version mismatch is refused with `FailedPrecondition` and the
//! connection is closed. After that the client sends one request at a time and reads one
//! answer, except after [`Request::Subscribe`]: the monitor answers [`Response::Ok`] and
//! then pushes a [`Response::Event`] for every container state change until either side
//! closes.
//!
//! Interactive exec and attach pass file descriptors (SCM_RIGHTS, unix(7)) with the
//! first bytes of a frame, so the monitor never relays an exec's bytes:
//! - [`Request::Exec`] without a terminal carries the process's own stdio ends (stdin,
//!   stdout, stderr, one per flag that is true, in that order); with a terminal it carries
//!   none and [`Response::ExecStarted`] carries the pty master. Later the monitor pushes
//!   [`Response::ExecExited`] on the same connection. If the client closes the
//!   connection first, the monitor SIGKILLs the process.
//! - [`Request::Attach`] carries the sinks (stdout, stderr, one per flag); the answer
//!   [`Response::Attached`] carries a dup of the container's stdin when asked for and
//!   the container has one. The monitor then copies every chunk of container output it
//!   reads for the log into the sinks too (non-blocking, at most [`MAX_ATTACH_BACKLOG`]
//!   bytes pending per sink) and pushes [`Response::AttachEnded`] when the container
//!   exited or the attacher fell too far behind. The client may send
//!   [`Request::CloseStdin`] (no answer) and ends the attach by closing the connection.
//!
//! Either connection is dedicated to its session after the answer. A frame carrying
//! more descriptors than its request uses has the extra ones closed; at most
//! [`MAX_PENDING_FDS`] received descriptors are held per connection.
//!
//! Byte strings (exec output) travel as base64 strings, so a 16 MiB output fits a frame.
//! Requests are internally tagged (`{"op": "start_container", "id": ..}`); responses are
//! adjacently tagged (`{"kind": "state", "body": {..}}`) so a variant can carry a list.

use std::io::{Read, Write};
use std::path::PathBuf;

use oci_spec::runtime::{LinuxResources, Process, Spec};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame body accepted or sent, in bytes (64 MiB).
pub const MAX_FRAME: usize = 64 << 20;

/// The largest per-stream exec output cap honoured; larger caps are clamped so an
/// `ExecResult` with both streams full always fits in one frame.
pub const MAX_EXEC_OUTPUT_CAP: u64 = 20 << 20;

/// The most descriptors a connection may have received and not yet used by a request;
/// more are closed on arrival.
pub const MAX_PENDING_FDS: usize = 8;

/// The most bytes of container output kept for one attach sink that does not keep up;
/// an attacher beyond it is dropped (logging is never slowed by an attacher).
pub const MAX_ATTACH_BACKLOG: usize = 1 << 20;

/// [`Response::AttachEnded`]'s reason when the container exited.
pub const ATTACH_ENDED_EXITED: &str = "container exited";

/// [`Response::AttachEnded`]'s reason when the attacher's sink fell behind.
pub const ATTACH_ENDED_TOO_SLOW: &str = "attach client too slow";

/// A request from criusd to the monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
// Requests live only while being sent or served; boxing the spec would only make the
// shape criusd codes against clumsier.
#[allow(clippy::large_enum_variant)]
pub enum Request {
    /// Must be the first request of every connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Creates a container (its process waits for `StartContainer`). Answer: `Created`.
    CreateContainer(CreateContainer),
    /// Starts a created container. Answer: `Ok`.
    StartContainer {
        /// Container id.
        id: String,
    },
    /// Sends a signal to the container's init. Answer: `Ok`.
    Signal {
        /// Container id.
        id: String,
        /// Signal number.
        signal: i32,
    },
    /// Sends `signal`, then SIGKILL after `timeout_ms`; answers `Ok` once the container
    /// exited. A container that is not running (or unknown) answers `Ok` at once.
    StopContainer {
        /// Container id.
        id: String,
        /// Grace period before SIGKILL.
        timeout_ms: u64,
        /// The stop signal (SIGTERM or the image's StopSignal).
        signal: i32,
    },
    /// Removes an exited (or never started) container; unknown ids succeed. Answer: `Ok`.
    RemoveContainer {
        /// Container id.
        id: String,
    },
    /// Answer: `State`.
    ContainerState {
        /// Container id.
        id: String,
    },
    /// Answer: `Containers`.
    ListContainers,
    /// Runs a process in a running container and collects its output. Answer: `ExecResult`.
    ExecSync(ExecSync),
    /// Reopens the container's log file (after rotation). Answer: `Ok`.
    ReopenLog {
        /// Container id.
        id: String,
    },
    /// Applies new resources to the container's cgroup. Answer: `Ok`.
    UpdateResources {
        /// Container id.
        id: String,
        /// The new resources.
        resources: LinuxResources,
    },
    /// Answer: `Stats`.
    Stats {
        /// Container id.
        id: String,
    },
    /// Turns the connection into an event stream (answer `Ok`, then `Event`s). Events
    /// are not replayed: subscribe first, then list, to miss nothing.
    Subscribe,
    /// Stops every running container (SIGTERM, SIGKILL after `timeout_ms`); answers `Ok`
    /// once all exited.
    StopPod {
        /// Grace period before SIGKILL.
        timeout_ms: u64,
    },
    /// Kills and removes every container, releases the namespace pins, removes the
    /// monitor's files, answers `Ok` and exits.
    Shutdown,
    /// Starts an interactive exec (see the module docs for the descriptors). Answer:
    /// `ExecStarted`, later `ExecExited`; the connection is dedicated to it afterwards.
    Exec(Exec),
    /// Attaches to a running container's stdio (see the module docs). Answer:
    /// `Attached`, later `AttachEnded`; the connection is dedicated to it afterwards.
    Attach(Attach),
    /// Only on an attach connection after `Attached`: the client's stdin ended. If the
    /// container was created with `stdin_once`, the monitor closes its stdin write end
    /// (the process reads EOF once every dup is closed too). No answer.
    CloseStdin,
}

impl Request {
    /// The request's wire name (its `op`), for logs and spans.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::CreateContainer(_) => "create_container",
            Request::StartContainer { .. } => "start_container",
            Request::Signal { .. } => "signal",
            Request::StopContainer { .. } => "stop_container",
            Request::RemoveContainer { .. } => "remove_container",
            Request::ContainerState { .. } => "container_state",
            Request::ListContainers => "list_containers",
            Request::ExecSync(_) => "exec_sync",
            Request::ReopenLog { .. } => "reopen_log",
            Request::UpdateResources { .. } => "update_resources",
            Request::Stats { .. } => "stats",
            Request::Subscribe => "subscribe",
            Request::StopPod { .. } => "stop_pod",
            Request::Shutdown => "shutdown",
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::CloseStdin => "close_stdin",
        }
    }

    /// The container the request is about, if any.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            Request::CreateContainer(c) => Some(&c.id),
            Request::ExecSync(e) => Some(&e.id),
            Request::Exec(e) => Some(&e.id),
            Request::Attach(a) => Some(&a.id),
            Request::StartContainer { id }
            | Request::Signal { id, .. }
            | Request::StopContainer { id, .. }
            | Request::RemoveContainer { id }
            | Request::ContainerState { id }
            | Request::ReopenLog { id }
            | Request::UpdateResources { id, .. }
            | Request::Stats { id } => Some(id),
            Request::Hello { .. }
            | Request::ListContainers
            | Request::Subscribe
            | Request::StopPod { .. }
            | Request::Shutdown
            | Request::CloseStdin => None,
        }
    }
}

/// Which runtime creates a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RuntimeChoice {
    /// crius-oci's built-in runtime.
    Builtin,
    /// A runc-compatible binary (runc, crun, youki).
    Binary {
        /// Path of the binary.
        path: PathBuf,
    },
}

/// [`Request::CreateContainer`]'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateContainer {
    /// Container id (`[A-Za-z0-9_.-]`, not starting with a dot).
    pub id: String,
    /// The bundle directory; a relative `spec.root.path` is taken relative to it.
    pub bundle: PathBuf,
    /// The complete OCI spec: pod namespaces joined by path, mount/cgroup ns new.
    pub spec: Spec,
    /// The CRI log file kubelet asked for (absolute; empty: output is discarded).
    pub log_path: PathBuf,
    /// Keep a stdin pipe (or the pty) open for a later attach.
    pub stdin: bool,
    /// Close stdin after the first attach ends (kept for attach; recorded only).
    pub stdin_once: bool,
    /// Allocate a terminal; must match `spec.process.terminal`.
    pub tty: bool,
    /// Which runtime creates the container.
    pub runtime: RuntimeChoice,
}

/// [`Request::ExecSync`]'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecSync {
    /// Container id.
    pub id: String,
    /// The process to run (args, env, cwd, user, capabilities, terminal).
    pub process: Process,
    /// Kill the process after this long; 0 means no timeout.
    pub timeout_ms: u64,
    /// At most this many bytes are kept per stream; the rest is dropped (clamped to
    /// [`MAX_EXEC_OUTPUT_CAP`]).
    pub output_cap: u64,
}

/// [`Request::Exec`]'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exec {
    /// Container id.
    pub id: String,
    /// The process to run; `terminal: true` makes the monitor allocate a pty.
    pub process: Process,
    /// Without a terminal: the frame carries a readable fd for the process's stdin.
    pub stdin: bool,
    /// Without a terminal: the frame carries a writable fd for its stdout.
    pub stdout: bool,
    /// Without a terminal: the frame carries a writable fd for its stderr.
    pub stderr: bool,
}

/// [`Request::Attach`]'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attach {
    /// Container id.
    pub id: String,
    /// Ask for a dup of the container's stdin (granted if it was created with `stdin`).
    pub stdin: bool,
    /// The frame carries a writable sink for the container's stdout (the pty output
    /// for a tty container).
    pub stdout: bool,
    /// The frame carries a writable sink for its stderr (must be false with a tty).
    pub stderr: bool,
}

/// Lifecycle of a container, as CRI sees it.
///
/// ```text
///  create ──▶ Created ──start──▶ Running ──exit──▶ Exited ──remove──▶ (gone)
///                └──────────────kill/exit──────────────▲
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Created, its process waits for start.
    Created,
    /// The user process runs.
    Running,
    /// The process exited (status recorded on disk).
    Exited,
}

/// What the monitor knows about a container (also its `status.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Container id.
    pub id: String,
    /// Lifecycle state.
    pub state: ContainerState,
    /// The init's pid in the monitor's pid namespace, while one exists.
    pub pid: Option<i32>,
    /// Creation time, ns since the epoch.
    pub created_at_ns: i64,
    /// Start time, ns since the epoch (0 until started).
    pub started_at_ns: i64,
    /// Exit time, ns since the epoch (0 until exited).
    pub finished_at_ns: i64,
    /// Exit code (128 + signal when killed by a signal).
    pub exit_code: i32,
    /// The signal that killed the init, if one did.
    pub signal: Option<i32>,
    /// The container's cgroup saw an OOM kill.
    pub oom_killed: bool,
    /// CRI reason: `OOMKilled`, `Completed`, `Error`, or empty while running.
    pub reason: String,
    /// Human-readable detail (e.g. why a start failed).
    pub message: String,
}

/// Usage figures of a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Total CPU time, ns.
    pub cpu_usage_ns: u64,
    /// Memory usage minus inactive file cache, bytes.
    pub memory_working_set_bytes: u64,
    /// Anonymous and swap cache memory, bytes (0 when the cgroup layer does not report it).
    pub memory_rss_bytes: u64,
    /// Page faults (0 when the cgroup layer does not report it).
    pub page_faults: u64,
    /// Processes in the cgroup.
    pub pids: u64,
    /// OOM kills in the cgroup.
    pub oom_events: u64,
    /// When the figures were read, ns since the epoch.
    pub timestamp_ns: i64,
}

/// A container state change, pushed to subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEvent {
    /// Container id.
    pub id: String,
    /// Its status after the change.
    pub status: ContainerStatus,
}

/// An answer (or pushed event) from the monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `Hello`.
    Hello {
        /// The monitor's [`PROTOCOL_VERSION`].
        version: u32,
        /// The monitor's pid.
        monitor_pid: i32,
    },
    /// The request succeeded and has no payload.
    Ok,
    /// Answer to `CreateContainer`.
    Created {
        /// The init's pid.
        pid: i32,
    },
    /// Answer to `ContainerState`.
    State(ContainerStatus),
    /// Answer to `ListContainers`.
    Containers(Vec<ContainerStatus>),
    /// Answer to `ExecSync`.
    ExecResult {
        /// Exit code (128 + signal when killed, -1 when unknown).
        exit_code: i32,
        /// Collected stdout (the pty output for a terminal exec).
        #[serde(with = "base64_bytes")]
        stdout: Vec<u8>,
        /// Collected stderr.
        #[serde(with = "base64_bytes")]
        stderr: Vec<u8>,
        /// The process was killed at the timeout.
        timed_out: bool,
        /// Output beyond `output_cap` was dropped.
        truncated: bool,
    },
    /// Answer to `Stats`.
    Stats(ContainerStats),
    /// A pushed event on a subscribed connection.
    Event(ContainerEvent),
    /// Answer to `Exec`: the process runs. With `terminal` the frame carries one fd,
    /// the pty master.
    ExecStarted {
        /// The exec process's pid (in the monitor's pid namespace).
        pid: i32,
        /// The process has a terminal.
        terminal: bool,
    },
    /// Pushed on an exec connection once the process was reaped.
    ExecExited {
        /// Exit code (128 + signal when killed).
        exit_code: i32,
    },
    /// Answer to `Attach`. With `stdin` the frame carries one fd to write the
    /// container's stdin into (a dup of the pipe's write end, or of the pty master, which
    /// is non-blocking as it shares the monitor's file description).
    Attached {
        /// The container has a terminal (its output is all on the stdout sink).
        tty: bool,
        /// The frame carries the stdin fd.
        stdin: bool,
    },
    /// Pushed on an attach connection when the attach ends: the container exited
    /// (after its last output reached the sinks) or the attacher was dropped.
    AttachEnded {
        /// Why, e.g. [`ATTACH_ENDED_EXITED`] or [`ATTACH_ENDED_TOO_SLOW`].
        reason: String,
    },
    /// The request failed.
    Error {
        /// Classification.
        kind: ErrorKind,
        /// What went wrong and what to change.
        message: String,
    },
}

impl Response {
    /// The error answer for `err`.
    pub fn error(err: &Error) -> Self {
        Response::Error {
            kind: err.kind(),
            message: err.to_string(),
        }
    }

    /// Short name of the variant, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "Hello",
            Response::Ok => "Ok",
            Response::Created { .. } => "Created",
            Response::State(_) => "State",
            Response::Containers(_) => "Containers",
            Response::ExecResult { .. } => "ExecResult",
            Response::Stats(_) => "Stats",
            Response::Event(_) => "Event",
            Response::ExecStarted { .. } => "ExecStarted",
            Response::ExecExited { .. } => "ExecExited",
            Response::Attached { .. } => "Attached",
            Response::AttachEnded { .. } => "AttachEnded",
            Response::Error { .. } => "Error",
        }
    }
}

/// Serialises `msg` into a complete frame (header and body).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, msg).map_err(|e| Error::Malformed(e.to_string()))?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(Error::FrameTooLarge {
            len: len as u64,
            max: MAX_FRAME,
        });
    }
    let header = u32::try_from(len).map_err(|_| Error::FrameTooLarge {
        len: len as u64,
        max: MAX_FRAME,
    })?;
    frame[..4].copy_from_slice(&header.to_be_bytes());
    Ok(frame)
}

/// Parses a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Malformed(e.to_string()))
}

/// Checks an announced body length against [`MAX_FRAME`].
pub(crate) fn checked_len(header: [u8; 4]) -> Result<usize> {
    let len = u32::from_be_bytes(header);
    match usize::try_from(len) {
        Ok(l) if l <= MAX_FRAME => Ok(l),
        _ => Err(Error::FrameTooLarge {
            len: u64::from(len),
            max: MAX_FRAME,
        }),
    }
}

/// Writes one frame to a blocking writer.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<()> {
    let frame = encode(msg)?;
    w.write_all(&frame)
        .and_then(|()| w.flush())
        .map_err(|e| io_error("write frame", e))
}

/// Reads one frame from a blocking reader. EOF before the header is [`Error::Closed`].
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Error::Closed),
        Err(e) => return Err(io_error("read frame header", e)),
    }
    let len = checked_len(header)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .map_err(|e| io_error("read frame body", e))?;
    decode(&body)
}

fn io_error(context: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            Error::Timeout(context.to_string())
        }
        std::io::ErrorKind::UnexpectedEof => Error::Closed,
        _ => Error::io(context, e),
    }
}

/// Takes one complete frame body off the front of `buf` (a non-blocking reader's
/// buffer), or `None` while incomplete. An oversized header is an error at once.
pub fn take_frame(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let mut h = [0u8; 4];
    h.copy_from_slice(header);
    let len = checked_len(h)?;
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let body = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Ok(Some(body))
}

mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;

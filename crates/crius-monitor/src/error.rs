//! The crate's error type and its classification.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a caller should react to an [`Error`]; criusd maps it to a gRPC code. It also
/// crosses the socket inside [`crate::protocol::Response::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request is malformed or names something impossible; change it.
    InvalidArgument,
    /// The container (or pod) does not exist.
    NotFound,
    /// A container with that id already exists.
    AlreadyExists,
    /// The container or monitor is in a state that does not allow the operation.
    FailedPrecondition,
    /// A limit was hit (frame size, output, processes).
    ResourceExhausted,
    /// The operation did not finish in time.
    DeadlineExceeded,
    /// The monitor cannot be reached (not running, socket gone, connection closed).
    Unavailable,
    /// Anything else: a bug or an unexpected kernel answer.
    Internal,
}

/// Every error crius-monitor returns, on either side of the socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on the socket or a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (and on which path).
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A frame announced a body larger than [`crate::protocol::MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {max} byte limit")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A frame body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The peer speaks another protocol version.
    #[error("monitor protocol version mismatch: we speak {ours}, the peer speaks {theirs}; upgrade criusd and crius-monitor together")]
    VersionMismatch {
        /// Our [`crate::protocol::PROTOCOL_VERSION`].
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
    /// The peer answered with a message that does not fit the request.
    #[error("unexpected answer: expected {expected}, got {got}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: String,
    },
    /// The peer closed the connection.
    #[error("monitor closed the connection")]
    Closed,
    /// No answer came within the timeout.
    #[error("{0}: timed out")]
    Timeout(String),
    /// The monitor answered the request with an error.
    #[error("{message}")]
    Remote {
        /// Its classification.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
    /// The monitor could not be spawned or failed during its setup.
    #[error("monitor for pod {pod_id} failed to start: {message}")]
    Spawn {
        /// Pod id.
        pod_id: String,
        /// The classification the monitor reported (Internal for spawn failures).
        kind: ErrorKind,
        /// The monitor's own report or the spawn error.
        message: String,
    },
    /// A live monitor already serves this pod.
    #[error("a monitor already serves {}", socket.display())]
    MonitorRunning {
        /// Its socket.
        socket: PathBuf,
    },
    /// A request cannot be served as given.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The pod configuration cannot be used.
    #[error("invalid pod config: {0}")]
    InvalidConfig(String),
    /// A request is wrong for the container's state (monitor side).
    #[error("container {id}: cannot {op} while {state}")]
    WrongState {
        /// Container id.
        id: String,
        /// Attempted operation.
        op: &'static str,
        /// Current state.
        state: String,
    },
    /// No container with this id (monitor side).
    #[error("container {0} not found")]
    NotFound(String),
    /// A container with this id already exists (monitor side).
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// A system call failed (monitor side).
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: String,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// The OCI runtime failed.
    #[error(transparent)]
    Oci(#[from] crius_oci::Error),
    /// The state file of a container could not be written or read.
    #[error("state file {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// The classification of this error (exhaustive: a new variant must choose one).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } => io_kind(source),
            Error::FrameTooLarge { .. } => ErrorKind::ResourceExhausted,
            Error::Malformed(_) => ErrorKind::InvalidArgument,
            Error::VersionMismatch { .. } => ErrorKind::FailedPrecondition,
            Error::Unexpected { .. } => ErrorKind::Internal,
            Error::Closed => ErrorKind::Unavailable,
            Error::Timeout(_) => ErrorKind::DeadlineExceeded,
            Error::Remote { kind, .. } => *kind,
            Error::Spawn { kind, .. } => *kind,
            Error::MonitorRunning { .. } => ErrorKind::AlreadyExists,
            Error::InvalidConfig(_) => ErrorKind::InvalidArgument,
            Error::InvalidRequest(_) => ErrorKind::InvalidArgument,
            Error::WrongState { .. } => ErrorKind::FailedPrecondition,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::Sys { source, .. } => errno_kind(*source),
            Error::Oci(e) => oci_kind(e.kind()),
            Error::State { .. } => ErrorKind::Internal,
        }
    }

    /// An I/O failure with its context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An I/O failure on `path`.
    pub fn io_at(path: &std::path::Path, source: io::Error) -> Self {
        Error::io(path.display().to_string(), source)
    }

    /// A syscall failure naming the operation.
    pub fn sys(op: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            op: op.into(),
            source,
        }
    }
}

fn oci_kind(kind: crius_oci::ErrorKind) -> ErrorKind {
    match kind {
        crius_oci::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
        crius_oci::ErrorKind::NotFound => ErrorKind::NotFound,
        crius_oci::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        crius_oci::ErrorKind::FailedPrecondition => ErrorKind::FailedPrecondition,
        crius_oci::ErrorKind::ResourceExhausted => ErrorKind::ResourceExhausted,
        crius_oci::ErrorKind::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        crius_oci::ErrorKind::Unavailable => ErrorKind::Unavailable,
        crius_oci::ErrorKind::Internal => ErrorKind::Internal,
    }
}

fn errno_kind(errno: nix::Error) -> ErrorKind {
    match errno {
        nix::Error::ENOENT | nix::Error::ESRCH => ErrorKind::NotFound,
        nix::Error::EEXIST => ErrorKind::AlreadyExists,
        nix::Error::EINVAL => ErrorKind::InvalidArgument,
        nix::Error::EAGAIN | nix::Error::ENOMEM | nix::Error::ENOSPC | nix::Error::EMFILE => {
            ErrorKind::ResourceExhausted
        }
        _ => ErrorKind::Internal,
    }
}

fn io_kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::NotFound
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => ErrorKind::Unavailable,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ErrorKind::DeadlineExceeded,
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => ErrorKind::InvalidArgument,
        _ => ErrorKind::Internal,
    }
}

/// Crate result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The crate's error type and its classification.

use std::io;

/// How an [`Error`] maps onto a CRI status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's request is malformed.
    InvalidArgument,
    /// The object does not exist (or the token is unknown, used or expired).
    NotFound,
    /// The object already exists.
    AlreadyExists,
    /// The object is in the wrong state for this operation.
    FailedPrecondition,
    /// A limit was reached.
    ResourceExhausted,
    /// A deadline passed.
    DeadlineExceeded,
    /// A peer or dependency is not reachable right now.
    Unavailable,
    /// A bug or an unexpected system failure.
    Internal,
}

/// Errors of the streaming server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("bind streaming server on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("streaming server TLS: {0}")]
    Tls(String),
    /// Random bytes for a token could not be read.
    #[error("read random bytes for a stream token: {0}")]
    Random(io::Error),
    /// A request handed to `issue_*` is not valid.
    #[error("invalid stream request: {0}")]
    InvalidRequest(String),
    /// Too many tokens are outstanding.
    #[error("too many outstanding stream tokens ({0}); wait for some to be used or expire")]
    TooManyTokens(usize),
    /// A peer broke the wire protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An I/O error on a stream connection.
    #[error("stream i/o: {0}")]
    Io(#[from] io::Error),
    /// A timeout waiting for the client to open its streams.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The server refused an upgrade (client side).
    #[error("stream server answered http status {status}")]
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// An error reported by the [`crate::StreamBackend`].
    #[error("{message}")]
    Backend {
        /// How the backend classified it.
        kind: ErrorKind,
        /// The text shown to the client.
        message: String,
    },
}

impl Error {
    /// Builds a backend error with a kind and a message shown to the client.
    pub fn backend(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::Backend {
            kind,
            message: message.into(),
        }
    }

    /// The classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Bind { .. } => ErrorKind::Unavailable,
            Error::Random(_) => ErrorKind::Internal,
            Error::Tls(_) => ErrorKind::InvalidArgument,
            Error::InvalidRequest(_) => ErrorKind::InvalidArgument,
            Error::TooManyTokens(_) => ErrorKind::ResourceExhausted,
            Error::Protocol(_) => ErrorKind::InvalidArgument,
            Error::Io(_) => ErrorKind::Unavailable,
            Error::Timeout(_) => ErrorKind::DeadlineExceeded,
            Error::Refused { status: 404 } => ErrorKind::NotFound,
            Error::Refused { .. } => ErrorKind::FailedPrecondition,
            Error::Backend { kind, .. } => *kind,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

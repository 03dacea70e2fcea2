//! The domain error, classified by kind so the gRPC edge maps it to one status code.

use std::path::PathBuf;

/// What class of failure an [`Error`] is; the gRPC layer maps each to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    DeadlineExceeded,
    Unavailable,
    Internal,
}

/// Errors of the crius domain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crius_store::Error),
    #[error("create directory {path}: {error}")]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "invalid pod CIDR {cidr:?}: {reason}; give an IPv4 or IPv6 network such as 10.88.0.0/16"
    )]
    InvalidPodCidr { cidr: String, reason: String },
    #[error("runtime handler {name:?} is not configured; configured handlers: {known}")]
    UnknownHandler { name: String, known: String },
}

impl Error {
    /// The class of this error. Exhaustive on purpose: a new variant must choose its kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => store_kind(e.kind()),
            Error::CreateDir { .. } => ErrorKind::Internal,
            Error::InvalidPodCidr { .. } => ErrorKind::InvalidArgument,
            Error::UnknownHandler { .. } => ErrorKind::NotFound,
        }
    }
}

fn store_kind(kind: crius_store::ErrorKind) -> ErrorKind {
    use crius_store::ErrorKind as S;
    match kind {
        S::InvalidArgument => ErrorKind::InvalidArgument,
        S::NotFound => ErrorKind::NotFound,
        S::AlreadyExists => ErrorKind::AlreadyExists,
        S::FailedPrecondition => ErrorKind::FailedPrecondition,
        S::ResourceExhausted => ErrorKind::ResourceExhausted,
        S::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        S::Unavailable => ErrorKind::Unavailable,
        S::Internal => ErrorKind::Internal,
    }
}

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

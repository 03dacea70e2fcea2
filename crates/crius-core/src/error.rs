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
    #[error(transparent)]
    Image(#[from] crius_image::Error),
    #[error("pod monitor: {0}")]
    Monitor(#[from] crius_monitor::Error),
    #[error("pod network: {0}")]
    Network(#[from] crius_net::Error),
    #[error(transparent)]
    Spec(#[from] crate::container::spec::SpecError),
    #[error("create directory {path}: {error}")]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error(
        "invalid pod CIDR {cidr:?}: {reason}; give an IPv4 or IPv6 network such as 10.88.0.0/16"
    )]
    InvalidPodCidr { cidr: String, reason: String },
    #[error("runtime handler {name:?} is not configured; configured handlers: {known}")]
    UnknownHandler { name: String, known: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A host facility crius needs is missing (a systemd manager for the systemd driver).
    #[error("{0}")]
    Unavailable(String),
    /// The answer of an identical call that was in flight when this one arrived.
    #[error("{message}")]
    Retried { kind: ErrorKind, message: String },
}

impl Error {
    /// The class of this error. Exhaustive on purpose: a new variant must choose its kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => store_kind(e.kind()),
            Error::Image(e) => image_kind(e.kind()),
            Error::Monitor(e) => monitor_kind(e.kind()),
            Error::Network(e) => network_kind(e.kind()),
            Error::Spec(e) => e.kind(),
            Error::CreateDir { .. } | Error::Io { .. } => ErrorKind::Internal,
            Error::InvalidPodCidr { .. } | Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::UnknownHandler { .. } | Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Retried { kind, .. } => *kind,
        }
    }

    pub(crate) fn io(what: impl Into<String>, error: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            error,
        }
    }
}

/// Every crius crate classifies its errors with the same eight kinds (each crate owns its
/// enum, since the crates below crius-core depend on no crius crate); this maps one
/// crate's kinds onto the domain's, exhaustively.
macro_rules! kind_mapping {
    ($name:ident, $kind:ty) => {
        fn $name(kind: $kind) -> ErrorKind {
            type K = $kind;
            match kind {
                K::InvalidArgument => ErrorKind::InvalidArgument,
                K::NotFound => ErrorKind::NotFound,
                K::AlreadyExists => ErrorKind::AlreadyExists,
                K::FailedPrecondition => ErrorKind::FailedPrecondition,
                K::ResourceExhausted => ErrorKind::ResourceExhausted,
                K::DeadlineExceeded => ErrorKind::DeadlineExceeded,
                K::Unavailable => ErrorKind::Unavailable,
                K::Internal => ErrorKind::Internal,
            }
        }
    };
}

kind_mapping!(store_kind, crius_store::ErrorKind);
kind_mapping!(image_kind, crius_image::ErrorKind);
kind_mapping!(monitor_kind, crius_monitor::ErrorKind);
kind_mapping!(network_kind, crius_net::ErrorKind);

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

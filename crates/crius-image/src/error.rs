//! The crate's error type, classified by [`ErrorKind`] so the gRPC edge maps each
//! variant to a status code in one place.

use std::io;
use std::path::PathBuf;

/// How a caller should treat an error; the gRPC layer maps each kind to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (bad reference, bad digest, bad config).
    InvalidArgument,
    /// The image, blob or snapshot does not exist.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// The operation is not possible in the current state (in use, wrong platform).
    FailedPrecondition,
    /// A limit was hit (mount options too long, disk full).
    ResourceExhausted,
    /// The operation ran out of time.
    DeadlineExceeded,
    /// The registry could not be reached; retrying may help.
    Unavailable,
    /// A bug or an unexpected failure of the host.
    Internal,
}

/// Every error of `crius-image`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A digest string is not `<alg>:<hex>` with a supported algorithm.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An image reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Content did not match its digest; it was discarded and never became visible.
    #[error("content digest mismatch: expected {expected}, got {actual}; the blob was discarded")]
    DigestMismatch {
        /// The digest the manifest promised.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// Content did not match its size; it was discarded and never became visible.
    #[error("content size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The digest of the content.
        digest: String,
        /// The size the manifest promised.
        expected: u64,
        /// The number of bytes received.
        actual: u64,
    },
    /// A blob is not in the content store.
    #[error("blob {0} not found in the content store")]
    BlobNotFound(String),
    /// No image matches the given id, tag or digest.
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    /// A snapshot key is unknown.
    #[error("snapshot {0:?} not found")]
    SnapshotNotFound(String),
    /// A snapshot key is taken already.
    #[error("snapshot {0:?} already exists")]
    SnapshotExists(String),
    /// A snapshot cannot be removed while others build on it.
    #[error("snapshot {0:?} is in use")]
    SnapshotInUse(String),
    /// A layer tries to leave its snapshot directory or is malformed.
    #[error("refusing hostile or malformed layer entry {entry:?}: {reason}")]
    HostileLayer {
        /// The tar entry name.
        entry: String,
        /// What it tried to do.
        reason: String,
    },
    /// A layer or manifest media type is not supported.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// A manifest or config could not be understood.
    #[error("invalid {what}: {reason}")]
    InvalidManifest {
        /// Which document (manifest, index, config, archive).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An image index has no manifest for this host's platform.
    #[error("image {reference} has no manifest for platform {platform}; available: {available}")]
    PlatformNotFound {
        /// The reference pulled.
        reference: String,
        /// The platform wanted (`linux/amd64`).
        platform: String,
        /// The platforms the index offers.
        available: String,
    },
    /// The registry refused the credentials or asked for some.
    #[error("registry {registry} refused authentication: {reason}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The registry's answer.
        reason: String,
    },
    /// The registry does not have the image.
    #[error("registry has no image {reference}: {reason}")]
    RemoteNotFound {
        /// The reference pulled.
        reference: String,
        /// The registry's answer.
        reason: String,
    },
    /// The registry (and every mirror) failed.
    #[error("registry error pulling {reference}: {reason}")]
    Registry {
        /// The reference pulled.
        reference: String,
        /// The last error seen.
        reason: String,
    },
    /// The overlay mount options do not fit in one page.
    #[error("overlay mount options are {len} bytes, more than the {limit} the kernel accepts")]
    MountOptionsTooLong {
        /// The length needed.
        len: usize,
        /// The page size.
        limit: usize,
    },
    /// Configuration is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Metadata could not be (de)serialised.
    #[error("metadata {path}: {source}")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The metadata store failed.
    #[error("metadata store: {0}")]
    Store(#[from] crius_store::Error),
    /// A background task died.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl Error {
    /// The kind of this error, for mapping to a gRPC status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidDigest { .. }
            | Error::InvalidReference { .. }
            | Error::InvalidConfig(_) => ErrorKind::InvalidArgument,
            Error::BlobNotFound(_)
            | Error::ImageNotFound(_)
            | Error::SnapshotNotFound(_)
            | Error::RemoteNotFound { .. } => ErrorKind::NotFound,
            Error::SnapshotExists(_) => ErrorKind::AlreadyExists,
            Error::DigestMismatch { .. }
            | Error::SizeMismatch { .. }
            | Error::HostileLayer { .. }
            | Error::UnsupportedMediaType(_)
            | Error::InvalidManifest { .. }
            | Error::PlatformNotFound { .. }
            | Error::SnapshotInUse(_) => ErrorKind::FailedPrecondition,
            Error::Unauthorized { .. } => ErrorKind::FailedPrecondition,
            Error::MountOptionsTooLong { .. } => ErrorKind::ResourceExhausted,
            Error::Registry { .. } => ErrorKind::Unavailable,
            Error::Io { .. } | Error::Metadata { .. } | Error::Task(_) => ErrorKind::Internal,
            Error::Store(e) => match e.kind() {
                crius_store::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
                crius_store::ErrorKind::NotFound => ErrorKind::NotFound,
                crius_store::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                crius_store::ErrorKind::FailedPrecondition => ErrorKind::FailedPrecondition,
                crius_store::ErrorKind::ResourceExhausted => ErrorKind::ResourceExhausted,
                crius_store::ErrorKind::DeadlineExceeded => ErrorKind::DeadlineExceeded,
                crius_store::ErrorKind::Unavailable => ErrorKind::Unavailable,
                crius_store::ErrorKind::Internal => ErrorKind::Internal,
            },
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn hostile(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::HostileLayer {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

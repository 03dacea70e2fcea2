//! The crate's error type and its classification.

use std::path::PathBuf;

/// How an [`Error`] maps onto the CRI's gRPC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller passed something malformed.
    InvalidArgument,
    /// The record (or the record it refers to) does not exist.
    NotFound,
    /// The id or the unique key is already taken.
    AlreadyExists,
    /// The store or the record is not in a state that allows the operation.
    FailedPrecondition,
    /// A limit was hit.
    ResourceExhausted,
    /// An operation took too long.
    DeadlineExceeded,
    /// The store is busy or held by someone else; retrying later may work.
    Unavailable,
    /// A bug or a broken disk: nothing the caller can change.
    Internal,
}

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A redb operation failed.
    #[error("metadata store {path}: {op}: {error}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What was being done, naming the table.
        op: String,
        /// The redb error, boxed because it is large.
        error: Box<redb::Error>,
    },
    /// Another process (or another `Store` in this one) has the file open.
    #[error("metadata store {path} is open in another process; stop the other criusd first")]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// Creating the store's directory or file failed.
    #[error("cannot create metadata store {path}: {error}")]
    Create {
        /// The path that could not be created.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file was written by a newer crius with a schema this one does not know.
    #[error(
        "metadata store {path} has schema version {found}, newer than the supported {supported}; \
         run a crius version that supports it or move the file away"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
        /// The newest version this build knows.
        supported: u64,
    },
    /// The file carries a schema version no crius ever wrote.
    #[error("metadata store {path} has unknown schema version {found}; move the file away")]
    SchemaUnknown {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
    },
    /// An id is empty or contains a NUL byte.
    #[error("invalid {kind} id {id:?}: ids must be non-empty and contain no NUL byte")]
    InvalidId {
        /// The record kind (`pod`, `container`, ...).
        kind: &'static str,
        /// The rejected id.
        id: String,
    },
    /// No record with this id.
    #[error("{kind} {id} not found")]
    NotFound {
        /// The record kind.
        kind: &'static str,
        /// The id looked up.
        id: String,
    },
    /// A record with this id exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// The record kind.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A unique key (pod name, container name, image tag or digest) belongs to another record.
    #[error("{kind} {key} is already reserved by {existing_id}; remove {existing_id} first")]
    Reserved {
        /// The record kind.
        kind: &'static str,
        /// The key, as stored in the index.
        key: String,
        /// The id of the record holding the key.
        existing_id: String,
    },
    /// A record refers to a parent that does not exist.
    #[error("{kind} {id} refers to {parent_kind} {parent_id}, which does not exist")]
    MissingParent {
        /// The record kind.
        kind: &'static str,
        /// The record's id.
        id: String,
        /// The parent's kind.
        parent_kind: &'static str,
        /// The missing parent's id.
        parent_id: String,
    },
    /// A record still has children and cannot be removed.
    #[error("{kind} {id} still has {count} {child_kind}(s); remove them first")]
    HasChildren {
        /// The record kind.
        kind: &'static str,
        /// The record's id.
        id: String,
        /// The children's kind.
        child_kind: &'static str,
        /// How many children remain.
        count: usize,
    },
    /// A record could not be serialised.
    #[error("cannot encode {kind} {id}: {error}")]
    Encode {
        /// The record kind, or `setting`.
        kind: &'static str,
        /// The id or setting key.
        id: String,
        /// The serde error.
        error: serde_json::Error,
    },
    /// A stored value could not be parsed.
    #[error("metadata store {path}: corrupt entry {key:?} in table {table}: {error}")]
    Decode {
        /// The database file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The entry's key.
        key: String,
        /// The serde error.
        error: serde_json::Error,
    },
}

impl Error {
    /// The gRPC-facing classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidId { .. } => ErrorKind::InvalidArgument,
            Error::NotFound { .. } | Error::MissingParent { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } | Error::Reserved { .. } => ErrorKind::AlreadyExists,
            Error::SchemaTooNew { .. }
            | Error::SchemaUnknown { .. }
            | Error::HasChildren { .. } => ErrorKind::FailedPrecondition,
            Error::Locked { .. } => ErrorKind::Unavailable,
            Error::Db { .. }
            | Error::Create { .. }
            | Error::Encode { .. }
            | Error::Decode { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

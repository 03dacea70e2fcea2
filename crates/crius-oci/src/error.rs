//! The crate's error type, its classification, and the child-side init errors that cross
//! the fork as serialised chains.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a caller should react to an [`Error`]; the daemon maps it to a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The spec or an argument is wrong; change it and retry.
    InvalidArgument,
    /// The container (or a file it names) does not exist.
    NotFound,
    /// A container with that id already exists.
    AlreadyExists,
    /// The container is not in a state that allows the operation.
    FailedPrecondition,
    /// A limit was hit (pids, memory, fds).
    ResourceExhausted,
    /// An operation did not finish in time.
    DeadlineExceeded,
    /// A host facility is missing (runtime binary, LSM, cgroup controller).
    Unavailable,
    /// Anything else: a bug or an unexpected kernel answer.
    Internal,
}

/// A failure inside the container's init (or exec) child, sent back to the parent as a
/// full error chain. Each named step of the init sequence has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InitError {
    /// Duplicating the caller's stdio onto 0, 1, 2 (or the pty) failed.
    #[error("setup_stdio: {0}")]
    SetupStdio(String),
    /// Joining or creating namespaces failed.
    #[error("enter_namespaces: {0}")]
    EnterNamespaces(String),
    /// Spawning the container init inside the new pid namespace failed.
    #[error("spawn_init: {0}")]
    SpawnInit(String),
    /// Mounting the spec's mounts, devices or the rootfs itself failed.
    #[error("prepare_rootfs: {0}")]
    PrepareRootfs(String),
    /// `pivot_root` into the rootfs failed.
    #[error("pivot_root: {0}")]
    PivotRoot(String),
    /// Masking or read-only-binding the spec's paths failed.
    #[error("mask_paths: {0}")]
    MaskPaths(String),
    /// Setting the hostname or domainname failed.
    #[error("set_hostname: {0}")]
    SetHostname(String),
    /// Writing a sysctl failed.
    #[error("apply_sysctls: {0}")]
    ApplySysctls(String),
    /// Setting an rlimit, the umask or oom_score_adj failed.
    #[error("apply_rlimits: {0}")]
    ApplyRlimits(String),
    /// The working directory could not be entered inside the container.
    #[error("set_cwd: {0}")]
    SetCwd(String),
    /// Setting uid, gid or supplementary groups failed.
    #[error("set_user: {0}")]
    SetUser(String),
    /// Setting the capability sets failed.
    #[error("drop_capabilities: {0}")]
    DropCapabilities(String),
    /// Setting no_new_privs or an AppArmor/SELinux label failed.
    #[error("apply_lsm: {0}")]
    ApplyLsm(String),
    /// Compiling or installing the seccomp filter failed.
    #[error("apply_seccomp: {0}")]
    ApplySeccomp(String),
    /// The process could not be executed (missing binary, not executable).
    #[error("exec: {0}")]
    Exec(String),
    /// The parent/child protocol broke (unexpected message, closed socket).
    #[error("sync: {0}")]
    Sync(String),
}

/// Every error crius-oci returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be run as given.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// No container with this id is known to the runtime.
    #[error("container {0} not found")]
    NotFound(String),
    /// A container with this id already exists.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// The container is in the wrong state for the operation.
    #[error("container {id}: cannot {op} while {state}")]
    WrongState {
        /// Container id.
        id: String,
        /// Attempted operation.
        op: &'static str,
        /// Current state.
        state: String,
    },
    /// The init or exec child failed at a named step.
    #[error("container {id}: {source}")]
    Init {
        /// Container id.
        id: String,
        /// The failing step and its chain.
        #[source]
        source: InitError,
    },
    /// A system call in the parent failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: String,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A cgroup operation failed.
    #[error("cgroup {path}: {message}")]
    Cgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The seccomp profile cannot be compiled.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// The parent/child protocol broke.
    #[error("sync with child: {0}")]
    Protocol(String),
    /// An external runtime binary (runc, crun) failed.
    #[error("{runtime} {op} failed: {message}")]
    Binary {
        /// Binary path.
        runtime: String,
        /// Subcommand.
        op: &'static str,
        /// Its stderr or the spawn error.
        message: String,
    },
    /// A host facility the spec asks for is absent (LSM, controller, binary).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A call to the systemd manager (systemd cgroup driver) failed.
    #[error("systemd {op}: {source}")]
    Systemd {
        /// The call or step.
        op: String,
        /// What D-Bus said.
        #[source]
        source: crate::cgroup::dbus::DbusError,
    },
}

impl Error {
    /// The classification of this error (exhaustive: a new variant must choose one).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidSpec(_) => ErrorKind::InvalidArgument,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::WrongState { .. } => ErrorKind::FailedPrecondition,
            Error::Init { source, .. } => source.kind(),
            Error::Sys { source, .. } => errno_kind(*source),
            Error::Io { source, .. } => io_kind(source),
            Error::Cgroup { .. } => ErrorKind::Internal,
            Error::Seccomp(_) => ErrorKind::InvalidArgument,
            Error::Protocol(_) => ErrorKind::Internal,
            Error::Binary { .. } => ErrorKind::Internal,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Systemd { source, .. } => dbus_kind(source),
        }
    }

    pub(crate) fn sys(op: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl InitError {
    /// The classification of a child failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            InitError::Exec(_) | InitError::SetCwd(_) => ErrorKind::InvalidArgument,
            InitError::ApplySeccomp(_) => ErrorKind::InvalidArgument,
            InitError::ApplyLsm(_) => ErrorKind::FailedPrecondition,
            InitError::SpawnInit(_) => ErrorKind::ResourceExhausted,
            InitError::SetupStdio(_)
            | InitError::EnterNamespaces(_)
            | InitError::PrepareRootfs(_)
            | InitError::PivotRoot(_)
            | InitError::MaskPaths(_)
            | InitError::SetHostname(_)
            | InitError::ApplySysctls(_)
            | InitError::ApplyRlimits(_)
            | InitError::SetUser(_)
            | InitError::DropCapabilities(_)
            | InitError::Sync(_) => ErrorKind::Internal,
        }
    }
}

fn dbus_kind(err: &crate::cgroup::dbus::DbusError) -> ErrorKind {
    use crate::cgroup::dbus::DbusError;
    match err {
        DbusError::Connect { .. } => ErrorKind::Unavailable,
        DbusError::Timeout { .. } => ErrorKind::DeadlineExceeded,
        DbusError::Remote { name, .. } => match name.as_str() {
            "org.freedesktop.systemd1.NoSuchUnit" => ErrorKind::NotFound,
            "org.freedesktop.systemd1.UnitExists" => ErrorKind::AlreadyExists,
            "org.freedesktop.DBus.Error.InvalidArgs" => ErrorKind::InvalidArgument,
            "org.freedesktop.DBus.Error.AccessDenied" => ErrorKind::FailedPrecondition,
            _ => ErrorKind::Internal,
        },
        DbusError::Io { .. } | DbusError::Auth { .. } | DbusError::Malformed(_) => {
            ErrorKind::Internal
        }
    }
}

fn errno_kind(errno: nix::Error) -> ErrorKind {
    match errno {
        nix::Error::ENOENT | nix::Error::ESRCH => ErrorKind::NotFound,
        nix::Error::EEXIST => ErrorKind::AlreadyExists,
        nix::Error::EINVAL => ErrorKind::InvalidArgument,
        nix::Error::EAGAIN | nix::Error::ENOMEM | nix::Error::ENOSPC => {
            ErrorKind::ResourceExhausted
        }
        _ => ErrorKind::Internal,
    }
}

fn io_kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
        _ => ErrorKind::Internal,
    }
}

/// Crate result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The crate's error type, classified by [`ErrorKind`] for the daemon's status mapping.

use std::path::PathBuf;
use std::time::Duration;

/// How the caller should treat an [`Error`]; the gRPC layer maps it to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller passed something malformed.
    InvalidArgument,
    /// The pod, the network namespace or the allocation does not exist.
    NotFound,
    /// The object (an address, a host port) is already taken.
    AlreadyExists,
    /// The network is not set up so that the operation can run (no config, missing plugin).
    FailedPrecondition,
    /// A limit was hit (the pod CIDR is full).
    ResourceExhausted,
    /// A plugin ran longer than its timeout.
    DeadlineExceeded,
    /// A transient condition; retrying later may succeed.
    Unavailable,
    /// Anything else: a kernel call failed, a file could not be written.
    Internal,
}

/// Errors of pod networking. Messages are lowercase and say what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed.
    #[error("invalid {field}: {reason}")]
    InvalidRequest {
        /// The request field.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The DNS configuration cannot be written to resolv.conf.
    #[error("invalid dns config: {reason}")]
    InvalidDns {
        /// Why it was refused.
        reason: String,
    },
    /// No network configuration exists in the CNI conf dir.
    #[error("no cni network config found in {dir}: add a .conf, .conflist or .json file")]
    NoConfig {
        /// The conf dir that was searched.
        dir: PathBuf,
    },
    /// A CNI config file cannot be used.
    #[error("cni config {path}: {reason}")]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A plugin named by the config is in none of the bin dirs.
    #[error("cni plugin {plugin:?} not found in {dirs:?}: install it or fix the config")]
    PluginNotFound {
        /// The plugin `type`.
        plugin: String,
        /// The bin dirs searched.
        dirs: Vec<PathBuf>,
    },
    /// A plugin could not be started or talked to.
    #[error("cni plugin {plugin} {command}: {source}")]
    PluginIo {
        /// The plugin `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A plugin exited with an error.
    #[error(
        "cni plugin {plugin} {command} failed (code {code}): {msg}{}{}",
        fmt_details(details),
        fmt_stderr(stderr)
    )]
    PluginFailed {
        /// The plugin `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The CNI error code (0 when the plugin printed no error object).
        code: u32,
        /// The plugin's message.
        msg: String,
        /// The plugin's details.
        details: String,
        /// The tail of the plugin's stderr.
        stderr: String,
    },
    /// A plugin ran longer than the timeout and was killed.
    #[error("cni plugin {plugin} {command} did not finish within {timeout:?} and was killed")]
    PluginTimeout {
        /// The plugin `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// A plugin printed something that is not a CNI result.
    #[error("cni plugin {plugin} {command} printed an invalid result: {reason}")]
    PluginOutput {
        /// The plugin `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// What is wrong with the output.
        reason: String,
    },
    /// Setup failed and was rolled back; `cleanup` holds what the rollback could not undo.
    #[error(
        "network setup of pod {pod_id} failed: {source}{}",
        fmt_cleanup(cleanup)
    )]
    SetupFailed {
        /// The pod.
        pod_id: String,
        /// The original failure.
        source: Box<Error>,
        /// The rollback failure, if any.
        cleanup: Option<Box<Error>>,
    },
    /// The pod has no network set up by this plugin.
    #[error("pod {pod_id} has no network: {reason}")]
    PodNotFound {
        /// The pod.
        pod_id: String,
        /// What is missing.
        reason: String,
    },
    /// The pod's network differs from what setup created.
    #[error("network of pod {pod_id} is broken: {reason}")]
    Inconsistent {
        /// The pod.
        pod_id: String,
        /// What differs.
        reason: String,
    },
    /// A network namespace file cannot be opened or entered.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// The nsfs path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Nothing accepted a forwarded connection on a pod's loopback.
    #[error("connect to port {port} in the pod: {source}; is a server listening on localhost:{port} in the pod?")]
    Connect {
        /// The port.
        port: u16,
        /// The connect error (refused, timed out).
        source: std::io::Error,
    },
    /// The object is still in use.
    #[error("{what} is in use: {reason}")]
    InUse {
        /// The object.
        what: String,
        /// By whom.
        reason: String,
    },
    /// A netlink request failed.
    #[error("netlink {op}: {source}")]
    Netlink {
        /// What was asked of the kernel.
        op: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// The built-in network has no free address left.
    #[error("pod cidr {cidr} has no free address: configure a larger pod cidr")]
    IpamExhausted {
        /// The pod CIDR.
        cidr: String,
    },
    /// A host port is already mapped by another pod.
    #[error("host port {protocol}/{port} is already mapped by pod {owner}")]
    HostPortInUse {
        /// The protocol.
        protocol: String,
        /// The host port.
        port: u16,
        /// The pod holding it.
        owner: String,
    },
    /// An `iptables` invocation failed.
    #[error("iptables {args}: {reason}")]
    Iptables {
        /// The arguments.
        args: String,
        /// The exit status and stderr.
        reason: String,
    },
    /// A state file (cache, IPAM database) is corrupt.
    #[error("state file {path} is corrupt: {reason}; remove it to start over")]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file-system operation on state failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn fmt_details(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

fn fmt_stderr(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    }
}

fn fmt_cleanup(cleanup: &Option<Box<Error>>) -> String {
    match cleanup {
        Some(e) => format!("; rollback also failed: {e}"),
        None => String::new(),
    }
}

/// The CNI "try again later" error code.
const CNI_TRY_AGAIN_LATER: u32 = 11;

impl Error {
    /// The error's classification.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidRequest { .. } | Error::InvalidDns { .. } => ErrorKind::InvalidArgument,
            Error::NoConfig { .. } | Error::InvalidConfig { .. } | Error::PluginNotFound { .. } => {
                ErrorKind::FailedPrecondition
            }
            Error::PluginFailed { code, .. } => {
                if *code == CNI_TRY_AGAIN_LATER {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::Internal
                }
            }
            Error::PluginTimeout { .. } => ErrorKind::DeadlineExceeded,
            Error::SetupFailed { source, .. } => source.kind(),
            Error::PodNotFound { .. } => ErrorKind::NotFound,
            Error::Netns { source, .. } => {
                if source.kind() == std::io::ErrorKind::NotFound {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::Internal
                }
            }
            Error::Connect { source, .. } => {
                if source.kind() == std::io::ErrorKind::TimedOut {
                    ErrorKind::DeadlineExceeded
                } else {
                    ErrorKind::Unavailable
                }
            }
            Error::IpamExhausted { .. } => ErrorKind::ResourceExhausted,
            Error::HostPortInUse { .. } => ErrorKind::AlreadyExists,
            Error::Inconsistent { .. } | Error::InUse { .. } => ErrorKind::FailedPrecondition,
            Error::PluginIo { .. }
            | Error::PluginOutput { .. }
            | Error::Netlink { .. }
            | Error::Iptables { .. }
            | Error::CorruptState { .. }
            | Error::Io { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

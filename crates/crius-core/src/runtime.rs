//! The runtime as a whole: its directories, its store, its identity and its health.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crius_store::Store;

use crate::cgroup::{systemd_booted, CgroupDriver, CgroupDriverChoice, CgroupVersion};
use crate::error::{Error, Result};

/// The CRI condition type kubelet reads to decide whether the runtime can run pods.
pub const RUNTIME_READY: &str = "RuntimeReady";
/// The CRI condition type kubelet reads to decide whether pods can get a network.
pub const NETWORK_READY: &str = "NetworkReady";

/// The store key under which the pod CIDR from `UpdateRuntimeConfig` is kept, so a
/// restarted daemon uses the CIDR kubelet last sent rather than waiting for the next push.
const POD_CIDR_KEY: &str = "pod_cidr";

/// How the runtime is set up; the daemon builds this from its config file and flags.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Persistent data: metadata store, content, snapshots.
    pub root: PathBuf,
    /// Volatile state (a tmpfs in production): sockets, namespace pins.
    pub state: PathBuf,
    /// Where the cgroup filesystem is mounted, normally `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    pub cgroup_driver: CgroupDriverChoice,
    /// Runtime handlers for RuntimeClass besides the built-in default.
    pub handlers: Vec<RuntimeHandlerConfig>,
    /// The pod CIDR from the config file, used until kubelet sends one.
    pub pod_cidr: Option<String>,
}

/// A named runtime handler (a Kubernetes RuntimeClass `handler`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeHandlerConfig {
    pub name: String,
    /// A runc-compatible binary; `None` is the built-in runtime.
    pub path: Option<PathBuf>,
}

/// `Version` as the CRI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub runtime_name: &'static str,
    pub runtime_version: &'static str,
    pub runtime_api_version: &'static str,
}

/// One condition of [`RuntimeStatus`]; `reason` and `message` say why it is false.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// A runtime handler and the features it supports, as kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeHandler {
    /// Empty for the default handler.
    pub name: String,
    pub recursive_read_only_mounts: bool,
    pub user_namespaces: bool,
}

/// The answer to `Status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeStatus {
    pub conditions: Vec<Condition>,
    pub handlers: Vec<RuntimeHandler>,
    /// Extra facts for `verbose` callers, each a JSON document.
    pub info: BTreeMap<String, String>,
}

/// The running runtime: its options, its metadata store and the facts detected at start.
#[derive(Debug)]
pub struct Runtime {
    options: RuntimeOptions,
    store: Store,
    cgroup_driver: CgroupDriver,
    cgroup_version: CgroupVersion,
    pod_cidr: RwLock<Option<String>>,
}

impl Runtime {
    /// Creates the root (0700) and state (0711) directories if needed, opens the metadata
    /// store and restores the settings kubelet pushed before a restart.
    pub fn open(options: RuntimeOptions) -> Result<Self> {
        create_private_dir(&options.root, 0o700)?;
        create_private_dir(&options.state, 0o711)?;
        let store = Store::open(options.root.join("meta.redb"))?;
        let saved: Option<String> = store.read()?.setting(POD_CIDR_KEY)?;
        let pod_cidr = RwLock::new(saved.or_else(|| options.pod_cidr.clone()));
        let cgroup_driver = options.cgroup_driver.resolve(systemd_booted());
        let cgroup_version = CgroupVersion::detect(&options.cgroup_root);
        tracing::info!(?cgroup_driver, ?cgroup_version, root = %options.root.display(), "runtime opened");
        Ok(Self {
            options,
            store,
            cgroup_driver,
            cgroup_version,
            pod_cidr,
        })
    }

    /// The runtime's name, version and the CRI API version it serves.
    pub fn version(&self) -> VersionInfo {
        VersionInfo {
            runtime_name: "crius",
            runtime_version: env!("CARGO_PKG_VERSION"),
            runtime_api_version: "v1",
        }
    }

    /// The cgroup driver kubelet must be configured with.
    pub fn cgroup_driver(&self) -> CgroupDriver {
        self.cgroup_driver
    }

    /// The metadata store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The pod CIDR kubelet last sent, or the configured one.
    pub fn pod_cidr(&self) -> Option<String> {
        self.pod_cidr
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Records the pod CIDR from `UpdateRuntimeConfig`. An empty string leaves the current
    /// CIDR as it is (kubelet sends the whole config, often with an empty CIDR).
    pub fn update_pod_cidr(&self, cidr: &str) -> Result<()> {
        let cidr = cidr.trim();
        if cidr.is_empty() {
            return Ok(());
        }
        validate_cidr(cidr)?;
        let txn = self.store.write()?;
        txn.set_setting(POD_CIDR_KEY, &cidr.to_string())?;
        txn.commit()?;
        let mut current = self.pod_cidr.write().unwrap_or_else(|p| p.into_inner());
        *current = Some(cidr.to_string());
        tracing::info!(pod_cidr = cidr, "pod CIDR updated");
        Ok(())
    }

    /// The runtime's conditions, computed from real checks on every call, and its handlers.
    pub fn status(&self) -> RuntimeStatus {
        let mut info = BTreeMap::new();
        let facts = serde_json::json!({
            "cgroupDriver": self.cgroup_driver,
            "cgroupVersion": self.cgroup_version,
            "podCIDR": self.pod_cidr(),
            "handlers": self.options.handlers,
        });
        info.insert("runtime".to_string(), facts.to_string());
        RuntimeStatus {
            conditions: vec![self.runtime_condition(), network_condition()],
            handlers: self.handlers(),
            info,
        }
    }

    fn handlers(&self) -> Vec<RuntimeHandler> {
        // The default ("") and "crius" are the built-in runtime; configured ones follow.
        // No handler claims recursive read-only mounts or user namespaces until the
        // runtime that would apply them exists.
        let names = ["", "crius"]
            .into_iter()
            .map(String::from)
            .chain(self.options.handlers.iter().map(|h| h.name.clone()));
        names
            .map(|name| RuntimeHandler {
                name,
                recursive_read_only_mounts: false,
                user_namespaces: false,
            })
            .collect()
    }

    fn runtime_condition(&self) -> Condition {
        let failure = self
            .store
            .read()
            .map(|_| ())
            .map_err(|e| ("MetadataStoreUnavailable", e.to_string()))
            .and_then(|()| {
                state_dir_writable(&self.options.state)
                    .map_err(|e| ("StateDirUnwritable", e.to_string()))
            })
            .and_then(|()| pod_lifecycle_available());
        condition(RUNTIME_READY, failure)
    }
}

fn condition(kind: &'static str, failure: Result<(), (&str, String)>) -> Condition {
    match failure {
        Ok(()) => Condition {
            kind,
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err((reason, message)) => Condition {
            kind,
            status: false,
            reason: reason.to_string(),
            message,
        },
    }
}

/// Whether this build can run pods. The pod lifecycle (issue "RuntimeService: pods and
/// containers") has not landed, so the honest answer is no, and kubelet keeps the node
/// NotReady instead of scheduling pods that would fail.
fn pod_lifecycle_available() -> Result<(), (&'static str, String)> {
    Err((
        "PodLifecycleUnavailable",
        "this build of crius cannot run pods yet: RunPodSandbox is not implemented".to_string(),
    ))
}

/// Pod networking has not landed; the condition says so rather than pretending.
fn network_condition() -> Condition {
    condition(
        NETWORK_READY,
        Err((
            "NetworkPluginNotReady",
            "this build of crius has no pod networking yet (neither CNI nor the built-in bridge)"
                .to_string(),
        )),
    )
}

fn state_dir_writable(state: &Path) -> std::io::Result<()> {
    let probe = state.join(".writable");
    fs::write(&probe, b"")?;
    fs::remove_file(&probe)
}

fn create_private_dir(path: &Path, mode: u32) -> Result<()> {
    let err = |error| Error::CreateDir {
        path: path.to_path_buf(),
        error,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)
}

/// Checks `addr/prefix` with a prefix no longer than the address allows.
fn validate_cidr(cidr: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidPodCidr {
        cidr: cidr.to_string(),
        reason: reason.into(),
    };
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| invalid("missing /prefix"))?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid("not an IP address"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| invalid("prefix is not a number"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(invalid("prefix longer than the address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_validation_names_the_problem() {
        assert!(validate_cidr("10.88.0.0/16").is_ok());
        assert!(validate_cidr("fd00::/64").is_ok());
        for bad in ["10.88.0.0", "10.88.0.0/33", "nonsense/8", "10.0.0.0/x"] {
            let err = validate_cidr(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }
}

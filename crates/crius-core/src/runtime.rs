//! The runtime as a whole: its directories, its store, its identity and its health.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crius_image::{ImageConfig, ImageManager, StoreImageRecords};
use crius_store::{ContainerMetadata, PodMetadata, Store};

use crate::cgroup::{systemd_booted, CgroupDriver, CgroupDriverChoice, CgroupVersion};
use crate::error::{Error, Result};
use crate::inflight::Inflight;

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
    /// The systemd manager's socket for the systemd driver (its private socket or a
    /// message bus); `None` is `/run/systemd/private` when present, else the system bus.
    pub systemd_bus: Option<PathBuf>,
    /// Runtime handlers for RuntimeClass besides the built-in default.
    pub handlers: Vec<RuntimeHandlerConfig>,
    /// The pod CIDR from the config file, used until kubelet sends one.
    pub pod_cidr: Option<String>,
    /// Registries, mirrors and pull settings.
    pub image: ImageConfig,
    /// The `crius-monitor` binary; `None` looks next to the running executable.
    pub monitor_binary: Option<PathBuf>,
    /// Pod networking.
    pub network: crate::network::NetworkOptions,
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
    images: Arc<ImageManager>,
    cgroup_driver: CgroupDriver,
    cgroup_version: CgroupVersion,
    /// The systemd manager's socket, with the systemd driver (checked at open).
    systemd_bus: Option<PathBuf>,
    pod_cidr: RwLock<Option<String>>,
    /// The network new pods get (rebuilt when kubelet sends a new pod CIDR); `None` when
    /// pod networking is off.
    network: RwLock<Option<Arc<dyn crius_net::NetworkPlugin>>>,
    /// RunPodSandbox calls in flight, by pod name key.
    pub(crate) pod_runs: Inflight<PodMetadata>,
    /// CreateContainer calls in flight, by (pod id, container name key).
    pub(crate) container_creates: Inflight<(String, ContainerMetadata)>,
    /// Container lifecycle events, for `GetContainerEvents`.
    events: crate::events::EventBus,
    /// CPU samples and writable layer sizes kept between stats calls.
    stats: crate::container::stats::StatsCache,
    /// Every container record, as decoded at a store generation.
    pub(crate) decoded_containers: crate::decoded::Decoded<crius_store::ContainerRecord>,
    /// Every pod record, as decoded at a store generation.
    pub(crate) decoded_pods: crate::decoded::Decoded<crius_store::PodRecord>,
}

impl Runtime {
    /// Creates the root (0700) and state (0711) directories if needed, opens the metadata
    /// store and restores the settings kubelet pushed before a restart.
    ///
    /// The state dir and its `pods` dir can be searched (not listed) by anyone: the root
    /// of a user-namespaced pod is an unprivileged host uid that must reach its bundle.
    pub fn open(options: RuntimeOptions) -> Result<Self> {
        create_private_dir(&options.root, 0o700)?;
        create_private_dir(&options.state, 0o711)?;
        create_private_dir(&options.state.join("pods"), 0o711)?;
        let store = Store::open(options.root.join("meta.redb"))?;
        let records = Arc::new(StoreImageRecords::new(Arc::new(store.clone())));
        let images = Arc::new(ImageManager::open(
            &options.root,
            options.image.clone(),
            records,
        )?);
        let saved: Option<String> = store.read()?.setting(POD_CIDR_KEY)?;
        let pod_cidr = RwLock::new(saved.or_else(|| options.pod_cidr.clone()));
        let network = crate::network::build(
            &options.network,
            &options.root,
            pod_cidr.read().ok().and_then(|c| c.clone()).as_deref(),
        )?;
        let cgroup_driver = options.cgroup_driver.resolve(systemd_booted());
        let cgroup_version = CgroupVersion::detect(&options.cgroup_root);
        // The systemd driver needs a manager to create scopes: refuse to start without one
        // rather than fail every container later.
        let systemd_bus = match cgroup_driver {
            CgroupDriver::Systemd => Some(crate::cgroup::connect_systemd(
                options.systemd_bus.as_deref(),
            )?),
            CgroupDriver::Cgroupfs => None,
        };
        tracing::info!(?cgroup_driver, ?cgroup_version, root = %options.root.display(), "runtime opened");
        Ok(Self {
            options,
            store,
            images,
            cgroup_driver,
            cgroup_version,
            systemd_bus,
            pod_cidr,
            network: RwLock::new(network),
            pod_runs: Inflight::default(),
            container_creates: Inflight::default(),
            events: crate::events::EventBus::default(),
            stats: crate::container::stats::StatsCache::default(),
            decoded_containers: Default::default(),
            decoded_pods: Default::default(),
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

    /// The systemd manager's socket pod monitors use (systemd driver only).
    pub(crate) fn systemd_bus(&self) -> Option<&Path> {
        self.systemd_bus.as_deref()
    }

    /// The metadata store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Container lifecycle events: subscribe to get every change from now on.
    pub fn events(&self) -> &crate::events::EventBus {
        &self.events
    }

    /// What stats keep between calls.
    pub(crate) fn stats_cache(&self) -> &crate::container::stats::StatsCache {
        &self.stats
    }

    /// The image manager: pull, list, remove, container root filesystems.
    pub fn images(&self) -> &ImageManager {
        &self.images
    }

    /// A shared handle on the image manager, for undo steps that outlive a borrow.
    pub(crate) fn images_handle(&self) -> Arc<ImageManager> {
        self.images.clone()
    }

    /// crius-oci's secure defaults, which every container spec starts from.
    pub(crate) fn spec_defaults(&self) -> crate::container::spec::SpecDefaults {
        use crius_monitor::oci_defaults as d;
        crate::container::spec::SpecDefaults {
            capabilities: d::DEFAULT_CAPABILITIES
                .iter()
                .map(|c| (*c).to_string())
                .collect(),
            masked_paths: d::MASKED_PATHS.iter().map(|c| (*c).to_string()).collect(),
            readonly_paths: d::READONLY_PATHS.iter().map(|c| (*c).to_string()).collect(),
            seccomp: d::default_seccomp(),
        }
    }

    /// `<state>/pods/<id>`: the pod's monitor socket, namespace pins and files.
    pub(crate) fn pod_dir(&self, id: &str) -> PathBuf {
        self.pods_dir().join(id)
    }

    /// The directory holding every pod's directory.
    pub(crate) fn pods_dir(&self) -> PathBuf {
        self.options.state.join("pods")
    }

    /// The monitor binary: configured, else `crius-monitor` beside this executable, else
    /// the one on `$PATH`.
    pub(crate) fn monitor_binary(&self) -> PathBuf {
        if let Some(path) = &self.options.monitor_binary {
            return path.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("crius-monitor")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("crius-monitor"))
    }

    /// The runtime handler `name` ("" and "crius" are the built-in runtime).
    pub(crate) fn handler(&self, name: &str) -> Result<Option<PathBuf>> {
        if name.is_empty() || name == "crius" {
            return Ok(None);
        }
        match self.options.handlers.iter().find(|h| h.name == name) {
            Some(h) => Ok(h.path.clone()),
            None => Err(Error::UnknownHandler {
                name: name.to_string(),
                known: self
                    .handlers()
                    .iter()
                    .map(|h| format!("{:?}", h.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The cgroup parent of a pod's containers: kubelet's (a slice name with the systemd
    /// driver, a bad one is InvalidArgument), or when kubelet gave none `/crius/<pod id>`
    /// with cgroupfs (owned, and removed with the pod) and crius's own slice with systemd
    /// (systemd's to manage).
    pub(crate) fn pod_cgroup_parent(
        &self,
        config: &crate::pod::config::PodConfig,
        id: &str,
    ) -> Result<String> {
        match (config.cgroup_parent.is_empty(), self.cgroup_driver) {
            (true, CgroupDriver::Cgroupfs) => Ok(format!("/crius/{id}")),
            (true, CgroupDriver::Systemd) => Ok(crate::cgroup::DEFAULT_SLICE.to_string()),
            (false, driver) => driver.pod_cgroup(&config.cgroup_parent),
        }
    }

    /// Removes the cgroup directories crius created for pod `record` (the default parent
    /// only; kubelet manages its own).
    pub(crate) fn remove_pod_cgroup(&self, record: &crius_store::PodRecord) {
        if record.cgroup_parent != format!("/crius/{}", record.id) {
            return;
        }
        let relative = record.cgroup_parent.trim_start_matches('/');
        // v2: one hierarchy at the root. v1 (and hybrid): one hierarchy per controller
        // directory (symlinks such as cpu -> cpu,cpuacct are skipped, their targets are not).
        let hierarchies: Vec<PathBuf> = match self.cgroup_version {
            CgroupVersion::V2 => vec![self.options.cgroup_root.clone()],
            CgroupVersion::V1 => fs::read_dir(&self.options.cgroup_root)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default(),
        };
        for hierarchy in hierarchies {
            let dir = hierarchy.join(relative);
            if dir.is_dir() {
                if let Err(e) = fs::remove_dir(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove pod cgroup");
                }
            }
        }
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
        for part in cidr.split(',') {
            validate_cidr(part.trim())?;
        }
        // Built before the setting is saved: a CIDR the network refuses must not be kept
        // for the next start to fail on.
        let rebuilt = crate::network::build(&self.options.network, &self.options.root, Some(cidr))?;
        let txn = self.store.write()?;
        txn.set_setting(POD_CIDR_KEY, &cidr.to_string())?;
        txn.commit()?;
        let mut current = self.pod_cidr.write().unwrap_or_else(|p| p.into_inner());
        *current = Some(cidr.to_string());
        *self.network.write().unwrap_or_else(|p| p.into_inner()) = rebuilt;
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
            conditions: vec![self.runtime_condition(), self.network_condition()],
            handlers: self.handlers(),
            info,
        }
    }

    fn handlers(&self) -> Vec<RuntimeHandler> {
        // The default ("") and "crius" are the built-in runtime, which applies `rro` with
        // mount_setattr(2) (kubelet sends recursive read-only mounts only to a handler
        // that claims them). Configured binaries follow, claiming nothing: their version,
        // and so their support, is unknown. No handler claims user namespaces yet.
        let builtin = ["", "crius"].into_iter().map(|name| RuntimeHandler {
            name: name.to_string(),
            recursive_read_only_mounts: true,
            user_namespaces: false,
        });
        let configured = self.options.handlers.iter().map(|h| RuntimeHandler {
            name: h.name.clone(),
            recursive_read_only_mounts: false,
            user_namespaces: false,
        });
        builtin.chain(configured).collect()
    }

    /// The network plugin new pods get, if pod networking is on.
    pub(crate) fn network(&self) -> Option<Arc<dyn crius_net::NetworkPlugin>> {
        self.network
            .read()
            .map(|n| n.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn network_condition(&self) -> Condition {
        let failure = match self.network() {
            None => Err((
                "NetworkDisabled",
                "pod networking is off (network.mode = \"none\"); pods get loopback only"
                    .to_string(),
            )),
            Some(plugin) => {
                let r = plugin.status();
                if r.ready {
                    Ok(())
                } else {
                    Err((
                        "NetworkPluginNotReady",
                        format!("{}: {}", r.reason, r.message),
                    ))
                }
            }
        };
        condition(NETWORK_READY, failure)
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
            .and_then(|()| monitor_available(&self.monitor_binary()));
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

/// Pods need the per-pod monitor binary: without it every RunPodSandbox would fail, so
/// the runtime is not ready and says where it looked.
fn monitor_available(binary: &Path) -> Result<(), (&'static str, String)> {
    let found = if binary.is_absolute() {
        binary.is_file()
    } else {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file())
        })
    };
    if found {
        Ok(())
    } else {
        Err((
            "MonitorBinaryMissing",
            format!(
                "crius-monitor not found at {}; install it beside criusd or set monitor_path",
                binary.display()
            ),
        ))
    }
}

fn state_dir_writable(state: &Path) -> std::io::Result<()> {
    let probe = state.join(".writable");
    fs::write(&probe, b"")?;
    fs::remove_file(&probe)
}

/// Creates `path` (and missing parents) and gives it `mode` whatever the umask.
pub(crate) fn create_private_dir(path: &Path, mode: u32) -> Result<()> {
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

/// The mode of a pod's directory and of its containers' bundles: private, but searchable
/// when the pod has a user namespace, whose root (an unprivileged host uid) must reach
/// its rootfs and the pod's files through them.
pub(crate) fn bundle_dir_mode(user_ns: bool) -> u32 {
    if user_ns {
        0o711
    } else {
        0o700
    }
}

/// A new 64-hex-digit id, as containerd and CRI-O make them.
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 32];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, in nanoseconds since the epoch (the unit of every CRI timestamp).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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

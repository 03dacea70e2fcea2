//! Which cgroup hierarchy the host runs and which driver kubelet must agree on.
//!
//! kubelet's `--cgroup-driver` must equal the runtime's (it asks through the
//! `RuntimeConfig` RPC), so the choice is made once at start-up and reported as is.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crius_monitor::systemd_cgroup::{self, ScopePath, Systemd};

use crate::error::Error;

/// The slice a pod's containers go in with the systemd driver when kubelet gave no cgroup
/// parent (crictl, tests): one slice of crius's own, as runc's default is `system.slice`.
pub const DEFAULT_SLICE: &str = "crius.slice";

/// The cgroup hierarchy mounted at `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// Per-controller hierarchies (also the "hybrid" layout with an extra v2 mount).
    V1,
    /// The unified hierarchy only.
    V2,
}

impl CgroupVersion {
    /// Detects the hierarchy under `cgroup_root` (normally `/sys/fs/cgroup`): a unified
    /// mount exposes `cgroup.controllers` at its top, a v1 or hybrid layout does not.
    pub fn detect(cgroup_root: &Path) -> Self {
        if cgroup_root.join("cgroup.controllers").exists() {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        }
    }
}

/// The driver that creates pod and container cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// Plain directories in the cgroup filesystem.
    Cgroupfs,
    /// Transient systemd scope units, created over D-Bus, in kubelet's slices.
    Systemd,
}

/// The driver as configured: fixed, or chosen from the host at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriverChoice {
    /// systemd when it runs as init (as kubeadm defaults to), cgroupfs otherwise.
    #[default]
    Auto,
    Cgroupfs,
    Systemd,
}

impl CgroupDriverChoice {
    /// Resolves the choice. `systemd_booted` says whether systemd is PID 1, which it
    /// signals by creating `/run/systemd/system` (sd_booted(3)).
    pub fn resolve(self, systemd_booted: bool) -> CgroupDriver {
        match self {
            CgroupDriverChoice::Cgroupfs => CgroupDriver::Cgroupfs,
            CgroupDriverChoice::Systemd => CgroupDriver::Systemd,
            CgroupDriverChoice::Auto if systemd_booted => CgroupDriver::Systemd,
            CgroupDriverChoice::Auto => CgroupDriver::Cgroupfs,
        }
    }
}

impl CgroupDriver {
    /// The cgroup parent recorded for a pod whose CRI `cgroup_parent` is `parent`: with
    /// cgroupfs the parent is a path and is used as given; with systemd it is a slice name,
    /// checked (a path or a bad name is InvalidArgument) and kept as it is.
    pub fn pod_cgroup(self, parent: &str) -> Result<String, Error> {
        match self {
            CgroupDriver::Cgroupfs => Ok(parent.to_string()),
            CgroupDriver::Systemd => slice_path(parent).map(|_| parent.to_string()),
        }
    }

    /// Container `id`'s `linux.cgroupsPath` under its pod's recorded parent: with systemd
    /// and a slice parent, runc's systemd form `<slice>:crius:<id>` (the runtime asks
    /// systemd for the scope `crius-<id>.scope` in that slice); otherwise a directory below
    /// the parent (cgroupfs; or a pod recorded before the systemd driver made scopes, whose
    /// parent is a slice's expanded path).
    pub fn container_cgroups_path(self, pod_parent: &str, id: &str) -> String {
        let is_slice = pod_parent.ends_with(".slice") && !pod_parent.contains('/');
        match self {
            CgroupDriver::Systemd if is_slice => format!("{pod_parent}:crius:{id}"),
            CgroupDriver::Systemd => {
                format!("{}/crius-{id}.scope", pod_parent.trim_end_matches('/'))
            }
            CgroupDriver::Cgroupfs => format!("{}/crius-{id}", pod_parent.trim_end_matches('/')),
        }
    }
}

/// The systemd manager's root cgroup (its `ControlGroup`), read once when the runtime
/// opens with the systemd driver. Process-wide because the places that map a container's
/// systemd-form path to its directory (status folding on every watcher thread, stats)
/// have no runtime handle; the value is a fact of the host for the daemon's life.
static SYSTEMD_ROOT: RwLock<Option<String>> = RwLock::new(None);

/// The systemd manager's socket, recorded with [`SYSTEMD_ROOT`] (and process-wide for
/// the same reason): [`stop_scope`] reaches the manager from status folding.
static SYSTEMD_BUS: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Connects to the systemd manager on `bus` (its default socket when `None`) and records
/// its root cgroup for [`cgroup_dir`] and its socket for [`stop_scope`]. An unreachable
/// manager is Unavailable, naming the socket.
pub(crate) fn connect_systemd(bus: Option<&Path>) -> Result<PathBuf, Error> {
    let bus = bus.map_or_else(systemd_cgroup::default_bus, Path::to_path_buf);
    let root = Systemd::connect(&bus)
        .and_then(|mut m| m.manager_root())
        .map_err(|e| {
            Error::Unavailable(format!(
                "cgroup_driver = \"systemd\" needs a systemd manager, and the one at {} \
                 cannot be used: {e}; start systemd, set systemd_bus to its socket, or use \
                 cgroup_driver = \"cgroupfs\"",
                bus.display()
            ))
        })?;
    tracing::info!(bus = %bus.display(), manager_root = %root, "systemd manager reached");
    *SYSTEMD_ROOT.write().unwrap_or_else(|p| p.into_inner()) = Some(root);
    *SYSTEMD_BUS.write().unwrap_or_else(|p| p.into_inner()) = Some(bus.clone());
    Ok(bus)
}

/// Stops the systemd scope of container `id`, whose `linux.cgroupsPath` is
/// `cgroups_path`, and waits until systemd unloaded it (a failed scope's record is reset
/// too); a path not in the systemd form has no scope. For containers whose monitor is
/// gone, which no runtime deletes: crius's own kill reads the scope's directories only,
/// so processes in cgroups the container made inside its delegated scope survive it, and
/// systemd, seeing the scope not empty, would keep it and them running. systemd kills
/// the whole tree (see `Systemd::stop_scope`). Best effort: a failure is logged and the
/// caller goes on cleaning up what it can.
pub(crate) fn stop_scope(id: &str, cgroups_path: &str) {
    if !systemd_cgroup::is_systemd_path(Path::new(cgroups_path)) {
        return;
    }
    let Ok(scope) = ScopePath::parse(Path::new(cgroups_path)) else {
        return;
    };
    let bus = SYSTEMD_BUS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(bus) = bus else {
        tracing::warn!(container_id = id, unit = %scope.unit, "no systemd manager to stop the scope of a lost container (the daemon does not run the systemd driver)");
        return;
    };
    match Systemd::connect(&bus).and_then(|mut m| m.stop_scope(&scope.unit)) {
        Ok(()) => {
            tracing::debug!(container_id = id, unit = %scope.unit, "scope of a lost container stopped")
        }
        Err(e) => {
            tracing::warn!(container_id = id, unit = %scope.unit, error = %e, "cannot stop the systemd scope of a lost container")
        }
    }
}

/// The directory (relative to each hierarchy's root) of a container whose
/// `linux.cgroupsPath` is `cgroups_path`: a systemd-form path is the manager's root + the
/// slice's directories + the scope; a cgroupfs path is itself. `None` for a path that
/// could leave the hierarchy (`..`) or is empty or malformed.
pub(crate) fn cgroup_dir(cgroups_path: &str) -> Option<String> {
    if systemd_cgroup::is_systemd_path(Path::new(cgroups_path)) {
        let scope = ScopePath::parse(Path::new(cgroups_path)).ok()?;
        let root = SYSTEMD_ROOT
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        let dir = scope.cgroup_path(&root);
        return Some(dir.to_string_lossy().trim_start_matches('/').to_string());
    }
    Some(cgroups_path.trim_start_matches('/'))
        .filter(|p| !p.is_empty() && !p.split('/').any(|c| c == ".."))
        .map(str::to_string)
}

/// The cgroup directory path of systemd slice `name` (crius-oci's rules: each `-` is one
/// level of nesting, `-.slice` is the root). A path, a name without `.slice`, an empty
/// level or a character systemd refuses in unit names is InvalidArgument.
pub fn slice_path(name: &str) -> Result<String, Error> {
    systemd_cgroup::slice_path(name).map_err(|e| {
        Error::InvalidArgument(format!(
            "cgroup parent {e}; with cgroup_driver = \"systemd\" it must be a slice name such \
             as kubepods-burstable-pod<uid>.slice (use cgroup_driver = \"cgroupfs\" for \
             cgroupfs paths)"
        ))
    })
}

/// Whether systemd is the init system, per sd_booted(3).
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_init_system() {
        assert_eq!(
            CgroupDriverChoice::Auto.resolve(true),
            CgroupDriver::Systemd
        );
        assert_eq!(
            CgroupDriverChoice::Auto.resolve(false),
            CgroupDriver::Cgroupfs
        );
        assert_eq!(
            CgroupDriverChoice::Systemd.resolve(false),
            CgroupDriver::Systemd
        );
        assert_eq!(
            CgroupDriverChoice::Cgroupfs.resolve(true),
            CgroupDriver::Cgroupfs
        );
    }

    /// (How slice names expand is crius-oci's, tested there.)
    #[test]
    fn pods_keep_their_slice_and_containers_get_scopes_in_it() {
        let driver = CgroupDriver::Systemd;
        assert_eq!(
            driver.pod_cgroup("system-crius.slice").unwrap(),
            "system-crius.slice"
        );
        assert_eq!(
            driver.container_cgroups_path("system-crius.slice", "c1"),
            "system-crius.slice:crius:c1"
        );
        // A pod recorded before scopes: its parent is already a directory.
        assert_eq!(
            driver.container_cgroups_path("/system.slice/system-crius.slice", "c1"),
            "/system.slice/system-crius.slice/crius-c1.scope"
        );
        assert_eq!(
            CgroupDriver::Cgroupfs.pod_cgroup("/kubepods/pod1").unwrap(),
            "/kubepods/pod1"
        );
        assert_eq!(
            CgroupDriver::Cgroupfs.container_cgroups_path("/kubepods/pod1/", "c1"),
            "/kubepods/pod1/crius-c1"
        );
    }

    #[test]
    fn bad_slice_names_are_invalid_arguments() {
        for bad in [
            "/kubepods/burstable/pod1",
            "kubepods.slice/kubepods-burstable.slice",
            "kubepods-burstable",
            "kubepods-burstable.scope",
            ".slice",
            "-kubepods.slice",
            "kubepods-.slice",
            "kubepods--burstable.slice",
            "kube pods.slice",
            "kubepods-../etc.slice",
            "",
        ] {
            let err = slice_path(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
            assert!(err.to_string().contains(".slice"), "{bad:?}: {err}");
        }
        let long = format!("{}.slice", "a".repeat(260));
        assert!(slice_path(&long).is_err());
    }

    #[test]
    fn container_directories_come_from_either_form() {
        assert_eq!(
            cgroup_dir("/kubepods/pod1/crius-c1").unwrap(),
            "kubepods/pod1/crius-c1"
        );
        assert_eq!(cgroup_dir("/a/../b"), None);
        assert_eq!(cgroup_dir(""), None);
        assert_eq!(cgroup_dir("kubepods.slice:crius:"), None);
        // The manager's root is "" until a runtime opened with the systemd driver.
        assert_eq!(
            cgroup_dir("kubepods-besteffort-pod1.slice:crius:c1").unwrap(),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crius-c1.scope"
        );
    }

    #[test]
    fn unified_root_is_v2() {
        let dir = std::env::temp_dir().join(format!("crius-cg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(CgroupVersion::detect(&dir), CgroupVersion::V1);
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert_eq!(CgroupVersion::detect(&dir), CgroupVersion::V2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

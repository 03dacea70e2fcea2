//! Which cgroup hierarchy the host runs and which driver kubelet must agree on.
//!
//! kubelet's `--cgroup-driver` must equal the runtime's (it asks through the
//! `RuntimeConfig` RPC), so the choice is made once at start-up and reported as is.

use std::path::Path;

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
    /// Transient systemd units (slices and scopes).
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

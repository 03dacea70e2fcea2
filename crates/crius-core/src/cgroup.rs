//! Which cgroup hierarchy the host runs and which driver kubelet must agree on.
//!
//! kubelet's `--cgroup-driver` must equal the runtime's (it asks through the
//! `RuntimeConfig` RPC), so the choice is made once at start-up and reported as is.

use std::path::Path;

use crate::error::Error;

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

impl CgroupDriver {
    /// The cgroup path (from each hierarchy's root) of a pod whose CRI `cgroup_parent` is
    /// `parent`: with cgroupfs the parent is a path and is used as given; with systemd it is
    /// a slice name, expanded to the nested slice directories systemd would use.
    pub fn pod_cgroup(self, parent: &str) -> Result<String, Error> {
        match self {
            CgroupDriver::Cgroupfs => Ok(parent.to_string()),
            CgroupDriver::Systemd => slice_path(parent),
        }
    }

    /// The name of container `id`'s cgroup under its pod's: a scope unit name with systemd,
    /// as systemd names transient units for processes it did not start.
    pub fn container_cgroup_name(self, id: &str) -> String {
        match self {
            CgroupDriver::Cgroupfs => format!("crius-{id}"),
            CgroupDriver::Systemd => format!("crius-{id}.scope"),
        }
    }
}

/// The cgroup directory path of systemd slice `name`: each `-` in a slice name is one
/// level of nesting (systemd.slice(5)), so `kubepods-burstable-pod1.slice` lives at
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice`, and `-.slice`
/// is the root. A path, a name without `.slice`, an empty component (`a--b`, a leading
/// or trailing `-`) or a character systemd refuses in unit names is InvalidArgument.
pub fn slice_path(name: &str) -> Result<String, Error> {
    let invalid = |why: &str| {
        Error::InvalidArgument(format!(
            "cgroup parent {name:?}: {why}; with cgroup_driver = \"systemd\" it must be a \
             slice name such as kubepods-burstable-pod<uid>.slice"
        ))
    };
    if name.contains('/') {
        return Err(invalid(
            "is a path (use cgroup_driver = \"cgroupfs\" for cgroupfs parents)",
        ));
    }
    let stem = name
        .strip_suffix(".slice")
        .ok_or_else(|| invalid("does not end in .slice"))?;
    if stem == "-" {
        return Ok("/".to_string());
    }
    if stem.is_empty() {
        return Err(invalid("has an empty name"));
    }
    if name.len() > 255 {
        return Err(invalid("is longer than 255 characters"));
    }
    if !stem
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\'))
    {
        return Err(invalid(
            "holds a character other than letters, digits, ':', '-', '_', '.' and '\\'",
        ));
    }
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(
            "has an empty level (a leading or trailing '-', or '--')",
        ));
    }
    let mut path = String::new();
    for i in 1..=parts.len() {
        path.push('/');
        path.push_str(&parts[..i].join("-"));
        path.push_str(".slice");
    }
    Ok(path)
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
    fn slice_names_expand_to_nested_slice_directories() {
        assert_eq!(
            slice_path("kubepods-burstable-pod1234_abcd.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_abcd.slice"
        );
        assert_eq!(slice_path("kubepods.slice").unwrap(), "/kubepods.slice");
        assert_eq!(slice_path("-.slice").unwrap(), "/");
        let driver = CgroupDriver::Systemd;
        assert_eq!(
            driver.pod_cgroup("system-crius.slice").unwrap(),
            "/system.slice/system-crius.slice"
        );
        assert_eq!(driver.container_cgroup_name("c1"), "crius-c1.scope");
        assert_eq!(
            CgroupDriver::Cgroupfs.pod_cgroup("/kubepods/pod1").unwrap(),
            "/kubepods/pod1"
        );
        assert_eq!(
            CgroupDriver::Cgroupfs.container_cgroup_name("c1"),
            "crius-c1"
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
    fn unified_root_is_v2() {
        let dir = std::env::temp_dir().join(format!("crius-cg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(CgroupVersion::detect(&dir), CgroupVersion::V1);
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert_eq!(CgroupVersion::detect(&dir), CgroupVersion::V2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

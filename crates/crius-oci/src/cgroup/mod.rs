//! cgroups v1 and v2 behind one [`CgroupManager`] (enum dispatch: the set is closed).
//!
//! Drivers: cgroupfs (direct file writes under the hierarchy mounts; cgroups-rs was not
//! needed for the handful of files involved), and systemd ([`systemd`]): a `cgroupsPath`
//! in runc's systemd form `slice:prefix:name` becomes a transient scope unit that systemd
//! creates over D-Bus ([`dbus`]); the files inside it are then written as with cgroupfs.
//! [`CgroupManager::new`] takes cgroupfs paths only and refuses the systemd form (the
//! built-in runtime resolves it to the scope's directory first).
//!
//! Paths: `cgroupsPath` is relative to each hierarchy root (an absolute-looking path is
//! taken relative to the root too); `..` components are refused.

mod bpf;
pub mod dbus;
mod devices;
pub mod systemd;
mod v1;
mod v2;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxResources};

use crate::error::{Error, Result};

pub use v1::V1Manager;
pub use v2::V2Manager;

/// Usage figures of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Total CPU time, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory usage minus inactive file cache (kubelet's "working set"), bytes.
    pub memory_working_set: u64,
    /// Memory usage, bytes.
    pub memory_usage: u64,
    /// Processes (tasks) in the cgroup.
    pub pids: u64,
    /// OOM kills inside the cgroup.
    pub oom_kills: u64,
}

/// A container's cgroup on whichever hierarchy the host runs.
#[derive(Debug, Clone)]
pub enum CgroupManager {
    /// Legacy hierarchies, one per controller.
    V1(V1Manager),
    /// The unified hierarchy.
    V2(V2Manager),
}

impl CgroupManager {
    /// The manager for `path` on the host's cgroup layout (v2 when /sys/fs/cgroup is
    /// cgroup2, otherwise v1 hierarchies read from /proc/self/mountinfo).
    pub fn new(path: &Path) -> Result<Self> {
        Self::on_host(path, false)
    }

    /// The manager for the directory `path` of a systemd scope: on a v1 (hybrid) host it
    /// also covers systemd's `name=systemd` hierarchy and the cgroup2 mount, where systemd
    /// tracks the scope, so processes added later (exec) join the scope there too.
    pub fn for_scope(path: &Path) -> Result<Self> {
        Self::on_host(path, true)
    }

    /// `path` on the host's layout; on v1 with systemd's own hierarchies when `systemd`.
    fn on_host(path: &Path, systemd: bool) -> Result<Self> {
        let rel = relative(path)?;
        if unified_host() {
            return Ok(CgroupManager::V2(V2Manager::new(
                Path::new("/sys/fs/cgroup"),
                &rel,
            )));
        }
        let hierarchies = if systemd {
            v1::host_hierarchies_with_systemd()?
        } else {
            v1::host_hierarchies()?
        };
        Ok(CgroupManager::V1(V1Manager::new(hierarchies, &rel)))
    }

    /// The manager for the cgroup process `pid` is in, from `/proc/<pid>/cgroup` (on v1
    /// the memory controller's path, which runtimes share across controllers). The paths
    /// there are relative to the reader's cgroup namespace: the host's, for crius.
    pub fn of_process(pid: i32) -> Result<Self> {
        let file = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let v2 = unified_host();
        let path = process_cgroup_path(&text, v2).ok_or_else(|| Error::Cgroup {
            path: file.clone(),
            message: format!("no {} entry", if v2 { "cgroup v2" } else { "memory" }),
        })?;
        Self::new(Path::new(path))
    }

    /// A v2 manager on an explicit cgroup2 mount (the `unified` mount of a hybrid host).
    pub fn v2_at(mount: &Path, path: &Path) -> Result<Self> {
        Ok(CgroupManager::V2(V2Manager::new(mount, &relative(path)?)))
    }

    /// A v1 manager on explicit hierarchy mounts (controller name → mount point).
    pub fn v1_with(hierarchies: BTreeMap<String, PathBuf>, path: &Path) -> Result<Self> {
        Ok(CgroupManager::V1(V1Manager::new(
            hierarchies,
            &relative(path)?,
        )))
    }

    /// Creates the cgroup (and missing parents). Idempotent.
    pub fn create(&self) -> Result<()> {
        match self {
            CgroupManager::V1(m) => m.create(),
            CgroupManager::V2(m) => m.create(),
        }
    }

    /// Applies `resources`; also used for live updates.
    pub fn apply(&self, resources: &LinuxResources) -> Result<()> {
        match self {
            CgroupManager::V1(m) => m.apply(resources),
            CgroupManager::V2(m) => m.apply(resources),
        }
    }

    /// Moves process `pid` into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        match self {
            CgroupManager::V1(m) => m.add_process(pid),
            CgroupManager::V2(m) => m.add_process(pid),
        }
    }

    /// The pids in the cgroup.
    pub fn processes(&self) -> Result<Vec<i32>> {
        match self {
            CgroupManager::V1(m) => m.processes(),
            CgroupManager::V2(m) => m.processes(),
        }
    }

    /// Usage figures.
    pub fn stats(&self) -> Result<CgroupStats> {
        match self {
            CgroupManager::V1(m) => m.stats(),
            CgroupManager::V2(m) => m.stats(),
        }
    }

    /// Freezes (true) or thaws (false) every process in the cgroup.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        match self {
            CgroupManager::V1(m) => m.freeze(frozen),
            CgroupManager::V2(m) => m.freeze(frozen),
        }
    }

    /// SIGKILLs every process (frozen first where supported so none can fork away) and
    /// waits up to `timeout` for the cgroup to empty.
    /// On v2 with `cgroup.kill` (Linux 5.14+) the kernel kills the whole cgroup at once.
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        if let CgroupManager::V2(m) = self {
            m.kill();
        }
        let _ = self.freeze(true);
        for pid in self.processes()? {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.freeze(false);
        let deadline = Instant::now() + timeout;
        while !self.processes()?.is_empty() {
            if Instant::now() > deadline {
                return Err(self.error("processes left after SIGKILL"));
            }
            for pid in self.processes()? {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Kills what is left and removes the cgroup. Deleting a missing cgroup succeeds.
    pub fn delete(&self) -> Result<()> {
        if self.exists() {
            self.kill_all(Duration::from_secs(5))?;
        }
        match self {
            CgroupManager::V1(m) => m.delete(),
            CgroupManager::V2(m) => m.delete(),
        }
    }

    /// Whether the cgroup directory exists.
    pub fn exists(&self) -> bool {
        match self {
            CgroupManager::V1(m) => m.exists(),
            CgroupManager::V2(m) => m.exists(),
        }
    }

    fn error(&self, message: &str) -> Error {
        let path = match self {
            CgroupManager::V1(m) => m.path().to_path_buf(),
            CgroupManager::V2(m) => m.path().to_path_buf(),
        };
        Error::Cgroup {
            path,
            message: message.into(),
        }
    }
}

/// Whether the host runs the unified hierarchy only (cgroup2 at /sys/fs/cgroup).
pub fn unified_host() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Device rules every container gets after the spec's own (runc does the same): the
/// standard character devices and ptys may be used, and any node may be created (`m`)
/// but not opened. With the spec's usual leading deny-all this is the whole allow list.
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    let rule = |t: &str, major: Option<i64>, minor: Option<i64>, access: &str| serde_json::json!({"allow": true, "type": t, "major": major, "minor": minor, "access": access});
    let rules = serde_json::Value::Array(vec![
        rule("c", None, None, "m"),
        rule("b", None, None, "m"),
        rule("c", Some(1), Some(3), "rwm"),
        rule("c", Some(1), Some(5), "rwm"),
        rule("c", Some(1), Some(7), "rwm"),
        rule("c", Some(1), Some(8), "rwm"),
        rule("c", Some(1), Some(9), "rwm"),
        rule("c", Some(5), Some(0), "rwm"),
        rule("c", Some(5), Some(2), "rwm"),
        rule("c", Some(136), None, "rwm"),
    ]);
    serde_json::from_value(rules).unwrap_or_default()
}

/// The rules to program for a container: the spec's resource rules, then the defaults,
/// then an allow for each device the spec adds to the container.
pub fn device_rules(
    resources: Option<&LinuxResources>,
    devices: &[LinuxDevice],
) -> Vec<LinuxDeviceCgroup> {
    let mut rules: Vec<LinuxDeviceCgroup> = resources
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    rules.extend(default_device_rules());
    for d in devices {
        // A fifo (p) is no device for the cgroup.
        let t = match d.typ() {
            oci_spec::runtime::LinuxDeviceType::B => "b",
            oci_spec::runtime::LinuxDeviceType::P => continue,
            _ => "c",
        };
        let rule = serde_json::json!({"allow": true, "type": t, "major": d.major(), "minor": d.minor(), "access": "rwm"});
        if let Ok(rule) = serde_json::from_value(rule) {
            rules.push(rule);
        }
    }
    rules
}

/// A rule as the v1 `devices.allow`/`devices.deny` files take it: `c 1:3 rwm`.
pub(crate) fn device_rule_line(d: &LinuxDeviceCgroup) -> String {
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    let t = d.typ().map_or("a", |t| match t {
        oci_spec::runtime::LinuxDeviceType::A => "a",
        oci_spec::runtime::LinuxDeviceType::B => "b",
        oci_spec::runtime::LinuxDeviceType::C
        | oci_spec::runtime::LinuxDeviceType::U
        | oci_spec::runtime::LinuxDeviceType::P => "c",
    });
    let access = d
        .access()
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "rwm".into());
    format!("{t} {}:{} {access}", num(d.major()), num(d.minor()))
}

/// The cgroup path in a `/proc/<pid>/cgroup` text: the `0::` line's on v2, the memory
/// controller's on v1.
fn process_cgroup_path(text: &str, v2: bool) -> Option<&str> {
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = if v2 {
            id == "0" && controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "memory")
        };
        wanted.then_some(path)
    })
}

fn relative(path: &Path) -> Result<PathBuf> {
    let s = path.to_string_lossy();
    if systemd::is_systemd_path(path) {
        return Err(Error::InvalidSpec(format!(
            "cgroupsPath {s} is in the systemd form slice:prefix:name, which names a scope \
             unit, not a directory: resolve it through the systemd driver"
        )));
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::InvalidSpec(format!(
                    "cgroupsPath {s} must not contain '..'"
                )))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(Error::InvalidSpec("cgroupsPath is empty".into()));
    }
    Ok(out)
}

/// Writes `value` to `dir/file`, naming both on failure.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    std::fs::write(dir.join(file), value).map_err(|e| Error::Cgroup {
        path: dir.to_path_buf(),
        message: format!("write {file}={value}: {e}"),
    })
}

/// Reads `dir/file` trimmed.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    std::fs::read_to_string(dir.join(file))
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::Cgroup {
            path: dir.to_path_buf(),
            message: format!("read {file}: {e}"),
        })
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`).
pub(crate) fn keyed(dir: &Path, file: &str, key: &str) -> Result<u64> {
    let text = read(dir, file)?;
    Ok(text
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0))
}

/// Pids listed in `dir/cgroup.procs`.
pub(crate) fn procs(dir: &Path) -> Result<Vec<i32>> {
    match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::Cgroup {
            path: dir.to_path_buf(),
            message: format!("read cgroup.procs: {e}"),
        }),
    }
}

/// rmdir with a few retries (the kernel releases an emptied cgroup asynchronously).
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    std::fs::remove_dir(dir).map_err(|e| Error::Cgroup {
        path: dir.to_path_buf(),
        message: format!("rmdir: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_render_as_the_v1_files_expect() {
        let deny: LinuxDeviceCgroup =
            serde_json::from_value(serde_json::json!({"allow": false, "access": "rwm"})).unwrap();
        assert_eq!(device_rule_line(&deny), "a *:* rwm");
        let lines: Vec<String> = default_device_rules()
            .iter()
            .map(device_rule_line)
            .collect();
        assert!(lines.contains(&"c 136:* rwm".to_string()), "{lines:?}");
        assert!(lines.contains(&"b *:* m".to_string()), "{lines:?}");
        assert_eq!(lines.len(), 10);
    }

    #[test]
    fn a_process_cgroup_is_read_from_its_proc_file() {
        let text = "9:name=systemd:/a\n4:memory:/crius/ctr\n3:cpu,cpuacct:/crius/ctr\n0::/v2/ctr\n";
        assert_eq!(process_cgroup_path(text, false), Some("/crius/ctr"));
        assert_eq!(process_cgroup_path(text, true), Some("/v2/ctr"));
        assert_eq!(process_cgroup_path("1:cpu:/x\n", false), None);
    }

    #[test]
    fn cgroup_paths_cannot_climb_out() {
        assert!(relative(Path::new("/a/../../etc")).is_err());
        assert!(relative(Path::new("system.slice:crius:abc")).is_err());
        assert_eq!(
            relative(Path::new("/crius/pod/ctr")).unwrap(),
            PathBuf::from("crius/pod/ctr")
        );
    }
}

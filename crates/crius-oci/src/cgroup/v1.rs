//! cgroup v1: one directory per controller hierarchy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use oci_spec::runtime::LinuxResources;

use super::{device_rule_line, keyed, procs, read, remove_dir, write, CgroupStats};
use crate::error::{Error, Result};

/// Controllers we create directories in (when the host mounts them).
const CONTROLLERS: [&str; 9] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "hugetlb", "freezer", "devices",
];

/// A v1 cgroup: `<hierarchy mount>/<path>` for each controller.
#[derive(Debug, Clone)]
pub struct V1Manager {
    dirs: BTreeMap<String, PathBuf>,
    roots: BTreeMap<String, PathBuf>,
    rel: PathBuf,
}

/// The key of systemd's own v1 hierarchy (no controller, `name=systemd`) in a hierarchy map.
pub(crate) const SYSTEMD_HIERARCHY: &str = "name=systemd";
/// The key of a hybrid host's cgroup2 mount (`/sys/fs/cgroup/unified`) in a hierarchy map.
pub(crate) const UNIFIED_HIERARCHY: &str = "unified";

/// Controller name → mount point, from /proc/self/mountinfo.
pub(crate) fn host_hierarchies() -> Result<BTreeMap<String, PathBuf>> {
    hierarchies(false)
}

/// The controller hierarchies plus the two systemd tracks its units in on a hybrid host
/// (`name=systemd` and the cgroup2 mount), for a systemd scope: a process that joins the
/// container later (exec) must land in the scope there too.
pub(crate) fn host_hierarchies_with_systemd() -> Result<BTreeMap<String, PathBuf>> {
    hierarchies(true)
}

/// Read once per process: the hierarchies are mounted at boot and never move under a
/// running daemon, while mountinfo grows with every container's mounts (read per stats
/// call, it made ListContainerStats cost containers × mounts).
fn hierarchies(with_systemd: bool) -> Result<BTreeMap<String, PathBuf>> {
    static PLAIN: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    static WITH_SYSTEMD: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    let cache = if with_systemd { &WITH_SYSTEMD } else { &PLAIN };
    if let Some(known) = cache.get() {
        return Ok(known.clone());
    }
    let read = read_hierarchies(with_systemd)?;
    Ok(cache.get_or_init(|| read).clone())
}

fn read_hierarchies(with_systemd: bool) -> Result<BTreeMap<String, PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("/proc/self/mountinfo", e))?;
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        let fstype = r.next();
        let Some(mountpoint) = left.split(' ').nth(4) else {
            continue;
        };
        if fstype == Some("cgroup2") {
            if with_systemd {
                out.entry(UNIFIED_HIERARCHY.to_string())
                    .or_insert_with(|| PathBuf::from(mountpoint));
            }
            continue;
        }
        if fstype != Some("cgroup") {
            continue;
        }
        for opt in r.nth(1).unwrap_or_default().split(',') {
            if CONTROLLERS.contains(&opt) || (with_systemd && opt == SYSTEMD_HIERARCHY) {
                out.entry(opt.to_string())
                    .or_insert_with(|| PathBuf::from(mountpoint));
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Unavailable(
            "no cgroup v1 hierarchy is mounted".into(),
        ));
    }
    Ok(out)
}

impl V1Manager {
    pub(crate) fn new(roots: BTreeMap<String, PathBuf>, rel: &Path) -> Self {
        let dirs = roots
            .iter()
            .map(|(c, root)| (c.clone(), root.join(rel)))
            .collect();
        Self {
            dirs,
            roots,
            rel: rel.to_path_buf(),
        }
    }

    /// The relative cgroup path.
    pub fn path(&self) -> &Path {
        &self.rel
    }

    /// The cgroup's directory in `controller`'s hierarchy, when that hierarchy is mounted.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.get(controller).map(PathBuf::as_path)
    }

    pub(crate) fn exists(&self) -> bool {
        self.dirs.values().any(|d| d.is_dir())
    }

    pub(crate) fn create(&self) -> Result<()> {
        for (c, dir) in &self.dirs {
            std::fs::create_dir_all(dir).map_err(|e| Error::Cgroup {
                path: dir.clone(),
                message: format!("mkdir: {e}"),
            })?;
            if c == "cpuset" {
                self.init_cpuset()?;
            }
        }
        Ok(())
    }

    /// cpuset.cpus and cpuset.mems start empty in v1; a task cannot join until they are
    /// filled, so copy them down from the nearest ancestor that has them.
    fn init_cpuset(&self) -> Result<()> {
        let (Some(root), Some(_)) = (self.roots.get("cpuset"), self.dir("cpuset")) else {
            return Ok(());
        };
        let mut cur = root.clone();
        for comp in self.rel.components() {
            let parent = cur.clone();
            cur.push(comp);
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if read(&cur, f)?.is_empty() {
                    write(&cur, f, &read(&parent, f)?)?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.dirs.values() {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    pub(crate) fn processes(&self) -> Result<Vec<i32>> {
        let dir = self
            .dir("pids")
            .or_else(|| self.dir("memory"))
            .or_else(|| self.dirs.values().next().map(PathBuf::as_path));
        match dir {
            Some(d) => procs(d),
            None => Ok(Vec::new()),
        }
    }

    pub(crate) fn apply(&self, r: &LinuxResources) -> Result<()> {
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(Error::InvalidSpec(
                "unified cgroup entries need cgroup v2".into(),
            ));
        }
        self.apply_cpu(r)?;
        self.apply_memory(r)?;
        if let (Some(p), Some(dir)) = (r.pids(), self.dir("pids")) {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write(dir, "pids.max", &v)?;
        }
        if let Some(dir) = self.dir("hugetlb") {
            for h in r.hugepage_limits().iter().flatten() {
                write(
                    dir,
                    &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                    &h.limit().to_string(),
                )?;
            }
        }
        self.apply_blkio(r)?;
        if let Some(dir) = self.dir("devices") {
            for d in r.devices().iter().flatten() {
                let file = if d.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(dir, file, &device_rule_line(d))?;
            }
        }
        Ok(())
    }

    fn apply_cpu(&self, r: &LinuxResources) -> Result<()> {
        let Some(cpu) = r.cpu() else { return Ok(()) };
        if let Some(dir) = self.dir("cpu") {
            if let Some(s) = cpu.shares() {
                write(dir, "cpu.shares", &s.to_string())?;
            }
            if let Some(p) = cpu.period() {
                write(dir, "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = cpu.quota() {
                write(dir, "cpu.cfs_quota_us", &q.to_string())?;
            }
        }
        if let Some(dir) = self.dir("cpuset") {
            if let Some(c) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
                write(dir, "cpuset.cpus", c)?;
            }
            if let Some(m) = cpu.mems().as_ref().filter(|m| !m.is_empty()) {
                write(dir, "cpuset.mems", m)?;
            }
        }
        Ok(())
    }

    fn apply_memory(&self, r: &LinuxResources) -> Result<()> {
        let (Some(mem), Some(dir)) = (r.memory(), self.dir("memory")) else {
            return Ok(());
        };
        let has_swap = dir.join("memory.memsw.limit_in_bytes").exists();
        let limit = mem.limit().map(|l| l.to_string());
        let swap = mem.swap().filter(|_| has_swap).map(|s| s.to_string());
        // memory.limit must stay <= memsw.limit at every step: try limit first, and on
        // refusal raise memsw first.
        if let Some(l) = &limit {
            if write(dir, "memory.limit_in_bytes", l).is_err() {
                if let Some(s) = &swap {
                    write(dir, "memory.memsw.limit_in_bytes", s)?;
                }
                write(dir, "memory.limit_in_bytes", l)?;
            }
        }
        if let Some(s) = &swap {
            write(dir, "memory.memsw.limit_in_bytes", s)?;
        }
        if let Some(res) = mem.reservation() {
            write(dir, "memory.soft_limit_in_bytes", &res.to_string())?;
        }
        if let Some(sw) = mem.swappiness() {
            write(dir, "memory.swappiness", &sw.to_string())?;
        }
        if mem.disable_oom_killer() == Some(true) {
            write(dir, "memory.oom_control", "1")?;
        }
        Ok(())
    }

    fn apply_blkio(&self, r: &LinuxResources) -> Result<()> {
        let (Some(b), Some(dir)) = (r.block_io(), self.dir("blkio")) else {
            return Ok(());
        };
        let weight_file = ["blkio.weight", "blkio.bfq.weight"]
            .into_iter()
            .find(|f| dir.join(f).exists());
        if let (Some(w), Some(f)) = (b.weight(), weight_file) {
            write(dir, f, &w.to_string())?;
        }
        for d in b.weight_device().iter().flatten() {
            if let (Some(w), Some(f)) = (d.weight(), weight_file) {
                write(
                    dir,
                    &format!("{f}_device"),
                    &format!("{}:{} {w}", d.major(), d.minor()),
                )?;
            }
        }
        for (file, list) in [
            (
                "blkio.throttle.read_bps_device",
                b.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                b.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                b.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                b.throttle_write_iops_device(),
            ),
        ] {
            for t in list.iter().flatten() {
                write(
                    dir,
                    file,
                    &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                )?;
            }
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> Result<CgroupStats> {
        let mut s = CgroupStats::default();
        if let Some(dir) = self.dir("cpuacct") {
            s.cpu_usage_ns = read(dir, "cpuacct.usage")?.parse().unwrap_or(0);
        }
        if let Some(dir) = self.dir("memory") {
            s.memory_usage = read(dir, "memory.usage_in_bytes")?.parse().unwrap_or(0);
            let inactive = keyed(dir, "memory.stat", "total_inactive_file")?;
            s.memory_working_set = s.memory_usage.saturating_sub(inactive);
            s.oom_kills = keyed(dir, "memory.oom_control", "oom_kill")?;
        }
        if let Some(dir) = self.dir("pids") {
            s.pids = read(dir, "pids.current")?.parse().unwrap_or(0);
        }
        Ok(s)
    }

    pub(crate) fn freeze(&self, frozen: bool) -> Result<()> {
        let Some(dir) = self.dir("freezer") else {
            return Ok(());
        };
        let want = if frozen { "FROZEN" } else { "THAWED" };
        write(dir, "freezer.state", want)?;
        for _ in 0..100 {
            if read(dir, "freezer.state")? == want {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(Error::Cgroup {
            path: dir.to_path_buf(),
            message: format!("freezer did not reach {want}"),
        })
    }

    pub(crate) fn delete(&self) -> Result<()> {
        for dir in self.dirs.values() {
            remove_dir(dir)?;
        }
        Ok(())
    }
}

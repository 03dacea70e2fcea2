//! cgroup v2: one directory in the unified hierarchy.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{keyed, procs, read, remove_dir, write, CgroupStats};
use crate::error::{Error, Result};

/// A v2 cgroup: `<mount>/<path>`.
#[derive(Debug, Clone)]
pub struct V2Manager {
    mount: PathBuf,
    rel: PathBuf,
    dir: PathBuf,
}

/// cpu.shares (2..262144) → cpu.weight (1..10000), the conversion runc and the kernel
/// docs use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// blkio.weight (10..1000) → io.weight (1..10000).
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    1 + (u64::from(weight.clamp(10, 1000)) - 10) * 9999 / 990
}

impl V2Manager {
    pub(crate) fn new(mount: &Path, rel: &Path) -> Self {
        Self {
            mount: mount.to_path_buf(),
            rel: rel.to_path_buf(),
            dir: mount.join(rel),
        }
    }

    /// The relative cgroup path.
    pub fn path(&self) -> &Path {
        &self.rel
    }

    /// The cgroup's directory on its cgroup2 mount.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// mkdir every level and enable the parent's available controllers for children.
    pub(crate) fn create(&self) -> Result<()> {
        let mut cur = self.mount.clone();
        for comp in self.rel.components() {
            let available = read(&cur, "cgroup.controllers").unwrap_or_default();
            let enable: Vec<String> = available
                .split_whitespace()
                .map(|c| format!("+{c}"))
                .collect();
            if !enable.is_empty() {
                // Best effort: a controller may be busy in a threaded subtree.
                let _ = write(&cur, "cgroup.subtree_control", &enable.join(" "));
            }
            cur.push(comp);
            match std::fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::Cgroup {
                        path: cur,
                        message: format!("mkdir: {e}"),
                    })
                }
            }
        }
        Ok(())
    }

    pub(crate) fn add_process(&self, pid: i32) -> Result<()> {
        write(&self.dir, "cgroup.procs", &pid.to_string())
    }

    pub(crate) fn processes(&self) -> Result<Vec<i32>> {
        procs(&self.dir)
    }

    pub(crate) fn apply(&self, r: &LinuxResources) -> Result<()> {
        let d = &self.dir;
        if let Some(cpu) = r.cpu() {
            if let Some(s) = cpu.shares() {
                write(d, "cpu.weight", &shares_to_weight(s).to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let quota = match cpu.quota() {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_string(),
                };
                write(
                    d,
                    "cpu.max",
                    &format!("{quota} {}", cpu.period().unwrap_or(100_000)),
                )?;
            }
            if let Some(c) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
                write(d, "cpuset.cpus", c)?;
            }
            if let Some(m) = cpu.mems().as_ref().filter(|m| !m.is_empty()) {
                write(d, "cpuset.mems", m)?;
            }
        }
        self.apply_memory(r)?;
        if let Some(devices) = r.devices().as_ref().filter(|d| !d.is_empty()) {
            super::bpf::attach(d, devices)?;
        }
        if let Some(p) = r.pids() {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write(d, "pids.max", &v)?;
        }
        for h in r.hugepage_limits().iter().flatten() {
            write(
                d,
                &format!("hugetlb.{}.max", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
        if let Some(w) = r.block_io().as_ref().and_then(|b| b.weight()) {
            write(d, "io.weight", &blkio_to_io_weight(w).to_string())?;
        }
        for (k, v) in r.unified().iter().flatten() {
            if k.contains('/') || k.starts_with('.') {
                return Err(Error::InvalidSpec(format!(
                    "unified key {k:?} is not a cgroup file name"
                )));
            }
            write(d, k, v)?;
        }
        Ok(())
    }

    fn apply_memory(&self, r: &LinuxResources) -> Result<()> {
        let Some(mem) = r.memory() else { return Ok(()) };
        let d = &self.dir;
        let limit = mem.limit();
        if let Some(l) = limit {
            write(
                d,
                "memory.max",
                &if l > 0 { l.to_string() } else { "max".into() },
            )?;
        }
        if let Some(s) = mem.swap() {
            // OCI swap is memory+swap (v1 semantics); v2 wants swap alone.
            let v = match (s, limit) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                (s, _) => s.to_string(),
            };
            write(d, "memory.swap.max", &v)?;
        }
        if let Some(res) = mem.reservation() {
            write(d, "memory.low", &res.to_string())?;
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> Result<CgroupStats> {
        let d = &self.dir;
        let mut s = CgroupStats::default();
        if d.join("cpu.stat").exists() {
            s.cpu_usage_ns = keyed(d, "cpu.stat", "usage_usec")? * 1000;
        }
        if d.join("memory.current").exists() {
            s.memory_usage = read(d, "memory.current")?.parse().unwrap_or(0);
            s.memory_working_set =
                s.memory_usage
                    .saturating_sub(keyed(d, "memory.stat", "inactive_file")?);
            s.oom_kills = keyed(d, "memory.events", "oom_kill")?;
        }
        if d.join("pids.current").exists() {
            s.pids = read(d, "pids.current")?.parse().unwrap_or(0);
        }
        Ok(s)
    }

    pub(crate) fn freeze(&self, frozen: bool) -> Result<()> {
        if !self.dir.join("cgroup.freeze").exists() {
            return Ok(());
        }
        write(&self.dir, "cgroup.freeze", if frozen { "1" } else { "0" })
    }

    /// Writes `cgroup.kill` when the kernel has it (best effort; the caller verifies).
    pub(crate) fn kill(&self) {
        if self.dir.join("cgroup.kill").exists() {
            let _ = write(&self.dir, "cgroup.kill", "1");
        }
    }

    pub(crate) fn delete(&self) -> Result<()> {
        remove_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_onto_the_weight_range() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }
}

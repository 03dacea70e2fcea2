//! A container's cgroup usage, read from cgroupfs. One reader for both sides: the monitor
//! answers `Stats` with it, and criusd calls [`read_path`] directly when it lists the stats
//! of many containers, so a list costs file reads, not one monitor round trip per container.
//!
//! RSS and page faults, which crius-oci's `CgroupStats` does not carry, come from the
//! cgroup's `memory.stat` (v1: `total_rss`, `total_pgfault`; v2: `anon`, `pgfault`).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crius_oci::cgroup::CgroupManager;

use crate::error::Result;
use crate::protocol::ContainerStats;

/// The usage of the cgroup at `cgroups_path` (an OCI `linux.cgroupsPath`, relative to the
/// cgroup root) on whichever hierarchy the host runs.
pub fn read_path(cgroups_path: &Path) -> Result<ContainerStats> {
    read(&CgroupManager::new(cgroups_path)?)
}

/// The usage of `cgroup`.
pub fn read(cgroup: &CgroupManager) -> Result<ContainerStats> {
    let s = cgroup.stats()?;
    let (rss, faults) = rss_and_faults(cgroup);
    Ok(ContainerStats {
        cpu_usage_ns: s.cpu_usage_ns,
        memory_working_set_bytes: s.memory_working_set,
        memory_rss_bytes: rss,
        page_faults: faults,
        pids: s.pids,
        oom_events: s.oom_kills,
        timestamp_ns: now_ns(),
    })
}

/// (rss bytes, page faults); zeros when the files cannot be read.
fn rss_and_faults(cgroup: &CgroupManager) -> (u64, u64) {
    let (file, rss_key, fault_key) = match cgroup {
        CgroupManager::V1(m) => (
            m.dir("memory").map(|d| d.join("memory.stat")),
            "total_rss",
            "total_pgfault",
        ),
        CgroupManager::V2(m) => (Some(m.dir().join("memory.stat")), "anon", "pgfault"),
    };
    let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) else {
        return (0, 0);
    };
    (keyed(&text, rss_key), keyed(&text, fault_key))
}

fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

fn now_ns() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stat_keys_are_matched_exactly() {
        let text = "rss 5\ntotal_rss 7\ntotal_rss_huge 9\ntotal_pgfault 11\n";
        assert_eq!(keyed(text, "total_rss"), 7);
        assert_eq!(keyed(text, "total_pgfault"), 11);
        assert_eq!(keyed(text, "anon"), 0);
    }

    #[test]
    fn a_missing_cgroup_is_an_error_not_zeros() {
        assert!(read_path(Path::new("/crius-test-no-such-cgroup/c1")).is_err());
    }
}

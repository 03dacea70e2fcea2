//! The memory figures crius-oci's `CgroupStats` does not carry yet (RSS and page faults),
//! read from the container cgroup's `memory.stat` (v1: `total_rss`, `total_pgfault`;
//! v2: `anon`, `pgfault`).

use std::path::{Path, PathBuf};

use crius_oci::cgroup::CgroupManager;

/// (rss bytes, page faults); zeros when the files cannot be read.
pub(crate) fn rss_and_faults(cgroup: &CgroupManager) -> (u64, u64) {
    let (file, rss_key, fault_key) = match cgroup {
        CgroupManager::V1(m) => (
            memory_v1_root().map(|root| root.join(m.path()).join("memory.stat")),
            "total_rss",
            "total_pgfault",
        ),
        CgroupManager::V2(m) => (
            Some(
                Path::new("/sys/fs/cgroup")
                    .join(m.path())
                    .join("memory.stat"),
            ),
            "anon",
            "pgfault",
        ),
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

/// The mount point of the v1 hierarchy carrying the memory controller.
fn memory_v1_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        let (fstype, _source, opts) = (r.next()?, r.next()?, r.next()?);
        let memory = fstype == "cgroup" && opts.split(',').any(|o| o == "memory");
        let mount = left.split(' ').nth(4)?;
        memory.then(|| PathBuf::from(mount))
    })
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
}

//! Snapshots: one directory per layer chain id, shared between images, plus one
//! writable snapshot per container, combined with overlayfs.
//!
//! The model is containerd's: [`Snapshotter::prepare`] makes an *active* snapshot
//! (writable, on top of a committed parent), [`Snapshotter::commit`] turns an active
//! snapshot into a *committed*, read-only one under a new name. Layers are unpacked
//! into a prepared snapshot and committed under their chain id; a container's rootfs is
//! an active snapshot whose parent is the image's top chain id.
//!
//! ```text
//!   prepare(key, parent) ──▶ Active ──commit(name, key, parent)──▶ Committed(name)
//!                              │                               │
//!                          remove(key)                  remove(name) (no children)
//! ```
//!
//! Contract of every implementation (checked by the shared conformance suite):
//! - `prepare` with a key that exists → `AlreadyExists`; with an unknown parent or a
//!   parent that is not committed → `NotFound` / `FailedPrecondition`;
//! - `commit` of an unknown key → `NotFound`; to a name that exists → `AlreadyExists`
//!   and with a parent that is not committed → `NotFound`/`FailedPrecondition`
//!   (the active snapshot is left for the caller to remove);
//! - `remove` of a snapshot with children → `FailedPrecondition`; of an unknown key →
//!   `Ok(false)` (idempotent);
//! - a snapshot dir whose metadata was never written (a crash mid-prepare) is deleted
//!   on open.

mod overlay;

use std::path::{Path, PathBuf};

pub use overlay::{mount_overlay, unmount, OverlaySnapshotter};

use crate::error::Result;

/// Whether a snapshot is still writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Writable: being unpacked into, or a container's upper layer.
    Active,
    /// Read-only, may be a parent.
    Committed,
}

/// What is known about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The key (a chain id for committed layers).
    pub key: String,
    /// Active or committed.
    pub kind: SnapshotKind,
    /// The parent's key.
    pub parent: Option<String>,
    /// The short numeric directory id.
    pub id: u64,
    /// Bytes of file content in this snapshot alone (recorded at commit).
    pub size: u64,
}

/// Bytes and inodes used by a directory tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes (`st_blocks * 512`).
    pub bytes: u64,
    /// Inodes (files, dirs, links counted once per inode).
    pub inodes: u64,
}

/// How to mount a snapshot: paths relative to `base` keep the option string short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounts {
    /// The directory every relative path starts from.
    pub base: PathBuf,
    /// Read-only layers, topmost first, relative to `base`.
    pub lowers: Vec<String>,
    /// The writable dir (relative), for active snapshots.
    pub upper: Option<String>,
    /// The overlay work dir (relative), for active snapshots.
    pub work: Option<String>,
}

impl Mounts {
    /// The overlay option string, relative to `base`.
    pub fn overlay_options(&self) -> String {
        let mut opts = format!("lowerdir={}", self.lowers.join(":"));
        if let (Some(upper), Some(work)) = (&self.upper, &self.work) {
            opts.push_str(&format!(",upperdir={upper},workdir={work}"));
        }
        opts
    }

    /// Absolute path of the writable dir: where a layer is unpacked.
    pub fn upper_path(&self) -> Option<PathBuf> {
        self.upper.as_ref().map(|u| self.base.join(u))
    }
}

/// A store of snapshots; see the module docs for the contract.
pub trait Snapshotter: Send + Sync + std::fmt::Debug {
    /// Creates an active snapshot on top of committed `parent` and returns its mounts.
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Mounts>;
    /// Makes active snapshot `key` committed under `name`. Its parent is `parent` when
    /// given (it must be committed by then: layers are unpacked in parallel into
    /// parentless snapshots and committed bottom-up), else the one given to `prepare`.
    fn commit(&self, name: &str, key: &str, parent: Option<&str>) -> Result<()>;
    /// The mounts of an existing snapshot (committed ones mount read-only).
    fn mounts(&self, key: &str) -> Result<Mounts>;
    /// One snapshot's info; `NotFound` when unknown.
    fn stat(&self, key: &str) -> Result<SnapshotInfo>;
    /// Every snapshot.
    fn list(&self) -> Result<Vec<SnapshotInfo>>;
    /// Removes a snapshot without children; `Ok(false)` when it did not exist.
    fn remove(&self, key: &str) -> Result<bool>;
    /// Disk usage of all snapshots.
    fn usage(&self) -> Result<Usage>;
    /// The directory holding the snapshots (for filesystem info).
    fn root(&self) -> &Path;
}

/// Walks `path` (without crossing into other filesystems) and sums its usage.
pub fn disk_usage(path: &Path) -> Result<Usage> {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let mut usage = Usage::default();
    let mut seen = HashSet::new();
    let root_dev = match std::fs::symlink_metadata(path) {
        Ok(m) => m.dev(),
        Err(_) => return Ok(usage),
    };
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.dev() != root_dev || !seen.insert(m.ino()) {
            continue;
        }
        usage.bytes += m.blocks() * 512;
        usage.inodes += 1;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
pub(crate) mod testsuite;

//! The overlayfs snapshotter: `<root>/<n>/fs` holds a snapshot's files, `<root>/<n>/work`
//! the overlay work dir of an active snapshot, `<root>/<n>/meta.json` its metadata
//! (written last, atomically: a directory without it is a crash leftover).
//!
//! Mount option length: the kernel takes mount data in one page (4096 bytes). Absolute
//! lower paths (`/var/lib/crius/snapshots/123/fs`) would overflow with ~120 layers, so
//! [`mount_overlay`] mounts from a helper thread that unshares its filesystem context
//! (`unshare(CLONE_FS)`, so its cwd is its own and the daemon's is untouched), `chdir`s
//! to the snapshots dir and passes relative paths (`123/fs`, 7 bytes per layer):
//! overlayfs resolves them against the mounting task's cwd. 500 layers (overlayfs's own
//! maximum) fit.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::snapshot::{disk_usage, Mounts, SnapshotInfo, SnapshotKind, Snapshotter, Usage};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    key: String,
    kind: SnapshotKind,
    parent: Option<String>,
    #[serde(default)]
    size: u64,
}

#[derive(Debug, Default)]
struct State {
    by_key: HashMap<String, (u64, Meta)>,
    next_id: u64,
}

/// Snapshots as directories combined with overlayfs.
#[derive(Debug)]
pub struct OverlaySnapshotter {
    root: PathBuf,
    state: Mutex<State>,
}

impl OverlaySnapshotter {
    /// Opens (creating) the snapshotter under `root`, dropping crash leftovers.
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).map_err(|e| Error::io("create", root, e))?;
        let mut state = State {
            next_id: 1,
            ..State::default()
        };
        for entry in fs::read_dir(root).map_err(|e| Error::io("list", root, e))? {
            let entry = entry.map_err(|e| Error::io("list", root, e))?;
            let path = entry.path();
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            let meta = fs::read(path.join("meta.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Meta>(&b).ok());
            match (id, meta) {
                (Some(id), Some(meta)) => {
                    state.next_id = state.next_id.max(id + 1);
                    state.by_key.insert(meta.key.clone(), (id, meta));
                }
                _ => {
                    tracing::info!(path = %path.display(), "removing incomplete snapshot");
                    remove_tree(&path)?;
                }
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_meta(&self, id: u64, meta: &Meta) -> Result<()> {
        let dir = self.root.join(id.to_string());
        let tmp = dir.join("meta.json.tmp");
        let path = dir.join("meta.json");
        let data = serde_json::to_vec(meta).map_err(|e| Error::Metadata {
            path: path.clone(),
            source: e,
        })?;
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(&data)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync", &dir, e))
    }

    fn chain(state: &State, mut key: Option<String>) -> Result<Vec<String>> {
        let mut lowers = Vec::new();
        while let Some(k) = key {
            let (id, meta) = state
                .by_key
                .get(&k)
                .ok_or_else(|| Error::SnapshotNotFound(k.clone()))?;
            lowers.push(format!("{id}/fs"));
            key = meta.parent.clone();
        }
        Ok(lowers)
    }

    fn mounts_locked(&self, state: &State, key: &str) -> Result<Mounts> {
        let (id, meta) = state
            .by_key
            .get(key)
            .ok_or_else(|| Error::SnapshotNotFound(key.to_string()))?;
        let (lowers, upper, work) = match meta.kind {
            SnapshotKind::Active => (
                Self::chain(state, meta.parent.clone())?,
                Some(format!("{id}/fs")),
                Some(format!("{id}/work")),
            ),
            SnapshotKind::Committed => (Self::chain(state, Some(key.to_string()))?, None, None),
        };
        Ok(Mounts {
            base: self.root.clone(),
            lowers,
            upper,
            work,
        })
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Mounts> {
        let mut state = self.lock();
        if state.by_key.contains_key(key) {
            return Err(Error::SnapshotExists(key.to_string()));
        }
        if let Some(p) = parent {
            match state.by_key.get(p) {
                None => return Err(Error::SnapshotNotFound(p.to_string())),
                Some((_, m)) if m.kind != SnapshotKind::Committed => {
                    return Err(Error::SnapshotInUse(format!(
                        "{p} is active and cannot be a parent"
                    )))
                }
                Some(_) => {}
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let dir = self.root.join(id.to_string());
        for sub in ["fs", "work"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| Error::io("create", dir.join(sub), e))?;
        }
        let meta = Meta {
            key: key.to_string(),
            kind: SnapshotKind::Active,
            parent: parent.map(str::to_string),
            size: 0,
        };
        if let Err(e) = self.write_meta(id, &meta) {
            let _ = remove_tree(&dir);
            return Err(e);
        }
        state.by_key.insert(key.to_string(), (id, meta));
        self.mounts_locked(&state, key)
    }

    fn commit(&self, name: &str, key: &str, parent: Option<&str>) -> Result<()> {
        let (id, mut meta) = {
            let state = self.lock();
            let (id, meta) = state
                .by_key
                .get(key)
                .ok_or_else(|| Error::SnapshotNotFound(key.to_string()))?;
            if meta.kind != SnapshotKind::Active {
                return Err(Error::SnapshotNotFound(format!("{key} (not active)")));
            }
            if state.by_key.contains_key(name) {
                return Err(Error::SnapshotExists(name.to_string()));
            }
            (*id, meta.clone())
        };
        let dir = self.root.join(id.to_string());
        meta.size = content_size(&dir.join("fs"));
        remove_tree(&dir.join("work"))?;
        let mut state = self.lock();
        if state.by_key.contains_key(name) {
            return Err(Error::SnapshotExists(name.to_string()));
        }
        if let Some(p) = parent {
            match state.by_key.get(p) {
                None => return Err(Error::SnapshotNotFound(p.to_string())),
                Some((_, m)) if m.kind != SnapshotKind::Committed => {
                    return Err(Error::SnapshotInUse(format!(
                        "{p} is active and cannot be a parent"
                    )))
                }
                Some(_) => meta.parent = Some(p.to_string()),
            }
        }
        meta.key = name.to_string();
        meta.kind = SnapshotKind::Committed;
        self.write_meta(id, &meta)?;
        state.by_key.remove(key);
        state.by_key.insert(name.to_string(), (id, meta));
        Ok(())
    }

    fn mounts(&self, key: &str) -> Result<Mounts> {
        self.mounts_locked(&self.lock(), key)
    }

    fn stat(&self, key: &str) -> Result<SnapshotInfo> {
        let state = self.lock();
        let (id, meta) = state
            .by_key
            .get(key)
            .ok_or_else(|| Error::SnapshotNotFound(key.to_string()))?;
        Ok(info(*id, meta))
    }

    fn list(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(self
            .lock()
            .by_key
            .values()
            .map(|(id, m)| info(*id, m))
            .collect())
    }

    fn remove(&self, key: &str) -> Result<bool> {
        let id = {
            let mut state = self.lock();
            let Some((id, _)) = state.by_key.get(key) else {
                return Ok(false);
            };
            let id = *id;
            if state
                .by_key
                .values()
                .any(|(_, m)| m.parent.as_deref() == Some(key))
            {
                return Err(Error::SnapshotInUse(key.to_string()));
            }
            // Metadata goes first: a crash mid-delete leaves a dir that open() drops.
            let meta = self.root.join(id.to_string()).join("meta.json");
            fs::remove_file(&meta).map_err(|e| Error::io("remove", &meta, e))?;
            state.by_key.remove(key);
            id
        };
        remove_tree(&self.root.join(id.to_string()))?;
        Ok(true)
    }

    fn usage(&self) -> Result<Usage> {
        disk_usage(&self.root)
    }

    fn root(&self) -> &Path {
        &self.root
    }
}

fn info(id: u64, m: &Meta) -> SnapshotInfo {
    SnapshotInfo {
        key: m.key.clone(),
        kind: m.kind,
        parent: m.parent.clone(),
        id,
        size: m.size,
    }
}

fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Bytes of regular-file content under `dir`, each inode counted once.
fn content_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = fs::read_dir(&p) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && seen.insert(m.ino()) {
                total += m.len();
            }
        }
    }
    total
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(4096)
}

/// Mounts a snapshot at `target` (an absolute path): overlay for a stack, a bind mount
/// for a single directory (read-only when the snapshot is committed).
pub fn mount_overlay(mounts: &Mounts, target: &Path) -> Result<()> {
    if !target.is_absolute() {
        return Err(Error::InvalidConfig(format!(
            "mount target {} must be absolute",
            target.display()
        )));
    }
    let single = match (&mounts.upper, mounts.lowers.as_slice()) {
        (Some(upper), []) => Some((upper.clone(), false)),
        (None, [only]) => Some((only.clone(), true)),
        _ => None,
    };
    if let Some((dir, readonly)) = single {
        let src = mounts.base.join(dir);
        mount(
            Some(&src),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::io("bind mount", target, e.into()))?;
        if readonly {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
                .map_err(|e| Error::io("remount ro", target, e.into()))?;
        }
        return Ok(());
    }
    let options = mounts.overlay_options();
    let limit = page_size();
    if options.len() >= limit {
        return Err(Error::MountOptionsTooLong {
            len: options.len(),
            limit,
        });
    }
    let base = mounts.base.clone();
    let target = target.to_path_buf();
    std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
            .map_err(|e| Error::io("unshare fs", &base, e.into()))?;
        nix::unistd::chdir(&base).map_err(|e| Error::io("chdir", &base, e.into()))?;
        tracing::debug!(target = %target.display(), options = options.as_str(), "mounting overlay");
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| Error::io("mount overlay", &target, e.into()))
    })
    .join()
    .map_err(|_| Error::Task("overlay mount thread panicked".into()))?
}

/// Unmounts `target`; `Ok(false)` when nothing was mounted there.
pub fn unmount(target: &Path) -> Result<bool> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(Error::io("unmount", target, e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testsuite::conformance_suite;

    #[test]
    fn overlay_snapshotter_passes_the_conformance_suite() {
        conformance_suite(|dir| OverlaySnapshotter::open(dir).unwrap());
    }

    #[test]
    fn leftover_dirs_without_metadata_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("7/fs")).unwrap();
        let s = OverlaySnapshotter::open(dir.path()).unwrap();
        assert!(!dir.path().join("7").exists());
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn container_rootfs_of_150_layers_mounts_and_sees_every_layer() {
        if !crius_testkit::require_root(
            "container_rootfs_of_150_layers_mounts_and_sees_every_layer",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // A long base path, as a deep state dir would give.
        let root = dir
            .path()
            .join("a-rather-long-directory-name-for-the-state/snapshots");
        let s = OverlaySnapshotter::open(&root).unwrap();
        let mut parent: Option<String> = None;
        for i in 0..150 {
            let m = s
                .prepare(&format!("extract-{i}"), parent.as_deref())
                .unwrap();
            fs::write(m.upper_path().unwrap().join(format!("f{i}")), i.to_string()).unwrap();
            s.commit(&format!("layer-{i}"), &format!("extract-{i}"), None)
                .unwrap();
            parent = Some(format!("layer-{i}"));
        }
        let m = s.prepare("ctr", parent.as_deref()).unwrap();
        let absolute_len: usize = m
            .lowers
            .iter()
            .map(|l| root.join(l).as_os_str().len() + 1)
            .sum();
        assert!(absolute_len > 4096, "the test must need relative paths");
        let target = dir.path().join("rootfs");
        fs::create_dir(&target).unwrap();
        mount_overlay(&m, &target).unwrap();
        let seen = (0..150).all(|i| target.join(format!("f{i}")).exists());
        fs::write(target.join("new"), b"rw").unwrap();
        assert!(unmount(&target).unwrap());
        assert!(!unmount(&target).unwrap());
        assert!(seen);
        assert_eq!(
            fs::read(m.upper_path().unwrap().join("new")).unwrap(),
            b"rw"
        );
    }
}

//! The pod's `/dev/shm`: one tmpfs per pod with its own IPC namespace, bind-mounted into
//! every container, so POSIX shared memory (`shm_open`) works across the pod's containers
//! the way the shared IPC namespace promises (System V shm needs only the namespace).
//!
//! It lives at `<pod dir>/shm`, is mounted when the pod runs and unmounted when the pod
//! stops (its memory is freed then; no container can run in a stopped pod) and, again
//! idempotently, before the pod directory is removed.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// The tmpfs size, as containerd and Docker default it (64 MiB).
const SHM_SIZE: &str = "size=65536k";

/// Where the pod in `pod_dir` keeps its `/dev/shm`.
pub(crate) fn shm_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("shm")
}

/// Mounts a fresh tmpfs at `<pod_dir>/shm` (mode 1777, nosuid, nodev, noexec, 64 MiB).
pub(crate) fn mount_pod_shm(pod_dir: &Path) -> Result<PathBuf> {
    let path = shm_path(pod_dir);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let data = format!("mode=1777,{SHM_SIZE}");
    mount(
        Some("shm"),
        &path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| Error::io(format!("mount tmpfs on {}", path.display()), e.into()))?;
    Ok(path)
}

/// Whether `<pod_dir>/shm` is a mount of its own (a pod created before crius mounted one
/// has none; its containers then get a private tmpfs each).
pub(crate) fn pod_shm(pod_dir: &Path) -> Option<PathBuf> {
    let path = shm_path(pod_dir);
    let inner = fs::symlink_metadata(&path).ok()?;
    let outer = fs::symlink_metadata(pod_dir).ok()?;
    (inner.is_dir() && inner.dev() != outer.dev()).then_some(path)
}

/// Unmounts the pod's shm; not mounted (or already gone) is success.
pub(crate) fn unmount_pod_shm(pod_dir: &Path) -> Result<()> {
    let path = shm_path(pod_dir);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) => {
            tracing::debug!(path = %path.display(), "unmounted pod shm");
            Ok(())
        }
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::io(format!("unmount {}", path.display()), e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_a_tmpfs_and_unmounts_it_idempotently() {
        if !crius_testkit::require_root("pod shm mount") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(pod_shm(dir.path()), None);
        let path = mount_pod_shm(dir.path()).unwrap();
        assert_eq!(pod_shm(dir.path()), Some(path.clone()));
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
            .expect("the shm mount is listed");
        assert!(line.contains(" - tmpfs "), "{line}");
        assert!(line.contains("size=65536k"), "{line}");
        assert!(line.contains("nosuid") && line.contains("nodev") && line.contains("noexec"));
        let mode = fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
        unmount_pod_shm(dir.path()).unwrap();
        assert_eq!(pod_shm(dir.path()), None);
        unmount_pod_shm(dir.path()).unwrap();
        fs::remove_dir(&path).unwrap();
        unmount_pod_shm(dir.path()).unwrap();
    }
}

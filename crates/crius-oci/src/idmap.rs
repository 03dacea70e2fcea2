//! Id-mapped mounts a caller makes before the runtime runs: a user-namespaced pod's
//! container rootfs and image volumes must show the image's files owned by the pod's own
//! ids.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// `MOUNT_ATTR_RDONLY` of mount_setattr(2).
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Mounts at `target` the image layers `lowers` (topmost first), each id-mapped through
/// the user namespace whose nsfs file is `userns` (a pod's pinned namespace): a file
/// owned by uid N in a layer shows as owned by the host id that namespace maps container
/// id N to, so the namespace's root owns the image's root-owned files.
///
/// With `upper` (the writable dir and the overlay work dir), an overlay of the mapped
/// layers under it; `upper` is used as it is, so what the container writes is stored with
/// its own (host) ids and the upper directory's root must already belong to the
/// namespace's root. Without, a read-only view: the one mapped layer itself, or a
/// lower-only overlay of several. overlayfs itself cannot be id-mapped; its layers can
/// (Linux 5.19+).
pub fn mount_layers_idmapped(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    userns: &Path,
) -> Result<()> {
    let userns_fd: OwnedFd = open(userns, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::sys(format!("open user namespace {}", userns.display()), e))?;
    let mut trees = lowers
        .iter()
        .map(|l| crate::clone::idmapped_tree(l, &userns_fd).map_err(Error::Unavailable))
        .collect::<Result<Vec<OwnedFd>>>()?;
    if let (None, [_]) = (upper, trees.as_slice()) {
        let tree = trees.remove(0);
        crate::clone::setattr_recursive(&tree, MOUNT_ATTR_RDONLY, 0)
            .map_err(|e| Error::sys("make the id-mapped layer read-only", e))?;
        let dir: OwnedFd = open(
            target,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys(format!("open {}", target.display()), e))?;
        return crate::clone::attach_tree(&tree, &dir)
            .map_err(|e| Error::sys(format!("move_mount onto {}", target.display()), e));
    }
    // The detached trees are named through /proc/self/fd while the overlay is mounted;
    // once mounted, the overlay holds its own references to them.
    let lowerdir = trees
        .iter()
        .map(|t| format!("/proc/self/fd/{}", t.as_raw_fd()))
        .collect::<Vec<_>>()
        .join(":");
    let mut options = format!("lowerdir={lowerdir}");
    if let Some((upper, work)) = upper {
        options.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| {
        Error::sys(
            format!("mount id-mapped overlay on {}", target.display()),
            e,
        )
    })
}

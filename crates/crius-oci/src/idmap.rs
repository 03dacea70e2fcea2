//! Id-mapped mounts a caller makes before the runtime runs: a user-namespaced pod's
//! container rootfs must show the image's files owned by the pod's own ids.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// Mounts an overlay at `target` whose read-only layers (`lowers`, topmost first) are
/// id-mapped through the user namespace whose nsfs file is `userns` (a pod's pinned
/// namespace): a file owned by uid N in a layer shows as owned by the host id that
/// namespace maps container id N to, so the namespace's root owns the image's
/// root-owned files. overlayfs itself cannot be id-mapped, its layers can (Linux 5.19+).
///
/// `upper` and `work` are used as they are: what the container writes is stored with
/// its own (host) ids, so the upper directory's root must already belong to the
/// namespace's root.
pub fn mount_overlay_idmapped(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    userns: &Path,
) -> Result<()> {
    let userns_fd: OwnedFd = open(userns, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::sys(format!("open user namespace {}", userns.display()), e))?;
    // Detached id-mapped clones, named through /proc/self/fd while the overlay is
    // mounted; the overlay keeps its own references to them once mounted.
    let trees = lowers
        .iter()
        .map(|l| crate::clone::idmapped_tree(l, &userns_fd).map_err(Error::Unavailable))
        .collect::<Result<Vec<OwnedFd>>>()?;
    let lowerdir = trees
        .iter()
        .map(|t| format!("/proc/self/fd/{}", t.as_raw_fd()))
        .collect::<Vec<_>>()
        .join(":");
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
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

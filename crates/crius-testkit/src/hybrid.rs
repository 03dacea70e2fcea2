//! Running crun on a hybrid cgroup host.
//!
//! crun 1.8 refuses to run anything on a hybrid host (cgroup v1 controllers under
//! `/sys/fs/cgroup`, plus a cgroup2 mount at `/sys/fs/cgroup/unified`) as soon as that
//! cgroup2 mount has a controller in it ("cgroups in hybrid mode not supported, drop all
//! controllers from cgroupv2"), even with `--cgroup-manager=disabled`. Test machines run
//! such a host with `hugetlb` on the unified mount. crun only looks at what it can see in
//! its mount namespace, so a private namespace without the unified mount makes it treat
//! the host as plain cgroup v1, which it supports; the host's mounts stay untouched.
//!
//! Unmounting alone is not enough: crun 1.8 picks legacy mode from `statfs` of the path
//! (anything but cgroup2 there), but still creates a directory for the `0::` line of
//! `/proc/self/cgroup` under `/sys/fs/cgroup/unified` and writes `cgroup.procs` into it,
//! which the read-only `/sys/fs/cgroup` tmpfs refuses. So a small scratch tmpfs takes the
//! unified mount's place: it takes those writes, controls nothing, and vanishes with the
//! namespace.

use std::io;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The cgroup2 mount of a hybrid host.
pub const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Whether this host has a cgroup2 mount at [`UNIFIED`] with controllers (the layout crun
/// 1.8 refuses).
pub fn unified_has_controllers() -> bool {
    std::fs::read_to_string(Path::new(UNIFIED).join("cgroup.controllers"))
        .is_ok_and(|c| !c.trim().is_empty())
}

/// Moves the **calling thread** into a new mount namespace whose mounts are all private,
/// so nothing mounted there reaches the host; processes spawned from this thread
/// afterwards inherit it.
pub fn private_mount_namespace() -> io::Result<()> {
    // unshare(CLONE_NEWNS) also unshares the thread's fs struct: allowed while other
    // threads run, and it affects only this thread (unshare(2)).
    unshare(CloneFlags::CLONE_NEWNS).map_err(io::Error::from)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Moves the **calling thread** into a new mount namespace, makes every mount in it
/// private (so nothing done here reaches the host) and, when [`unified_has_controllers`],
/// replaces [`UNIFIED`] there by an empty scratch tmpfs. Processes spawned from this
/// thread afterwards inherit the namespace. Returns whether the unified mount was hidden.
///
/// Meant for a test process of its own (nextest runs each test in one) or a benchmark's
/// main thread: other threads of the process keep the host's mount namespace.
pub fn hide_unified_cgroup_mount() -> io::Result<bool> {
    private_mount_namespace()?;
    if !unified_has_controllers() {
        return Ok(false);
    }
    // MNT_DETACH: an open descriptor under the mount (another thread's) must not make
    // this fail; the mount disappears from this namespace at once either way.
    umount2(UNIFIED, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
    mount(
        Some("crius-no-unified"),
        UNIFIED,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=1m,mode=0755"),
    )
    .map_err(io::Error::from)?;
    Ok(true)
}

//! The container's root filesystem: spec mounts, `/dev`, `pivot_root`, masked and
//! read-only paths. Runs in the init child, inside its new mount namespace.
//!
//! Every destination is resolved with `openat2(RESOLVE_IN_ROOT)` relative to the rootfs,
//! so a symlink in a hostile image (`/proc -> /host/etc`) resolves inside the rootfs, and
//! the mount is made on `/proc/self/fd/N` of that resolved descriptor. Missing
//! destinations are created one component at a time under the same rule.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
use nix::sys::statvfs::{fstatvfs, FsFlags};
use nix::unistd::symlinkat;

use crate::error::InitError;

/// What kind of object a missing mount destination should be created as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// A directory (mkdir -p inside the root).
    Dir,
    /// An empty regular file (bind mount of a file).
    File,
}

/// One mount of the spec, parsed in the parent.
#[derive(Debug)]
pub(crate) struct MountPlan {
    /// Filesystem type; `None` for binds.
    pub(crate) fstype: Option<String>,
    /// Source (host path for binds, a label for others).
    pub(crate) source: Option<PathBuf>,
    /// Destination inside the container.
    pub(crate) dest: PathBuf,
    /// Mount flags (without propagation).
    pub(crate) flags: MsFlags,
    /// Propagation changes applied after the mount.
    pub(crate) propagation: Vec<MsFlags>,
    /// Remaining options as the data string.
    pub(crate) data: String,
    /// Recursive attributes (`rro`, `rnosuid`, ...) for the whole mounted tree.
    pub(crate) recursive: RecursiveAttrs,
    /// For an id-mapped bind: the detached, already id-mapped tree made by the parent.
    pub(crate) idmapped: Option<OwnedFd>,
}

/// Recursive mount attributes from the OCI `r`-prefixed options (`rro`, `rnosuid`,
/// `rnodev`, `rnoexec`, `rnosymfollow`, `rnodiratime`, `rnoatime`, `rrelatime`,
/// `rstrictatime` and their opposites), as `MOUNT_ATTR_*` bits for mount_setattr(2).
/// Plain `ro` on an `rbind` leaves every submount writable (a remount never recurses);
/// these apply to the whole tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecursiveAttrs {
    /// Bits to set.
    pub(crate) set: u64,
    /// Bits to clear.
    pub(crate) clear: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// The atime mode is a 3-bit field: clear the whole field, then set one value.
const MOUNT_ATTR_ATIME: u64 = 0x70;
const MOUNT_ATTR_RELATIME: u64 = 0x0;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

impl RecursiveAttrs {
    /// Whether no recursive option was given.
    pub(crate) fn is_empty(self) -> bool {
        self.set == 0 && self.clear == 0
    }

    /// Applies one option; false when `opt` is not a recursive option. A later option
    /// overrides an earlier one (`rro,rrw` is read-write).
    fn apply(&mut self, opt: &str) -> bool {
        let (bit, on) = match opt {
            "rro" => (MOUNT_ATTR_RDONLY, true),
            "rrw" => (MOUNT_ATTR_RDONLY, false),
            "rnosuid" => (MOUNT_ATTR_NOSUID, true),
            "rsuid" => (MOUNT_ATTR_NOSUID, false),
            "rnodev" => (MOUNT_ATTR_NODEV, true),
            "rdev" => (MOUNT_ATTR_NODEV, false),
            "rnoexec" => (MOUNT_ATTR_NOEXEC, true),
            "rexec" => (MOUNT_ATTR_NOEXEC, false),
            "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, true),
            "rsymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, false),
            "rnodiratime" => (MOUNT_ATTR_NODIRATIME, true),
            "rdiratime" => (MOUNT_ATTR_NODIRATIME, false),
            "rrelatime" | "rnoatime" | "rstrictatime" => {
                let mode = match opt {
                    "rnoatime" => MOUNT_ATTR_NOATIME,
                    "rstrictatime" => MOUNT_ATTR_STRICTATIME,
                    _ => MOUNT_ATTR_RELATIME,
                };
                self.clear |= MOUNT_ATTR_ATIME;
                self.set = (self.set & !MOUNT_ATTR_ATIME) | mode;
                return true;
            }
            _ => return false,
        };
        if on {
            self.set |= bit;
            self.clear &= !bit;
        } else {
            self.clear |= bit;
            self.set &= !bit;
        }
        true
    }
}

/// A device node made available inside the container.
#[derive(Debug, Clone)]
pub(crate) struct DevicePlan {
    /// Path inside the container.
    pub(crate) path: PathBuf,
    /// How the node gets there.
    pub(crate) source: DeviceSource,
}

/// Where a container's device node comes from.
#[derive(Debug, Clone)]
pub(crate) enum DeviceSource {
    /// Bind-mount this host node (the default devices, and every device of a container in
    /// a user namespace, where mknod(2) of a device is never allowed).
    Bind(PathBuf),
    /// mknod(2) a fresh node, then set its exact mode and owner.
    Mknod {
        /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
        kind: SFlag,
        /// makedev(major, minor).
        rdev: u64,
        /// Permission bits (the umask must not apply).
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
}

/// Everything the init needs to build the root filesystem.
#[derive(Debug)]
pub(crate) struct RootfsPlan {
    /// Absolute host path of the rootfs.
    pub(crate) path: PathBuf,
    /// Remount `/` read-only at the end.
    pub(crate) readonly: bool,
    /// Propagation of `/` in the new mount namespace (default rprivate).
    pub(crate) propagation: MsFlags,
    /// Spec mounts in order.
    pub(crate) mounts: Vec<MountPlan>,
    /// Device nodes to bind from the host.
    pub(crate) devices: Vec<DevicePlan>,
    /// cgroup v1 hierarchies (dir name, mount options) for a `cgroup` mount.
    pub(crate) cgroup_v1: Vec<(String, String)>,
    /// The process's working directory, created inside the root when missing (images
    /// may name a WORKDIR they do not contain; runc creates it too).
    pub(crate) cwd: PathBuf,
}

type StepResult = Result<(), InitError>;

fn fail(e: impl std::fmt::Display) -> InitError {
    InitError::PrepareRootfs(e.to_string())
}

/// The prepare_rootfs step.
pub(crate) fn prepare_rootfs(plan: &RootfsPlan) -> StepResult {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | plan.propagation,
        None::<&str>,
    )
    .map_err(|e| fail(format!("make / {:?}: {e}", plan.propagation)))?;
    mount(
        Some(&plan.path),
        &plan.path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| fail(format!("bind rootfs {}: {e}", plan.path.display())))?;
    let root = open_dir(&plan.path).map_err(fail)?;
    for m in &plan.mounts {
        mount_one(&root, m, plan).map_err(|e| fail(format!("mount {}: {e}", m.dest.display())))?;
    }
    for d in &plan.devices {
        let made = match &d.source {
            DeviceSource::Bind(host) => bind_device(&root, &d.path, host),
            DeviceSource::Mknod { .. } => make_device(&root, &d.path, &d.source),
        };
        made.map_err(|e| fail(format!("device {}: {e}", d.path.display())))?;
    }
    dev_symlinks(&root).map_err(fail)?;
    open_in_root(&root, &plan.cwd, Some(Create::Dir))
        .map(drop)
        .map_err(|e| fail(format!("working directory: {e}")))
}

/// Opens a directory as an O_PATH descriptor.
pub(crate) fn open_dir(path: &Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

/// Resolves `path` inside `root` (symlinks and `..` cannot leave it), creating it when
/// missing and `create` says how. A dangling symlink on the way is followed (inside the
/// root) and its target created, as a path walk in the container would see it.
pub(crate) fn open_in_root(
    root: &File,
    path: &Path,
    create: Option<Create>,
) -> Result<OwnedFd, String> {
    open_in_root_depth(root, path, create, 0)
}

fn open_in_root_depth(
    root: &File,
    path: &Path,
    create: Option<Create>,
    depth: u32,
) -> Result<OwnedFd, String> {
    if depth > 40 {
        return Err(format!(
            "resolve {}: too many levels of symbolic links",
            path.display()
        ));
    }
    let rel = relative(path);
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(root.as_fd(), &rel, how) {
        Ok(fd) => Ok(fd),
        Err(nix::Error::ENOENT) if create.is_some() && rel != Path::new(".") => {
            let parent = rel.parent().unwrap_or(Path::new("."));
            let name = rel
                .file_name()
                .ok_or_else(|| format!("{}: no file name", path.display()))?;
            let pfd = open_in_root_depth(root, parent, Some(Create::Dir), depth + 1)?;
            if let Ok(target) = nix::fcntl::readlinkat(pfd.as_fd(), name) {
                let target = PathBuf::from(target);
                let next = if target.is_absolute() {
                    target
                } else {
                    Path::new("/").join(parent).join(target)
                };
                return open_in_root_depth(root, &next, create, depth + 1);
            }
            let made = match create {
                Some(Create::File) => openat(
                    pfd.as_fd(),
                    name,
                    OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                    Mode::from_bits_truncate(0o644),
                )
                .map(drop),
                _ => mkdirat(pfd.as_fd(), name, Mode::from_bits_truncate(0o755)),
            };
            match made {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(format!("create {}: {e}", path.display())),
            }
            openat2(root.as_fd(), &rel, how).map_err(|e| format!("open {}: {e}", path.display()))
        }
        Err(e) => Err(format!("resolve {} in root: {e}", path.display())),
    }
}

/// `path` without its leading `/` (and `.` for the root itself).
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// The magic path that names an open descriptor for mount(2).
pub(crate) fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn mount_one(root: &File, m: &MountPlan, plan: &RootfsPlan) -> Result<(), String> {
    let is_bind = m.flags.contains(MsFlags::MS_BIND);
    let create = if is_bind && m.source.as_ref().is_some_and(|s| !s.is_dir()) {
        Create::File
    } else {
        Create::Dir
    };
    let target = open_in_root(root, &m.dest, Some(create))?;
    let tpath = fd_path(&target);
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    if m.fstype.as_deref() == Some("cgroup") && !plan.cgroup_v1.is_empty() {
        mount_cgroup_v1(root, m, plan)?;
    } else if let Some(tree) = &m.idmapped {
        crate::clone::attach_tree(tree, &target)
            .map_err(|e| format!("attach id-mapped tree: {e}"))?;
        let rest = m.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            let top = open_in_root(root, &m.dest, None)?;
            remount(&top, rest | MsFlags::MS_REC)?;
        }
    } else if is_bind {
        let src = m.source.as_ref().ok_or("bind mount without source")?;
        let bind = m.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
        mount(Some(src), tpath.as_str(), None::<&str>, bind, None::<&str>)
            .map_err(|e| format!("bind {}: {e}", src.display()))?;
        let rest = m.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            let top = open_in_root(root, &m.dest, None)?;
            remount(&top, rest | (m.flags & MsFlags::MS_REC))?;
        }
    } else {
        let fstype = m.fstype.as_deref().ok_or("mount without type")?;
        let source = m.source.clone().unwrap_or_else(|| PathBuf::from(fstype));
        mount(Some(&source), tpath.as_str(), Some(fstype), m.flags, data)
            .map_err(|e| format!("mount {fstype}: {e}"))?;
    }
    if !m.propagation.is_empty() {
        let top = open_in_root(root, &m.dest, None)?;
        for p in &m.propagation {
            mount(
                None::<&str>,
                fd_path(&top).as_str(),
                None::<&str>,
                *p,
                None::<&str>,
            )
            .map_err(|e| format!("propagation {p:?}: {e}"))?;
        }
    }
    if !m.recursive.is_empty() {
        let top = open_in_root(root, &m.dest, None)?;
        crate::clone::setattr_recursive(&top, m.recursive.set, m.recursive.clear).map_err(|e| {
            match e {
                nix::Error::ENOSYS => "recursive mount options (rro, rnosuid, ...) need \
                    mount_setattr(2), Linux 5.12 or later"
                    .to_string(),
                e => format!("recursive mount attributes {:?}: {e}", m.recursive),
            }
        })?;
    }
    Ok(())
}

/// Remounts the bind mount at `fd` with `flags`, keeping the flags the kernel locks
/// (nosuid, nodev, noexec, atime) so the remount also works inside a user namespace.
pub(crate) fn remount(fd: &OwnedFd, flags: MsFlags) -> Result<(), String> {
    let locked = locked_flags(fd)?;
    mount(
        None::<&str>,
        fd_path(fd).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked,
        None::<&str>,
    )
    .map_err(|e| format!("remount {flags:?}: {e}"))
}

fn locked_flags(fd: &OwnedFd) -> Result<MsFlags, String> {
    let st = fstatvfs(fd).map_err(|e| format!("statvfs: {e}"))?;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (s, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(s) {
            out |= m;
        }
    }
    Ok(out)
}

/// A `cgroup` mount on a v1 host: a tmpfs with one cgroup mount per hierarchy (each
/// showing the container's cgroup namespace root), then the tmpfs made read-only.
fn mount_cgroup_v1(root: &File, m: &MountPlan, plan: &RootfsPlan) -> Result<(), String> {
    let target = open_in_root(root, &m.dest, Some(Create::Dir))?;
    let base = m.flags - MsFlags::MS_RDONLY;
    mount(
        Some("tmpfs"),
        fd_path(&target).as_str(),
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )
    .map_err(|e| format!("cgroup tmpfs: {e}"))?;
    for (name, options) in &plan.cgroup_v1 {
        let dir = open_in_root(root, &m.dest.join(name), Some(Create::Dir))?;
        let (fstype, data) = if options == "cgroup2" {
            ("cgroup2", None)
        } else {
            ("cgroup", Some(options.as_str()))
        };
        mount(
            Some("cgroup"),
            fd_path(&dir).as_str(),
            Some(fstype),
            m.flags,
            data,
        )
        .map_err(|e| format!("cgroup {name}: {e}"))?;
    }
    if m.flags.contains(MsFlags::MS_RDONLY) {
        let top = open_in_root(root, &m.dest, None)?;
        mount(
            None::<&str>,
            fd_path(&top).as_str(),
            None::<&str>,
            MsFlags::MS_REMOUNT | base | MsFlags::MS_RDONLY,
            Some("mode=755"),
        )
        .map_err(|e| format!("cgroup tmpfs read-only: {e}"))?;
    }
    Ok(())
}

fn bind_device(root: &File, path: &Path, host: &Path) -> Result<(), String> {
    let target = open_in_root(root, path, Some(Create::File))?;
    mount(
        Some(host),
        fd_path(&target).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {}: {e}", host.display()))
}

/// mknod(2) of a device at `path` inside the root (its directory resolved in the root,
/// so a symlinked `/dev` in the image cannot place it on the host), replacing whatever
/// the image had there; then the exact mode (no umask) and owner.
fn make_device(root: &File, path: &Path, source: &DeviceSource) -> Result<(), String> {
    let DeviceSource::Mknod {
        kind,
        rdev,
        mode,
        uid,
        gid,
    } = *source
    else {
        return Err("not a node to create".into());
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: no file name", path.display()))?;
    let dir = open_in_root(root, parent, Some(Create::Dir))?;
    match nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(format!("remove what the image has there: {e}")),
    }
    let perm = Mode::from_bits_truncate(mode);
    nix::sys::stat::mknodat(dir.as_fd(), name, kind, perm, rdev)
        .map_err(|e| format!("mknod: {e}"))?;
    nix::sys::stat::fchmodat(
        dir.as_fd(),
        name,
        perm,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| format!("chmod {mode:o}: {e}"))?;
    nix::unistd::fchownat(
        dir.as_fd(),
        name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("chown {uid}:{gid}: {e}"))
}

fn dev_symlinks(root: &File) -> Result<(), String> {
    let dev = open_in_root(root, Path::new("/dev"), Some(Create::Dir))?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        match symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(format!("symlink /dev/{name}: {e}")),
        }
    }
    // /dev/ptmx must reach the container's own devpts instance.
    if open_in_root(root, Path::new("/dev/pts/ptmx"), None).is_ok() {
        let _ = nix::unistd::unlinkat(dev.as_fd(), "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
        symlinkat("pts/ptmx", dev.as_fd(), "ptmx")
            .map_err(|e| format!("symlink /dev/ptmx: {e}"))?;
    }
    Ok(())
}

/// The mask_paths step (after pivot_root): masked paths get /dev/null (files) or an
/// empty read-only tmpfs (directories); read-only paths become read-only bind mounts.
pub(crate) fn mask_paths(masked: &[PathBuf], readonly: &[PathBuf]) -> StepResult {
    let fail = |e: String| InitError::MaskPaths(e);
    let root = open_dir(Path::new("/")).map_err(fail)?;
    for p in readonly {
        let Some(fd) = open_existing(&root, p).map_err(fail)? else {
            continue;
        };
        let path = fd_path(&fd);
        mount(
            Some(path.as_str()),
            path.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail(format!("bind {}: {e}", p.display())))?;
        let top = open_in_root(&root, p, None).map_err(fail)?;
        remount(&top, MsFlags::MS_RDONLY | MsFlags::MS_REC)
            .map_err(|e| fail(format!("{}: {e}", p.display())))?;
    }
    for p in masked {
        let Some(fd) = open_existing(&root, p).map_err(fail)? else {
            continue;
        };
        let st = fstat(&fd).map_err(|e| fail(format!("stat {}: {e}", p.display())))?;
        let path = fd_path(&fd);
        let result = if SFlag::from_bits_truncate(st.st_mode).contains(SFlag::S_IFDIR) {
            mount(
                Some("tmpfs"),
                path.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else {
            mount(
                Some("/dev/null"),
                path.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(|e| fail(format!("mask {}: {e}", p.display())))?;
    }
    Ok(())
}

fn open_existing(root: &File, p: &Path) -> Result<Option<OwnedFd>, String> {
    match open_in_root(root, p, None) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.contains("ENOENT") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Remounts the new `/` read-only (after every other mount is in place).
pub(crate) fn readonly_root() -> StepResult {
    let root = open_dir(Path::new("/")).map_err(InitError::MaskPaths)?;
    let fd: OwnedFd = root.into();
    remount(&fd, MsFlags::MS_RDONLY).map_err(|e| InitError::MaskPaths(format!("read-only /: {e}")))
}

/// OCI mount options parsed: mount flags, propagation changes, recursive attributes and
/// the rest as the data string.
#[derive(Debug)]
pub(crate) struct ParsedOptions {
    pub(crate) flags: MsFlags,
    pub(crate) propagation: Vec<MsFlags>,
    pub(crate) recursive: RecursiveAttrs,
    pub(crate) data: String,
}

/// Parses OCI mount options into flags, propagation changes, recursive attributes and a
/// data string.
pub(crate) fn parse_options(options: &[String]) -> ParsedOptions {
    let mut flags = MsFlags::empty();
    let mut propagation = Vec::new();
    let mut recursive = RecursiveAttrs::default();
    let mut data = Vec::new();
    for opt in options {
        if recursive.apply(opt) {
            continue;
        }
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                propagation.push(propagation_flag(opt));
                continue;
            }
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags = (flags | set) - clear;
    }
    ParsedOptions {
        flags,
        propagation,
        recursive,
        data: data.join(","),
    }
}

/// Maps a propagation keyword to its flags (`r` prefix adds MS_REC).
pub(crate) fn propagation_flag(opt: &str) -> MsFlags {
    let rec = if opt.starts_with('r') {
        MsFlags::MS_REC
    } else {
        MsFlags::empty()
    };
    let base = match opt.trim_start_matches('r') {
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => MsFlags::MS_PRIVATE,
    };
    rec | base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let opts: Vec<String> = ["rbind", "ro", "nosuid", "rslave", "mode=755", "size=1m"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = parse_options(&opts);
        assert!(p
            .flags
            .contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(p.propagation, vec![MsFlags::MS_REC | MsFlags::MS_SLAVE]);
        assert_eq!(p.data, "mode=755,size=1m");
        assert!(p.recursive.is_empty(), "plain ro is not recursive");
    }

    #[test]
    fn a_later_rw_clears_an_earlier_ro() {
        let opts = vec!["ro".to_string(), "rw".to_string()];
        assert!(!parse_options(&opts).flags.contains(MsFlags::MS_RDONLY));
    }

    fn recursive(opts: &[&str]) -> RecursiveAttrs {
        let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        let p = parse_options(&opts);
        assert!(p.data.is_empty(), "{opts:?} leaked into data: {}", p.data);
        p.recursive
    }

    #[test]
    fn recursive_options_become_mount_attributes_and_later_ones_win() {
        let r = recursive(&["rro", "rnosuid", "rnodev"]);
        assert_eq!(
            r.set,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
        );
        assert_eq!(r.clear, 0);
        let r = recursive(&["rro", "rrw"]);
        assert_eq!((r.set, r.clear), (0, MOUNT_ATTR_RDONLY));
        let r = recursive(&["rnoatime", "rstrictatime"]);
        assert_eq!((r.set, r.clear), (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME));
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("escape")).unwrap();
        let root = open_dir(dir.path()).unwrap();
        let fd = open_in_root(&root, Path::new("/escape/passwd-x"), Some(Create::File)).unwrap();
        drop(fd);
        assert!(dir.path().join("etc/passwd-x").exists());
        assert!(!Path::new("/etc/passwd-x").exists());
    }

    #[test]
    fn dotdot_cannot_climb_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = open_dir(dir.path()).unwrap();
        open_in_root(&root, Path::new("/../../made-by-test"), Some(Create::Dir)).unwrap();
        assert!(dir.path().join("made-by-test").is_dir());
    }
}

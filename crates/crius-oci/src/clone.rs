//! Every fork, clone, setns, unshare, pivot_root and raw process syscall of the crate
//! lives here.
//!
//! Process tree of a container start (see `message.rs` for the protocol):
//!
//! ```text
//! caller (single-threaded monitor)
//!  ├─ stage-1   fork(); joins namespaces by path, unshares new ones (user first, the
//!  │            caller writes its id maps), then clone3(CLONE_PARENT|CLONE_PIDFD) and exits
//!  └─ init      a sibling of stage-1, so a direct child of the caller: pid 1 of a new
//!               pid namespace when asked; mounts, pivots, drops privileges, execs
//! ```
//!
//! Why two stages: a new or joined pid namespace only applies to children
//! (`pid_namespaces(7)`), and the caller must never change its own namespaces.
//! `CLONE_PARENT` makes the init the caller's child, so the caller reaps it and can
//! `waitid(P_PIDFD)` for its exit status.
//!
//! The caller must be single-threaded (crius-monitor is): after fork only this thread
//! exists in the child, and glibc's fork keeps malloc usable there. Tests (multi-threaded
//! test harness) rely on glibc's atfork malloc handling too; they take no other locks.
//!
//! The /proc/self/exe overwrite class (CVE-2019-5736): nothing of ours is ever re-executed.
//! The init and exec children are forks of the caller that `execve` the container's binary
//! directly; until that exec they are non-dumpable, so container processes cannot open
//! their `/proc/<pid>/exe` (the caller's binary) without CAP_SYS_PTRACE in the initial
//! user namespace.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult, Pid};

use crate::error::InitError;
use crate::init::{self, InitPlan};
use crate::message::{Channel, Message};

/// The unshare of a new cgroup namespace, done by the init itself once the parent has
/// placed it in its cgroup (so the namespace root is the container's cgroup).
pub(crate) fn unshare_cgroup_ns() -> Result<(), InitError> {
    unshare(CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| InitError::EnterNamespaces(format!("unshare cgroup: {e}")))
}

/// The pivot_root step: the rootfs becomes `/`, the old root is detached.
pub(crate) fn pivot_root(path: &std::path::Path) -> Result<(), InitError> {
    let err = |what: &str, e: nix::Error| InitError::PivotRoot(format!("{what}: {e}"));
    nix::unistd::chdir(path).map_err(|e| err("chdir rootfs", e))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; see pivot_root(2).
    nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    nix::mount::mount(
        None::<&str>,
        ".",
        None::<&str>,
        nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err("make old root rslave", e))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| err("detach old root", e))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir /", e))
}

/// The caller's view of a freshly spawned child (init or exec).
#[derive(Debug)]
pub(crate) struct Spawned {
    /// Pid of the stage-1 helper, already reaped when `spawn` returns.
    pub(crate) pid: Pid,
    /// Pidfd of the container process.
    pub(crate) pidfd: OwnedFd,
}

/// Forks stage-1 for `plan`. `map_ids` is called with stage-1's pid when it asks for its
/// user namespace maps. On return the container process waits for `Continue` on `parent`.
pub(crate) fn spawn(
    plan: &InitPlan,
    parent: &Channel,
    child: Channel,
    map_ids: &mut dyn FnMut(Pid) -> Result<(), String>,
) -> Result<Spawned, InitError> {
    // SAFETY: fork(2) is safe to call when the child only performs what the caller's
    // process state allows. The contract of this module: the caller is single-threaded
    // (or, in tests, holds no lock the child needs); the child runs `stage1`, which never
    // returns and ends with `_exit`, so no destructors or atexit handlers of the caller run
    // twice.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => stage1(plan, &child),
        Ok(ForkResult::Parent { child: stage1_pid }) => {
            drop(child);
            let result = drive_stage1(parent, stage1_pid, map_ids);
            let _ = nix::sys::wait::waitpid(stage1_pid, None);
            result
        }
        Err(e) => Err(InitError::SpawnInit(format!("fork: {e}"))),
    }
}

fn drive_stage1(
    parent: &Channel,
    stage1: Pid,
    map_ids: &mut dyn FnMut(Pid) -> Result<(), String>,
) -> Result<Spawned, InitError> {
    loop {
        match parent.recv().map_err(InitError::Sync)? {
            Some((Message::MapIds, _)) => {
                map_ids(stage1).map_err(InitError::EnterNamespaces)?;
                parent
                    .send(&Message::IdsMapped, None)
                    .map_err(InitError::Sync)?;
            }
            Some((Message::Spawned { pid }, Some(pidfd))) => {
                return Ok(Spawned {
                    pid: Pid::from_raw(pid),
                    pidfd,
                });
            }
            Some((Message::Failed(e), _)) => return Err(e),
            Some((other, _)) => {
                return Err(InitError::Sync(format!(
                    "expected MapIds or Spawned, got {other:?}"
                )))
            }
            None => {
                return Err(InitError::Sync(
                    "stage-1 exited without spawning init".into(),
                ))
            }
        }
    }
}

/// Stage-1: enter namespaces, spawn the init, report it, exit.
fn stage1(plan: &InitPlan, ch: &Channel) -> ! {
    let code = match stage1_steps(plan, ch) {
        Ok(()) => 0,
        Err(e) => {
            let _ = ch.send(&Message::Failed(e), None);
            1
        }
    };
    exit_now(code)
}

fn stage1_steps(plan: &InitPlan, ch: &Channel) -> Result<(), InitError> {
    reset_signals();
    let _ = nix::sys::prctl::set_dumpable(false);
    enter_namespaces(plan, ch)?;
    let (pid, pidfd) = clone_sibling()
        .map_err(|e| InitError::SpawnInit(format!("clone3(CLONE_PARENT|CLONE_PIDFD): {e}")))?;
    match pid {
        None => init::run(plan, ch),
        Some(pid) => {
            // SAFETY: `pidfd` was just written by clone3 into our variable and belongs to us.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            ch.send(&Message::Spawned { pid: pid.as_raw() }, Some(pidfd.as_fd()))
                .map_err(InitError::Sync)
        }
    }
}

/// The enter_namespaces step: join by path, then create. Order matters:
/// a joined user namespace comes first (it owns what we join next); a new user namespace
/// comes after the joins (joining a namespace owned by the host needs host root) and
/// before the other new namespaces (so it owns them).
fn enter_namespaces(plan: &InitPlan, ch: &Channel) -> Result<(), InitError> {
    let ns = &plan.namespaces;
    let err = |what: &str, e: nix::Error| InitError::EnterNamespaces(format!("{what}: {e}"));
    if let Some(user) = &ns.join_user {
        setns(user, CloneFlags::CLONE_NEWUSER).map_err(|e| err("setns user", e))?;
    }
    for (flag, fd) in &ns.join {
        setns(fd, *flag).map_err(|e| err(&format!("setns {flag:?}"), e))?;
    }
    if ns.new_user {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| err("unshare user", e))?;
        ch.send(&Message::MapIds, None).map_err(InitError::Sync)?;
        ch.expect(&Message::IdsMapped)
            .map_err(|r| r.into_init_error())?;
    }
    if ns.new_user || ns.join_user.is_some() {
        // Become the namespace's root (host uid 0 is unmapped inside).
        let root = nix::unistd::Uid::from_raw(0);
        let groot = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(groot, groot, groot).map_err(|e| err("setresgid 0", e))?;
        nix::unistd::setresuid(root, root, root).map_err(|e| err("setresuid 0", e))?;
    }
    let create = ns.create - CloneFlags::CLONE_NEWCGROUP;
    if !create.is_empty() {
        unshare(create).map_err(|e| err(&format!("unshare {create:?}"), e))?;
    }
    Ok(())
}

/// clone3 with CLONE_PARENT|CLONE_PIDFD and no new stack: returns `(None, _)` in the
/// child and `(Some(pid), pidfd)` in the caller.
fn clone_sibling() -> nix::Result<(Option<Pid>, RawFd)> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: (libc::CLONE_PARENT | libc::CLONE_PIDFD) as u64,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3(2) with a valid, fully initialised `clone_args` of the size we pass;
    // `pidfd` points at a live i32 the kernel writes; no CLONE_VM and stack 0, so the child
    // runs on a copy-on-write copy of this stack exactly like fork(2). This is called from
    // stage-1, a freshly forked single-threaded process, so no other thread's lock can be
    // held in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(nix::Error::last()),
        0 => Ok((None, -1)),
        pid => {
            let pid = i32::try_from(pid).map_err(|_| nix::Error::EOVERFLOW)?;
            Ok((Some(Pid::from_raw(pid)), pidfd))
        }
    }
}

/// `struct clone_args` from `linux/sched.h` (version 2 layout, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Ends a forked child without running the caller's destructors or atexit handlers.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Marks every fd from `first` up close-on-exec (close_range(2), Linux 5.11+).
pub(crate) fn cloexec_from(first: u32) -> nix::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it
    // closes nothing, so no owner of an fd in this process is invalidated.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == -1 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// dup2 onto a raw target number (the child's stdio and preserved fds), clearing CLOEXEC.
pub(crate) fn dup_onto(src: RawFd, target: RawFd) -> nix::Result<()> {
    if src == target {
        let flags = nix::fcntl::FdFlag::empty();
        // SAFETY: `src` is a descriptor the caller handed us and keeps open; F_SETFD only
        // changes its flags.
        let fd = unsafe { BorrowedFd::borrow_raw(src) };
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(flags))?;
        return Ok(());
    }
    // SAFETY: dup2(2) on two integers: `src` is open (the caller's stdio kept alive across
    // fork); `target` is a fixed slot in this child that we mean to replace. Whatever was at
    // `target` is closed by the kernel, and the child owns no Rust object for it.
    let ret = unsafe { libc::dup2(src, target) };
    if ret == -1 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Duplicates `fd` to a number >= `min`, close-on-exec (to move sources out of the way).
pub(crate) fn dup_above(fd: RawFd, min: RawFd) -> nix::Result<RawFd> {
    // SAFETY: `fd` is open for the duration of the call (the caller owns it).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let new = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    Ok(new)
}

/// Makes `fd` (a pty slave) the controlling terminal of this (session leader) process.
pub(crate) fn set_controlling_tty(fd: RawFd) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); `fd` is an open tty.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if ret == -1 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// pidfd_open(2): a pidfd for `pid` (used for processes we did not clone ourselves).
pub(crate) fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags 0 and returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(nix::Error::last());
    }
    let fd = RawFd::try_from(ret).map_err(|_| nix::Error::EBADF)?;
    // SAFETY: the kernel just created this descriptor for us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// pidfd_send_signal(2): signals exactly the process behind `pidfd` (no pid reuse race).
pub(crate) fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> nix::Result<()> {
    // SAFETY: `pidfd` is an open pidfd; a null siginfo and flags 0 are documented valid.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret == -1 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Sets a terminal's window size (TIOCSWINSZ).
pub(crate) fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `struct winsize` through the pointer, which points at a
    // live, initialised local for the duration of the call; `fd` is an open pty master.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, std::ptr::addr_of!(ws)) };
    if ret == -1 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// `struct sock_fprog` from `linux/filter.h`.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// Installs a seccomp filter without touching no_new_privs (seccompiler's own
/// `apply_filter` always sets it; the spec decides it here). Without no_new_privs the
/// caller must hold CAP_SYS_ADMIN, see seccomp(2).
pub(crate) fn install_seccomp(program: &[seccompiler::sock_filter]) -> nix::Result<()> {
    let len = libc::c_ushort::try_from(program.len()).map_err(|_| nix::Error::E2BIG)?;
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog): `prog` is a live, initialised
    // sock_fprog whose `filter` points at `len` sock_filter entries borrowed from `program`
    // for the duration of the call; the kernel copies them and keeps no pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            std::ptr::addr_of!(prog),
        )
    };
    if ret != 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// A user namespace with the given `uid_map`/`gid_map` contents, held by an fd: a helper
/// child unshares it, we write its maps, open it, and let the helper exit. Used to
/// id-map mounts (mount_setattr(2) wants a user namespace fd).
pub(crate) fn userns_with_maps(uid_map: &str, gid_map: &str) -> Result<OwnedFd, String> {
    let (parent, child) = Channel::pair().map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: as in `spawn`: the caller is single-threaded (or holds no lock the child
    // needs); the child only unshares, talks over the socket and `_exit`s.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(parent);
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok()
                && child.send(&Message::MapIds, None).is_ok()
                && child.expect(&Message::IdsMapped).is_ok();
            exit_now(i32::from(!ok))
        }
        Ok(ForkResult::Parent { child: pid }) => {
            drop(child);
            let result = (|| {
                parent
                    .expect(&Message::MapIds)
                    .map_err(|r| format!("{r:?}"))?;
                for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
                    std::fs::write(format!("/proc/{pid}/{file}"), map)
                        .map_err(|e| format!("write {file} of helper: {e}"))?;
                }
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
                    .map_err(|e| format!("open helper user namespace: {e}"))?;
                Ok(OwnedFd::from(ns))
            })();
            let _ = parent.send(&Message::IdsMapped, None);
            let _ = nix::sys::wait::waitpid(pid, None);
            result
        }
        Err(e) => Err(format!("fork: {e}")),
    }
}

/// `struct mount_attr` from `linux/mount.h`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// A detached, recursive clone of the mount tree at `source`, id-mapped through `userns`
/// (open_tree(2) + mount_setattr(2) with MOUNT_ATTR_IDMAP).
pub(crate) fn idmapped_tree(source: &std::path::Path, userns: &OwnedFd) -> Result<OwnedFd, String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(source.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let flags = OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: open_tree(AT_FDCWD, path, flags): `path` is a NUL-terminated string alive for
    // the call; the return value is a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if ret < 0 {
        return Err(format!(
            "open_tree {}: {}",
            source.display(),
            nix::Error::last()
        ));
    }
    let fd = RawFd::try_from(ret).map_err(|e| e.to_string())?;
    // SAFETY: the kernel just created `fd` for us; nobody else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd) };
    let userns_fd = u64::try_from(userns.as_raw_fd()).map_err(|e| e.to_string())?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd,
    };
    let empty = c"";
    // SAFETY: mount_setattr(tree, "", AT_EMPTY_PATH|AT_RECURSIVE, &attr, size): `tree` is the
    // open detached mount, `empty` is a static C string, `attr` a live mount_attr of the
    // size we pass; the kernel only reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret != 0 {
        return Err(format!(
            "mount_setattr idmap {}: {}",
            source.display(),
            nix::Error::last()
        ));
    }
    Ok(tree)
}

/// mount_setattr(2) on the whole mount tree whose root is `fd` (`AT_RECURSIVE`): sets the
/// `MOUNT_ATTR_*` bits in `set` and clears those in `clear`, on the top mount and every
/// submount below it. This is what a recursive read-only mount needs: a bind remount with
/// `MS_RDONLY` only ever changes the one mount it names, whatever `MS_REC` says.
pub(crate) fn setattr_recursive(fd: &impl AsRawFd, set: u64, clear: u64) -> nix::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: mount_setattr(fd, "", AT_EMPTY_PATH|AT_RECURSIVE, &attr, size): `fd` is open
    // for the call (borrowed from the caller), `empty` is a static C string, `attr` is a
    // live, fully initialised mount_attr of exactly the size we pass; the kernel only
    // reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret != 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Whether the kernel has mount_setattr(2) (Linux 5.12+). The probe passes no attribute
/// structure (size 0), which a kernel that has the call refuses with EINVAL before looking
/// at anything else; an older kernel answers ENOSYS.
pub(crate) fn has_mount_setattr() -> bool {
    let empty = c"";
    // SAFETY: mount_setattr(-1, "", AT_EMPTY_PATH, NULL, 0): the null attribute pointer is
    // never read because size 0 is below MOUNT_ATTR_SIZE_VER0 and refused first; `empty`
    // is a static C string; no descriptor is used (-1).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            std::ptr::null::<MountAttr>(),
            0usize,
        )
    };
    !(ret != 0 && nix::Error::last() == nix::Error::ENOSYS)
}

/// Attaches the detached mount `tree` on top of the directory or file `target`.
pub(crate) fn attach_tree(tree: &OwnedFd, target: &OwnedFd) -> nix::Result<()> {
    let empty = c"";
    // SAFETY: move_mount(tree, "", target, "", F_EMPTY_PATH|T_EMPTY_PATH): both fds are open
    // for the call, the paths are static empty C strings.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if ret != 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// The kernel's `struct sigaction` for rt_sigaction (not glibc's); we only pass all-zero
/// values (SIG_DFL), which read the same whatever the per-architecture field order.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Puts every signal back to its default disposition and unblocks all signals, right
/// after fork: the child must not run the caller's handlers, and execve(2) keeps ignored
/// signals and the mask (Rust binaries ignore SIGPIPE, a monitor may block signals for
/// signalfd). Raw rt_sigaction because glibc refuses its reserved real-time signals.
pub(crate) fn reset_signals() {
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction(sig, &dfl, NULL, 8): `dfl` is a live, initialised kernel
        // sigaction with SIG_DFL (handler 0), so no handler address is ever installed; the
        // old-action pointer is null; 8 is the kernel's sigset size. Invalid numbers fail
        // harmlessly with EINVAL.
        let _ = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::addr_of!(dfl),
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

//! Every raw system call of the monitor binary that nix does not wrap safely: the
//! daemonising forks, the SIGCHLD self-pipe, fd hygiene, and the loopback ioctl.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{fork, ForkResult};

/// Forks. The monitor is single-threaded (it never spawns a thread), so the child has a
/// consistent copy of the whole process, including the allocator (glibc's fork resets
/// its locks).
pub(crate) fn fork_process() -> nix::Result<ForkResult> {
    // SAFETY: fork(2) in a single-threaded process: no other thread can hold a lock the
    // child would need. Every caller's child either exits through `exit_now` or keeps
    // running as the daemon, so no destructor runs twice for the same resource.
    unsafe { fork() }
}

/// `_exit(2)`: leaves without running atexit handlers or destructors (for forked children).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// Closes every fd from `first` up (close_range(2)). Called at startup, before anything
/// of ours is open above `first`, so no `OwnedFd` is invalidated.
pub(crate) fn close_fds_from(first: u32) {
    // SAFETY: close_range only closes descriptors; the caller guarantees none at or above
    // `first` is owned by a live Rust object.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32);
    }
}

static SIGCHLD_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = SIGCHLD_WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: errno is thread-local and saved/restored around write(2), which is
        // async-signal-safe; the buffer is a valid 1-byte static.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, b"c".as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Installs the SIGCHLD handler writing into a non-blocking self-pipe; returns the read
/// end, which becomes readable whenever a child changed state. The signal mask stays
/// empty: containers inherit the mask across exec, so signalfd's blocking is not an option.
pub(crate) fn sigchld_pipe() -> nix::Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    SIGCHLD_WRITE_FD.store(w.as_raw_fd(), Ordering::Relaxed);
    // The write end lives as long as the process.
    std::mem::forget(w);
    let action = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe write(2) on an fd that stays open.
    unsafe { sigaction(Signal::SIGCHLD, &action) }?;
    Ok(r)
}

/// Restores the default SIGPIPE disposition (the Rust runtime ignores it, and an ignored
/// signal survives exec into containers). The monitor's own socket writes use
/// MSG_NOSIGNAL.
pub(crate) fn default_sigpipe() {
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL has no handler preconditions.
    let _ = unsafe { sigaction(Signal::SIGPIPE, &action) };
}

/// Blocks SIGPIPE (keeping its default disposition): attach sinks are pipes criusd
/// passed, and a write into one whose reader is gone must fail with EPIPE rather than
/// kill the monitor. Children do not inherit the block where it matters: crius-oci's
/// clone child and std's `Command` (runtime binaries) reset the mask before exec, and a
/// pending SIGPIPE is never inherited (fork(2) clears the pending set).
pub(crate) fn block_sigpipe() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    if let Err(e) = set.thread_block() {
        tracing::warn!(error = %e, "cannot block SIGPIPE");
    }
}

/// Brings `lo` up in the caller's network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS).
pub(crate) fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    ifreq_ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up = libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
    req.ifr_ifru.ifru_flags = flags | up;
    ifreq_ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req)
}

fn ifreq_ioctl(fd: RawFd, request: libc::Ioctl, req: &mut libc::ifreq) -> std::io::Result<()> {
    // SAFETY: `fd` is an open socket; both requests read/write exactly one ifreq, which
    // `req` points to for the duration of the call.
    let ret = unsafe { libc::ioctl(fd, request, req as *mut libc::ifreq) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// pidfd_open(2) for `pid`.
pub(crate) fn pidfd_open(pid: nix::unistd::Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
    // memory is passed.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0u32) };
    if ret < 0 {
        return Err(nix::Error::last());
    }
    let fd = RawFd::try_from(ret).map_err(|_| nix::Error::EBADF)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

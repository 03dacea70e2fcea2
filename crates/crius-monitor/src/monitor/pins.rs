//! Namespace pins: the pod is a set of namespaces kept alive by bind mounts, with no
//! pause container.
//!
//! How: the monitor forks a short-lived "sandbox" child. It unshares USER first (when
//! asked; the monitor writes its id maps from outside), then NET/IPC/UTS/PID in one
//! `unshare(2)` so they belong to that user namespace; it sets the hostname, brings
//! loopback up and writes the sysctls from inside (`/proc/sys/net` and the IPC sysctls
//! follow the writer's namespaces). With a shared pid namespace it forks the reaper,
//! PID 1 of the new namespace, which only reaps orphans (a pid namespace dies with its
//! PID 1, so this one process must live as long as the pod). The reaper holds a pidfd of
//! the monitor and exits when the monitor dies, which kills every process of the shared
//! pid namespace: a pod never outlives its monitor there. The monitor then
//! bind-mounts `/proc/<sandbox>/ns/{user,net,ipc,uts}` and `/proc/<reaper>/ns/pid` onto
//! `<state_dir>/ns/<name>` and lets the sandbox child exit. Containers join the pins
//! by path. Release kills the reaper (which tears down the pid namespace and all its
//! processes) and lazily unmounts the pins.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{ForkResult, Pid};

use crate::monitor::sys;
use crius_monitor::{Error, IdMappings, PodConfig, Result};

/// The pinned namespaces of the pod.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    mounts: Vec<PathBuf>,
    reaper: Option<Pid>,
    ns_dir: PathBuf,
}

impl Pins {
    /// The pid of the pod's PID 1 reaper, when the pod shares a pid namespace.
    pub(crate) fn reaper(&self) -> Option<Pid> {
        self.reaper
    }

    /// Kills the reaper and unmounts every pin; idempotent.
    pub(crate) fn release(&mut self) -> Result<()> {
        if let Some(pid) = self.reaper.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        let mut first_err = None;
        for target in self.mounts.drain(..) {
            match umount2(&target, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(e) => {
                    first_err.get_or_insert(Error::sys(format!("umount {}", target.display()), e));
                }
            }
            let _ = std::fs::remove_file(&target);
        }
        let _ = std::fs::remove_dir(&self.ns_dir);
        first_err.map_or(Ok(()), Err)
    }
}

fn ns_flags(config: &PodConfig) -> CloneFlags {
    let ns = &config.namespaces;
    let mut flags = CloneFlags::empty();
    for (on, flag) in [
        (ns.network, CloneFlags::CLONE_NEWNET),
        (ns.ipc, CloneFlags::CLONE_NEWIPC),
        (ns.uts, CloneFlags::CLONE_NEWUTS),
        (ns.pid, CloneFlags::CLONE_NEWPID),
    ] {
        if on {
            flags |= flag;
        }
    }
    flags
}

/// Creates and pins the pod's namespaces (see the module docs).
pub(crate) fn pin_namespaces(config: &PodConfig) -> Result<Pins> {
    let mut pins = Pins {
        ns_dir: config.state_dir.join("ns"),
        ..Pins::default()
    };
    let flags = ns_flags(config);
    if flags.is_empty() && config.namespaces.user.is_none() {
        return Ok(pins);
    }
    std::fs::create_dir_all(&pins.ns_dir)
        .map_err(|e| Error::io(format!("create {}", pins.ns_dir.display()), e))?;
    let monitor_pidfd = sys::pidfd_open(nix::unistd::getpid())
        .map_err(|e| Error::sys("pidfd_open of the monitor", e))?;
    let (mut ours, mut theirs) =
        UnixStream::pair().map_err(|e| Error::io("socketpair for sandbox child", e))?;
    match sys::fork_process().map_err(|e| Error::sys("fork sandbox child", e))? {
        ForkResult::Child => {
            drop(ours);
            let code = match sandbox_child(config, flags, &mut theirs, &monitor_pidfd) {
                Ok(()) => 0,
                Err(message) => {
                    let _ = writeln!(theirs, "ERR {message}");
                    1
                }
            };
            sys::exit_now(code)
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let result = drive_sandbox(config, child, &mut ours, &mut pins);
            if result.is_err() {
                let _ = kill(child, Signal::SIGKILL);
            }
            drop(ours);
            let _ = waitpid(child, None);
            if let Err(e) = result {
                let _ = pins.release();
                return Err(e);
            }
            Ok(pins)
        }
    }
}

fn drive_sandbox(
    config: &PodConfig,
    child: Pid,
    sock: &mut UnixStream,
    pins: &mut Pins,
) -> Result<()> {
    let broken = |what: &str| Error::Spawn {
        pod_id: config.pod_id.clone(),
        kind: crius_monitor::ErrorKind::Internal,
        message: format!("sandbox child: {what}"),
    };
    if let Some(maps) = &config.namespaces.user {
        let mut b = [0u8; 1];
        sock.read_exact(&mut b)
            .map_err(|e| broken(&format!("no user namespace report: {e}")))?;
        write_id_maps(child, maps)?;
        sock.write_all(b"M")
            .map_err(|e| broken(&format!("send maps done: {e}")))?;
    }
    let mut line = String::new();
    BufReader::new(&mut *sock)
        .read_line(&mut line)
        .map_err(|e| broken(&format!("read report: {e}")))?;
    let reaper = match line.trim_end().split_once(' ') {
        Some(("OK", pid)) => pid
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 0)
            .map(Pid::from_raw),
        Some(("ERR", message)) => return Err(broken(message)),
        _ => return Err(broken(&format!("unexpected report {line:?}"))),
    };
    pins.reaper = reaper;
    let ns = &config.namespaces;
    let wanted = [
        (ns.user.is_some(), "user", child),
        (ns.network, "net", child),
        (ns.ipc, "ipc", child),
        (ns.uts, "uts", child),
    ];
    for (_, name, pid) in wanted.into_iter().filter(|w| w.0) {
        bind_pin(
            &format!("/proc/{pid}/ns/{name}"),
            &config.ns_path(name),
            pins,
        )?;
    }
    if let Some(r) = reaper {
        bind_pin(&format!("/proc/{r}/ns/pid"), &config.ns_path("pid"), pins)?;
    }
    // Let the sandbox child go; the pins hold the namespaces from now on.
    let _ = sock.write_all(b"X");
    Ok(())
}

fn bind_pin(source: &str, target: &Path, pins: &mut Pins) -> Result<()> {
    std::fs::File::create(target)
        .map_err(|e| Error::io(format!("create {}", target.display()), e))?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::sys(format!("bind {source} onto {}", target.display()), e))?;
    pins.mounts.push(target.to_path_buf());
    Ok(())
}

fn write_id_maps(pid: Pid, maps: &IdMappings) -> Result<()> {
    for (file, ranges) in [
        ("uid_map", &maps.uid_mappings),
        ("gid_map", &maps.gid_mappings),
    ] {
        let text: String = ranges
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect();
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(|e| Error::io(format!("write {path}"), e))?;
    }
    Ok(())
}

/// The sandbox child's side: create namespaces, configure them, fork the reaper.
fn sandbox_child(
    config: &PodConfig,
    flags: CloneFlags,
    sock: &mut UnixStream,
    monitor: &OwnedFd,
) -> Result<(), String> {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if config.namespaces.user.is_some() {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare user: {e}"))?;
        sock.write_all(b"U").map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        sock.read_exact(&mut b)
            .map_err(|e| format!("wait for id maps: {e}"))?;
    }
    unshare(flags).map_err(|e| format!("unshare {flags:?}: {e}"))?;
    if config.namespaces.uts && !config.hostname.is_empty() {
        nix::unistd::sethostname(&config.hostname)
            .map_err(|e| format!("sethostname {:?}: {e}", config.hostname))?;
    }
    if config.namespaces.network {
        sys::loopback_up().map_err(|e| format!("loopback up: {e}"))?;
    }
    for (key, value) in &config.sysctls {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
    }
    let reaper = if config.namespaces.pid {
        match sys::fork_process().map_err(|e| format!("fork reaper: {e}"))? {
            ForkResult::Child => reaper_main(monitor),
            ForkResult::Parent { child } => child.as_raw(),
        }
    } else {
        0
    };
    writeln!(sock, "OK {reaper}").map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    let _ = sock.read(&mut b);
    Ok(())
}

/// PID 1 of the pod's pid namespace: reaps whatever is reparented to it, and exits
/// when the monitor dies (its pidfd becomes readable). It keeps only that pidfd (as fd 0)
/// and a signalfd, so a pod process cannot reach the monitor through it; it never
/// returns, so the Rust objects copied from the monitor are never dropped after their
/// fds were closed.
fn reaper_main(monitor: &OwnedFd) -> ! {
    if nix::unistd::dup2_stdin(monitor).is_err() {
        sys::exit_now(1);
    }
    sys::close_fds_from(1);
    let _ = nix::sys::prctl::set_name(c"crius-reaper");
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let _ = set.thread_block();
    let Ok(sfd) = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) else {
        sys::exit_now(1)
    };
    let stdin = std::io::stdin();
    loop {
        let mut fds = [
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, PollTimeout::NONE);
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            // The monitor is gone: take the pod's shared pid namespace down with us.
            sys::exit_now(0);
        }
        while let Ok(Some(_)) = sfd.read_signal() {}
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
    }
}

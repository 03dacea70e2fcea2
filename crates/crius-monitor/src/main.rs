//! `crius-monitor --config <state_dir>/pod.json`: the per-pod monitor process.
//!
//! Started by criusd through [`crius_monitor::spawn_monitor`]. It detaches (fork, setsid,
//! fork: the process criusd spawned exits at once and is reaped by criusd; the monitor is
//! in its own session with no controlling terminal and survives criusd), closes every
//! inherited fd above stderr, pins the pod's namespaces, binds its socket, then reports
//! `READY <pid>` (or `ERROR <message>`) on the stdout pipe criusd reads and serves
//! until `Shutdown`. Its own log goes to `<state_dir>/monitor.log`, which rotates to
//! `monitor.log.1` beyond [`MAX_OWN_LOG`] bytes.
#![deny(unsafe_code)]

mod monitor;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::Mode;
use nix::unistd::ForkResult;

use crius_monitor::{Error, PodConfig, Result};
use monitor::{sys, Monitor};

fn main() {
    sys::close_fds_from(3);
    let path = match parse_args() {
        Some(p) => p,
        None => {
            eprintln!("usage: crius-monitor --config <pod.json>");
            std::process::exit(2);
        }
    };
    let config = match read_config(&path) {
        Ok(c) => c,
        Err(e) => report_and_exit(&error_report(&e)),
    };
    daemonize();
    match setup(&config) {
        Ok(monitor) => {
            report(&format!("READY {}", std::process::id()));
            if let Ok(null) = std::fs::File::open("/dev/null") {
                let _ = nix::unistd::dup2_stdout(&null);
            }
            // Only now: a spawner that died before reading the report must not kill us.
            sys::default_sigpipe();
            sys::block_sigpipe();
            tracing::info!(pod_id = %config.pod_id, "monitor ready");
            monitor.run()
        }
        Err(e) => {
            tracing::error!(pod_id = %config.pod_id, error = %e, "monitor setup failed");
            report_and_exit(&error_report(&e))
        }
    }
}

fn parse_args() -> Option<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(path), None) if flag == "--config" => Some(PathBuf::from(path)),
        _ => None,
    }
}

fn read_config(path: &Path) -> Result<PodConfig> {
    let data = std::fs::read(path).map_err(|e| Error::Io {
        context: format!("read {}", path.display()),
        source: e,
    })?;
    let config: PodConfig = serde_json::from_slice(&data)
        .map_err(|e| Error::InvalidConfig(format!("{}: {e}", path.display())))?;
    config.validate()?;
    Ok(config)
}

/// `ERROR <Kind> <message>`, parsed back by `spawn_monitor`.
fn error_report(e: &Error) -> String {
    format!("ERROR {:?} {e}", e.kind())
}

fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.replace('\n', " "));
    let _ = out.flush();
}

fn report_and_exit(line: &str) -> ! {
    report(line);
    std::process::exit(1)
}

/// fork, setsid, fork: only the grandchild returns. The first process waits for the
/// middle one, so the spawner reaps exactly one short-lived child.
fn daemonize() {
    match sys::fork_process() {
        Ok(ForkResult::Parent { child }) => {
            let code = match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => 0,
                _ => 1,
            };
            sys::exit_now(code)
        }
        Ok(ForkResult::Child) => {}
        Err(e) => report_and_exit(&format!("ERROR fork: {e}")),
    }
    if let Err(e) = nix::unistd::setsid() {
        report(&format!("ERROR setsid: {e}"));
        sys::exit_now(1);
    }
    match sys::fork_process() {
        Ok(ForkResult::Parent { .. }) => sys::exit_now(0),
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report(&format!("ERROR fork: {e}"));
            sys::exit_now(1)
        }
    }
}

fn setup(config: &PodConfig) -> Result<Monitor> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::sys("PR_SET_CHILD_SUBREAPER", e))?;
    nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
    let _ = std::env::set_current_dir("/");
    redirect_stdio(config)?;
    let _ = tracing_subscriber::fmt()
        .with_writer(OwnLog {
            path: config.log_path(),
        })
        .with_ansi(false)
        .try_init();
    take_instance_lock(config)?;
    let socket = config.socket_path();
    if UnixStream::connect(&socket).is_ok() {
        return Err(Error::MonitorRunning { socket });
    }
    let _ = std::fs::remove_file(&socket);
    // Searchable, not listable: the root of a user-namespaced pod is an unprivileged
    // host uid that must reach its bundle below (each bundle keeps its own mode).
    let containers = config.state_dir.join("containers");
    std::fs::create_dir_all(&containers)
        .and_then(|()| {
            std::fs::set_permissions(&containers, std::fs::Permissions::from_mode(0o711))
        })
        .map_err(|e| Error::io_at(&containers, e))?;
    let mut pins = monitor::pin_namespaces(config)?;
    match listen(&socket).and_then(|l| {
        let sigchld = sys::sigchld_pipe().map_err(|e| Error::sys("SIGCHLD pipe", e))?;
        Ok((l, sigchld))
    }) {
        Ok((listener, sigchld)) => Ok(Monitor::new(config.clone(), listener, sigchld, pins)),
        Err(e) => {
            let _ = pins.release();
            let _ = std::fs::remove_file(&socket);
            Err(e)
        }
    }
}

/// Holds `<state_dir>/monitor.lock` (flock) for the monitor's whole life, so two
/// monitors racing for one pod cannot both get past setup.
fn take_instance_lock(config: &PodConfig) -> Result<()> {
    let path = config.state_dir.join("monitor.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io_at(&path, e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            // Held until the process exits.
            std::mem::forget(lock);
            Ok(())
        }
        Err((_, nix::Error::EWOULDBLOCK)) => Err(Error::MonitorRunning {
            socket: config.socket_path(),
        }),
        Err((_, e)) => Err(Error::sys(format!("flock {}", path.display()), e)),
    }
}

fn redirect_stdio(config: &PodConfig) -> Result<()> {
    let log = open_own_log(&config.log_path()).map_err(|e| Error::io_at(&config.log_path(), e))?;
    let null =
        std::fs::File::open("/dev/null").map_err(|e| Error::io_at(Path::new("/dev/null"), e))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| Error::sys("dup2 stdin", e))?;
    nix::unistd::dup2_stderr(&log).map_err(|e| Error::sys("dup2 stderr", e))?;
    Ok(())
}

fn listen(socket: &Path) -> Result<UnixListener> {
    let listener = UnixListener::bind(socket).map_err(|e| Error::io_at(socket, e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io_at(socket, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io_at(socket, e))?;
    Ok(listener)
}

/// The size beyond which the monitor's own log rotates: a pod may live for months, and
/// its monitor must not fill the disk with its own lines.
const MAX_OWN_LOG: u64 = 4 << 20;

fn open_own_log(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The tracing writer: stderr (which is `monitor.log`, so panics land there too),
/// rotated before an event once the file outgrew [`MAX_OWN_LOG`].
struct OwnLog {
    path: PathBuf,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OwnLog {
    type Writer = std::io::Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        let stderr = std::io::stderr();
        if let Ok(Some(fresh)) = rotate_if_over(&self.path, stderr.as_fd(), MAX_OWN_LOG) {
            let _ = nix::unistd::dup2_stderr(&fresh);
        }
        stderr
    }
}

/// When `current` (the log open at `path`) holds `limit` bytes or more: renames `path`
/// to `<path>.1`, replacing the previous one, and returns a fresh file at `path` for the
/// caller to put in `current`'s place.
fn rotate_if_over(
    path: &Path,
    current: BorrowedFd<'_>,
    limit: u64,
) -> std::io::Result<Option<File>> {
    let size = nix::sys::stat::fstat(current)?.st_size;
    if u64::try_from(size).unwrap_or(0) < limit {
        return Ok(None);
    }
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    std::fs::rename(path, &old)?;
    open_own_log(path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_log_rotates_once_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor.log");
        let mut log = open_own_log(&path).unwrap();
        log.write_all(&[b'a'; 40]).unwrap();
        assert!(rotate_if_over(&path, log.as_fd(), 50).unwrap().is_none());
        log.write_all(&[b'b'; 20]).unwrap();
        let mut fresh = rotate_if_over(&path, log.as_fd(), 50).unwrap().unwrap();
        fresh.write_all(b"new").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("monitor.log.1"))
                .unwrap()
                .len(),
            60
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        // A second rotation replaces the first one's file.
        let again = rotate_if_over(&path, fresh.as_fd(), 3).unwrap();
        assert!(again.is_some());
        assert_eq!(
            std::fs::read(dir.path().join("monitor.log.1")).unwrap(),
            b"new"
        );
    }
}

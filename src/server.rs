//! The CRI socket: exclusive ownership, safe creation and graceful shutdown.
//!
//! Ownership is an exclusive `flock` on `<socket>.lock`, held for the daemon's life and
//! released by the kernel when it dies, so a crashed daemon never blocks the next one
//! and two daemons can never race for one socket. The lock file holds the owner's pid,
//! which is how a second daemon names the first. A socket file without a lock holder is
//! stale and replaced; a socket that still accepts connections belongs to some other
//! server and is never taken over.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// Mode of the CRI socket: root and the root group only (kubelet runs as root).
pub const SOCKET_MODE: u32 = 0o660;

/// Errors of taking the socket.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{socket} is already served by criusd (pid {pid}); stop it or give another --listen")]
    AlreadyServed { socket: PathBuf, pid: String },
    #[error("{socket} is already served by another process (pid {pid}); stop it or give another --listen")]
    ServedByOther { socket: PathBuf, pid: String },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

/// The claim on the CRI socket path: taken before anything else at start-up, so a second
/// daemon is refused before it touches the store, and the socket only accepts connections
/// once the runtime behind it is open.
#[derive(Debug)]
pub struct SocketLock {
    socket: PathBuf,
    lock_path: PathBuf,
    lock: Flock<File>,
}

impl SocketLock {
    /// Locks `socket` and refuses it if another server still answers on it.
    pub fn take(socket: &Path) -> Result<Self, ListenError> {
        if let Some(dir) = socket.parent() {
            fs::create_dir_all(dir).map_err(|error| ListenError::Io {
                path: dir.to_path_buf(),
                error,
            })?;
        }
        let lock_path = lock_path(socket);
        let lock = take_lock(socket, &lock_path)?;
        refuse_live_socket(socket)?;
        Ok(Self {
            socket: socket.to_path_buf(),
            lock_path,
            lock,
        })
    }

    /// Replaces a stale socket file, binds, and sets mode 0660.
    pub fn bind(self) -> Result<CriSocket, ListenError> {
        let socket = &self.socket;
        let io_err = |error| ListenError::Io {
            path: socket.clone(),
            error,
        };
        match fs::remove_file(socket) {
            Ok(()) => tracing::info!(socket = %socket.display(), "replaced stale socket"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        // Bind with a mode no wider than 0660 from the first instant: chmod after bind
        // would leave a window in which anyone could connect.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
        let bound = UnixListener::bind(socket);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(io_err)?;
        fs::set_permissions(socket, fs::Permissions::from_mode(SOCKET_MODE)).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        Ok(CriSocket {
            listener,
            lock: self,
        })
    }
}

/// The bound CRI socket, with the lock that proves this process owns it.
#[derive(Debug)]
pub struct CriSocket {
    listener: UnixListener,
    lock: SocketLock,
}

impl CriSocket {
    /// The listener, ready for tokio, and the guard that removes the socket on exit.
    pub fn into_tokio(self) -> io::Result<(tokio::net::UnixListener, SocketGuard)> {
        let listener = tokio::net::UnixListener::from_std(self.listener)?;
        let guard = SocketGuard {
            socket: self.lock.socket,
            lock_path: self.lock.lock_path,
            _lock: self.lock.lock,
        };
        Ok((listener, guard))
    }
}

/// Removes the socket and lock files when the daemon exits cleanly, still holding the lock.
#[derive(Debug)]
pub struct SocketGuard {
    socket: PathBuf,
    lock_path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(&self.lock_path);
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    socket.with_file_name(name)
}

fn take_lock(socket: &Path, lock_path: &Path) -> Result<Flock<File>, ListenError> {
    let io_err = |error| ListenError::Io {
        path: lock_path.to_path_buf(),
        error,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_path)
        .map_err(io_err)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = Some(pid.trim().to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or("unknown".into());
            return Err(ListenError::AlreadyServed {
                socket: socket.to_path_buf(),
                pid,
            });
        }
        Err((_, errno)) => return Err(io_err(errno.into())),
    };
    lock.set_len(0).map_err(io_err)?;
    lock.rewind().map_err(io_err)?;
    writeln!(lock, "{}", std::process::id()).map_err(io_err)?;
    Ok(lock)
}

/// Refuses a socket that still accepts connections: some server not using our lock
/// (another runtime, or a criusd of an older layout) owns it.
fn refuse_live_socket(socket: &Path) -> Result<(), ListenError> {
    let Ok(stream) = UnixStream::connect(socket) else {
        return Ok(());
    };
    let pid = getsockopt(&stream, PeerCredentials)
        .map(|cred| cred.pid().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    Err(ListenError::ServedByOther {
        socket: socket.to_path_buf(),
        pid,
    })
}

/// SIGTERM and SIGINT, caught from the moment this is installed. Install it before the
/// socket is bound: a signal that arrives once clients can connect must shut down
/// gracefully, never kill the daemon by its default action.
#[derive(Debug)]
pub struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers; needs a tokio runtime.
    pub fn install() -> io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves when either signal arrives.
    pub async fn recv(mut self) {
        let name = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down: finishing in-flight calls, leaving containers running"
        );
    }
}

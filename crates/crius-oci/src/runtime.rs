//! The `OciRuntime` trait: the contract every runtime (built-in, runc, crun) fulfils.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use oci_spec::runtime::{LinuxResources, Process as ProcessSpec, Spec};

use crate::cgroup::CgroupStats;

use crate::error::{Error, Result};

/// The descriptors a container process gets as 0, 1, 2 (and 3.. for `extra_fds`).
/// `None` means `/dev/null`. The runtime closes its copies once the process has them.
/// Ignored for stdin/stdout/stderr when the process spec asks for a terminal.
#[derive(Debug, Default)]
pub struct Stdio {
    /// Becomes fd 0.
    pub stdin: Option<OwnedFd>,
    /// Becomes fd 1.
    pub stdout: Option<OwnedFd>,
    /// Becomes fd 2.
    pub stderr: Option<OwnedFd>,
    /// Become fds 3, 4, ... (socket activation style); every other fd is closed on exec.
    pub extra_fds: Vec<OwnedFd>,
}

/// How a container process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// A running (or created) container process.
#[derive(Debug)]
pub struct Process {
    pid: i32,
    pidfd: OwnedFd,
    pty_master: Option<OwnedFd>,
}

impl Process {
    pub(crate) fn new(pid: i32, pidfd: OwnedFd, pty_master: Option<OwnedFd>) -> Self {
        Self {
            pid,
            pidfd,
            pty_master,
        }
    }

    /// Pid in the caller's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd for the process: poll it for exit, signal it without pid reuse races.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The pty master when the process spec asked for a terminal (taken once).
    pub fn take_pty_master(&mut self) -> Option<OwnedFd> {
        self.pty_master.take()
    }

    /// Blocks until the process exits and reaps it. The process must be a child of the
    /// caller (built-in runtime: always; runc/crun: when the caller is a child
    /// subreaper, `PR_SET_CHILD_SUBREAPER`).
    pub fn wait(&self) -> Result<ExitStatus> {
        loop {
            match waitid(Id::PIDFd(self.pidfd.as_fd()), WaitPidFlag::WEXITED) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ExitStatus::Signaled(sig as i32)),
                Ok(_) | Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(Error::sys(format!("waitid pid {}", self.pid), e)),
            }
        }
    }
}

/// Lifecycle status, as in the OCI runtime spec's `state`.
///
/// ```text
///   create ──▶ Created ──start──▶ Running ──(process exits / kill)──▶ Stopped
///                 │                  │                                  │
///                 └──delete──────────┴──delete(force: kills first)──────┴──delete──▶ (gone)
/// ```
///
/// `start` is allowed only from Created; `exec` only while Running; `delete` without
/// force is refused while Running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, waiting for `start`.
    Created,
    /// The user process runs.
    Running,
    /// The process exited.
    Stopped,
}

/// The answer of [`OciRuntime::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// Lifecycle status.
    pub status: Status,
    /// Init pid (in the caller's pid namespace), when one exists.
    pub pid: Option<i32>,
}

/// A runtime that turns an OCI spec into an isolated process.
///
/// Contract (checked by the conformance suite in `tests/conformance.rs`):
/// - `create` on an existing id → `AlreadyExists`; on success the process exists, is set up
///   and has not executed the user program yet (`state` says `Created`).
/// - `start` executes it (`Running`); start of an unknown id → `NotFound`; of a started
///   container → `FailedPrecondition`.
/// - `kill` signals the init; `state` reports `Stopped` once it exited.
/// - `delete` removes a stopped container (and its cgroup); a running one only with
///   `force` (killed first), else `FailedPrecondition`; unknown id → `NotFound`.
/// - `exec` runs another process inside a running container's namespaces and cgroup,
///   with the capabilities, user and no_new_privs of the given process spec.
/// - The caller reaps the returned [`Process`] (see [`Process::wait`]).
pub trait OciRuntime: std::fmt::Debug {
    /// Short name for logs ("builtin", "runc", "crun").
    fn name(&self) -> &str;

    /// Creates container `id` from `spec`; `spec.root.path` is relative to `bundle`.
    fn create(&mut self, id: &str, bundle: &Path, spec: &Spec, stdio: Stdio) -> Result<Process>;

    /// Starts the user process of a created container.
    fn start(&mut self, id: &str) -> Result<()>;

    /// Sends `signal` to the container's init.
    fn kill(&mut self, id: &str, signal: Signal) -> Result<()>;

    /// Reports the container's status.
    fn state(&mut self, id: &str) -> Result<ContainerState>;

    /// Deletes the container (see the trait docs for `force`).
    fn delete(&mut self, id: &str, force: bool) -> Result<()>;

    /// Runs `process` inside the running container `id`.
    fn exec(&mut self, id: &str, process: &ProcessSpec, stdio: Stdio) -> Result<Process>;

    /// Applies new resource limits to a created or running container, live
    /// (CRI UpdateContainerResources). A container without a cgroup → FailedPrecondition.
    fn update(&mut self, id: &str, resources: &LinuxResources) -> Result<()>;

    /// The container's cgroup usage (CRI ContainerStats).
    fn stats(&mut self, id: &str) -> Result<CgroupStats>;
}

/// Checks a container id: non-empty, at most 1024 bytes, `[A-Za-z0-9_.-]` and not
/// starting with a dot (it names directories and cgroups).
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "container id {id:?}: use [A-Za-z0-9_.-], not starting with '.'"
        )))
    }
}

pub(crate) fn rootfs_of(bundle: &Path, spec: &Spec) -> Result<std::path::PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("spec has no root".into()))?;
    let path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !path.is_dir() {
        return Err(Error::InvalidSpec(format!(
            "rootfs {} is not a directory",
            path.display()
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_name_other_paths_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        validate_id("ctr-1_a.b").unwrap();
    }

    #[test]
    fn signal_enum_is_usable() {
        let _ = Signal::SIGTERM;
    }
}

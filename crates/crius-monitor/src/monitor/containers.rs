//! Container operations: create, start, signal, stop, remove, exit, logs, resources.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;
use oci_spec::runtime::LinuxResources;

use crius_monitor::protocol::{
    ContainerState, ContainerStats, ContainerStatus, CreateContainer, Response, RuntimeChoice,
};
use crius_monitor::{Error, Result};
use crius_oci::cgroup::CgroupManager;
use crius_oci::{ExitStatus, OciRuntime, Process, Signal, Stdio};

use super::attach::Attacher;
use super::logs::{LogWriter, Stream};
use super::{status, Monitor, StopWaiter};

/// One container of the pod.
#[derive(Debug)]
pub(crate) struct Container {
    pub(crate) status: ContainerStatus,
    runtime: RuntimeChoice,
    /// Keeps the init's pidfd (and the pty master until taken) alive.
    _process: Process,
    log: LogWriter,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    /// The write end of stdin (pipe, or a dup of the pty master), handed to attachers as
    /// dups; closed by CloseStdin with `stdin_once`.
    pub(crate) stdin: Option<OwnedFd>,
    /// Created with `stdin_once`.
    pub(crate) stdin_once: bool,
    /// Created with a terminal (its output is all on `stdout`).
    pub(crate) tty: bool,
    /// Clients attached to its output.
    pub(crate) attachers: Vec<Attacher>,
    cgroup: Option<CgroupManager>,
    /// SIGKILL time of a stop in progress.
    pub(crate) kill_at: Option<Instant>,
    dir: PathBuf,
}

impl Container {
    /// Created or running: its init has not been reaped.
    pub(crate) fn is_live(&self) -> bool {
        matches!(
            self.status.state,
            ContainerState::Created | ContainerState::Running
        )
    }

    pub(crate) fn runtime_choice(&self) -> RuntimeChoice {
        self.runtime.clone()
    }

    pub(crate) fn output_fds(&self) -> impl Iterator<Item = (Stream, BorrowedFd<'_>)> {
        let out = self.stdout.as_ref().map(|fd| (Stream::Stdout, fd.as_fd()));
        let err = self.stderr.as_ref().map(|fd| (Stream::Stderr, fd.as_fd()));
        out.into_iter().chain(err)
    }

    /// Attach sinks with output waiting for POLLOUT: (attacher conn, stream, sink).
    pub(crate) fn pending_sinks(&self) -> impl Iterator<Item = (u64, Stream, BorrowedFd<'_>)> {
        self.attachers.iter().flat_map(Attacher::pending_sinks)
    }
}

pub(crate) fn now_ns() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))
}

pub(crate) fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::sys("fcntl", e))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::sys("fcntl", e))?;
    Ok(())
}

/// The stdio handed to the runtime and the ends the monitor keeps.
struct StdioPlan {
    stdio: Stdio,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
}

fn plan_stdio(tty: bool, stdin: bool) -> Result<StdioPlan> {
    if tty {
        return Ok(StdioPlan {
            stdio: Stdio::default(),
            stdout: None,
            stderr: None,
            stdin: None,
        });
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (in_r, in_w) = if stdin {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    set_nonblocking(&out_r)?;
    set_nonblocking(&err_r)?;
    Ok(StdioPlan {
        stdio: Stdio {
            stdin: in_r,
            stdout: Some(out_w),
            stderr: Some(err_w),
            extra_fds: Vec::new(),
        },
        stdout: Some(out_r),
        stderr: Some(err_r),
        stdin: in_w,
    })
}

/// The exit code CRI reports: the code, or 128 + signal.
fn exit_fields(status: ExitStatus) -> (i32, Option<i32>) {
    match status {
        ExitStatus::Exited(code) => (code, None),
        ExitStatus::Signaled(sig) => (128 + sig, Some(sig)),
    }
}

impl Monitor {
    pub(crate) fn runtime(&mut self, choice: &RuntimeChoice) -> &mut dyn OciRuntime {
        match choice {
            RuntimeChoice::Builtin => &mut self.builtin,
            RuntimeChoice::Binary { path } => {
                let root = self.config.state_dir.join("runtime").join(
                    path.file_name()
                        .map_or_else(|| "binary".into(), |n| n.to_string_lossy().into_owned()),
                );
                self.binaries
                    .entry(path.clone())
                    .or_insert_with(|| crius_oci::BinaryRuntime::new(path, root))
            }
        }
    }

    pub(crate) fn container(&self, id: &str) -> Result<&Container> {
        self.containers
            .get(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    pub(crate) fn container_mut(&mut self, id: &str) -> Result<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Records `status` on disk, then in memory, then tells subscribers.
    fn commit_status(&mut self, status: ContainerStatus) {
        let Some(c) = self.containers.get_mut(&status.id) else {
            return;
        };
        if let Err(e) = status::write(&c.dir, &status) {
            tracing::error!(container_id = %status.id, error = %e, "cannot record status");
        }
        c.status = status.clone();
        self.broadcast(&status);
    }

    pub(crate) fn create(&mut self, req: CreateContainer) -> Result<Response> {
        crius_oci::validate_id(&req.id)?;
        if self.containers.contains_key(&req.id) {
            return Err(Error::AlreadyExists(req.id));
        }
        for (what, path) in [("bundle", &req.bundle), ("log_path", &req.log_path)] {
            let optional_empty = what == "log_path" && path.as_os_str().is_empty();
            if !path.is_absolute() && !optional_empty {
                return Err(Error::InvalidRequest(format!(
                    "container {}: {what} {} must be absolute",
                    req.id,
                    path.display()
                )));
            }
        }
        let terminal = req
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        if terminal != req.tty {
            return Err(Error::InvalidRequest(format!(
                "container {}: tty={} but spec.process.terminal={terminal}",
                req.id, req.tty
            )));
        }
        let dir = self.config.state_dir.join("containers").join(&req.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        match self.create_in(&req, &dir) {
            Ok(pid) => Ok(Response::Created { pid }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn create_in(&mut self, req: &CreateContainer, dir: &Path) -> Result<i32> {
        if let Some(parent) = req.log_path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let log = LogWriter::open(&req.log_path)
            .map_err(|e| Error::io(format!("open log {}", req.log_path.display()), e))?;
        let plan = plan_stdio(req.tty, req.stdin)?;
        let mut process =
            self.runtime(&req.runtime)
                .create(&req.id, &req.bundle, &req.spec, plan.stdio)?;
        let (mut stdout, mut stdin) = (plan.stdout, plan.stdin);
        if let Some(master) = process.take_pty_master() {
            set_nonblocking(&master)?;
            if req.stdin {
                stdin = Some(nix::unistd::dup(&master).map_err(|e| Error::sys("dup pty", e))?);
            }
            stdout = Some(master);
        }
        let cgroup = req
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .and_then(|p| CgroupManager::new(p).ok())
            // crius-oci gives a spec without cgroupsPath a default cgroup.
            .or_else(|| match req.runtime {
                RuntimeChoice::Builtin => self.builtin.cgroup(&req.id).cloned(),
                RuntimeChoice::Binary { .. } => None,
            });
        let pid = process.pid();
        let status = ContainerStatus {
            id: req.id.clone(),
            state: ContainerState::Created,
            pid: Some(pid),
            created_at_ns: now_ns(),
            started_at_ns: 0,
            finished_at_ns: 0,
            exit_code: 0,
            signal: None,
            oom_killed: false,
            reason: String::new(),
            message: String::new(),
        };
        if let Err(e) = status::write(dir, &status) {
            let _ = self.runtime(&req.runtime).delete(&req.id, true);
            return Err(e);
        }
        tracing::info!(container_id = %req.id, pid, "container created");
        self.containers.insert(
            req.id.clone(),
            Container {
                status: status.clone(),
                runtime: req.runtime.clone(),
                _process: process,
                log,
                stdout,
                stderr: plan.stderr,
                stdin,
                stdin_once: req.stdin_once,
                tty: req.tty,
                attachers: Vec::new(),
                cgroup,
                kill_at: None,
                dir: dir.to_path_buf(),
            },
        );
        self.broadcast(&status);
        Ok(pid)
    }

    pub(crate) fn start(&mut self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        if c.status.state != ContainerState::Created {
            return Err(Error::WrongState {
                id: id.into(),
                op: "start",
                state: format!("{:?}", c.status.state),
            });
        }
        let choice = c.runtime.clone();
        if let Err(e) = self.runtime(&choice).start(id) {
            if let Ok(c) = self.container_mut(id) {
                c.status.message = e.to_string();
            }
            return Err(e.into());
        }
        let mut status = self.container(id)?.status.clone();
        status.state = ContainerState::Running;
        status.started_at_ns = now_ns();
        tracing::info!(container_id = %id, "container started");
        self.commit_status(status);
        Ok(())
    }

    pub(crate) fn signal(&mut self, id: &str, signal: i32) -> Result<()> {
        let sig = Signal::try_from(signal)
            .map_err(|_| Error::InvalidRequest(format!("signal {signal} is not a signal")))?;
        let c = self.container(id)?;
        if !c.is_live() {
            return Ok(());
        }
        let choice = c.runtime.clone();
        self.runtime(&choice).kill(id, sig)?;
        Ok(())
    }

    /// Signals every live container of `ids` and answers once all exited.
    pub(crate) fn stop(
        &mut self,
        conn: u64,
        ids: Vec<String>,
        timeout_ms: u64,
        signal: i32,
    ) -> Result<Option<Response>> {
        Signal::try_from(signal)
            .map_err(|_| Error::InvalidRequest(format!("signal {signal} is not a signal")))?;
        let live: Vec<String> = ids
            .into_iter()
            .filter(|id| self.containers.get(id).is_some_and(Container::is_live))
            .collect();
        if live.is_empty() {
            return Ok(Some(Response::Ok));
        }
        let kill_at = Instant::now() + Duration::from_millis(timeout_ms);
        for id in &live {
            let first = if timeout_ms == 0 {
                libc::SIGKILL
            } else {
                signal
            };
            if let Err(e) = self.signal(id, first) {
                tracing::warn!(container_id = %id, error = %e, "stop signal");
            }
            if let Some(c) = self.containers.get_mut(id) {
                let at = c.kill_at.map_or(kill_at, |t| t.min(kill_at));
                c.kill_at = Some(at);
            }
        }
        self.stop_waiters.push(StopWaiter { conn, ids: live });
        Ok(None)
    }

    pub(crate) fn remove(&mut self, id: &str) -> Result<()> {
        let Some(c) = self.containers.get(id) else {
            return Ok(());
        };
        if c.status.state == ContainerState::Running {
            return Err(Error::WrongState {
                id: id.into(),
                op: "remove",
                state: "running; stop it first".into(),
            });
        }
        let force = c.is_live();
        let choice = c.runtime.clone();
        match self.runtime(&choice).delete(id, force) {
            Ok(()) => {}
            Err(e) if e.kind() == crius_oci::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(mut c) = self.containers.remove(id) {
            self.drain_output(&mut c);
            let _ = std::fs::remove_dir_all(&c.dir);
        }
        tracing::info!(container_id = %id, "container removed");
        Ok(())
    }

    pub(crate) fn reopen_log(&mut self, id: &str) -> Result<()> {
        let c = self.container_mut(id)?;
        c.log
            .reopen()
            .map_err(|e| Error::io(format!("reopen log of {id}"), e))
    }

    fn cgroup(&self, id: &str) -> Result<&CgroupManager> {
        self.container(id)?
            .cgroup
            .as_ref()
            .ok_or_else(|| Error::WrongState {
                id: id.into(),
                op: "use the cgroup",
                state: "without a cgroupsPath in its spec".into(),
            })
    }

    pub(crate) fn update_resources(&mut self, id: &str, resources: &LinuxResources) -> Result<()> {
        match self.container(id)?.runtime {
            // The built-in runtime knows the systemd scope behind a container's cgroup
            // and gives systemd the new limits too, so a daemon-reload keeps them; a
            // runc-compatible CLI does the same in its own `update` (a scope's cgroup is
            // not one the monitor could write itself).
            RuntimeChoice::Builtin => self.builtin.update(id, resources)?,
            RuntimeChoice::Binary { .. } => {
                let choice = self.container(id)?.runtime.clone();
                self.runtime(&choice).update(id, resources)?;
            }
        }
        Ok(())
    }

    pub(crate) fn stats(&mut self, id: &str) -> Result<ContainerStats> {
        crius_monitor::cgroup_stats::read(self.cgroup(id)?)
    }

    /// Copies what a container wrote into its log.
    pub(crate) fn on_output(&mut self, id: &str, stream: Stream) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        copy_output(c, stream);
        if !c.attachers.is_empty() {
            self.settle_attachers(id);
        }
    }

    fn drain_output(&mut self, c: &mut Container) {
        copy_output(c, Stream::Stdout);
        copy_output(c, Stream::Stderr);
    }

    /// The init was reaped: drain its output, check OOM, record, then report.
    pub(crate) fn on_container_exit(&mut self, id: &str, exit: ExitStatus) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        copy_output(c, Stream::Stdout);
        copy_output(c, Stream::Stderr);
        c.kill_at = None;
        let oom = c
            .cgroup
            .as_ref()
            .and_then(|cg| cg.stats().ok())
            .is_some_and(|s| s.oom_kills > 0);
        let (exit_code, signal) = exit_fields(exit);
        let mut status = c.status.clone();
        status.state = ContainerState::Exited;
        status.finished_at_ns = now_ns();
        status.exit_code = exit_code;
        status.signal = signal;
        status.oom_killed = oom;
        status.reason = if oom {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .into();
        tracing::info!(container_id = %id, exit_code, ?signal, oom, "container exited");
        self.commit_status(status);
        self.attach_container_exited(id);
    }
}

/// Reads everything available on one output stream into the log; EOF closes it.
fn copy_output(c: &mut Container, stream: Stream) {
    let slot = match stream {
        Stream::Stdout => &mut c.stdout,
        Stream::Stderr => &mut c.stderr,
    };
    let Some(fd) = slot.as_ref() else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    let eof = loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                if let Err(e) = c.log.write(stream, &buf[..n]) {
                    tracing::warn!(container_id = %c.status.id, error = %e, "log write");
                }
                for a in &mut c.attachers {
                    a.offer(stream, &buf[..n]);
                }
            }
            Err(nix::Error::EAGAIN) => break false,
            Err(nix::Error::EINTR) => {}
            // A pty master reads EIO once the last slave fd closed.
            Err(_) => break true,
        }
    };
    if eof {
        *slot = None;
        let _ = c.log.finish(stream);
    }
}

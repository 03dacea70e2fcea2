//! [`BinaryRuntime`]: drives any runc-compatible CLI (runc, crun, youki) with
//! `create`/`start`/`state`/`kill`/`delete`/`exec` and `--console-socket` for terminals.
//!
//! The container's processes are not children of the caller (the CLI forks and exits),
//! so the caller must be a child subreaper (`PR_SET_CHILD_SUBREAPER`) to reap them and
//! use [`Process::wait`]; crius-monitor is. The CLI keeps its state under `root`
//! (`--root`); `create` writes the spec to `<bundle>/config.json` as the CLI expects.
//! Extra fds (`Stdio::extra_fds`) are not supported here. `stats` asks `events --stats`,
//! or, for a CLI without that command (crun), reads the cgroup the init runs in.

use std::collections::HashSet;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as CmdStdio};

use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process as ProcessSpec, Spec};

use crate::cgroup::{CgroupManager, CgroupStats};
use crate::clone::pidfd_open;
use crate::error::{Error, Result};
use crate::runtime::{validate_id, ContainerState, OciRuntime, Process, Status, Stdio};

/// A runc-compatible runtime binary.
#[derive(Debug, Clone)]
pub struct BinaryRuntime {
    name: String,
    binary: PathBuf,
    root: PathBuf,
    global_args: Vec<String>,
    /// Containers whose `cgroupsPath` is in the systemd form (`slice:prefix:name`): every
    /// command about them gets `--systemd-cgroup` (runc's and crun's flag), so the CLI
    /// creates and removes a scope unit instead of cgroupfs directories.
    systemd_cgroup: HashSet<String>,
}

impl BinaryRuntime {
    /// Drives `binary`, keeping its state in `root` (created when missing).
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        let binary = binary.into();
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "runtime".into());
        Self {
            name,
            binary,
            root: root.into(),
            global_args: Vec::new(),
            systemd_cgroup: HashSet::new(),
        }
    }

    /// Adds global options placed before every subcommand (for example crun's
    /// `--cgroup-manager=disabled` on a hybrid host, or `--systemd-cgroup`).
    pub fn with_global_args(mut self, args: impl IntoIterator<Item = String>) -> Self {
        self.global_args.extend(args);
        self
    }

    fn command(&self, id: &str, log: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.global_args);
        if self.systemd_cgroup.contains(id) {
            cmd.arg("--systemd-cgroup");
        }
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(log)
            .arg("--log-format")
            .arg("json");
        cmd
    }

    fn log_path(&self, id: &str, op: &str) -> PathBuf {
        self.root.join(format!("{id}.{op}.log"))
    }

    /// Runs the CLI; on failure turns its stderr/log into an error.
    fn run(&self, op: &'static str, id: &str, mut cmd: Command) -> Result<Vec<u8>> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let out = cmd.output().map_err(|e| Error::Binary {
            runtime: self.binary.display().to_string(),
            op,
            message: e.to_string(),
        })?;
        let log = self.log_path(id, op);
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        if out.status.success() {
            return Ok(out.stdout);
        }
        let message = format!(
            "{} {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            last_log_message(&log_text)
        )
        .trim()
        .to_string();
        let lower = message.to_lowercase();
        // runc says "container does not exist"; crun only fails to open
        // `<root>/<id>/status`. Both (and youki) keep a container's state in
        // `<root>/<id>/`, which settles it. (A looser "not found" would also match a
        // process's "executable file not found".)
        let missing = lower.contains("container does not exist") || !self.root.join(id).is_dir();
        if missing && op != "create" && op != "exec" {
            return Err(Error::NotFound(id.to_string()));
        }
        if lower.contains("already exists") {
            return Err(Error::AlreadyExists(id.to_string()));
        }
        if let Some(state) = refused_state(op, &lower) {
            return Err(Error::WrongState {
                id: id.into(),
                op,
                state: format!("{state} ({}: {message})", self.name),
            });
        }
        Err(Error::Binary {
            runtime: self.binary.display().to_string(),
            op,
            message,
        })
    }

    /// Whether the CLI keeps state for container `id` (see `run`): a stat instead of a
    /// `state` call.
    fn known(&self, id: &str) -> bool {
        self.root.join(id).is_dir()
    }

    fn read_pid(path: &Path) -> Result<Pid> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let _ = std::fs::remove_file(path);
        text.trim()
            .parse()
            .map(Pid::from_raw)
            .map_err(|_| Error::Protocol(format!("bad pid file {}: {text:?}", path.display())))
    }

    fn process_from(&self, pid: Pid, console: Option<UnixListener>) -> Result<Process> {
        let pidfd = pidfd_open(pid).map_err(|e| Error::sys(format!("pidfd_open {pid}"), e))?;
        let master = match console {
            Some(l) => Some(receive_master(&l)?),
            None => None,
        };
        Ok(Process::new(pid.as_raw(), pidfd, master))
    }

    fn console(
        &self,
        id: &str,
        op: &str,
        terminal: bool,
    ) -> Result<Option<(UnixListener, PathBuf)>> {
        if !terminal {
            return Ok(None);
        }
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let path = self.root.join(format!("{id}.{op}.console"));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Some((l, path)))
    }
}

/// The state a CLI's refusal of `op` names (`lower`: its message, lowercased), when the
/// refusal is about the container's state rather than a failure. `start` and `delete` rely
/// on this instead of asking `state` first (one CLI run less each):
/// - runc 1.1 start: "cannot start an already running container", "cannot start a
///   container that has stopped", "cannot start a container in the paused state";
/// - crun 1.8 start: "container `<id>` is not running" (the init is gone), or it cannot
///   open `<root>/<id>/exec.fifo`, which it removes when the container starts;
/// - runc delete: "cannot delete container <id> that is not stopped: running";
/// - crun delete: "the container `<id>` is not in `created` or `stopped` state".
fn refused_state(op: &str, lower: &str) -> Option<&'static str> {
    match op {
        "start"
            if lower.contains("cannot start a")
                || lower.contains("is not running")
                || lower.contains("exec.fifo") =>
        {
            Some("not created")
        }
        "delete"
            if lower.contains("that is not stopped")
                || lower.contains("is not in `created` or `stopped` state") =>
        {
            Some("running")
        }
        _ => None,
    }
}

/// The `msg` of the last JSON log line (runc and crun log one JSON object per line).
fn last_log_message(log: &str) -> String {
    log.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("msg")?
                .as_str()
                .map(String::from)
        })
        .unwrap_or_default()
}

/// Accepts the CLI's connection on the console socket and takes the pty master it sends.
fn receive_master(listener: &UnixListener) -> Result<OwnedFd> {
    let (stream, _) = listener
        .accept()
        .map_err(|e| Error::io("console socket", e))?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| Error::sys("recvmsg console socket", e))?;
    for c in msg.cmsgs().map_err(|e| Error::sys("console cmsg", e))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                return Ok(owned(*fd));
            }
        }
    }
    Err(Error::Protocol(
        "console socket message carried no descriptor".into(),
    ))
}

#[allow(unsafe_code)]
fn owned(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `fd` was just installed in our table by SCM_RIGHTS and is owned by nobody.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn stdio_of(fd: Option<OwnedFd>) -> CmdStdio {
    fd.map(CmdStdio::from).unwrap_or_else(CmdStdio::null)
}

impl OciRuntime for BinaryRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn create(&mut self, id: &str, bundle: &Path, spec: &Spec, stdio: Stdio) -> Result<Process> {
        validate_id(id)?;
        if !stdio.extra_fds.is_empty() {
            return Err(Error::InvalidSpec(format!(
                "{}: extra fds are not supported",
                self.name
            )));
        }
        let systemd = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .is_some_and(|p| crate::cgroup::systemd::is_systemd_path(p));
        if systemd {
            self.systemd_cgroup.insert(id.to_string());
        }
        let config = bundle.join("config.json");
        spec.save(&config)
            .map_err(|e| Error::InvalidSpec(format!("write {}: {e}", config.display())))?;
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let console = self.console(id, "create", terminal)?;
        let pid_file = self.root.join(format!("{id}.pid"));
        let mut cmd = self.command(id, &self.log_path(id, "create"));
        cmd.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        if let Some((_, path)) = &console {
            cmd.arg("--console-socket").arg(path);
        }
        cmd.arg(id)
            .stdin(stdio_of(stdio.stdin))
            .stdout(stdio_of(stdio.stdout))
            .stderr(stdio_of(stdio.stderr));
        let result = self.run("create", id, cmd);
        if let Some((_, path)) = &console {
            let _ = std::fs::remove_file(path);
        }
        result?;
        let pid = Self::read_pid(&pid_file)?;
        self.process_from(pid, console.map(|(l, _)| l))
    }

    fn start(&mut self, id: &str) -> Result<()> {
        // No `state` call first: the CLI refuses a container that is not created, and
        // `run` maps that refusal to WrongState (an unknown id to NotFound).
        let mut cmd = self.command(id, &self.log_path(id, "start"));
        cmd.arg("start").arg(id);
        self.run("start", id, cmd).map(drop)
    }

    fn kill(&mut self, id: &str, signal: Signal) -> Result<()> {
        let mut cmd = self.command(id, &self.log_path(id, "kill"));
        cmd.arg("kill").arg(id).arg((signal as i32).to_string());
        match self.run("kill", id, cmd) {
            Ok(_) => Ok(()),
            // Signalling a container that already stopped is not an error.
            Err(Error::Binary { .. }) if self.state(id)?.status == Status::Stopped => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn state(&mut self, id: &str) -> Result<ContainerState> {
        let mut cmd = self.command(id, &self.log_path(id, "state"));
        cmd.arg("state").arg(id);
        let out = self.run("state", id, cmd)?;
        let v: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| Error::Protocol(format!("{} state: {e}", self.name)))?;
        let status = match v.get("status").and_then(|s| s.as_str()) {
            Some("created") | Some("creating") => Status::Created,
            Some("running") | Some("paused") => Status::Running,
            _ => Status::Stopped,
        };
        let pid = v
            .get("pid")
            .and_then(|p| p.as_i64())
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0);
        Ok(ContainerState {
            id: id.to_string(),
            status,
            pid,
        })
    }

    fn delete(&mut self, id: &str, force: bool) -> Result<()> {
        // No `state` call first: without `--force` the CLI refuses a running container
        // itself (mapped to WrongState in `run`). With it, runc and crun answer success
        // for an unknown id, which the contract calls NotFound: a stat settles that.
        if force && !self.known(id) {
            return Err(Error::NotFound(id.to_string()));
        }
        let mut cmd = self.command(id, &self.log_path(id, "delete"));
        cmd.arg("delete");
        if force {
            cmd.arg("--force");
        }
        cmd.arg(id);
        self.run("delete", id, cmd)?;
        self.systemd_cgroup.remove(id);
        Ok(())
    }

    fn exec(&mut self, id: &str, process: &ProcessSpec, stdio: Stdio) -> Result<Process> {
        if self.state(id)?.status != Status::Running {
            return Err(Error::WrongState {
                id: id.into(),
                op: "exec",
                state: "not running".into(),
            });
        }
        if !stdio.extra_fds.is_empty() {
            return Err(Error::InvalidSpec(format!(
                "{}: extra fds are not supported",
                self.name
            )));
        }
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let process_file = self.root.join(format!("{id}.exec.json"));
        let json = serde_json::to_vec(process).map_err(|e| Error::InvalidSpec(e.to_string()))?;
        std::fs::write(&process_file, json).map_err(|e| Error::io(&process_file, e))?;
        let console = self.console(id, "exec", process.terminal().unwrap_or(false))?;
        let pid_file = self.root.join(format!("{id}.exec.pid"));
        let mut cmd = self.command(id, &self.log_path(id, "exec"));
        cmd.arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(&process_file)
            .arg("--pid-file")
            .arg(&pid_file);
        if let Some((_, path)) = &console {
            cmd.arg("--console-socket").arg(path);
        }
        cmd.arg(id)
            .stdin(stdio_of(stdio.stdin))
            .stdout(stdio_of(stdio.stdout))
            .stderr(stdio_of(stdio.stderr));
        let result = self.run("exec", id, cmd);
        let _ = std::fs::remove_file(&process_file);
        if let Some((_, path)) = &console {
            let _ = std::fs::remove_file(path);
        }
        result?;
        let pid = Self::read_pid(&pid_file)?;
        self.process_from(pid, console.map(|(l, _)| l))
    }

    fn update(&mut self, id: &str, resources: &LinuxResources) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let file = self.root.join(format!("{id}.resources.json"));
        let json = serde_json::to_vec(resources).map_err(|e| Error::InvalidSpec(e.to_string()))?;
        std::fs::write(&file, json).map_err(|e| Error::io(&file, e))?;
        let mut cmd = self.command(id, &self.log_path(id, "update"));
        cmd.arg("update").arg("--resources").arg(&file).arg(id);
        let result = self.run("update", id, cmd);
        let _ = std::fs::remove_file(&file);
        result.map(drop)
    }

    fn stats(&mut self, id: &str) -> Result<CgroupStats> {
        let mut cmd = self.command(id, &self.log_path(id, "events"));
        cmd.arg("events").arg("--stats").arg(id);
        let out = match self.run("events", id, cmd) {
            Ok(out) => out,
            // crun has no `events`: read the cgroup its init runs in, as the built-in
            // runtime does.
            Err(Error::Binary { message, .. }) if message.contains("unknown command") => {
                let pid = self.state(id)?.pid.ok_or_else(|| Error::WrongState {
                    id: id.into(),
                    op: "read stats",
                    state: "stopped".into(),
                })?;
                return CgroupManager::of_process(pid)?.stats();
            }
            Err(e) => return Err(e),
        };
        let v: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| Error::Protocol(format!("{} events --stats: {e}", self.name)))?;
        Ok(stats_from_events(&v))
    }
}

/// Reads `runc events --stats` JSON (`{"type":"stats","data":{...}}`).
fn stats_from_events(v: &serde_json::Value) -> CgroupStats {
    let n = |path: &str| {
        v.pointer(path)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let usage = n("/data/memory/usage/usage");
    let inactive =
        n("/data/memory/raw/total_inactive_file").max(n("/data/memory/raw/inactive_file"));
    CgroupStats {
        cpu_usage_ns: n("/data/cpu/usage/total"),
        memory_usage: usage,
        memory_working_set: usage.saturating_sub(inactive),
        pids: n("/data/pids/current"),
        oom_kills: n("/data/memory/raw/oom_kill"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_refusals_of_runc_and_crun_are_recognised() {
        for (op, message) in [
            ("start", "cannot start an already running container"),
            ("start", "cannot start a container that has stopped"),
            ("start", "cannot start a container in the paused state"),
            ("start", "container `c1` is not running"),
            (
                "start",
                "cannot open `/run/crun/c1/exec.fifo`: No such file or directory",
            ),
            (
                "delete",
                "cannot delete container c1 that is not stopped: running",
            ),
            (
                "delete",
                "the container `c1` is not in `created` or `stopped` state",
            ),
        ] {
            assert!(
                refused_state(op, &message.to_lowercase()).is_some(),
                "{op}: {message}"
            );
        }
        for (op, message) in [
            (
                "start",
                "exec: \"nope\": executable file not found in $PATH",
            ),
            ("delete", "unable to remove cgroup: device or resource busy"),
            ("kill", "container `c1` is not running"),
        ] {
            assert_eq!(
                refused_state(op, &message.to_lowercase()),
                None,
                "{op}: {message}"
            );
        }
    }
}

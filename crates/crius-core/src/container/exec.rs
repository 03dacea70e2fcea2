//! `exec_sync`: run a command in a running container through its pod's monitor (no
//! helper process per exec: exec probes run every few seconds on every pod).
//! `check_exec` validates a streaming `Exec` before its URL is issued; `start_exec`
//! starts it once the client connected, with its stdio passed to the monitor.

use std::time::Duration;

use crius_monitor::protocol::{Exec, ExecSync};
use crius_monitor::{ExecFds, ExecSession, MonitorClient};
use crius_store::{ContainerRecord, ContainerState};
use oci_spec::runtime::Process;

use crate::error::{Error, Result};
use crate::pod::remove::MONITOR_TIMEOUT;
use crate::runtime::Runtime;

/// Which of a streaming session's stdio streams the client asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamsRequest {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// A terminal: stdout and stderr share it, so `stderr` must be false.
    pub tty: bool,
}

impl StreamsRequest {
    /// At least one stream, and no stderr beside a terminal (as containerd and kubelet).
    pub(crate) fn validate(&self, what: &str) -> Result<()> {
        if !(self.stdin || self.stdout || self.stderr) {
            return Err(Error::InvalidArgument(format!(
                "{what}: one of stdin, stdout or stderr must be set"
            )));
        }
        if self.tty && self.stderr {
            return Err(Error::InvalidArgument(format!(
                "{what}: tty and stderr cannot both be set (a terminal has a single output stream); unset stderr"
            )));
        }
        Ok(())
    }
}

/// What `exec_sync` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Runtime {
    /// Runs `cmd` in container `id` with the container's own user, environment,
    /// capabilities, seccomp and no_new_privs; at most `output_cap` bytes per stream are
    /// kept. A `timeout` (zero: none) that expires is `DeadlineExceeded`, as containerd does.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
        output_cap: u64,
    ) -> Result<ExecOutput> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec: cmd must not be empty".into()));
        }
        let record = self.running_container(id)?;
        let process = self.exec_process(&record, cmd, false)?;
        let pod = self.find_pod(&record.pod_id)?;
        let mut monitor = MonitorClient::connect(&pod.monitor_socket, MONITOR_TIMEOUT)?;
        let out = monitor.exec_sync(ExecSync {
            id: record.id.clone(),
            process,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            output_cap,
        })?;
        if out.timed_out {
            return Err(Error::DeadlineExceeded(format!(
                "command in container {} timed out after {:?}",
                record.id, timeout
            )));
        }
        Ok(ExecOutput {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

impl Runtime {
    /// Validates a streaming exec: a command, at least one stream, no stderr beside a
    /// tty, and container `id` (full id or unique prefix) running. Returns the full id.
    pub fn check_exec(&self, id: &str, cmd: &[String], streams: StreamsRequest) -> Result<String> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec: cmd must not be empty".into()));
        }
        streams.validate("exec")?;
        Ok(self.running_container(id)?.id)
    }

    /// Starts `cmd` in running container `id` for a streaming session: without a tty,
    /// `fds` holds the process's ends of its stdio (one per stream asked for); with one,
    /// `fds` is empty and the session carries the pty master. The container is checked
    /// again: it may have stopped since the URL was issued. Blocking.
    pub fn start_exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        streams: StreamsRequest,
        fds: ExecFds,
    ) -> Result<ExecSession> {
        let record = self.running_container(id)?;
        let process = self.exec_process(&record, cmd, streams.tty)?;
        let pod = self.find_pod(&record.pod_id)?;
        let monitor = MonitorClient::connect(&pod.monitor_socket, MONITOR_TIMEOUT)?;
        let session = monitor.exec(
            Exec {
                id: record.id,
                process,
                stdin: streams.stdin,
                stdout: streams.stdout,
                stderr: streams.stderr,
            },
            fds,
        )?;
        Ok(session)
    }

    /// The record of container `id`, refreshed from its monitor; FailedPrecondition unless
    /// it is running.
    pub(crate) fn running_container(&self, id: &str) -> Result<ContainerRecord> {
        let record = self.refresh_container(self.find_container(id)?)?;
        if record.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running ({:?}); start it first",
                record.id, record.state
            )));
        }
        Ok(record)
    }
}

impl Runtime {
    /// The process an exec runs: the container's recorded one (user, environment,
    /// working directory, capabilities, no_new_privs, AppArmor; the monitor adds the
    /// container's seccomp filter and namespaces) with `cmd` as its arguments.
    pub(crate) fn exec_process(
        &self,
        record: &ContainerRecord,
        cmd: Vec<String>,
        tty: bool,
    ) -> Result<Process> {
        // The one read of the spec on this path: the exec runs as the container's process.
        let spec = self.store().read()?.container_spec(&record.id)?;
        let mut process: Process = spec
            .and_then(|mut s| s.get_mut("process").map(serde_json::Value::take))
            .and_then(|p| serde_json::from_value(p).ok())
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "container {} has no recorded process",
                    record.id
                ))
            })?;
        process.set_args(Some(cmd));
        process.set_terminal(Some(tty));
        // The container's initial size means nothing to a new terminal; the client resizes.
        process.set_console_size(None);
        Ok(process)
    }
}

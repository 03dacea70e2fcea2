//! `exec_sync`: run a command in a running container through its pod's monitor (no
//! helper process per exec: exec probes run every few seconds on every pod).

use std::time::Duration;

use crius_monitor::protocol::ExecSync;
use crius_monitor::MonitorClient;
use crius_store::ContainerState;
use oci_spec::runtime::Process;

use crate::error::{Error, Result};
use crate::pod::remove::MONITOR_TIMEOUT;
use crate::runtime::Runtime;

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
        let record = self.refresh_container(self.find_container(id)?)?;
        if record.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running ({:?})",
                record.id, record.state
            )));
        }
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
        process.set_terminal(Some(false));
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

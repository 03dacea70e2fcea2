//! `check_attach`: validate a streaming `Attach` to a running container's stdio before
//! its URL is issued; `start_attach` attaches once the client connected.

use std::os::fd::OwnedFd;

use crius_monitor::protocol::Attach;
use crius_monitor::{AttachSession, MonitorClient};
use crius_store::ContainerRecord;

use super::exec::StreamsRequest;
use crate::error::{Error, Result};
use crate::pod::remove::MONITOR_TIMEOUT;
use crate::runtime::Runtime;

/// The container an attach goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachTarget {
    /// The full container id.
    pub id: String,
    /// Whether the container runs with a terminal.
    pub tty: bool,
}

impl Runtime {
    /// Validates an attach: at least one stream, no stderr beside a tty, container `id`
    /// (full id or unique prefix) running, and no terminal asked of a container that has
    /// none. A request without tty to a container with one is served: its terminal's
    /// output arrives on stdout, as containerd does.
    pub fn check_attach(&self, id: &str, streams: StreamsRequest) -> Result<AttachTarget> {
        streams.validate("attach")?;
        let record = self.running_container(id)?;
        let tty = self.has_terminal(&record)?;
        if streams.tty && !tty {
            return Err(Error::InvalidArgument(format!(
                "attach: container {} was created without tty; attach without tty",
                record.id
            )));
        }
        Ok(AttachTarget { id: record.id, tty })
    }

    /// Attaches to running container `id`: the monitor writes its output into the sinks
    /// (write ends) and the session carries the fd for its stdin when `stdin` is asked
    /// and the container has one. A tty container has one output stream: a stderr sink
    /// is closed at once (its reader sees EOF) rather than passed. Blocking.
    pub fn start_attach(
        &self,
        id: &str,
        stdin: bool,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    ) -> Result<AttachSession> {
        let record = self.running_container(id)?;
        let tty = self.has_terminal(&record)?;
        let stderr = stderr.filter(|_| !tty);
        let pod = self.find_pod(&record.pod_id)?;
        let monitor = MonitorClient::connect(&pod.monitor_socket, MONITOR_TIMEOUT)?;
        let request = Attach {
            id: record.id,
            stdin,
            stdout: stdout.is_some(),
            stderr: stderr.is_some(),
        };
        Ok(monitor.attach(request, stdout, stderr)?)
    }
}

impl Runtime {
    /// Whether the container's recorded process has a terminal.
    pub(crate) fn has_terminal(&self, record: &ContainerRecord) -> Result<bool> {
        let spec = self.store().read()?.container_spec(&record.id)?;
        Ok(spec
            .and_then(|s| {
                s.pointer("/process/terminal")
                    .and_then(serde_json::Value::as_bool)
            })
            .unwrap_or(false))
    }
}

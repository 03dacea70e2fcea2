//! Port-forward: validate the pod and open connections to ports on its loopback.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use crius_store::{PodRecord, PodState};

use crate::error::{Error, Result};
use crate::runtime::Runtime;

impl Runtime {
    /// Validates a port-forward to pod `id` (full id or unique prefix): it must exist and
    /// be ready. Returns the full id.
    pub fn check_port_forward(&self, id: &str) -> Result<String> {
        Ok(self.ready_pod(id)?.id)
    }

    /// The pod's pinned network namespace; `None` for a host-network pod.
    pub fn pod_netns(&self, id: &str) -> Result<Option<PathBuf>> {
        netns(&self.find_pod(id)?)
    }

    /// Connects to `port` on the loopback of ready pod `id`'s network namespace (the
    /// host's for a host-network pod). Blocking: call it off the async workers.
    pub fn connect_pod_port(&self, id: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
        let pod = self.ready_pod(id)?;
        let stream = match netns(&pod)? {
            Some(path) => crius_net::connect_in_netns(&path, port, timeout)?,
            None => crius_net::connect_loopback(port, timeout)?,
        };
        Ok(stream)
    }

    fn ready_pod(&self, id: &str) -> Result<PodRecord> {
        let pod = self.find_pod(id)?;
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod {} is not ready (stopped); port-forward needs a running pod",
                pod.id
            )));
        }
        Ok(pod)
    }
}

fn netns(pod: &PodRecord) -> Result<Option<PathBuf>> {
    if pod.namespace_options.host_network {
        return Ok(None);
    }
    if pod.netns_path.as_os_str().is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "pod {} has no network namespace recorded",
            pod.id
        )));
    }
    Ok(Some(pod.netns_path.clone()))
}

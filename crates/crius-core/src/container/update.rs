//! `update_container_resources` and `reopen_container_log`: changes applied to a live
//! container through its pod's monitor.

use crius_monitor::MonitorClient;
use crius_store::{ContainerState, SpecSummary};
use oci_spec::runtime::LinuxResources;

use super::config::Resources;
use crate::error::{Error, Result};
use crate::pod::remove::MONITOR_TIMEOUT;
use crate::runtime::Runtime;

impl Runtime {
    /// Applies new CPU, memory, hugepage and unified limits to container `id`'s cgroup
    /// and records them in its spec (so stats and verbose status see the new limit).
    /// Only created and running containers have a cgroup to change.
    pub fn update_container_resources(&self, id: &str, resources: &Resources) -> Result<()> {
        let record = self.refresh_container(self.find_container(id)?)?;
        if record.state == ContainerState::Exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited; only a created or running container can be updated",
                record.id
            )));
        }
        let limits = super::spec::limits(resources)?;
        let pod = self.find_pod(&record.pod_id)?;
        MonitorClient::connect(&pod.monitor_socket, MONITOR_TIMEOUT)?
            .update_resources(&record.id, limits.clone())?;
        let txn = self.store().write()?;
        // Read again inside the write transaction: the pod watcher may have recorded a
        // state change since, which must not be overwritten.
        let mut current = txn.containers().require(&record.id)?;
        if let Some(mut spec) = txn.container_spec(&record.id)? {
            record_limits(&mut spec, &limits);
            current.spec_summary = SpecSummary::of(&spec);
            txn.set_container_spec(&record.id, &spec)?;
            txn.containers().update(&current)?;
        }
        txn.commit()?;
        tracing::info!(container_id = %record.id, "container resources updated");
        Ok(())
    }

    /// Has the monitor reopen container `id`'s log file (kubelet rotated it). The
    /// container must be running: an exited one has no writer to reopen.
    pub fn reopen_container_log(&self, id: &str) -> Result<()> {
        let record = self.refresh_container(self.find_container(id)?)?;
        if record.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running ({:?}); only a running container's log can be reopened",
                record.id, record.state
            )));
        }
        let pod = self.find_pod(&record.pod_id)?;
        MonitorClient::connect(&pod.monitor_socket, MONITOR_TIMEOUT)?.reopen_log(&record.id)?;
        Ok(())
    }
}

/// Merges `limits` into the resources of the OCI `spec`, keeping its device rules.
fn record_limits(spec: &mut serde_json::Value, limits: &LinuxResources) {
    let mut current: LinuxResources = spec
        .pointer("/linux/resources")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    if let Some(cpu) = limits.cpu() {
        current.set_cpu(Some(cpu.clone()));
    }
    if let Some(memory) = limits.memory() {
        current.set_memory(Some(*memory));
    }
    if let Some(hugepages) = limits.hugepage_limits() {
        current.set_hugepage_limits(Some(hugepages.clone()));
    }
    if let Some(unified) = limits.unified() {
        current.set_unified(Some(unified.clone()));
    }
    let Ok(value) = serde_json::to_value(&current) else {
        return;
    };
    if let Some(linux) = spec
        .get_mut("linux")
        .and_then(serde_json::Value::as_object_mut)
    {
        linux.insert("resources".to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_limits_replace_memory_and_keep_devices() {
        let mut spec = serde_json::json!({"linux": {"resources": {
            "devices": [{"allow": false, "access": "rwm"}],
            "memory": {"limit": 100}
        }}});
        let limits = crate::container::spec::limits(&Resources {
            memory_limit_in_bytes: 64 << 20,
            ..Resources::default()
        })
        .unwrap();
        record_limits(&mut spec, &limits);
        let r = &spec["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["devices"][0]["allow"], false);
    }
}

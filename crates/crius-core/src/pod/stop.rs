//! `stop_pod`: kill what still runs in the pod and mark it NotReady. Idempotent, and an
//! unknown pod is success (the CRI contract: kubelet retries stops blindly).

use crius_store::PodState;

use crate::error::{Error, Result};
use crate::runtime::Runtime;

impl Runtime {
    /// Stops every container of pod `id` (SIGKILL: kubelet already gave each container its
    /// grace period) and marks the pod NotReady. The namespaces stay pinned until removal.
    pub fn stop_pod(&self, id: &str) -> Result<()> {
        let mut record = match self.find_pod(id) {
            Err(Error::NotFound(_)) => return Ok(()),
            other => other?,
        };
        self.stop_pod_containers(&record)?;
        self.detach_network(&record)?;
        // Nothing runs in the pod any more: free the memory its /dev/shm holds.
        super::shm::unmount_pod_shm(&self.pod_dir(&record.id))?;
        if record.state == PodState::Ready {
            record.state = PodState::NotReady;
            let txn = self.store().write()?;
            txn.pods().update(&record)?;
            txn.commit()?;
            tracing::info!(pod_id = %record.id, "pod stopped");
        }
        Ok(())
    }
}

impl Runtime {
    /// Detaches the pod from its network (idempotent: the plugin works from what it saved
    /// at setup, also after a daemon restart).
    pub(crate) fn detach_network(&self, record: &crius_store::PodRecord) -> Result<()> {
        let Some(network) = self
            .network()
            .filter(|_| !record.namespace_options.host_network)
        else {
            return Ok(());
        };
        let request = crius_net::PodNetworkRequest {
            pod_id: record.id.clone(),
            pod_name: record.metadata.name.clone(),
            pod_namespace: record.metadata.namespace.clone(),
            pod_uid: record.metadata.uid.clone(),
            netns_path: record.netns_path.clone(),
            ..Default::default()
        };
        network.teardown(&request)?;
        Ok(())
    }
}

//! Keeps container records current without polling: one thread per pod subscribes to
//! its monitor's events and writes every state change to the store, so `ListContainers`
//! (kubelet relists every second) reads the truth from the store alone. When the monitor
//! goes away while the pod still exists, its unfinished containers are recorded as lost.
//! Every state change it records is also published as a container event.

use std::path::PathBuf;
use std::time::Duration;

use crius_monitor::MonitorClient;
use crius_store::Store;

use super::status::{apply, observe, Observed};
use crate::events::EventBus;
use crate::pod::remove::MONITOR_TIMEOUT;
use crate::runtime::Runtime;

impl Runtime {
    /// Starts the event watcher of pod `pod_id` (at pod creation and daemon start-up).
    pub(crate) fn watch_pod(&self, pod_id: &str) {
        let watcher = Watcher {
            store: self.store().clone(),
            events: self.events().clone(),
            pod_id: pod_id.to_string(),
            dir: self.pod_dir(pod_id),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("watch-{}", &pod_id[..pod_id.len().min(8)]))
            .spawn(move || watcher.run());
        if let Err(e) = spawned {
            tracing::error!(pod_id, error = %e, "cannot start pod watcher; container states refresh on status calls only");
        }
    }

    /// Brings every container record up to date and starts a watcher per live pod; run
    /// once when criusd starts, so exits that happened while it was down are reported.
    pub fn recover(&self) -> crate::error::Result<()> {
        let pods = self.store().read()?.pods().list()?;
        for pod in &pods {
            let watcher = Watcher {
                store: self.store().clone(),
                events: self.events().clone(),
                pod_id: pod.id.clone(),
                dir: self.pod_dir(&pod.id),
            };
            watcher.sync_all();
            self.watch_pod(&pod.id);
        }
        tracing::info!(pods = pods.len(), "recovered pods from the store");
        self.release_stale_networks(&pods);
        self.release_stale_containers(&pods);
        self.release_stale_pods(&pods);
        Ok(())
    }

    /// Tears down the network of every pod the network plugin holds state for but the store
    /// does not know: a daemon that died inside RunPodSandbox after the network was set up
    /// and before the pod was recorded never ran its rollback. Failures are logged; the
    /// next start tries again.
    fn release_stale_networks(&self, pods: &[crius_store::PodRecord]) {
        let Some(network) = self.network() else {
            return;
        };
        let attached = match network.attached() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list pod network attachments");
                return;
            }
        };
        let known: std::collections::HashSet<&str> = pods.iter().map(|p| p.id.as_str()).collect();
        for pod_id in attached.iter().filter(|id| !known.contains(id.as_str())) {
            let request = crius_net::PodNetworkRequest {
                pod_id: pod_id.clone(),
                ..Default::default()
            };
            match network.teardown(&request) {
                Ok(()) => tracing::info!(
                    pod_id,
                    "released the network of a pod that was never recorded"
                ),
                Err(e) => tracing::warn!(pod_id, error = %e, "cannot release a stale pod network"),
            }
        }
    }
}

struct Watcher {
    store: Store,
    events: EventBus,
    pod_id: String,
    dir: PathBuf,
}

impl Watcher {
    fn run(self) {
        loop {
            let socket = self.dir.join("monitor.sock");
            let events =
                MonitorClient::connect(&socket, MONITOR_TIMEOUT).and_then(MonitorClient::subscribe);
            match events {
                Ok(events) => {
                    // Events that happened between the last sync and the subscription
                    // are caught by this sync.
                    self.sync_all();
                    for event in events {
                        match event {
                            Ok(e) => self.record(&e.id, Observed::Live(e.status)),
                            Err(e) => {
                                tracing::debug!(pod_id = %self.pod_id, error = %e, "event stream error");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(pod_id = %self.pod_id, error = %e, "cannot subscribe to monitor");
                    // Refused: nothing listens on the socket any more, the monitor died
                    // (a killed monitor leaves its socket file behind). Record its
                    // containers as lost now rather than retrying forever.
                    if e.kind() == crius_monitor::ErrorKind::Unavailable && self.pod_exists() {
                        self.sync_all();
                        return;
                    }
                }
            }
            if !self.pod_exists() {
                return;
            }
            if !self.dir.join("monitor.sock").exists() {
                // The monitor is gone for good: record its containers as lost and stop.
                self.sync_all();
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pod_exists(&self) -> bool {
        self.store
            .read()
            .and_then(|t| t.pods().get(&self.pod_id))
            .is_ok_and(|p| p.is_some())
    }

    fn sync_all(&self) {
        let Ok(containers) = self
            .store
            .read()
            .and_then(|t| t.containers_of_pod(&self.pod_id))
        else {
            return;
        };
        for c in containers {
            let id = c.id.clone();
            self.record(&id, observe(&self.dir, &id));
        }
    }

    fn record(&self, id: &str, observed: Observed) {
        let result = self.store.update(|txn| {
            let Some(mut record) = txn.containers().get(id)? else {
                return Ok(None);
            };
            let before = record.state;
            if apply(&mut record, observed) {
                txn.containers().update(&record)?;
                return Ok(Some((before, record)));
            }
            Ok::<_, crius_store::Error>(None)
        });
        match result {
            Ok(Some((before, record))) => self.events.publish_transition(before, &record),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(container_id = id, error = %e, "cannot record container state")
            }
        }
    }
}

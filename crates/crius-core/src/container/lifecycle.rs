//! `start_container`, `stop_container`, `remove_container`, and the pod-wide versions
//! used when a pod stops or is removed.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crius_monitor::MonitorClient;
use crius_store::{ContainerRecord, ContainerState, PodRecord};

use super::status::{apply, cgroup_dirs, cgroups_path, observe, remove_cgroup, CGROUP_ROOT};
use crate::error::{Error, Result};
use crate::pod::remove::MONITOR_TIMEOUT;
use crate::runtime::Runtime;

const SIGTERM: i32 = 15;

impl Runtime {
    /// Starts a created container.
    pub fn start_container(&self, id: &str) -> Result<()> {
        let record = self.refresh_container(self.find_container(id)?)?;
        if record.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, only a created container can be started",
                record.id, record.state
            )));
        }
        let pod = self.find_pod(&record.pod_id)?;
        MonitorClient::connect(&pod.monitor_socket, MONITOR_TIMEOUT)?.start(&record.id)?;
        self.refresh_container(record)?;
        Ok(())
    }

    /// Stops a container: its stop signal (the image's StopSignal, else SIGTERM), then
    /// SIGKILL after `timeout`. Stopping an unknown or exited container succeeds.
    pub fn stop_container(&self, id: &str, timeout: Duration) -> Result<()> {
        let record = match self.find_container(id) {
            Err(Error::NotFound(_)) => return Ok(()),
            other => self.refresh_container(other?)?,
        };
        if record.state == ContainerState::Exited {
            return Ok(());
        }
        let pod = self.find_pod(&record.pod_id)?;
        let signal = stop_signal(&record);
        let mut monitor = MonitorClient::connect(&pod.monitor_socket, MONITOR_TIMEOUT)?;
        // The call returns once the container exited, so its timeout is the grace period
        // plus the monitor's own answer time.
        monitor.stop(&record.id, timeout, signal)?;
        self.refresh_container(record)?;
        tracing::info!(container_id = %id, "container stopped");
        Ok(())
    }

    /// Removes a container, killing it first if it still runs. Unknown ids succeed.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        let record = match self.find_container(id) {
            Err(Error::NotFound(_)) => return Ok(()),
            other => other?,
        };
        self.stop_container(&record.id, Duration::ZERO)?;
        self.release_container(&record)?;
        tracing::info!(container_id = %record.id, "container removed");
        Ok(())
    }

    /// Kills what still runs in `pod` and records the exits.
    pub(crate) fn stop_pod_containers(&self, pod: &PodRecord) -> Result<()> {
        let dir = self.pod_dir(&pod.id);
        match MonitorClient::connect(&pod.monitor_socket, MONITOR_TIMEOUT) {
            Ok(mut monitor) => monitor.stop_pod(Duration::ZERO)?,
            Err(e) => {
                tracing::warn!(pod_id = %pod.id, error = %e, "pod monitor unreachable; recording containers as lost")
            }
        }
        for record in self.store().read()?.containers_of_pod(&pod.id)? {
            let id = record.id.clone();
            let mut updated = record;
            if apply(&mut updated, observe(&dir, &id)) {
                let txn = self.store().write()?;
                let before = txn.containers().get(&id)?.map(|r| r.state);
                txn.containers().update(&updated)?;
                txn.commit()?;
                if let Some(before) = before {
                    self.events().publish_transition(before, &updated);
                }
            }
        }
        Ok(())
    }

    /// Removes every container of `pod` (they were stopped by [`Runtime::stop_pod`]).
    pub(crate) fn remove_pod_containers(&self, pod: &PodRecord) -> Result<()> {
        for record in self.store().read()?.containers_of_pod(&pod.id)? {
            self.release_container(&record)?;
        }
        Ok(())
    }

    /// Forgets an exited container: monitor entry, rootfs mount and snapshot, bundle,
    /// record — in that order, so a failure leaves a record a later remove can retry.
    fn release_container(&self, record: &ContainerRecord) -> Result<()> {
        let pod_dir = self.pod_dir(&record.pod_id);
        let socket = pod_dir.join("monitor.sock");
        if let Ok(mut monitor) = MonitorClient::connect(&socket, MONITOR_TIMEOUT) {
            monitor.remove(&record.id)?;
        }
        if let Some(cgroup) = cgroups_path(record) {
            // Left behind when the monitor died before it could remove it: the scope
            // too, unless stopped when the container was found lost.
            if !cgroup_dirs(Path::new(CGROUP_ROOT), &cgroup).is_empty() {
                crate::cgroup::stop_scope(&record.id, &record.spec_summary.cgroups_path);
                remove_cgroup(Path::new(CGROUP_ROOT), &cgroup);
            }
        }
        self.release_bundle(&pod_dir.join("containers").join(&record.id), &record.id)?;
        let txn = self.store().write()?;
        txn.containers().remove(&record.id)?;
        txn.commit()?;
        self.events()
            .publish(record, crate::events::ContainerEventKind::Deleted);
        Ok(())
    }
}

impl Runtime {
    /// Unmounts and removes container `id`'s image volumes and rootfs, then its bundle
    /// directory. Idempotent: what is already gone is skipped.
    fn release_bundle(&self, bundle: &Path, id: &str) -> Result<()> {
        self.unmount_image_volumes(bundle)?;
        self.images().remove_image_volumes(id)?;
        unmount_rootfs(self.images(), &bundle.join("rootfs"))?;
        self.images().remove_rootfs(id)?;
        match fs::remove_dir_all(bundle) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove bundle {}", bundle.display()), e)),
        }
    }

    /// Releases every container bundle of `pods` that has no record: a daemon killed
    /// inside CreateContainer (after the rootfs was mounted, before the record was
    /// written) never ran its rollback. Its process, if the monitor made one, is killed
    /// and removed first. Failures are logged; the next start tries again.
    pub(crate) fn release_stale_containers(&self, pods: &[PodRecord]) {
        for pod in pods {
            let pod_dir = self.pod_dir(&pod.id);
            let Ok(entries) = fs::read_dir(pod_dir.join("containers")) else {
                continue;
            };
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                match self.store().read().and_then(|r| r.containers().get(&id)) {
                    Ok(None) => {}
                    Ok(Some(_)) => continue,
                    Err(e) => {
                        tracing::warn!(pod_id = %pod.id, container_id = %id, error = %e, "cannot read the container store");
                        continue;
                    }
                }
                if let Ok(mut monitor) =
                    MonitorClient::connect(&pod_dir.join("monitor.sock"), MONITOR_TIMEOUT)
                {
                    // Unknown to the monitor is the usual case: nothing to stop.
                    let _ = monitor
                        .stop(&id, Duration::ZERO, 9)
                        .and_then(|()| monitor.remove(&id));
                }
                match self.release_bundle(&entry.path(), &id) {
                    Ok(()) => {
                        tracing::info!(pod_id = %pod.id, container_id = %id, "released a container that was never recorded")
                    }
                    Err(e) => {
                        tracing::warn!(pod_id = %pod.id, container_id = %id, error = %e, "cannot release a stale container")
                    }
                }
            }
        }
    }

    /// Unmounts every image volume under `bundle/volumes` (none: nothing to do).
    fn unmount_image_volumes(&self, bundle: &Path) -> Result<()> {
        let dir = bundle.join("volumes");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
        };
        for entry in entries.flatten() {
            self.images().unmount_rootfs(&entry.path())?;
        }
        Ok(())
    }
}

/// Unmounts a container's rootfs: the overlay, and the id-mapped mount on top of it
/// that a user-namespaced pod's containers have.
pub(crate) fn unmount_rootfs(images: &crius_image::ImageManager, rootfs: &Path) -> Result<()> {
    while images.unmount_rootfs(rootfs)? {}
    Ok(())
}

/// The signal that asks a container to stop: the image's `StopSignal`, else SIGTERM.
fn stop_signal(record: &ContainerRecord) -> i32 {
    signal_number(&record.spec_summary.stop_signal).unwrap_or(SIGTERM)
}

/// `SIGQUIT`, `QUIT` or `3` → 3.
pub(crate) fn signal_number(name: &str) -> Option<i32> {
    const NAMES: [&str; 31] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let bare = name.trim().trim_start_matches("SIG");
    NAMES
        .iter()
        .position(|n| *n == bare)
        .and_then(|i| i32::try_from(i + 1).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("QUIT"), Some(3));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGBOGUS"), None);
        assert_eq!(signal_number("0"), None);
    }
}

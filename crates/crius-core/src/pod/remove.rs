//! `remove_pod`: stop it, remove its containers, shut down its monitor, release every
//! mount, cgroup and directory, then forget it. An unknown pod is success.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crius_monitor::MonitorClient;
use nix::mount::{umount2, MntFlags};

use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// How long criusd waits for a monitor to answer before treating it as gone.
pub(crate) const MONITOR_TIMEOUT: Duration = Duration::from_secs(10);

impl Runtime {
    /// Removes pod `id` and everything it owns.
    pub fn remove_pod(&self, id: &str) -> Result<()> {
        let record = match self.find_pod(id) {
            Err(Error::NotFound(_)) => return Ok(()),
            other => other?,
        };
        self.stop_pod(&record.id)?;
        self.remove_pod_containers(&record)?;
        let dir = self.pod_dir(&record.id);
        shutdown_monitor(&dir, monitor_pid(&dir))?;
        self.remove_pod_cgroup(&record);
        let txn = self.store().write()?;
        txn.pods().remove(&record.id)?;
        txn.commit()?;
        tracing::info!(pod_id = %record.id, "pod removed");
        Ok(())
    }
}

impl Runtime {
    /// Releases every pod directory under the state dir that has no record: a daemon
    /// killed inside RunPodSandbox (after the monitor was spawned, before the record was
    /// written) never ran its rollback, so the monitor, its namespace pins and the pod's
    /// /dev/shm would outlive it. Failures are logged; the next start tries again.
    pub(crate) fn release_stale_pods(&self, pods: &[crius_store::PodRecord]) {
        let known: std::collections::HashSet<&str> = pods.iter().map(|p| p.id.as_str()).collect();
        let Ok(entries) = fs::read_dir(self.pods_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if known.contains(id.as_str()) || !entry.path().is_dir() {
                continue;
            }
            let dir = entry.path();
            match shutdown_monitor(&dir, monitor_pid(&dir)) {
                Ok(()) => tracing::info!(pod_id = %id, "released a pod that was never recorded"),
                Err(e) => tracing::warn!(pod_id = %id, error = %e, "cannot release a stale pod"),
            }
        }
    }
}

/// The monitor's pid as its socket's peer, if it still answers.
fn monitor_pid(dir: &Path) -> Option<i32> {
    MonitorClient::connect(&dir.join("monitor.sock"), MONITOR_TIMEOUT)
        .ok()
        .map(|c| c.monitor_pid())
}

/// Asks the monitor of the pod in `dir` to shut down; when it does not answer, kills it
/// (if `pid` still names a crius-monitor) and releases what it pinned. Then removes `dir`.
pub(crate) fn shutdown_monitor(dir: &Path, pid: Option<i32>) -> Result<()> {
    let socket = dir.join("monitor.sock");
    let answered = MonitorClient::connect(&socket, MONITOR_TIMEOUT).and_then(|mut c| c.shutdown());
    if let Err(e) = answered {
        tracing::debug!(dir = %dir.display(), error = %e, "monitor did not shut down by request");
        if let Some(pid) = pid.filter(|p| is_monitor(*p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    release_pins(dir);
    super::shm::unmount_pod_shm(dir)?;
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("remove pod directory {}", dir.display()),
            e,
        )),
    }
}

fn is_monitor(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("crius-monitor"))
        .unwrap_or(false)
}

/// Unmounts namespace pins a dead monitor left under `<dir>/ns`.
fn release_pins(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir.join("ns")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) => tracing::debug!(path = %path.display(), "released namespace pin"),
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot release namespace pin")
            }
        }
    }
}

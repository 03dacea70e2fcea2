//! `container_status` and `list_containers`: the store's records, brought up to date
//! from the pod's monitor (or, when the monitor is gone, from the status it wrote).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crius_monitor::protocol::{ContainerState as MonitorState, ContainerStatus as MonitorStatus};
use crius_monitor::MonitorClient;
use crius_store::{ContainerRecord, ContainerState as StoredState, SpecSummary};

use crate::error::{Error, Result};
use crate::pod::remove::MONITOR_TIMEOUT;
use crate::runtime::Runtime;

/// A container's lifecycle state, as CRI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// A container as `ContainerStatus` and `ListContainers` report it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
    /// The image as requested.
    pub image: String,
    /// The resolved image id (config digest).
    pub image_ref: String,
    pub created_at_ns: i64,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, or why crius lost track of it.
    pub reason: String,
    pub message: String,
    pub pid: Option<u32>,
    pub log_path: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// What [`Self::resources`], [`Self::mounts`] and [`Self::user`] read; empty in lists.
    /// The full OCI spec is [`Runtime::container_spec`].
    pub(crate) spec_summary: SpecSummary,
}

/// The user a container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerUser {
    pub uid: i64,
    pub gid: i64,
    pub supplemental_groups: Vec<i64>,
}

/// `ListContainers` filter; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    /// Full id or prefix.
    pub id: Option<String>,
    pub pod_id: Option<String>,
    pub state: Option<ContainerState>,
    pub labels: BTreeMap<String, String>,
}

impl Runtime {
    /// The container `id` (full id or unique prefix), refreshed from its monitor.
    pub fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let record = self.find_container(id)?;
        let record = self.refresh_container(record)?;
        Ok(status(&record))
    }

    /// Containers matching `filter`. States come from the store, which monitor events and
    /// every status call keep current; no monitor is asked and no OCI spec is read, so
    /// listing stays cheap.
    pub fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>> {
        let mut list = self.matching_containers(filter, summary)?;
        list.sort_by_key(|c| c.created_at_ns);
        Ok(list)
    }

    /// The OCI spec container `id` (full id or unique prefix) was created with, as last
    /// updated; for verbose status. Null for a container recorded without one.
    pub fn container_spec(&self, id: &str) -> Result<serde_json::Value> {
        let record = self.find_container(id)?;
        let spec = self.store().read()?.container_spec(&record.id)?;
        Ok(spec.unwrap_or(serde_json::Value::Null))
    }

    /// `view` of each record matching `filter`, every field checked on the record before
    /// anything is copied out of it.
    pub(crate) fn matching_containers<T>(
        &self,
        filter: &ContainerFilter,
        view: impl Fn(&ContainerRecord) -> T,
    ) -> Result<Vec<T>> {
        let records = self.container_records()?;
        let matches = |c: &&ContainerRecord| {
            filter
                .id
                .as_ref()
                .is_none_or(|id| c.id.starts_with(id.as_str()))
                && filter
                    .pod_id
                    .as_ref()
                    .is_none_or(|p| c.pod_id.starts_with(p.as_str()))
                && filter.state.is_none_or(|s| s == state_of(c.state))
                && filter
                    .labels
                    .iter()
                    .all(|(k, v)| c.labels.get(k) == Some(v))
        };
        Ok(records.iter().filter(matches).map(view).collect())
    }

    /// Every container record (decoded once per store generation).
    pub(crate) fn container_records(&self) -> Result<Arc<Vec<ContainerRecord>>> {
        self.decoded_containers.get(self.store(), || {
            Ok(self.store().read()?.containers().list()?)
        })
    }

    /// The record of container `id` (full id or unique prefix).
    pub(crate) fn find_container(&self, id: &str) -> Result<ContainerRecord> {
        let txn = self.store().read()?;
        if let Some(record) = txn.containers().get(id)? {
            return Ok(record);
        }
        let mut hits = txn
            .containers()
            .list()?
            .into_iter()
            .filter(|c| !id.is_empty() && c.id.starts_with(id));
        match (hits.next(), hits.next()) {
            (Some(record), None) => Ok(record),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "container id prefix {id:?} is ambiguous"
            ))),
            (None, _) => Err(Error::NotFound(format!("container {id:?} not found"))),
        }
    }

    /// Brings `record` up to date with its monitor and stores any change.
    pub(crate) fn refresh_container(&self, mut record: ContainerRecord) -> Result<ContainerRecord> {
        if record.state == StoredState::Exited {
            return Ok(record);
        }
        let pod_dir = self.pod_dir(&record.pod_id);
        let observed = observe(&pod_dir, &record.id);
        if apply(&mut record, observed) {
            let txn = self.store().write()?;
            // The state before is read in the write transaction: writers are serialised,
            // so a change the pod watcher recorded meanwhile is not published twice.
            let before = txn.containers().get(&record.id)?.map(|r| r.state);
            txn.containers().update(&record)?;
            txn.commit()?;
            if let Some(before) = before {
                self.events().publish_transition(before, &record);
            }
        }
        Ok(record)
    }
}

/// What is known of a container now: the monitor's answer, else what it last wrote
/// to disk, else nothing (the monitor died before recording anything).
pub(crate) enum Observed {
    Live(MonitorStatus),
    Recorded(MonitorStatus),
    Lost(String),
    /// The monitor is there but did not answer in time (busy, or the host is loaded):
    /// nothing is learnt, and nothing is concluded.
    Unanswered,
}

pub(crate) fn observe(pod_dir: &Path, id: &str) -> Observed {
    let socket = pod_dir.join("monitor.sock");
    match MonitorClient::connect(&socket, MONITOR_TIMEOUT).and_then(|mut c| c.state(id)) {
        Ok(s) => Observed::Live(s),
        Err(e) if e.kind() == crius_monitor::ErrorKind::NotFound => {
            Observed::Lost(format!("the pod monitor no longer knows container {id}"))
        }
        Err(e) if e.kind() == crius_monitor::ErrorKind::DeadlineExceeded => {
            tracing::debug!(container_id = id, error = %e, "pod monitor did not answer in time");
            Observed::Unanswered
        }
        Err(e) => {
            let path = pod_dir.join("containers").join(id).join("status.json");
            match std::fs::read(&path)
                .ok()
                .and_then(|d| serde_json::from_slice::<MonitorStatus>(&d).ok())
            {
                Some(s) => Observed::Recorded(s),
                None => Observed::Lost(format!("the pod monitor is gone ({e})")),
            }
        }
    }
}

/// Folds an observation into `record`; true when something changed.
pub(crate) fn apply(record: &mut ContainerRecord, observed: Observed) -> bool {
    let before = record.clone();
    match observed {
        Observed::Live(s) => merge(record, &s),
        Observed::Recorded(s) => {
            merge(record, &s);
            if s.state != MonitorState::Exited {
                // The monitor died after this was written: its processes died with it
                // (they are killed with their monitor), so the container is not running.
                exited_unexpectedly(record, "the pod monitor died while the container ran");
            }
        }
        Observed::Lost(why) => exited_unexpectedly(record, &why),
        Observed::Unanswered => {}
    }
    *record != before
}

fn merge(record: &mut ContainerRecord, s: &MonitorStatus) {
    record.state = match s.state {
        MonitorState::Created => StoredState::Created,
        MonitorState::Running => StoredState::Running,
        MonitorState::Exited => StoredState::Exited,
    };
    record.pid = s.pid.and_then(|p| u32::try_from(p).ok());
    record.started_at_ns = s.started_at_ns;
    record.finished_at_ns = s.finished_at_ns;
    record.exit_code = s.exit_code;
    record.reason.clone_from(&s.reason);
    record.message.clone_from(&s.message);
}

/// Records a container whose monitor is gone as exited. Its processes do not die with
/// the monitor (the container init is not the monitor's to take down: a parent-death
/// signal is cleared by the setuid into the container's user), so every process left in
/// its cgroup is killed first: a container reported exited never keeps running. Its
/// systemd scope, if it has one, is stopped then, as the runtime's delete would have.
fn exited_unexpectedly(record: &mut ContainerRecord, why: &str) {
    if record.state == StoredState::Exited {
        return;
    }
    if let Some(cgroup) = cgroups_path(record) {
        kill_cgroup(Path::new(CGROUP_ROOT), &cgroup);
        crate::cgroup::stop_scope(&record.id, &record.spec_summary.cgroups_path);
    }
    record.state = StoredState::Exited;
    record.pid = None;
    if record.finished_at_ns == 0 {
        record.finished_at_ns = crate::runtime::now_ns();
    }
    if record.exit_code == 0 {
        record.exit_code = 255;
    }
    record.reason = "MonitorLost".to_string();
    record.message = why.to_string();
}

/// Where the cgroup filesystem is mounted (the cgroup tree containers are placed in).
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The container's cgroup directory, relative to each hierarchy, from its OCI spec's
/// `cgroupsPath` (a systemd scope's directory for the systemd form).
pub(crate) fn cgroups_path(record: &ContainerRecord) -> Option<String> {
    crate::cgroup::cgroup_dir(&record.spec_summary.cgroups_path)
}

/// The directories of cgroup `relative` under `root`: the v2 one and one per v1 hierarchy.
pub(crate) fn cgroup_dirs(root: &Path, relative: &str) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join(relative))
                .collect()
        })
        .unwrap_or_default();
    dirs.push(root.join(relative));
    dirs.retain(|d| d.join("cgroup.procs").is_file());
    dirs
}

/// SIGKILLs every process in cgroup `relative` until none is left (a process forking
/// meanwhile is caught by the next round), for at most about a second.
pub(crate) fn kill_cgroup(root: &Path, relative: &str) {
    use nix::sys::signal::{kill, Signal};
    let dirs = cgroup_dirs(root, relative);
    for _ in 0..100 {
        let pids: Vec<i32> = dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|procs| {
                procs
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .filter(|p| *p > 1)
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    tracing::warn!(
        cgroup = relative,
        "processes of a lost container survive SIGKILL"
    );
}

/// Removes cgroup `relative` from every hierarchy (a lost container's monitor cannot),
/// the cgroups nested in it first: a delegated systemd scope lets the container make
/// its own, and stopping the scope removes them only in the hierarchies systemd manages.
pub(crate) fn remove_cgroup(root: &Path, relative: &str) {
    for dir in cgroup_dirs(root, relative) {
        remove_cgroup_tree(&dir);
    }
}

/// rmdir of cgroup directory `dir` after its child cgroups, depth first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove container cgroup");
    }
}

pub(crate) fn status(c: &ContainerRecord) -> ContainerStatus {
    let mut s = summary(c);
    s.spec_summary = c.spec_summary.clone();
    s
}

fn state_of(s: StoredState) -> ContainerState {
    match s {
        StoredState::Created => ContainerState::Created,
        StoredState::Running => ContainerState::Running,
        StoredState::Exited => ContainerState::Exited,
        StoredState::Unknown => ContainerState::Unknown,
    }
}

/// [`status`] without the spec summary (resources, mounts, user), for lists.
fn summary(c: &ContainerRecord) -> ContainerStatus {
    ContainerStatus {
        id: c.id.clone(),
        pod_id: c.pod_id.clone(),
        name: c.metadata.name.clone(),
        attempt: c.metadata.attempt,
        state: state_of(c.state),
        image: c.image.clone(),
        image_ref: c.image_ref.clone(),
        created_at_ns: c.created_at_ns,
        started_at_ns: c.started_at_ns,
        finished_at_ns: c.finished_at_ns,
        exit_code: c.exit_code,
        reason: c.reason.clone(),
        message: c.message.clone(),
        pid: c.pid,
        log_path: c.log_path.clone(),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        spec_summary: SpecSummary::default(),
    }
}

impl ContainerStatus {
    /// The Linux resources the container runs with (as created or last updated), from its
    /// OCI spec; `None` in lists.
    pub fn resources(&self) -> Option<super::config::Resources> {
        let r = &self.spec_summary.resources;
        if !r.is_object() {
            return None;
        }
        let int = |path: &str| {
            r.pointer(path)
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0)
        };
        let text = |path: &str| {
            r.pointer(path)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let hugepages = r
            .get("hugepageLimits")
            .and_then(serde_json::Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|h| {
                        Some((
                            h.get("pageSize")?.as_str()?.to_string(),
                            h.get("limit")?.as_u64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let unified = r
            .get("unified")
            .and_then(serde_json::Value::as_object)
            .map(|u| {
                u.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Some(super::config::Resources {
            cpu_period: int("/cpu/period"),
            cpu_quota: int("/cpu/quota"),
            cpu_shares: int("/cpu/shares"),
            memory_limit_in_bytes: int("/memory/limit"),
            memory_swap_limit_in_bytes: int("/memory/swap"),
            oom_score_adj: self.spec_summary.oom_score_adj.unwrap_or(0),
            cpuset_cpus: text("/cpu/cpus"),
            cpuset_mems: text("/cpu/mems"),
            hugepage_limits: hugepages,
            unified,
        })
    }

    /// The user the container's process runs as, from its OCI spec; `None` in lists.
    pub fn user(&self) -> Option<ContainerUser> {
        let user = self.spec_summary.user.as_object()?;
        let id = |key: &str| {
            user.get(key)
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0)
        };
        Some(ContainerUser {
            uid: id("uid"),
            gid: id("gid"),
            supplemental_groups: user
                .get("additionalGids")
                .and_then(serde_json::Value::as_array)
                .map(|g| g.iter().filter_map(serde_json::Value::as_i64).collect())
                .unwrap_or_default(),
        })
    }

    /// The host paths mounted into the container (CRI mounts and the pod's files), from
    /// its OCI spec; empty in lists.
    pub fn mounts(&self) -> Vec<super::config::Mount> {
        use super::config::{ImageVolume, Mount, Propagation};
        self.spec_summary
            .bind_mounts
            .iter()
            .filter(|m| m.get("type").and_then(serde_json::Value::as_str) == Some("bind"))
            .filter_map(|m| {
                let options: Vec<&str> = m
                    .get("options")
                    .and_then(serde_json::Value::as_array)
                    .map(|o| o.iter().filter_map(serde_json::Value::as_str).collect())
                    .unwrap_or_default();
                let propagation = if options.contains(&"rshared") {
                    Propagation::Bidirectional
                } else if options.contains(&"rslave") {
                    Propagation::HostToContainer
                } else {
                    Propagation::Private
                };
                let destination = m.get("destination")?.as_str()?;
                let image = self
                    .spec_summary
                    .image_volumes
                    .iter()
                    .find(|v| v.destination == destination)
                    .map(|v| ImageVolume {
                        image: v.image.clone(),
                        sub_path: v.sub_path.clone().into(),
                    });
                Some(Mount {
                    container_path: destination.into(),
                    host_path: m.get("source")?.as_str()?.into(),
                    readonly: options.contains(&"ro"),
                    recursive_read_only: options.contains(&"rro"),
                    selinux_relabel: false,
                    propagation,
                    image,
                    uid_mappings: oci_mappings(m.get("uidMappings")),
                    gid_mappings: oci_mappings(m.get("gidMappings")),
                })
            })
            .collect()
    }
}

/// An OCI mount's `uidMappings`/`gidMappings` JSON as id ranges (none when absent).
fn oci_mappings(list: Option<&serde_json::Value>) -> Vec<crate::pod::config::IdMapping> {
    let number = |m: &serde_json::Value, key: &str| {
        m.get(key)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    list.and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(crate::pod::config::IdMapping {
                container_id: number(m, "containerID")?,
                host_id: number(m, "hostID")?,
                length: number(m, "size")?,
            })
        })
        .collect()
}

//! `pod_status` and `list_pods`: what the store knows about pods.

use std::collections::BTreeMap;

use crius_store::PodRecord;
use oci_spec::runtime::LinuxIdMappingBuilder;

use super::config::{IdMappings, PodConfig};
use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// Whether a pod can run containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    Ready,
    NotReady,
}

/// A pod as `PodSandboxStatus` and `ListPodSandbox` report it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodStatus {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub state: PodState,
    pub created_at_ns: i64,
    /// Primary first.
    pub ips: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runtime_handler: String,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub share_pid: bool,
    pub user_namespace: bool,
    /// Runtime facts for verbose callers, as JSON.
    pub info: serde_json::Value,
}

/// `ListPodSandbox` filter; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFilter {
    /// Full id or unique prefix.
    pub id: Option<String>,
    pub state: Option<PodState>,
    pub labels: BTreeMap<String, String>,
}

impl Runtime {
    /// The pod `id` (full id or unique prefix); NotFound when absent.
    pub fn pod_status(&self, id: &str) -> Result<PodStatus> {
        let record = self.find_pod(id)?;
        Ok(status(&record))
    }

    /// Pods matching `filter`, oldest first, without the verbose `info` (lists never
    /// show it, and building it copies the stored pod config for every row).
    pub fn list_pods(&self, filter: &PodFilter) -> Result<Vec<PodStatus>> {
        let records = self
            .decoded_pods
            .get(self.store(), || Ok(self.store().read()?.pods().list()?))?;
        let mut pods: Vec<PodStatus> = records
            .iter()
            .filter(|p| {
                filter
                    .id
                    .as_ref()
                    .is_none_or(|id| p.id.starts_with(id.as_str()))
                    && filter.state.is_none_or(|s| s == state_of(p.state))
                    && filter
                        .labels
                        .iter()
                        .all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .map(summary)
            .collect();
        pods.sort_by_key(|p| p.created_at_ns);
        Ok(pods)
    }

    /// The record of pod `id` (full id or unique prefix, as crictl allows).
    pub(crate) fn find_pod(&self, id: &str) -> Result<PodRecord> {
        let txn = self.store().read()?;
        if let Some(record) = txn.pods().get(id)? {
            return Ok(record);
        }
        let mut hits = txn
            .pods()
            .list()?
            .into_iter()
            .filter(|p| !id.is_empty() && p.id.starts_with(id));
        match (hits.next(), hits.next()) {
            (Some(record), None) => Ok(record),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "pod id prefix {id:?} is ambiguous"
            ))),
            (None, _) => Err(Error::NotFound(format!("pod {id:?} not found"))),
        }
    }
}

fn status(p: &PodRecord) -> PodStatus {
    PodStatus {
        info: serde_json::json!({
            "monitorSocket": p.monitor_socket,
            "netns": p.netns_path,
            "network": p.spec.get("network"),
            "cgroupParent": p.cgroup_parent,
            "hostname": p.hostname,
            "logDirectory": p.log_directory,
            "config": p.spec,
        }),
        ..summary(p)
    }
}

fn state_of(s: crius_store::PodState) -> PodState {
    match s {
        crius_store::PodState::Ready => PodState::Ready,
        crius_store::PodState::NotReady => PodState::NotReady,
    }
}

/// [`status`] without `info`, for lists.
fn summary(p: &PodRecord) -> PodStatus {
    PodStatus {
        id: p.id.clone(),
        name: p.metadata.name.clone(),
        uid: p.metadata.uid.clone(),
        namespace: p.metadata.namespace.clone(),
        attempt: p.metadata.attempt,
        state: state_of(p.state),
        created_at_ns: p.created_at_ns,
        ips: p.ips.clone(),
        labels: p.labels.clone(),
        annotations: p.annotations.clone(),
        runtime_handler: p.runtime_handler.clone(),
        host_network: p.namespace_options.host_network,
        host_pid: p.namespace_options.host_pid,
        host_ipc: p.namespace_options.host_ipc,
        share_pid: p.namespace_options.share_pid,
        user_namespace: p.spec.get("userNamespace").is_some_and(|v| !v.is_null()),
        info: serde_json::Value::Null,
    }
}

/// What of the pod config is kept for status reporting.
pub(crate) fn stored_spec(config: &PodConfig) -> serde_json::Value {
    serde_json::json!({
        "hostname": config.hostname,
        "sysctls": config.sysctls,
        "privileged": config.privileged,
        "userNamespace": config.user_namespace.as_ref().map(|u| serde_json::json!({
            "uids": u.uids.iter().map(|m| [m.container_id, m.host_id, m.length]).collect::<Vec<_>>(),
            "gids": u.gids.iter().map(|m| [m.container_id, m.host_id, m.length]).collect::<Vec<_>>(),
        })),
        "portMappings": config.port_mappings.iter().map(|p| serde_json::json!({
            "protocol": format!("{:?}", p.protocol),
            "containerPort": p.container_port,
            "hostPort": p.host_port,
            "hostIP": p.host_ip,
        })).collect::<Vec<_>>(),
    })
}

/// The monitor's form of the pod's id mappings.
pub(crate) fn monitor_id_mappings(m: &IdMappings) -> crius_monitor::IdMappings {
    let convert = |list: &[super::config::IdMapping]| {
        list.iter()
            .filter_map(|m| {
                LinuxIdMappingBuilder::default()
                    .container_id(m.container_id)
                    .host_id(m.host_id)
                    .size(m.length)
                    .build()
                    .ok()
            })
            .collect()
    };
    crius_monitor::IdMappings {
        uid_mappings: convert(&m.uids),
        gid_mappings: convert(&m.gids),
    }
}

/// The uid and gid mappings recorded for `pod`'s user namespace, if it has one.
pub(crate) fn stored_mappings(
    pod: &PodRecord,
) -> Option<(Vec<super::config::IdMapping>, Vec<super::config::IdMapping>)> {
    let user = pod.spec.get("userNamespace").filter(|v| !v.is_null())?;
    let parse = |key: &str| -> Vec<super::config::IdMapping> {
        user.get(key)
            .and_then(|v| serde_json::from_value::<Vec<[u32; 3]>>(v.clone()).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|[container_id, host_id, length]| super::config::IdMapping {
                container_id,
                host_id,
                length,
            })
            .collect()
    };
    Some((parse("uids"), parse("gids")))
}

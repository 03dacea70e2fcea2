//! The stored record types.
//!
//! Every struct carries `#[serde(default)]` and no `deny_unknown_fields`: a field added
//! by a newer crius reads as its default here, and an older file missing a field reads
//! too. Timestamps are nanoseconds since the Unix epoch; 0 means "not yet".

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A pod sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodRecord {
    /// The sandbox id.
    pub id: String,
    /// The CRI metadata; its (name, namespace, uid, attempt) is unique in the store.
    pub metadata: PodMetadata,
    /// Ready or not.
    pub state: PodState,
    /// Creation time.
    pub created_at_ns: i64,
    /// CRI labels.
    pub labels: BTreeMap<String, String>,
    /// CRI annotations.
    pub annotations: BTreeMap<String, String>,
    /// The RuntimeClass handler; empty for the default runtime.
    pub runtime_handler: String,
    /// The directory kubelet asked container logs to go to.
    pub log_directory: String,
    /// The pod's hostname.
    pub hostname: String,
    /// The pod's IP addresses, primary first.
    pub ips: Vec<String>,
    /// The pinned network namespace; empty with host networking.
    pub netns_path: PathBuf,
    /// Which namespaces are shared with the host or across the pod.
    pub namespace_options: NamespaceOptions,
    /// The cgroup parent kubelet asked for.
    pub cgroup_parent: String,
    /// The monitor's control socket.
    pub monitor_socket: PathBuf,
    /// The original sandbox config as JSON, kept opaque for status reporting.
    pub spec: serde_json::Value,
}

/// CRI `PodSandboxMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct PodMetadata {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Sandbox attempt.
    pub attempt: u32,
}

/// A pod's state, as CRI reports it.
///
/// ```text
/// (run) --> Ready --stop--> NotReady --remove--> (gone)
/// ```
///
/// Which transitions are legal is `crius-core`'s business; the store records them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// Namespaces pinned and network set up.
    Ready,
    /// Stopped, or state unknown; also what an unknown stored value reads as.
    #[default]
    #[serde(other)]
    NotReady,
}

/// Namespace sharing of a pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespaceOptions {
    /// Uses the host network namespace.
    pub host_network: bool,
    /// Uses the host PID namespace.
    pub host_pid: bool,
    /// Uses the host IPC namespace.
    pub host_ipc: bool,
    /// Containers share one pod-wide PID namespace.
    pub share_pid: bool,
}

/// A container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRecord {
    /// The container id.
    pub id: String,
    /// The pod it belongs to; the pod must exist.
    pub pod_id: String,
    /// The CRI metadata; (pod_id, name, attempt) is unique in the store.
    pub metadata: ContainerMetadata,
    /// The image reference the caller asked for.
    pub image: String,
    /// The resolved image id (config digest).
    pub image_ref: String,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Creation time.
    pub created_at_ns: i64,
    /// Start time; 0 before start.
    pub started_at_ns: i64,
    /// Exit time; 0 before exit.
    pub finished_at_ns: i64,
    /// Exit code, meaningful once exited.
    pub exit_code: i32,
    /// Brief CamelCase reason for the state (e.g. `OOMKilled`, `Completed`, `Error`).
    pub reason: String,
    /// Human-readable detail for the state.
    pub message: String,
    /// Host PID of the init process while running.
    pub pid: Option<u32>,
    /// The log path relative to the pod's log directory.
    pub log_path: String,
    /// CRI labels.
    pub labels: BTreeMap<String, String>,
    /// CRI annotations.
    pub annotations: BTreeMap<String, String>,
    /// The snapshot holding the writable layer.
    pub snapshot_key: String,
    /// The few facts of the OCI spec that status, stats, stop and cleanup read. The spec
    /// itself lives in its own table (see [`crate::WriteTxn::insert_container`]).
    pub spec_summary: SpecSummary,
}

/// The annotation of a container's OCI spec naming the signal that stops it (the image's
/// `StopSignal`).
pub const STOP_SIGNAL_ANNOTATION: &str = "io.crius.stop-signal";

/// The annotation of a container's OCI spec listing its image volumes: a JSON array of
/// [`ImageVolumeSummary`] (which bind mount is which image).
pub const IMAGE_VOLUMES_ANNOTATION: &str = "io.crius.image-volumes";

/// One image volume of a container: the image mounted at `destination`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ImageVolumeSummary {
    /// The mount's path in the container.
    pub destination: String,
    /// The image as the caller named it.
    pub image: String,
    /// The path inside the image that is mounted (empty: its root).
    pub sub_path: String,
}

/// What status, stats, stop and cleanup need of a container's OCI spec, kept in the
/// container record. The spec itself (tens of KiB: it carries the seccomp profile) is
/// stored apart, so that listing, status and every state change decode only this.
///
/// The JSON fragments are the spec's own, unchanged (OCI runtime-spec field names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpecSummary {
    /// `linux.cgroupsPath`.
    pub cgroups_path: String,
    /// The [`STOP_SIGNAL_ANNOTATION`]; empty when the image names none.
    pub stop_signal: String,
    /// `process.oomScoreAdj`.
    pub oom_score_adj: Option<i64>,
    /// `process.user` (`uid`, `gid`, `additionalGids`, ...); null when absent.
    pub user: serde_json::Value,
    /// `linux.resources` without its device rules (the limits); null when absent.
    pub resources: serde_json::Value,
    /// The entries of `mounts` of type `bind`.
    pub bind_mounts: Vec<serde_json::Value>,
    /// The [`IMAGE_VOLUMES_ANNOTATION`]: which bind mounts are images.
    pub image_volumes: Vec<ImageVolumeSummary>,
}

impl SpecSummary {
    /// The summary of an OCI spec given as JSON; a field the spec lacks stays empty.
    pub fn of(spec: &serde_json::Value) -> SpecSummary {
        let text = |pointer: &str| {
            spec.pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let fragment = |pointer: &str| {
            spec.pointer(pointer)
                .cloned()
                .unwrap_or(serde_json::Value::Null)
        };
        let mut resources = fragment("/linux/resources");
        if let Some(r) = resources.as_object_mut() {
            // The device rules are the long part and no reader of the summary needs them.
            r.remove("devices");
        }
        let bind_mounts = spec
            .get("mounts")
            .and_then(serde_json::Value::as_array)
            .map(|mounts| {
                mounts
                    .iter()
                    .filter(|m| m.get("type").and_then(serde_json::Value::as_str) == Some("bind"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        SpecSummary {
            cgroups_path: text("/linux/cgroupsPath"),
            stop_signal: spec
                .get("annotations")
                .and_then(|a| a.get(STOP_SIGNAL_ANNOTATION))
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            oom_score_adj: spec
                .pointer("/process/oomScoreAdj")
                .and_then(serde_json::Value::as_i64),
            user: fragment("/process/user"),
            resources,
            bind_mounts,
            image_volumes: spec
                .get("annotations")
                .and_then(|a| a.get(IMAGE_VOLUMES_ANNOTATION))
                .and_then(serde_json::Value::as_str)
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default(),
        }
    }
}

/// CRI `ContainerMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerMetadata {
    /// Container name.
    pub name: String,
    /// Restart attempt.
    pub attempt: u32,
}

/// A container's state, as CRI reports it.
///
/// ```text
/// (create) --> Created --start--> Running --exit--> Exited --remove--> (gone)
///                  any --failed cleanup--> Unknown --remove--> (gone)
/// ```
///
/// Which transitions are legal is `crius-core`'s business; the store records them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited; `exit_code` and `finished_at_ns` are set.
    Exited,
    /// Unknown, e.g. after a failed cleanup; also what an unknown stored value reads as.
    #[default]
    #[serde(other)]
    Unknown,
}

/// A pulled or imported image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageRecord {
    /// The image id: the config digest (`sha256:...`).
    pub id: String,
    /// Tags (`docker.io/library/busybox:latest`); each belongs to at most one image.
    pub repo_tags: Vec<String>,
    /// Digested references (`docker.io/library/busybox@sha256:...`); each belongs to at most one image.
    pub repo_digests: Vec<String>,
    /// Unpacked size in bytes.
    pub size: u64,
    /// The manifest digest.
    pub manifest_digest: String,
    /// Layer chain ids, bottom first.
    pub chain_ids: Vec<String>,
    /// The image config as JSON.
    pub config: serde_json::Value,
    /// The config's user, for CRI `ImageStatus`.
    pub username: String,
    /// Pinned images are never garbage-collected.
    pub pinned: bool,
}

/// A lease keeping content alive while an operation (a pull, an import) runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeaseRecord {
    /// The lease id.
    pub id: String,
    /// Creation time.
    pub created_at_ns: i64,
    /// Expiry time; 0 means never.
    pub expires_at_ns: i64,
    /// Digests and snapshot keys the lease keeps from garbage collection.
    pub resources: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_tolerate_unknown_and_missing_fields() {
        let pod: PodRecord =
            serde_json::from_str(r#"{"id":"p","future_field":[1,2],"state":"ready"}"#).unwrap();
        assert_eq!(pod.id, "p");
        assert_eq!(pod.state, PodState::Ready);
        assert_eq!(pod.metadata, PodMetadata::default());
    }

    #[test]
    fn spec_summary_keeps_what_status_and_stop_read() {
        let spec = serde_json::json!({
            "process": {"user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
                        "oomScoreAdj": 500, "args": ["sleep"]},
            "linux": {"cgroupsPath": "/kubepods/c1",
                      "resources": {"memory": {"limit": 1024},
                                    "devices": [{"allow": false, "access": "rwm"}]},
                      "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/data", "type": "bind", "source": "/srv",
                        "options": ["rbind", "ro"]}],
            "annotations": {"io.crius.stop-signal": "SIGQUIT", "other": "x"},
        });
        let s = SpecSummary::of(&spec);
        assert_eq!(s.cgroups_path, "/kubepods/c1");
        assert_eq!(s.stop_signal, "SIGQUIT");
        assert_eq!(s.oom_score_adj, Some(500));
        assert_eq!(s.user["uid"], 1000);
        assert_eq!(s.resources, serde_json::json!({"memory": {"limit": 1024}}));
        assert_eq!(s.bind_mounts.len(), 1);
        assert_eq!(s.bind_mounts[0]["destination"], "/data");
        assert_eq!(
            SpecSummary::of(&serde_json::Value::Null),
            SpecSummary::default()
        );
    }

    #[test]
    fn unknown_state_values_read_as_the_safe_default() {
        let c: ContainerRecord = serde_json::from_str(r#"{"state":"paused"}"#).unwrap();
        assert_eq!(c.state, ContainerState::Unknown);
        let p: PodRecord = serde_json::from_str(r#"{"state":"hibernating"}"#).unwrap();
        assert_eq!(p.state, PodState::NotReady);
    }
}

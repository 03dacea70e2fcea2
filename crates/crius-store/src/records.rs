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
    /// The original container config as JSON, kept opaque for status reporting.
    pub spec: serde_json::Value,
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
    fn unknown_state_values_read_as_the_safe_default() {
        let c: ContainerRecord = serde_json::from_str(r#"{"state":"paused"}"#).unwrap();
        assert_eq!(c.state, ContainerState::Unknown);
        let p: PodRecord = serde_json::from_str(r#"{"state":"hibernating"}"#).unwrap();
        assert_eq!(p.state, PodState::NotReady);
    }
}

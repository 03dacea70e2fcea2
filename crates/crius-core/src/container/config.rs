//! What a container is asked to be: the CRI `ContainerConfig` as plain Rust, validated by
//! the gRPC edge's conversion and turned into an OCI spec by [`super::spec`].

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A request to create a container in a pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerConfig {
    pub name: String,
    pub attempt: u32,
    /// The image as the caller named it (tag, digest or id).
    pub image: String,
    /// Replaces the image's ENTRYPOINT when non-empty.
    pub command: Vec<String>,
    /// Replaces the image's CMD when non-empty.
    pub args: Vec<String>,
    /// Replaces the image's WORKDIR when non-empty.
    pub working_dir: String,
    /// Added to (and overriding) the image's ENV, in order.
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the pod's log directory.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: Resources,
    pub security: SecurityContext,
    /// The image's stop signal overrides SIGTERM when set (name such as `SIGQUIT`).
    pub stop_signal: Option<String>,
}

/// A host path, or an image (`image`), mounted into the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    pub container_path: PathBuf,
    /// For an image volume: where crius mounted the image (filled in at creation).
    pub host_path: PathBuf,
    pub readonly: bool,
    /// Read-only applied recursively to submounts (needs `readonly`).
    pub recursive_read_only: bool,
    pub selinux_relabel: bool,
    pub propagation: Propagation,
    /// Set for an image volume: the image's filesystem is the source, always read-only.
    pub image: Option<ImageVolume>,
    /// With `gid_mappings`, makes the mount id-mapped: files owned by a mapping's
    /// `container_id` on disk appear owned by its `host_id`, so a user-namespaced pod sees
    /// a volume's files with the owners it expects (kubelet sends the pod's mappings).
    pub uid_mappings: Vec<crate::pod::config::IdMapping>,
    pub gid_mappings: Vec<crate::pod::config::IdMapping>,
}

/// An image mounted read-only into a container (kubelet's image volumes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageVolume {
    /// The image as the caller named it (kubelet passes the id of the image it pulled).
    pub image: String,
    /// A relative path inside the image to mount instead of its root (empty: the root).
    pub sub_path: PathBuf,
}

/// Mount propagation, as the CRI names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// `rprivate`: nothing propagates either way.
    #[default]
    Private,
    /// `rslave`: host mounts appear in the container.
    HostToContainer,
    /// `rshared`: both ways (privileged containers only).
    Bidirectional,
}

/// A host device node made available in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub container_path: PathBuf,
    pub host_path: PathBuf,
    /// Any of `r`, `w`, `m`.
    pub permissions: String,
}

/// Linux resources; zero or empty means "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub memory_swap_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// Page size (`2MB`, `1GB`) → limit in bytes.
    pub hugepage_limits: BTreeMap<String, u64>,
    /// cgroup v2 key/value entries.
    pub unified: BTreeMap<String, String>,
}

/// The security context of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityContext {
    pub privileged: bool,
    /// Capability names with or without `CAP_`; `ALL` allowed.
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub add_ambient_capabilities: Vec<String>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    /// Strict: only the groups given, not those of the image's /etc/group.
    pub supplemental_groups_strict: bool,
    pub no_new_privs: bool,
    /// Replaces the default masked paths when `Some` (empty = none masked).
    pub masked_paths: Option<Vec<String>>,
    /// Replaces the default read-only paths when `Some`.
    pub readonly_paths: Option<Vec<String>>,
    pub seccomp: Profile,
    pub apparmor: Profile,
    pub selinux_label: Option<SelinuxLabel>,
    /// Share the pod's PID namespace (CRI `NamespaceMode::POD`), the host's, or have
    /// the container's own (`CONTAINER`, the CRI default).
    pub pid_namespace: PidNamespace,
}

/// A seccomp or AppArmor profile choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Profile {
    /// The runtime's default profile (what an empty CRI field means for seccomp since
    /// Kubernetes 1.27 when kubelet asks for it; kubelet sends it explicitly).
    #[default]
    RuntimeDefault,
    Unconfined,
    /// A profile from the node: a JSON file path for seccomp, a loaded profile name for
    /// AppArmor.
    Localhost(String),
}

/// An SELinux label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelinuxLabel {
    pub user: String,
    pub role: String,
    pub r#type: String,
    pub level: String,
}

/// Which PID namespace a container runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PidNamespace {
    #[default]
    Container,
    Pod,
    Host,
}

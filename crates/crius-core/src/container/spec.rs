//! Builds the OCI runtime spec of a container from its CRI config, its image config and its
//! pod, the way containerd's and CRI-O's CRI plugins do, starting from crius-oci's secure
//! defaults ([`SpecDefaults`]).
//!
//! [`build_spec`] is a sequence of named steps, one per part of the spec: the process
//! (`process_args`, `process_env`, `working_dir`, [`resolve_user`], `capabilities`,
//! `apparmor_profile`, `selinux_label`), the mounts (`standard_mounts`, `pod_file_mounts`,
//! `cri_mounts`, sorted parents first), and the Linux section (`namespaces`, `devices`,
//! `resources`, `seccomp`, masked and read-only paths). Each refuses what it cannot honour
//! with a [`SpecError`] whose [`SpecError::kind`] tells the gRPC edge which code to answer.
//!
//! Inputs and trust: the CRI config comes from kubelet (trusted, but validated: unknown
//! capabilities, relative container paths, bidirectional propagation in an unprivileged
//! container are refused); the image config and the rootfs come from a registry
//! (untrusted: the rootfs is only read through [`super::user`], which never leaves it, and
//! image `VOLUME`s are returned cleaned by [`volumes`]); host paths and device nodes come
//! from kubelet and are checked to exist.
//!
//! Not done here: image `VOLUME` directories (the caller creates them in the writable
//! layer, see [`volumes`]); pod-level sysctls (applied by the monitor to the pod's
//! namespaces); SELinux relabelling of mounts (`selinux_relabel` is ignored).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType,
    LinuxHugepageLimit, LinuxIdMapping, LinuxIdMappingBuilder, LinuxMemory, LinuxNamespace,
    LinuxNamespaceType, LinuxResources, LinuxSeccomp, Mount, Process, Spec, User,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::config::{
    ContainerConfig, Device, Mount as CriMount, PidNamespace, Profile, Propagation, Resources,
    SecurityContext,
};
use super::user::{resolve_user, ResolvedUser, UserError, UserRequest};
use crate::error::ErrorKind;
use crate::pod::config::IdMapping;

/// `PATH` when neither the image nor the request sets one (Docker's and containerd's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The AppArmor profile a `RuntimeDefault` container gets when the host has it loaded.
pub const APPARMOR_DEFAULT_PROFILE: &str = "crius-default";

/// The largest Localhost seccomp profile crius reads.
const MAX_SECCOMP_PROFILE_SIZE: u64 = 4 * 1024 * 1024;

/// Everything [`build_spec`] needs to describe one container.
#[derive(Debug)]
pub struct SpecInput<'a> {
    /// The CRI request, in domain form.
    pub config: &'a ContainerConfig,
    /// The image's config (ENTRYPOINT, CMD, ENV, ...).
    pub image: &'a ImageConfig,
    /// The container's mounted root filesystem (absolute). Only read, to resolve users.
    pub rootfs: &'a Path,
    /// The pod the container joins.
    pub pod: &'a PodContext,
    /// crius-oci's secure defaults.
    pub defaults: &'a SpecDefaults,
    /// The capabilities crius holds (its bounding set): what `ALL` and privileged mean.
    pub host_capabilities: &'a [String],
    /// The container's cgroup, as the runtime's cgroup driver names it.
    pub cgroups_path: String,
}

/// The secure defaults a container starts from (supplied by crius-oci).
#[derive(Debug, Clone)]
pub struct SpecDefaults {
    /// Capability names (`CAP_X`) every unprivileged container gets.
    pub capabilities: Vec<String>,
    /// Paths masked unless the security context gives its own list.
    pub masked_paths: Vec<String>,
    /// Paths made read-only unless the security context gives its own list.
    pub readonly_paths: Vec<String>,
    /// The `RuntimeDefault` seccomp profile.
    pub seccomp: LinuxSeccomp,
}

/// The pod a container runs in: the namespaces it joins and the files it shares.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    pub pod_id: String,
    /// The pod's hostname; for a host-network pod, empty means the node's.
    pub hostname: String,
    /// The pod's pinned namespaces, joined by path (`None` with `host_*`: the host's).
    pub network_ns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    /// The pod's shared pid namespace (share_process_namespace) when it has one.
    pub pid_ns: Option<PathBuf>,
    /// The pod's user namespace, with the mappings it was created with.
    pub user_ns: Option<PathBuf>,
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// Files bind-mounted at `/etc/resolv.conf`, `/etc/hostname`, `/etc/hosts`; a file that
    /// does not exist is skipped.
    pub resolv_conf: Option<PathBuf>,
    pub hostname_file: Option<PathBuf>,
    pub hosts_file: Option<PathBuf>,
    /// The pod's `/dev/shm`, bound into each container when the pod has its own IPC.
    pub shm: Option<PathBuf>,
    /// Whether the pod may run privileged containers.
    pub privileged: bool,
}

/// The parts of an OCI image config a container spec uses (`config` of the image config
/// JSON). Fields of the wrong type are treated as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in order.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty is root.
    pub user: String,
    pub stop_signal: Option<String>,
    /// `VOLUME` paths as the image wrote them (see [`volumes`] for the cleaned list).
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

impl ImageConfig {
    /// Reads the image config JSON (the whole document, or its `config` object).
    pub fn from_json(value: &Value) -> Self {
        let c = value.get("config").unwrap_or(value);
        let text = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        ImageConfig {
            entrypoint: string_list(c.get("Entrypoint")),
            cmd: string_list(c.get("Cmd")),
            env: string_list(c.get("Env")),
            working_dir: text("WorkingDir"),
            user: text("User"),
            stop_signal: Some(text("StopSignal")).filter(|s| !s.is_empty()),
            volumes: c
                .get("Volumes")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            labels: c
                .get("Labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What the host offers for AppArmor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppArmorHost {
    pub enabled: bool,
    /// Names of the loaded profiles.
    pub profiles: BTreeSet<String>,
}

impl AppArmorHost {
    /// Reads `/sys/module/apparmor/parameters/enabled` and the loaded profiles from
    /// securityfs (`name (mode)` per line).
    pub fn probe() -> Self {
        let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y");
        if !enabled {
            return AppArmorHost::default();
        }
        let profiles = std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
            .unwrap_or_default()
            .lines()
            .map(|l| l.rsplit_once(" (").map_or(l, |(name, _)| name).to_string())
            .collect();
        AppArmorHost { enabled, profiles }
    }
}

/// Errors of spec generation.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified: set the container's command or args, or use an image with an ENTRYPOINT or CMD")]
    NoCommand,
    #[error(transparent)]
    User(#[from] UserError),
    #[error("a privileged container needs a privileged pod; set privileged in the pod's security context too")]
    PrivilegedInUnprivilegedPod,
    #[error("unknown capability {name:?}; use a Linux capability name such as NET_ADMIN or CAP_NET_ADMIN")]
    UnknownCapability { name: String },
    #[error("capability {name} is not available to crius on this node")]
    CapabilityUnavailable { name: String },
    #[error("ambient capability {name} is not in the container's capabilities; add it to add_capabilities too")]
    AmbientNotGranted { name: String },
    #[error("seccomp profile {path} does not exist on the node")]
    SeccompProfileMissing { path: PathBuf },
    #[error("seccomp profile {path} is not a usable OCI seccomp profile: {reason}")]
    SeccompProfileInvalid { path: PathBuf, reason: String },
    #[error("AppArmor profile {profile:?} was requested but AppArmor is not enabled on this node")]
    AppArmorDisabled { profile: String },
    #[error("AppArmor profile {profile:?} is not loaded on this node; load it with apparmor_parser first")]
    AppArmorProfileNotLoaded { profile: String },
    #[error("mount host path {path} does not exist")]
    HostPathMissing { path: PathBuf },
    #[error("inspect host path {path}: {error}")]
    HostPath { path: PathBuf, error: io::Error },
    #[error("mount at {container_path}: {reason}")]
    InvalidMount {
        container_path: PathBuf,
        reason: &'static str,
    },
    #[error("device {path} does not exist on the host")]
    DeviceMissing { path: PathBuf },
    #[error("device {path}: {reason}")]
    InvalidDevice { path: PathBuf, reason: String },
    #[error("the pod has no {kind} namespace to join; recreate the pod")]
    MissingPodNamespace { kind: &'static str },
    #[error("{field} {value} is invalid: {reason}")]
    InvalidResource {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("assemble the OCI spec: {0}")]
    Assemble(String),
}

impl SpecError {
    /// The class of this error. Exhaustive on purpose: a new variant must choose its kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SpecError::User(e) => e.kind(),
            SpecError::NoCommand
            | SpecError::PrivilegedInUnprivilegedPod
            | SpecError::UnknownCapability { .. }
            | SpecError::AmbientNotGranted { .. }
            | SpecError::SeccompProfileInvalid { .. }
            | SpecError::InvalidMount { .. }
            | SpecError::InvalidDevice { .. }
            | SpecError::InvalidResource { .. } => ErrorKind::InvalidArgument,
            SpecError::SeccompProfileMissing { .. }
            | SpecError::AppArmorProfileNotLoaded { .. }
            | SpecError::HostPathMissing { .. }
            | SpecError::DeviceMissing { .. } => ErrorKind::NotFound,
            SpecError::CapabilityUnavailable { .. }
            | SpecError::AppArmorDisabled { .. }
            | SpecError::MissingPodNamespace { .. } => ErrorKind::FailedPrecondition,
            SpecError::HostPath { .. } | SpecError::Assemble(_) => ErrorKind::Internal,
        }
    }
}

type Result<T, E = SpecError> = std::result::Result<T, E>;

/// Builds the OCI spec of a container (see the module docs), probing the host's AppArmor.
///
/// ```no_run
/// # use crius_core::container::spec::*;
/// # fn f(input: &SpecInput<'_>) -> Result<(), SpecError> {
/// let spec = build_spec(input)?;
/// assert!(spec.process().is_some());
/// # Ok(()) }
/// ```
pub fn build_spec(input: &SpecInput<'_>) -> Result<Spec> {
    build_spec_on(input, &AppArmorHost::probe())
}

/// [`build_spec`] with the host's AppArmor state given.
pub fn build_spec_on(input: &SpecInput<'_>, apparmor: &AppArmorHost) -> Result<Spec> {
    let sc = &input.config.security;
    if sc.privileged && !input.pod.privileged {
        return Err(SpecError::PrivilegedInUnprivilegedPod);
    }
    let process = process(input, apparmor)?;
    let mounts = mounts(input)?;
    let linux = linux(input)?;
    let mut spec: Spec = blank(json!({ "ociVersion": oci_spec::runtime::VERSION }))?;
    spec.set_root(Some(blank(json!({
        "path": input.rootfs,
        "readonly": sc.readonly_rootfs,
    }))?));
    // Only with the pod's own UTS namespace: with host networking the container shares
    // the node's, and a runtime setting the hostname there would rename the node (runc
    // refuses such a spec). HOSTNAME is in the environment either way, as containerd does.
    let hostname = effective_hostname(input.pod);
    spec.set_hostname((!input.pod.host_network && !hostname.is_empty()).then_some(hostname));
    spec.set_process(Some(process));
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    spec.set_annotations(Some(annotations(input)));
    Ok(spec)
}

/// An oci-spec value with only the given fields: oci-spec's `Default`s describe a demo
/// container (a shell, rlimits, youki's hostname), not an empty one.
fn blank<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| SpecError::Assemble(e.to_string()))
}

/// The image directories the caller must create as private, empty directories in the
/// container's writable layer (resolved inside the rootfs): the image's `VOLUME`s that no
/// CRI mount covers, cleaned, without any that is relative or climbs with `..`.
pub fn volumes(config: &ContainerConfig, image: &ImageConfig) -> Vec<PathBuf> {
    let mounted: HashSet<PathBuf> = config
        .mounts
        .iter()
        .filter_map(|m| clean_absolute(&m.container_path))
        .collect();
    let cleaned: BTreeSet<PathBuf> = image
        .volumes
        .iter()
        .filter_map(|v| clean_absolute(Path::new(v)))
        .filter(|v| !mounted.contains(v))
        .collect();
    cleaned.into_iter().collect()
}

/// `path` without `.` and duplicate separators, when it is absolute, not `/` and has no `..`.
fn clean_absolute(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return None;
    }
    for c in components {
        match c {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (out != Path::new("/")).then_some(out)
}

fn effective_hostname(pod: &PodContext) -> String {
    if pod.hostname.is_empty() && pod.host_network {
        return std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
    }
    pod.hostname.clone()
}

// ---------------------------------------------------------------------------------------
// process

fn process(input: &SpecInput<'_>, apparmor: &AppArmorHost) -> Result<Process> {
    let config = input.config;
    let sc = &config.security;
    let user = resolve_user(input.rootfs, &user_request(sc, &input.image.user))?;
    let mut process: Process = blank(json!({ "user": {}, "cwd": "/" }))?;
    process.set_args(Some(process_args(config, input.image)?));
    process.set_env(Some(process_env(input, &user)));
    process.set_cwd(working_dir(config, input.image));
    process.set_terminal(Some(config.tty));
    process.set_user(oci_user(&user));
    process.set_capabilities(Some(capabilities(input)?));
    process.set_no_new_privileges(Some(sc.no_new_privs));
    process.set_apparmor_profile(apparmor_profile(sc, apparmor)?);
    process.set_selinux_label(selinux_label(sc));
    process.set_oom_score_adj(Some(oom_score_adj(&config.resources)?));
    Ok(process)
}

/// CRI `command` replaces the image's ENTRYPOINT and drops its CMD; CRI `args` replace CMD.
fn process_args(config: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>> {
    let (entrypoint, cmd) = if config.command.is_empty() {
        let cmd = if config.args.is_empty() {
            &image.cmd
        } else {
            &config.args
        };
        (&image.entrypoint, cmd)
    } else {
        (&config.command, &config.args)
    };
    let args: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// `HOSTNAME`, then the image's ENV, then the request's envs (a later key replaces an
/// earlier one in place), then `PATH` and `HOME` when still unset.
fn process_env(input: &SpecInput<'_>, user: &ResolvedUser) -> Vec<String> {
    let mut env = Env::default();
    let hostname = effective_hostname(input.pod);
    if !hostname.is_empty() {
        env.set("HOSTNAME", Some(&hostname));
    }
    for entry in &input.image.env {
        match entry.split_once('=') {
            Some((k, v)) => env.set(k, Some(v)),
            None => env.set(entry, None),
        }
    }
    for (k, v) in &input.config.envs {
        env.set(k, Some(v));
    }
    env.set_default("PATH", DEFAULT_PATH);
    env.set_default(
        "HOME",
        user.home
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or("/"),
    );
    env.render()
}

/// An ordered environment keyed by name.
#[derive(Debug, Default)]
struct Env(Vec<(String, Option<String>)>);

impl Env {
    fn set(&mut self, key: &str, value: Option<&str>) {
        let value = value.map(str::to_string);
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    fn set_default(&mut self, key: &str, value: &str) {
        if !self.0.iter().any(|(k, _)| k == key) {
            self.set(key, Some(value));
        }
    }

    fn render(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k,
            })
            .collect()
    }
}

/// The request's working dir, else the image's, else `/`; always absolute.
fn working_dir(config: &ContainerConfig, image: &ImageConfig) -> PathBuf {
    let dir = [&config.working_dir, &image.working_dir]
        .into_iter()
        .find(|d| !d.is_empty())
        .map_or("/", String::as_str);
    Path::new("/").join(dir)
}

fn user_request<'a>(sc: &'a SecurityContext, image_user: &'a str) -> UserRequest<'a> {
    UserRequest {
        run_as_user: sc.run_as_user,
        run_as_group: sc.run_as_group,
        run_as_username: &sc.run_as_username,
        image_user,
        supplemental_groups: &sc.supplemental_groups,
        strict_groups: sc.supplemental_groups_strict,
    }
}

fn oci_user(user: &ResolvedUser) -> User {
    let mut oci = User::default();
    oci.set_uid(user.uid);
    oci.set_gid(user.gid);
    oci.set_additional_gids(Some(user.additional_gids.clone()));
    oci.set_umask(None);
    oci
}

/// A capability name with or without `CAP_`, any case.
fn parse_capability(name: &str) -> Result<Capability> {
    serde_json::from_value(Value::String(name.to_string())).map_err(|_| {
        SpecError::UnknownCapability {
            name: name.to_string(),
        }
    })
}

fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL")
}

/// The container's capability set, in containerd's order: `add ALL` (everything crius
/// holds), `drop ALL` (nothing), then the named adds, then the named drops — so
/// "drop ALL, add NET_BIND_SERVICE" keeps one, and "add ALL, drop CHOWN" all but one.
/// A privileged container gets everything crius holds. Bounding, effective and permitted
/// are that set; ambient holds the requested ambient capabilities, which are also
/// inheritable because the kernel raises an ambient capability only when it is permitted
/// and inheritable (capabilities(7)).
fn capabilities(input: &SpecInput<'_>) -> Result<LinuxCapabilities> {
    let sc = &input.config.security;
    let host: HashSet<Capability> = input
        .host_capabilities
        .iter()
        .filter_map(|c| parse_capability(c).ok())
        .collect();
    let set = if sc.privileged {
        host
    } else {
        requested_capabilities(sc, input.defaults, &host)?
    };
    let mut ambient = HashSet::new();
    for name in &sc.add_ambient_capabilities {
        let cap = parse_capability(name)?;
        if !set.contains(&cap) {
            return Err(SpecError::AmbientNotGranted {
                name: format!("CAP_{cap}"),
            });
        }
        ambient.insert(cap);
    }
    let mut caps: LinuxCapabilities = blank(json!({}))?;
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(Some(ambient.clone()));
    caps.set_ambient(Some(ambient));
    Ok(caps)
}

/// The defaults adjusted by add/drop (see [`capabilities`]). A default crius does not hold
/// is left out; an explicit add crius does not hold is an error (when `host` is known).
fn requested_capabilities(
    sc: &SecurityContext,
    defaults: &SpecDefaults,
    host: &HashSet<Capability>,
) -> Result<HashSet<Capability>> {
    let mut set = HashSet::new();
    for name in &defaults.capabilities {
        let cap = parse_capability(name)?;
        if host.is_empty() || host.contains(&cap) {
            set.insert(cap);
        }
    }
    if sc.add_capabilities.iter().any(|c| is_all(c)) {
        set.clone_from(host);
    }
    if sc.drop_capabilities.iter().any(|c| is_all(c)) {
        set.clear();
    }
    for name in sc.add_capabilities.iter().filter(|c| !is_all(c)) {
        let cap = parse_capability(name)?;
        if !host.is_empty() && !host.contains(&cap) {
            return Err(SpecError::CapabilityUnavailable {
                name: format!("CAP_{cap}"),
            });
        }
        set.insert(cap);
    }
    for name in sc.drop_capabilities.iter().filter(|c| !is_all(c)) {
        set.remove(&parse_capability(name)?);
    }
    Ok(set)
}

/// AppArmor: `RuntimeDefault` is [`APPARMOR_DEFAULT_PROFILE`] when loaded (else none, or
/// `unconfined` for a privileged container); `Localhost` must be loaded. Without AppArmor
/// on the host nothing is set, and asking for a Localhost profile is an error.
fn apparmor_profile(sc: &SecurityContext, host: &AppArmorHost) -> Result<Option<String>> {
    let localhost = match &sc.apparmor {
        Profile::Localhost(name) => Some(name.strip_prefix("localhost/").unwrap_or(name)),
        Profile::RuntimeDefault | Profile::Unconfined => None,
    };
    if !host.enabled {
        return match localhost {
            Some(profile) => Err(SpecError::AppArmorDisabled {
                profile: profile.to_string(),
            }),
            None => Ok(None),
        };
    }
    let chosen = match (&sc.apparmor, localhost) {
        (_, Some(name)) if host.profiles.contains(name) => Some(name),
        (_, Some(name)) => {
            return Err(SpecError::AppArmorProfileNotLoaded {
                profile: name.to_string(),
            })
        }
        (Profile::Unconfined, _) => Some("unconfined"),
        _ if sc.privileged => Some("unconfined"),
        _ => Some(APPARMOR_DEFAULT_PROFILE).filter(|p| host.profiles.contains(*p)),
    };
    Ok(chosen.map(str::to_string))
}

fn selinux_label(sc: &SecurityContext) -> Option<String> {
    let l = sc.selinux_label.as_ref()?;
    let parts = [&l.user, &l.role, &l.r#type, &l.level];
    if parts.iter().all(|p| p.is_empty()) {
        return None;
    }
    Some(format!("{}:{}:{}:{}", l.user, l.role, l.r#type, l.level))
}

/// Always set, so the container never inherits the monitor's (protected) score.
fn oom_score_adj(resources: &Resources) -> Result<i32> {
    i32::try_from(resources.oom_score_adj)
        .ok()
        .filter(|v| (-1000..=1000).contains(v))
        .ok_or_else(|| SpecError::InvalidResource {
            field: "oom_score_adj",
            value: resources.oom_score_adj.to_string(),
            reason: "use a value from -1000 to 1000",
        })
}

// ---------------------------------------------------------------------------------------
// mounts

fn mount(destination: &str, typ: &str, source: &Path, options: &[&str]) -> Result<Mount> {
    blank(json!({
        "destination": destination,
        "type": typ,
        "source": source,
        "options": options,
    }))
}

/// Every mount of the container: the standard filesystems, the pod's files, then the
/// request's mounts (which replace a standard one at the same place), parents first.
fn mounts(input: &SpecInput<'_>) -> Result<Vec<Mount>> {
    let cri = cri_mounts(input.config, input.pod.user_ns.is_some())?;
    let taken: HashSet<PathBuf> = cri.iter().map(|m| m.destination().clone()).collect();
    let mut all: Vec<Mount> = standard_mounts(input)?
        .into_iter()
        .chain(pod_file_mounts(input)?)
        .filter(|m| !taken.contains(m.destination()))
        .chain(cri)
        .collect();
    // A stable sort by depth: a parent is mounted before anything inside it.
    all.sort_by_key(|m| m.destination().components().count());
    Ok(all)
}

fn standard_mounts(input: &SpecInput<'_>) -> Result<Vec<Mount>> {
    let privileged = input.config.security.privileged;
    let sys_mode = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount(
            "/proc",
            "proc",
            Path::new("proc"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        shm_mount(input.pod)?,
        mount(
            "/dev/mqueue",
            "mqueue",
            Path::new("mqueue"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            Path::new("cgroup"),
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ])
}

/// The host's `/dev/shm` for a host-IPC pod, the pod's when it has one, else a new tmpfs.
fn shm_mount(pod: &PodContext) -> Result<Mount> {
    let bind = ["rbind", "rprivate", "nosuid", "nodev", "noexec"];
    match (&pod.shm, pod.host_ipc) {
        (_, true) => mount("/dev/shm", "bind", Path::new("/dev/shm"), &bind),
        (Some(shm), false) => mount("/dev/shm", "bind", shm, &bind),
        (None, false) => mount(
            "/dev/shm",
            "tmpfs",
            Path::new("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    }
}

/// The pod's resolv.conf, hostname and hosts files, read-only with a read-only rootfs.
fn pod_file_mounts(input: &SpecInput<'_>) -> Result<Vec<Mount>> {
    let pod = input.pod;
    let mode = if input.config.security.readonly_rootfs {
        "ro"
    } else {
        "rw"
    };
    let files = [
        ("/etc/resolv.conf", &pod.resolv_conf),
        ("/etc/hostname", &pod.hostname_file),
        ("/etc/hosts", &pod.hosts_file),
    ];
    let mut mounts = Vec::new();
    for (destination, source) in files {
        let Some(source) = source else { continue };
        if !source.exists() {
            tracing::debug!(pod_id = %pod.pod_id, file = %source.display(), "pod file absent, not mounted");
            continue;
        }
        mounts.push(mount(
            destination,
            "bind",
            source,
            &["rbind", "rprivate", mode],
        )?);
    }
    Ok(mounts)
}

fn cri_mounts(config: &ContainerConfig, user_ns: bool) -> Result<Vec<Mount>> {
    let privileged = config.security.privileged;
    config
        .mounts
        .iter()
        .map(|m| cri_mount(m, privileged, user_ns))
        .collect()
}

/// One CRI mount: a recursive bind of an existing host path, with its propagation and
/// read-only mode (`rro` asks the runtime for recursive read-only, as runc names it).
fn cri_mount(m: &CriMount, privileged: bool, user_ns: bool) -> Result<Mount> {
    let invalid = |reason| SpecError::InvalidMount {
        container_path: m.container_path.clone(),
        reason,
    };
    let destination = clean_absolute(&m.container_path)
        .ok_or_else(|| invalid("the container path must be absolute, not /, without .."))?;
    let source = std::fs::canonicalize(&m.host_path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => SpecError::HostPathMissing {
            path: m.host_path.clone(),
        },
        _ => SpecError::HostPath {
            path: m.host_path.clone(),
            error,
        },
    })?;
    let propagation = match m.propagation {
        Propagation::Private => "rprivate",
        Propagation::HostToContainer => "rslave",
        Propagation::Bidirectional if privileged => "rshared",
        Propagation::Bidirectional => {
            return Err(invalid(
                "bidirectional propagation needs a privileged container",
            ))
        }
    };
    let mut options = vec!["rbind", propagation, if m.readonly { "ro" } else { "rw" }];
    if m.image.is_some() {
        // An image's files are the image author's, not the node's: no set-id programs
        // and no device nodes take effect through an image volume.
        options.extend(["nosuid", "nodev"]);
    }
    if m.recursive_read_only {
        if !m.readonly || m.propagation != Propagation::Private {
            return Err(invalid(
                "recursive read-only needs readonly and private propagation",
            ));
        }
        options.push("rro");
    }
    let mut mount = mount(&destination.to_string_lossy(), "bind", &source, &options)?;
    if !m.uid_mappings.is_empty() {
        if !user_ns {
            return Err(invalid(
                "uid/gid mappings are for pods with a user namespace (userns_options mode POD)",
            ));
        }
        mount.set_uid_mappings(Some(id_mappings(&m.uid_mappings)?));
        mount.set_gid_mappings(Some(id_mappings(&m.gid_mappings)?));
    }
    Ok(mount)
}

/// `rshared` when a mount propagates both ways, `rslave` when one receives host mounts.
fn rootfs_propagation(config: &ContainerConfig) -> Option<String> {
    let has = |p| config.mounts.iter().any(|m| m.propagation == p);
    if has(Propagation::Bidirectional) {
        Some("rshared".into())
    } else if has(Propagation::HostToContainer) {
        Some("rslave".into())
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// linux

fn linux(input: &SpecInput<'_>) -> Result<oci_spec::runtime::Linux> {
    let sc = &input.config.security;
    let mut linux: oci_spec::runtime::Linux = blank(json!({}))?;
    let (devices, device_rules) = devices(input.config)?;
    linux.set_namespaces(Some(namespaces(sc, input.pod)?));
    if input.pod.user_ns.is_some() {
        linux.set_uid_mappings(Some(id_mappings(&input.pod.uid_mappings)?));
        linux.set_gid_mappings(Some(id_mappings(&input.pod.gid_mappings)?));
    }
    linux.set_devices(Some(devices));
    linux.set_resources(Some(resources(&input.config.resources, device_rules)?));
    linux.set_cgroups_path(Some(PathBuf::from(&input.cgroups_path)));
    linux.set_seccomp(seccomp(sc, input.defaults)?);
    linux.set_rootfs_propagation(rootfs_propagation(input.config));
    let (masked, readonly) = if sc.privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            sc.masked_paths
                .clone()
                .unwrap_or_else(|| input.defaults.masked_paths.clone()),
            sc.readonly_paths
                .clone()
                .unwrap_or_else(|| input.defaults.readonly_paths.clone()),
        )
    };
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    Ok(linux)
}

fn id_mappings(list: &[IdMapping]) -> Result<Vec<LinuxIdMapping>> {
    list.iter()
        .map(|m| {
            LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.length)
                .build()
                .map_err(|e| SpecError::Assemble(e.to_string()))
        })
        .collect()
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path.map(Path::to_path_buf));
    ns
}

/// The pod's pinned namespace, none at all (the host's) when `host`, an error when the pod
/// should have one and does not.
fn joined(
    typ: LinuxNamespaceType,
    kind: &'static str,
    host: bool,
    path: &Option<PathBuf>,
) -> Result<Option<LinuxNamespace>> {
    match (host, path) {
        (true, _) => Ok(None),
        (false, Some(path)) => Ok(Some(namespace(typ, Some(path)))),
        (false, None) => Err(SpecError::MissingPodNamespace { kind }),
    }
}

/// New mount and cgroup namespaces; the pod's network, IPC and UTS (the host's with host
/// networking / host IPC); a pid namespace per the request; the pod's user namespace.
fn namespaces(sc: &SecurityContext, pod: &PodContext) -> Result<Vec<LinuxNamespace>> {
    use LinuxNamespaceType as T;
    let mut list = vec![namespace(T::Mount, None), namespace(T::Cgroup, None)];
    let joins = [
        joined(T::Network, "network", pod.host_network, &pod.network_ns)?,
        joined(T::Ipc, "ipc", pod.host_ipc, &pod.ipc_ns)?,
        joined(T::Uts, "uts", pod.host_network, &pod.uts_ns)?,
    ];
    list.extend(joins.into_iter().flatten());
    match sc.pid_namespace {
        PidNamespace::Host => {}
        PidNamespace::Pod => list.extend(joined(T::Pid, "pid", pod.host_pid, &pod.pid_ns)?),
        PidNamespace::Container if pod.host_pid => {}
        PidNamespace::Container => list.push(namespace(T::Pid, None)),
    }
    if let Some(user) = &pod.user_ns {
        list.push(namespace(T::User, Some(user)));
    }
    Ok(list)
}

/// The devices a container may use by default (besides mknod of any device): null, zero,
/// full, random, urandom, tty, ptmx and the pty slaves.
const ALLOWED_DEVICES: [(LinuxDeviceType, Option<i64>, Option<i64>, &str); 10] = [
    (LinuxDeviceType::C, None, None, "m"),
    (LinuxDeviceType::B, None, None, "m"),
    (LinuxDeviceType::C, Some(1), Some(3), "rwm"),
    (LinuxDeviceType::C, Some(1), Some(5), "rwm"),
    (LinuxDeviceType::C, Some(1), Some(7), "rwm"),
    (LinuxDeviceType::C, Some(1), Some(8), "rwm"),
    (LinuxDeviceType::C, Some(1), Some(9), "rwm"),
    (LinuxDeviceType::C, Some(5), Some(0), "rwm"),
    (LinuxDeviceType::C, Some(5), Some(2), "rwm"),
    (LinuxDeviceType::C, Some(136), None, "rwm"),
];

fn device_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(allow);
    rule.set_typ(typ);
    rule.set_major(major);
    rule.set_minor(minor);
    rule.set_access(Some(access.to_string()));
    rule
}

/// The requested device nodes and the cgroup device rules: deny everything, allow the
/// standard set (everything when privileged), then each requested device.
fn devices(config: &ContainerConfig) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let mut rules = vec![device_rule(false, None, None, None, "rwm")];
    if config.security.privileged {
        rules.push(device_rule(true, None, None, None, "rwm"));
    } else {
        rules.extend(ALLOWED_DEVICES.iter().map(|&(typ, major, minor, access)| {
            device_rule(true, Some(typ), major, minor, access)
        }));
    }
    let mut nodes = if config.security.privileged {
        host_devices(Path::new("/dev"), 0)
    } else {
        Vec::new()
    };
    nodes.retain(|n| !config.devices.iter().any(|d| d.container_path == *n.path()));
    for d in &config.devices {
        let (node, rule) = device(d)?;
        nodes.push(node);
        rules.push(rule);
    }
    Ok((nodes, rules))
}

/// Directories of `/dev` that hold no device a privileged container should copy: other
/// filesystems the spec mounts itself, and udev/LXC bookkeeping.
const HOST_DEV_SKIPPED: [&str; 8] = [
    "pts",
    "shm",
    "mqueue",
    "fd",
    "hugepages",
    ".udev",
    ".lxc",
    ".lxd-mounts",
];

/// Nodes every runtime creates in a container's `/dev` itself.
const STANDARD_DEVICES: [&str; 8] = [
    "null", "zero", "full", "random", "urandom", "tty", "console", "ptmx",
];

/// Every character and block device under the host's `dir` (symlinks not followed), for
/// a privileged container, as containerd gives it. Best effort: an unreadable entry is
/// skipped.
fn host_devices(dir: &Path, depth: usize) -> Vec<LinuxDevice> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let kind = meta.file_type();
        if kind.is_dir() && depth < 4 && !HOST_DEV_SKIPPED.contains(&name.as_ref()) {
            nodes.extend(host_devices(&entry.path(), depth + 1));
            continue;
        }
        let typ = match (kind.is_char_device(), kind.is_block_device()) {
            (true, _) => LinuxDeviceType::C,
            (_, true) => LinuxDeviceType::B,
            _ => continue,
        };
        if depth == 0 && STANDARD_DEVICES.contains(&name.as_ref()) {
            continue;
        }
        let (Ok(major), Ok(minor)) = (
            i64::try_from(nix::sys::stat::major(meta.rdev())),
            i64::try_from(nix::sys::stat::minor(meta.rdev())),
        ) else {
            continue;
        };
        let mut node = LinuxDevice::default();
        node.set_path(entry.path());
        node.set_typ(typ);
        node.set_major(major);
        node.set_minor(minor);
        node.set_file_mode(Some(meta.mode() & 0o7777));
        node.set_uid(Some(meta.uid()));
        node.set_gid(Some(meta.gid()));
        nodes.push(node);
    }
    nodes
}

/// One host device node, by `stat` of its host path (symlinks followed: kubelet's paths
/// such as `/dev/disk/by-id/...` are links).
fn device(d: &Device) -> Result<(LinuxDevice, LinuxDeviceCgroup)> {
    let invalid = |reason: String| SpecError::InvalidDevice {
        path: d.host_path.clone(),
        reason,
    };
    let meta = std::fs::metadata(&d.host_path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SpecError::DeviceMissing {
            path: d.host_path.clone(),
        },
        _ => invalid(e.to_string()),
    })?;
    let typ = if meta.file_type().is_char_device() {
        LinuxDeviceType::C
    } else if meta.file_type().is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(invalid("not a character or block device".into()));
    };
    let access = if d.permissions.is_empty() {
        "rwm"
    } else {
        &d.permissions
    };
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(invalid(format!("permissions {access:?}: use r, w and m")));
    }
    let path = clean_absolute(&d.container_path)
        .ok_or_else(|| invalid("the container path must be absolute, without ..".into()))?;
    let id = |n: u64| i64::try_from(n).map_err(|_| invalid(format!("device number {n}")));
    let (major, minor) = (
        id(nix::sys::stat::major(meta.rdev()))?,
        id(nix::sys::stat::minor(meta.rdev()))?,
    );
    let mut node = LinuxDevice::default();
    node.set_path(path);
    node.set_typ(typ);
    node.set_major(major);
    node.set_minor(minor);
    node.set_file_mode(Some(meta.mode() & 0o7777));
    node.set_uid(Some(meta.uid()));
    node.set_gid(Some(meta.gid()));
    let rule = device_rule(true, Some(typ), Some(major), Some(minor), access);
    Ok((node, rule))
}

fn invalid_resource(field: &'static str, value: i64, reason: &'static str) -> SpecError {
    SpecError::InvalidResource {
        field,
        value: value.to_string(),
        reason,
    }
}

/// A CRI value where 0 means "not set" and a negative value is refused.
fn positive(field: &'static str, value: i64) -> Result<Option<u64>> {
    match u64::try_from(value) {
        Ok(0) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(_) => Err(invalid_resource(field, value, "must not be negative")),
    }
}

/// The CPU, memory, hugepage and unified limits of `r` alone, without device rules: what
/// `UpdateContainerResources` applies to a running container's cgroup.
pub(crate) fn limits(r: &Resources) -> Result<LinuxResources> {
    let mut res = resources(r, Vec::new())?;
    res.set_devices(None);
    Ok(res)
}

/// CPU, memory, hugepages and unified (v2) limits, and the device rules.
fn resources(r: &Resources, device_rules: Vec<LinuxDeviceCgroup>) -> Result<LinuxResources> {
    let mut res = LinuxResources::default();
    res.set_devices(Some(device_rules));
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(positive("cpu_shares", r.cpu_shares)?);
    cpu.set_period(positive("cpu_period", r.cpu_period)?);
    cpu.set_quota((r.cpu_quota != 0).then_some(r.cpu_quota));
    cpu.set_cpus(Some(r.cpuset_cpus.clone()).filter(|s| !s.is_empty()));
    cpu.set_mems(Some(r.cpuset_mems.clone()).filter(|s| !s.is_empty()));
    if cpu != LinuxCpu::default() {
        res.set_cpu(Some(cpu));
    }
    if let Some(memory) = memory(r)? {
        res.set_memory(Some(memory));
    }
    let mut hugepages = Vec::new();
    for (size, limit) in &r.hugepage_limits {
        let mut h = LinuxHugepageLimit::default();
        h.set_page_size(size.clone());
        h.set_limit(i64::try_from(*limit).map_err(|_| {
            invalid_resource("hugepage limit", i64::MAX, "exceeds the largest limit")
        })?);
        hugepages.push(h);
    }
    if !hugepages.is_empty() {
        res.set_hugepage_limits(Some(hugepages));
    }
    if !r.unified.is_empty() {
        res.set_unified(Some(r.unified.clone().into_iter().collect()));
    }
    Ok(res)
}

/// The memory limit, and memory+swap: the request's swap limit (-1: unlimited), else the
/// memory limit itself, so a container never swaps unless asked to (containerd's rule).
fn memory(r: &Resources) -> Result<Option<LinuxMemory>> {
    let Some(limit) = positive("memory_limit_in_bytes", r.memory_limit_in_bytes)? else {
        return Ok(None);
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let swap = match r.memory_swap_limit_in_bytes {
        0 => limit,
        -1 => -1,
        s if s > 0 && s >= limit => s,
        s => {
            return Err(invalid_resource(
                "memory_swap_limit_in_bytes",
                s,
                "use -1 (unlimited) or a value at least the memory limit",
            ))
        }
    };
    let mut memory = LinuxMemory::default();
    memory.set_limit(Some(limit));
    memory.set_swap(Some(swap));
    Ok(Some(memory))
}

/// RuntimeDefault: crius's profile; Unconfined and privileged containers: none;
/// Localhost: the node's JSON file (OCI `LinuxSeccomp` format).
fn seccomp(sc: &SecurityContext, defaults: &SpecDefaults) -> Result<Option<LinuxSeccomp>> {
    if sc.privileged {
        return Ok(None);
    }
    match &sc.seccomp {
        Profile::RuntimeDefault => Ok(Some(defaults.seccomp.clone())),
        Profile::Unconfined => Ok(None),
        Profile::Localhost(path) => {
            let path = Path::new(path.strip_prefix("localhost/").unwrap_or(path));
            load_seccomp_profile(path).map(Some)
        }
    }
}

fn load_seccomp_profile(path: &Path) -> Result<LinuxSeccomp> {
    let invalid = |reason: String| SpecError::SeccompProfileInvalid {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_absolute() {
        return Err(invalid("the path must be absolute".into()));
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SpecError::SeccompProfileMissing {
            path: path.to_path_buf(),
        },
        _ => invalid(e.to_string()),
    })?;
    if !meta.is_file() || meta.len() > MAX_SECCOMP_PROFILE_SIZE {
        return Err(invalid(format!(
            "not a regular file of at most {MAX_SECCOMP_PROFILE_SIZE} bytes"
        )));
    }
    let data = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    serde_json::from_slice(&data).map_err(|e| invalid(e.to_string()))
}

/// The request's annotations, then containerd's `io.kubernetes.cri.*` keys (which a
/// request cannot override).
fn annotations(input: &SpecInput<'_>) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = input.config.annotations.clone().into_iter().collect();
    let ours = [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.sandbox-id", input.pod.pod_id.as_str()),
        (
            "io.kubernetes.cri.container-name",
            input.config.name.as_str(),
        ),
        ("io.kubernetes.cri.image-name", input.config.image.as_str()),
    ];
    for (k, v) in ours {
        map.insert(k.to_string(), v.to_string());
    }
    map
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::container::config::SelinuxLabel;
    use crate::container::user::TestDir;

    const HOST_CAPS: [&str; 6] = [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_ADMIN",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_ADMIN",
        "CAP_AUDIT_WRITE",
    ];

    /// A rootfs with users, an image, a pod and defaults; each test changes what it checks.
    struct Fixture {
        rootfs: TestDir,
        config: ContainerConfig,
        image: ImageConfig,
        pod: PodContext,
        defaults: SpecDefaults,
        host: Vec<String>,
        apparmor: AppArmorHost,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let rootfs = TestDir::new(&format!("spec-{name}"));
            rootfs.write(
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
            );
            rootfs.write("etc/group", "root:x:0:\napp:x:1001:\nwheel:x:10:app\n");
            let pod_files = rootfs.0.join("pod");
            let pod = PodContext {
                pod_id: "pod1".into(),
                hostname: "web-0".into(),
                network_ns: Some("/run/crius/pods/pod1/ns/net".into()),
                ipc_ns: Some("/run/crius/pods/pod1/ns/ipc".into()),
                uts_ns: Some("/run/crius/pods/pod1/ns/uts".into()),
                resolv_conf: Some(rootfs.write("pod/resolv.conf", "nameserver 10.0.0.10\n")),
                hostname_file: Some(rootfs.write("pod/hostname", "web-0\n")),
                hosts_file: Some(pod_files.join("hosts-not-written")),
                ..PodContext::default()
            };
            let image = ImageConfig {
                entrypoint: vec!["/bin/app".into()],
                cmd: vec!["--serve".into()],
                env: vec!["PATH=/image/bin".into(), "LANG=C".into(), "BARE".into()],
                working_dir: "/srv".into(),
                user: "app".into(),
                ..ImageConfig::default()
            };
            let defaults = SpecDefaults {
                capabilities: vec![
                    "CAP_CHOWN".into(),
                    "CAP_KILL".into(),
                    "CAP_AUDIT_WRITE".into(),
                ],
                masked_paths: vec!["/proc/kcore".into()],
                readonly_paths: vec!["/proc/sys".into()],
                seccomp: blank(json!({ "defaultAction": "SCMP_ACT_ERRNO" })).unwrap(),
            };
            Fixture {
                rootfs,
                config: ContainerConfig {
                    name: "app".into(),
                    image: "registry.local/app:1".into(),
                    ..ContainerConfig::default()
                },
                image,
                pod,
                defaults,
                host: HOST_CAPS.iter().map(|c| c.to_string()).collect(),
                apparmor: AppArmorHost::default(),
            }
        }

        fn sc(&mut self) -> &mut SecurityContext {
            &mut self.config.security
        }

        fn build(&self) -> Result<Spec> {
            let input = SpecInput {
                config: &self.config,
                image: &self.image,
                rootfs: &self.rootfs.0,
                pod: &self.pod,
                defaults: &self.defaults,
                host_capabilities: &self.host,
                cgroups_path: "/kubepods/pod1/crius-c1".into(),
            };
            build_spec_on(&input, &self.apparmor)
        }

        fn spec(&self) -> Spec {
            self.build().unwrap()
        }

        fn kind(&self) -> ErrorKind {
            self.build().unwrap_err().kind()
        }
    }

    fn process(spec: &Spec) -> &Process {
        spec.process().as_ref().unwrap()
    }

    fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
        spec.linux().as_ref().unwrap()
    }

    fn args(spec: &Spec) -> Vec<String> {
        process(spec).args().clone().unwrap()
    }

    fn env(spec: &Spec) -> Vec<String> {
        process(spec).env().clone().unwrap()
    }

    fn caps(spec: &Spec) -> BTreeSet<String> {
        let c = process(spec).capabilities().as_ref().unwrap();
        let set = c.effective().clone().unwrap();
        assert_eq!(c.bounding().as_ref(), Some(&set));
        assert_eq!(c.permitted().as_ref(), Some(&set));
        set.iter().map(|c| format!("CAP_{c}")).collect()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn find_mount<'a>(spec: &'a Spec, destination: &str) -> Option<&'a Mount> {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(destination))
    }

    fn options(spec: &Spec, destination: &str) -> Vec<String> {
        find_mount(spec, destination)
            .unwrap_or_else(|| panic!("no mount at {destination}"))
            .options()
            .clone()
            .unwrap()
    }

    fn ns_types(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        linux(spec)
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect()
    }

    fn host_mount(dir: &TestDir, path: &str) -> CriMount {
        std::fs::create_dir_all(dir.0.join("host").join(path)).unwrap();
        CriMount {
            container_path: PathBuf::from("/").join(path),
            host_path: dir.0.join("host").join(path),
            ..CriMount::default()
        }
    }

    // -- process

    #[test]
    fn image_entrypoint_and_cmd_make_the_command() {
        let f = Fixture::new("args-image");
        assert_eq!(args(&f.spec()), vec!["/bin/app", "--serve"]);
    }

    #[test]
    fn cri_command_replaces_entrypoint_and_drops_cmd_and_args_replace_cmd() {
        let mut f = Fixture::new("args-cri");
        f.config.command = vec!["/bin/other".into()];
        assert_eq!(args(&f.spec()), vec!["/bin/other"]);
        f.config.args = vec!["-v".into()];
        assert_eq!(args(&f.spec()), vec!["/bin/other", "-v"]);
        f.config.command.clear();
        assert_eq!(args(&f.spec()), vec!["/bin/app", "-v"]);
    }

    #[test]
    fn no_command_anywhere_is_an_invalid_argument() {
        let mut f = Fixture::new("args-none");
        f.image.entrypoint.clear();
        f.image.cmd.clear();
        assert!(matches!(f.build(), Err(SpecError::NoCommand)));
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn env_is_image_then_request_with_defaults_for_path_hostname_and_home() {
        let mut f = Fixture::new("env");
        f.config.envs = vec![
            ("LANG".into(), "C.UTF-8".into()),
            ("EXTRA".into(), "1".into()),
        ];
        assert_eq!(
            env(&f.spec()),
            vec![
                "HOSTNAME=web-0",
                "PATH=/image/bin",
                "LANG=C.UTF-8",
                "BARE",
                "EXTRA=1",
                "HOME=/home/app"
            ]
        );
        f.image.env.clear();
        f.config.envs = vec![("HOME".into(), "/data".into())];
        assert_eq!(
            env(&f.spec()),
            vec![
                "HOSTNAME=web-0",
                "HOME=/data",
                &format!("PATH={DEFAULT_PATH}")
            ]
        );
    }

    #[test]
    fn working_dir_is_the_requests_else_the_images_else_root() {
        let mut f = Fixture::new("cwd");
        assert_eq!(process(&f.spec()).cwd(), Path::new("/srv"));
        f.config.working_dir = "/work".into();
        assert_eq!(process(&f.spec()).cwd(), Path::new("/work"));
        f.config.working_dir.clear();
        f.image.working_dir.clear();
        assert_eq!(process(&f.spec()).cwd(), Path::new("/"));
    }

    #[test]
    fn terminal_follows_tty() {
        let mut f = Fixture::new("tty");
        assert_eq!(process(&f.spec()).terminal(), Some(false));
        f.config.tty = true;
        assert_eq!(process(&f.spec()).terminal(), Some(true));
    }

    #[test]
    fn the_images_user_is_resolved_in_its_passwd_and_group() {
        let f = Fixture::new("user-image");
        let spec = f.spec();
        let user = process(&spec).user();
        assert_eq!((user.uid(), user.gid()), (1000, 1001));
        assert_eq!(user.additional_gids().clone().unwrap(), vec![1001, 10]);
    }

    #[test]
    fn run_as_user_and_group_win_over_the_image() {
        let mut f = Fixture::new("user-cri");
        f.sc().run_as_user = Some(0);
        f.sc().run_as_group = Some(5);
        f.sc().supplemental_groups = vec![7];
        let spec = f.spec();
        let user = process(&spec).user();
        assert_eq!((user.uid(), user.gid()), (0, 5));
        assert_eq!(user.additional_gids().clone().unwrap(), vec![5, 7]);
        f.sc().run_as_user = None;
        f.sc().run_as_username = "nobody-here".into();
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn a_hostile_passwd_symlink_never_reads_the_host_file() {
        let host = TestDir::new("spec-host-shadow");
        let shadow = host.write("shadow", "intruder:x:0:0::/root:/bin/sh\n");
        let mut f = Fixture::new("user-hostile");
        std::fs::remove_file(f.rootfs.0.join("etc/passwd")).unwrap();
        symlink(&shadow, f.rootfs.0.join("etc/passwd")).unwrap();
        f.image.user = "intruder".into();
        assert!(matches!(
            f.build(),
            Err(SpecError::User(UserError::UnknownUser { .. }))
        ));
    }

    // -- capabilities

    #[test]
    fn default_capabilities_with_inheritable_and_ambient_empty() {
        let f = Fixture::new("caps-default");
        let spec = f.spec();
        assert_eq!(
            caps(&spec),
            names(&["CAP_CHOWN", "CAP_KILL", "CAP_AUDIT_WRITE"])
        );
        let c = process(&spec).capabilities().clone().unwrap();
        assert!(c.inheritable().as_ref().unwrap().is_empty());
        assert!(c.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn add_and_drop_follow_containerds_order() {
        let mut f = Fixture::new("caps-add-drop");
        f.sc().add_capabilities = vec!["net_admin".into()];
        f.sc().drop_capabilities = vec!["CAP_KILL".into()];
        assert_eq!(
            caps(&f.spec()),
            names(&["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_AUDIT_WRITE"])
        );
        f.sc().add_capabilities = vec!["NET_BIND_SERVICE".into()];
        f.sc().drop_capabilities = vec!["ALL".into()];
        assert_eq!(caps(&f.spec()), names(&["CAP_NET_BIND_SERVICE"]));
        f.sc().add_capabilities = vec!["all".into()];
        f.sc().drop_capabilities = vec!["SYS_ADMIN".into()];
        let mut want = names(&HOST_CAPS);
        want.remove("CAP_SYS_ADMIN");
        assert_eq!(caps(&f.spec()), want);
    }

    #[test]
    fn unknown_or_unavailable_capabilities_are_refused() {
        let mut f = Fixture::new("caps-unknown");
        f.sc().add_capabilities = vec!["CAP_FLY".into()];
        assert!(matches!(
            f.build(),
            Err(SpecError::UnknownCapability { .. })
        ));
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
        f.sc().add_capabilities = vec!["SYS_RESOURCE".into()];
        assert_eq!(f.kind(), ErrorKind::FailedPrecondition);
    }

    #[test]
    fn ambient_capabilities_must_be_granted_and_become_inheritable() {
        let mut f = Fixture::new("caps-ambient");
        f.sc().add_ambient_capabilities = vec!["NET_BIND_SERVICE".into()];
        assert!(matches!(
            f.build(),
            Err(SpecError::AmbientNotGranted { .. })
        ));
        f.sc().add_capabilities = vec!["NET_BIND_SERVICE".into()];
        let spec = f.spec();
        let c = process(&spec).capabilities().clone().unwrap();
        let want: HashSet<Capability> = [Capability::NetBindService].into();
        assert_eq!(c.ambient().as_ref(), Some(&want));
        assert_eq!(c.inheritable().as_ref(), Some(&want));
    }

    // -- privileged and profiles

    #[test]
    fn privileged_gets_every_host_capability_and_no_confinement() {
        let mut f = Fixture::new("privileged");
        f.pod.privileged = true;
        f.sc().privileged = true;
        f.sc().drop_capabilities = vec!["ALL".into()];
        f.apparmor.enabled = true;
        let spec = f.spec();
        assert_eq!(caps(&spec), names(&HOST_CAPS));
        assert!(linux(&spec).seccomp().is_none());
        assert!(linux(&spec).masked_paths().as_ref().unwrap().is_empty());
        assert!(linux(&spec).readonly_paths().as_ref().unwrap().is_empty());
        assert!(options(&spec, "/sys").contains(&"rw".to_string()));
        assert_eq!(
            process(&spec).apparmor_profile().as_deref(),
            Some("unconfined")
        );
        let rules = linux(&spec)
            .resources()
            .clone()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(rules
            .iter()
            .any(|r| r.allow() && r.typ().is_none() && r.major().is_none()));
    }

    #[test]
    fn a_privileged_container_gets_the_hosts_devices() {
        let mut f = Fixture::new("privileged-devices");
        f.pod.privileged = true;
        f.sc().privileged = true;
        let spec = f.spec();
        let nodes = linux(&spec).devices().clone().unwrap();
        if Path::new("/dev/kmsg").exists() {
            let kmsg = nodes
                .iter()
                .find(|d| d.path() == Path::new("/dev/kmsg"))
                .unwrap();
            assert_eq!(
                (kmsg.typ(), kmsg.major(), kmsg.minor()),
                (LinuxDeviceType::C, 1, 11)
            );
        }
        assert!(nodes.iter().all(|d| d.path().starts_with("/dev")));
        assert!(nodes.iter().all(|d| !d.path().starts_with("/dev/pts")));
        assert!(!nodes.iter().any(|d| d.path() == Path::new("/dev/null")));
        f.sc().privileged = false;
        assert!(linux(&f.spec()).devices().as_ref().unwrap().is_empty());
    }

    #[test]
    fn a_privileged_container_needs_a_privileged_pod() {
        let mut f = Fixture::new("privileged-pod");
        f.sc().privileged = true;
        assert!(matches!(
            f.build(),
            Err(SpecError::PrivilegedInUnprivilegedPod)
        ));
    }

    #[test]
    fn no_new_privs_follows_the_request() {
        let mut f = Fixture::new("nnp");
        assert_eq!(process(&f.spec()).no_new_privileges(), Some(false));
        f.sc().no_new_privs = true;
        assert_eq!(process(&f.spec()).no_new_privileges(), Some(true));
    }

    #[test]
    fn seccomp_runtime_default_unconfined_and_localhost() {
        let mut f = Fixture::new("seccomp");
        assert_eq!(
            linux(&f.spec()).seccomp().as_ref(),
            Some(&f.defaults.seccomp)
        );
        f.sc().seccomp = Profile::Unconfined;
        assert!(linux(&f.spec()).seccomp().is_none());
        let profile = f.rootfs.write(
            "node/profile.json",
            r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        f.sc().seccomp = Profile::Localhost(format!("localhost/{}", profile.display()));
        let spec = f.spec();
        let loaded = linux(&spec).seccomp().clone().unwrap();
        assert_eq!(
            loaded.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActLog
        );
        f.sc().seccomp = Profile::Localhost("/nonexistent/profile.json".into());
        assert_eq!(f.kind(), ErrorKind::NotFound);
        let bad = f.rootfs.write("node/bad.json", "{ not json");
        f.sc().seccomp = Profile::Localhost(bad.display().to_string());
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn apparmor_follows_the_hosts_support() {
        let mut f = Fixture::new("apparmor");
        assert_eq!(process(&f.spec()).apparmor_profile(), &None);
        f.sc().apparmor = Profile::Localhost("my-profile".into());
        assert!(matches!(f.build(), Err(SpecError::AppArmorDisabled { .. })));
        f.apparmor.enabled = true;
        assert_eq!(f.kind(), ErrorKind::NotFound);
        f.apparmor.profiles.insert("my-profile".into());
        assert_eq!(
            process(&f.spec()).apparmor_profile().as_deref(),
            Some("my-profile")
        );
        f.sc().apparmor = Profile::RuntimeDefault;
        assert_eq!(process(&f.spec()).apparmor_profile(), &None);
        f.apparmor.profiles.insert(APPARMOR_DEFAULT_PROFILE.into());
        assert_eq!(
            process(&f.spec()).apparmor_profile().as_deref(),
            Some(APPARMOR_DEFAULT_PROFILE)
        );
        f.sc().apparmor = Profile::Unconfined;
        assert_eq!(
            process(&f.spec()).apparmor_profile().as_deref(),
            Some("unconfined")
        );
    }

    #[test]
    fn probing_apparmor_never_fails() {
        let host = AppArmorHost::probe();
        assert!(host.enabled || host.profiles.is_empty());
    }

    #[test]
    fn the_selinux_label_is_joined() {
        let mut f = Fixture::new("selinux");
        assert_eq!(process(&f.spec()).selinux_label(), &None);
        f.sc().selinux_label = Some(SelinuxLabel {
            user: "system_u".into(),
            role: "system_r".into(),
            r#type: "container_t".into(),
            level: "s0:c1,c2".into(),
        });
        assert_eq!(
            process(&f.spec()).selinux_label().as_deref(),
            Some("system_u:system_r:container_t:s0:c1,c2")
        );
    }

    #[test]
    fn masked_and_readonly_paths_are_the_defaults_unless_given() {
        let mut f = Fixture::new("masked");
        let spec = f.spec();
        assert_eq!(
            linux(&spec).masked_paths().clone().unwrap(),
            vec!["/proc/kcore"]
        );
        assert_eq!(
            linux(&spec).readonly_paths().clone().unwrap(),
            vec!["/proc/sys"]
        );
        f.sc().masked_paths = Some(Vec::new());
        f.sc().readonly_paths = Some(vec!["/proc/bus".into()]);
        let spec = f.spec();
        assert!(linux(&spec).masked_paths().as_ref().unwrap().is_empty());
        assert_eq!(
            linux(&spec).readonly_paths().clone().unwrap(),
            vec!["/proc/bus"]
        );
    }

    // -- mounts

    #[test]
    fn standard_mounts_are_present_and_sys_is_read_only() {
        let f = Fixture::new("mounts-std");
        let spec = f.spec();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
        ] {
            assert!(find_mount(&spec, d).is_some(), "{d}");
        }
        assert!(options(&spec, "/sys").contains(&"ro".to_string()));
        assert!(options(&spec, "/sys/fs/cgroup").contains(&"ro".to_string()));
        assert_eq!(
            find_mount(&spec, "/dev/shm").unwrap().typ().as_deref(),
            Some("tmpfs")
        );
    }

    #[test]
    fn dev_shm_is_the_pods_or_the_hosts_when_shared() {
        let mut f = Fixture::new("mounts-shm");
        f.pod.shm = Some("/run/crius/pods/pod1/shm".into());
        let spec = f.spec();
        let shm = find_mount(&spec, "/dev/shm").unwrap();
        assert_eq!(
            shm.source().as_deref(),
            Some(Path::new("/run/crius/pods/pod1/shm"))
        );
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        f.pod.host_ipc = true;
        let spec = f.spec();
        let shm = find_mount(&spec, "/dev/shm").unwrap();
        assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
    }

    #[test]
    fn pod_files_are_bound_read_only_with_a_read_only_rootfs() {
        let mut f = Fixture::new("mounts-pod-files");
        let spec = f.spec();
        assert!(options(&spec, "/etc/resolv.conf").contains(&"rw".to_string()));
        assert!(find_mount(&spec, "/etc/hostname").is_some());
        assert!(
            find_mount(&spec, "/etc/hosts").is_none(),
            "absent pod file is skipped"
        );
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        f.sc().readonly_rootfs = true;
        let spec = f.spec();
        assert!(options(&spec, "/etc/resolv.conf").contains(&"ro".to_string()));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert_eq!(spec.root().as_ref().unwrap().path(), &f.rootfs.0);
    }

    #[test]
    fn cri_mounts_are_recursive_binds_with_propagation_and_read_only() {
        let mut f = Fixture::new("mounts-cri");
        let mut data = host_mount(&f.rootfs, "data");
        data.readonly = true;
        data.recursive_read_only = true;
        let mut logs = host_mount(&f.rootfs, "logs");
        logs.propagation = Propagation::HostToContainer;
        f.config.mounts = vec![data, logs];
        let spec = f.spec();
        assert_eq!(
            options(&spec, "/data"),
            vec!["rbind", "rprivate", "ro", "rro"]
        );
        assert_eq!(options(&spec, "/logs"), vec!["rbind", "rslave", "rw"]);
        assert_eq!(linux(&spec).rootfs_propagation().as_deref(), Some("rslave"));
        let source = find_mount(&spec, "/data")
            .unwrap()
            .source()
            .clone()
            .unwrap();
        assert_eq!(source, f.rootfs.0.join("host/data").canonicalize().unwrap());
    }

    #[test]
    fn bad_cri_mounts_are_refused_with_the_right_kind() {
        let mut f = Fixture::new("mounts-bad");
        let mut missing = host_mount(&f.rootfs, "m");
        missing.host_path = "/nonexistent/crius/path".into();
        f.config.mounts = vec![missing];
        assert!(matches!(f.build(), Err(SpecError::HostPathMissing { .. })));
        assert_eq!(f.kind(), ErrorKind::NotFound);
        let mut relative = host_mount(&f.rootfs, "m");
        relative.container_path = "data/../etc".into();
        f.config.mounts = vec![relative];
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
        let mut rro = host_mount(&f.rootfs, "m");
        rro.recursive_read_only = true;
        f.config.mounts = vec![rro];
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
        let mut shared = host_mount(&f.rootfs, "m");
        shared.propagation = Propagation::Bidirectional;
        f.config.mounts = vec![shared];
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
        f.pod.privileged = true;
        f.sc().privileged = true;
        let spec = f.spec();
        assert_eq!(options(&spec, "/m")[1], "rshared");
        assert_eq!(
            linux(&spec).rootfs_propagation().as_deref(),
            Some("rshared")
        );
    }

    #[test]
    fn a_cri_mount_replaces_the_standard_one_and_parents_come_first() {
        let mut f = Fixture::new("mounts-order");
        let mut hosts = host_mount(&f.rootfs, "x");
        hosts.container_path = "/etc/resolv.conf".into();
        let child = host_mount(&f.rootfs, "data/sub");
        let parent = host_mount(&f.rootfs, "data");
        f.config.mounts = vec![child, hosts, parent];
        let spec = f.spec();
        let mounts = spec.mounts().clone().unwrap();
        let resolv: Vec<_> = mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/resolv.conf"))
            .collect();
        assert_eq!(resolv.len(), 1);
        assert_eq!(
            resolv[0].source().clone().unwrap(),
            f.rootfs.0.join("host/x")
        );
        let position = |d: &str| mounts.iter().position(|m| m.destination() == Path::new(d));
        assert!(position("/data") < position("/data/sub"));
        assert!(position("/dev") < position("/dev/pts"));
        assert!(position("/sys") < position("/sys/fs/cgroup"));
    }

    #[test]
    fn volumes_not_covered_by_mounts_are_returned_cleaned() {
        let mut f = Fixture::new("volumes");
        f.image.volumes = vec![
            "/var/lib/db".into(),
            "/data/".into(),
            "/cache/./x".into(),
            "relative".into(),
            "/../../escape".into(),
            "/".into(),
        ];
        f.config.mounts = vec![host_mount(&f.rootfs, "data")];
        assert_eq!(
            volumes(&f.config, &f.image),
            vec![PathBuf::from("/cache/x"), PathBuf::from("/var/lib/db")]
        );
    }

    // -- devices

    #[test]
    fn devices_are_stat_ed_and_allowed_in_the_device_cgroup() {
        let mut f = Fixture::new("devices");
        f.config.devices = vec![Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        }];
        let spec = f.spec();
        let node = &linux(&spec).devices().clone().unwrap()[0];
        assert_eq!(node.path(), Path::new("/dev/mynull"));
        assert_eq!(
            (node.typ(), node.major(), node.minor()),
            (LinuxDeviceType::C, 1, 3)
        );
        let rules = linux(&spec)
            .resources()
            .clone()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(!rules[0].allow() && rules[0].access().as_deref() == Some("rwm"));
        assert!(rules
            .iter()
            .any(|r| r.allow() && r.major() == Some(136) && r.minor().is_none()));
        let last = rules.last().unwrap();
        assert_eq!(
            (last.major(), last.minor(), last.access().as_deref()),
            (Some(1), Some(3), Some("rw"))
        );
    }

    #[test]
    fn missing_or_non_device_paths_are_refused() {
        let mut f = Fixture::new("devices-bad");
        let device = |host: &str, perms: &str| Device {
            container_path: "/dev/x".into(),
            host_path: host.into(),
            permissions: perms.into(),
        };
        f.config.devices = vec![device("/dev/crius-none", "")];
        assert_eq!(f.kind(), ErrorKind::NotFound);
        f.config.devices = vec![device("/etc/hostname", "")];
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
        f.config.devices = vec![device("/dev/null", "rwx")];
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
    }

    // -- namespaces

    #[test]
    fn namespaces_join_the_pod_and_are_new_for_mount_cgroup_and_pid() {
        use LinuxNamespaceType as T;
        let f = Fixture::new("ns");
        let spec = f.spec();
        let ns = ns_types(&spec);
        assert!(ns.contains(&(T::Network, Some("/run/crius/pods/pod1/ns/net".into()))));
        assert!(ns.contains(&(T::Ipc, Some("/run/crius/pods/pod1/ns/ipc".into()))));
        assert!(ns.contains(&(T::Uts, Some("/run/crius/pods/pod1/ns/uts".into()))));
        for new in [T::Mount, T::Cgroup, T::Pid] {
            assert!(ns.contains(&(new, None)), "{new:?}");
        }
        assert!(!ns.iter().any(|(t, _)| *t == T::User));
        assert_eq!(spec.hostname().as_deref(), Some("web-0"));
    }

    #[test]
    fn host_namespaces_are_not_listed_and_host_network_sets_no_hostname() {
        use LinuxNamespaceType as T;
        let mut f = Fixture::new("ns-host");
        f.pod.host_network = true;
        f.pod.host_ipc = true;
        f.pod.network_ns = None;
        f.sc().pid_namespace = PidNamespace::Host;
        let spec = f.spec();
        let types: Vec<_> = ns_types(&spec).into_iter().map(|(t, _)| t).collect();
        assert_eq!(types, vec![T::Mount, T::Cgroup]);
        assert_eq!(spec.hostname(), &None);
        assert!(env(&spec).contains(&"HOSTNAME=web-0".to_string()));
    }

    #[test]
    fn pod_pid_namespace_must_exist_to_be_joined() {
        use LinuxNamespaceType as T;
        let mut f = Fixture::new("ns-pid");
        f.sc().pid_namespace = PidNamespace::Pod;
        assert!(matches!(
            f.build(),
            Err(SpecError::MissingPodNamespace { kind: "pid" })
        ));
        assert_eq!(f.kind(), ErrorKind::FailedPrecondition);
        f.pod.pid_ns = Some("/run/crius/pods/pod1/ns/pid".into());
        assert!(ns_types(&f.spec()).contains(&(T::Pid, Some("/run/crius/pods/pod1/ns/pid".into()))));
        f.pod.network_ns = None;
        assert!(matches!(
            f.build(),
            Err(SpecError::MissingPodNamespace { kind: "network" })
        ));
    }

    #[test]
    fn the_pods_user_namespace_is_joined_with_its_mappings() {
        let mut f = Fixture::new("ns-user");
        f.pod.user_ns = Some("/run/crius/pods/pod1/ns/user".into());
        let map = IdMapping {
            container_id: 0,
            host_id: 100_000,
            length: 65536,
        };
        f.pod.uid_mappings = vec![map];
        f.pod.gid_mappings = vec![map];
        let spec = f.spec();
        assert!(ns_types(&spec).contains(&(
            LinuxNamespaceType::User,
            Some("/run/crius/pods/pod1/ns/user".into())
        )));
        let uids = linux(&spec).uid_mappings().clone().unwrap();
        assert_eq!((uids[0].host_id(), uids[0].size()), (100_000, 65536));
        assert_eq!(linux(&spec).gid_mappings().clone().unwrap().len(), 1);
    }

    // -- resources and the rest

    #[test]
    fn resources_map_to_the_linux_section_and_oom_score_adj() {
        let mut f = Fixture::new("resources");
        f.config.resources = Resources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 999,
            cpuset_cpus: "0-1".into(),
            hugepage_limits: [("2MB".to_string(), 4u64 << 20)].into(),
            unified: [("memory.high".to_string(), "50M".to_string())].into(),
            ..Resources::default()
        };
        let spec = f.spec();
        let r = linux(&spec).resources().clone().unwrap();
        let cpu = r.cpu().clone().unwrap();
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (Some(512), Some(50_000), Some(100_000))
        );
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems(), &None);
        let memory = r.memory().unwrap();
        assert_eq!(
            (memory.limit(), memory.swap()),
            (Some(64 << 20), Some(64 << 20))
        );
        assert_eq!(r.hugepage_limits().clone().unwrap()[0].limit(), 4 << 20);
        assert_eq!(r.unified().clone().unwrap()["memory.high"], "50M");
        assert_eq!(process(&spec).oom_score_adj(), Some(999));
        assert_eq!(
            linux(&spec).cgroups_path().as_deref(),
            Some(Path::new("/kubepods/pod1/crius-c1"))
        );
    }

    #[test]
    fn unset_resources_are_absent_and_bad_ones_refused() {
        let mut f = Fixture::new("resources-bad");
        let spec = f.spec();
        let r = linux(&spec).resources().clone().unwrap();
        assert!(r.cpu().is_none() && r.memory().is_none() && r.hugepage_limits().is_none());
        assert_eq!(process(&spec).oom_score_adj(), Some(0));
        f.config.resources.oom_score_adj = 1001;
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
        f.config.resources.oom_score_adj = 0;
        f.config.resources.cpu_shares = -2;
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
        f.config.resources.cpu_shares = 0;
        f.config.resources.memory_limit_in_bytes = 100;
        f.config.resources.memory_swap_limit_in_bytes = 50;
        assert_eq!(f.kind(), ErrorKind::InvalidArgument);
        f.config.resources.memory_swap_limit_in_bytes = -1;
        assert_eq!(
            linux(&f.spec())
                .resources()
                .clone()
                .unwrap()
                .memory()
                .unwrap()
                .swap(),
            Some(-1)
        );
    }

    #[test]
    fn annotations_are_copied_and_cri_keys_cannot_be_spoofed() {
        let mut f = Fixture::new("annotations");
        f.config.annotations = [
            ("team".to_string(), "a".to_string()),
            (
                "io.kubernetes.cri.sandbox-id".to_string(),
                "other".to_string(),
            ),
        ]
        .into();
        let spec = f.spec();
        let a = spec.annotations().clone().unwrap();
        assert_eq!(a["team"], "a");
        assert_eq!(a["io.kubernetes.cri.sandbox-id"], "pod1");
        assert_eq!(a["io.kubernetes.cri.container-type"], "container");
        assert_eq!(a["io.kubernetes.cri.container-name"], "app");
        assert_eq!(a["io.kubernetes.cri.image-name"], "registry.local/app:1");
    }

    #[test]
    fn the_spec_carries_nothing_the_request_did_not_ask_for() {
        let f = Fixture::new("blank");
        let json = serde_json::to_value(f.spec()).unwrap();
        assert_eq!(json["ociVersion"], oci_spec::runtime::VERSION);
        assert!(json["process"].get("rlimits").is_none());
        assert!(json.get("hooks").is_none());
        assert!(json["linux"].get("sysctl").is_none());
        assert_eq!(json["process"]["user"]["uid"], 1000);
    }

    #[test]
    fn image_config_is_read_from_the_config_object_leniently() {
        let image = ImageConfig::from_json(&json!({
            "architecture": "amd64",
            "config": {
                "Entrypoint": null,
                "Cmd": ["sh", 5, "-c"],
                "Env": ["A=1"],
                "WorkingDir": "/w",
                "User": "1:2",
                "StopSignal": "SIGQUIT",
                "Volumes": { "/v": {} },
                "Labels": { "l": "x", "n": 1 }
            }
        }));
        assert!(image.entrypoint.is_empty());
        assert_eq!(image.cmd, vec!["sh", "-c"]);
        assert_eq!(
            (image.working_dir.as_str(), image.user.as_str()),
            ("/w", "1:2")
        );
        assert_eq!(image.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(image.volumes, vec!["/v"]);
        assert_eq!(image.labels.len(), 1);
        assert_eq!(
            ImageConfig::from_json(&json!("garbage")),
            ImageConfig::default()
        );
    }
}

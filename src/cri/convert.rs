//! CRI messages → domain types. Validation that needs nothing but the request happens
//! here and fails with `InvalidArgument` naming the field to change.

use std::path::PathBuf;

use crius_core::container::config as domain;
use crius_core::pod::config::{DnsConfig, IdMapping, IdMappings, PodConfig, PortMapping, Protocol};

use super::CriError;
use crate::api;

fn invalid(message: String) -> CriError {
    CriError::InvalidArgument(message)
}

/// `CreateContainerRequest.config` → the domain's container config.
pub(crate) fn container_config(
    c: api::ContainerConfig,
) -> Result<domain::ContainerConfig, CriError> {
    let metadata = c
        .metadata
        .ok_or_else(|| invalid("config.metadata is required".into()))?;
    if metadata.name.is_empty() {
        return Err(invalid("config.metadata.name must not be empty".into()));
    }
    let image = c.image.map(|i| i.image).unwrap_or_default();
    if image.is_empty() {
        return Err(invalid("config.image.image must name an image".into()));
    }
    let linux = c.linux.unwrap_or_default();
    Ok(domain::ContainerConfig {
        name: metadata.name,
        attempt: metadata.attempt,
        image,
        command: c.command,
        args: c.args,
        working_dir: c.working_dir,
        envs: c.envs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        mounts: c.mounts.into_iter().map(mount).collect::<Result<_, _>>()?,
        devices: c.devices.into_iter().map(device).collect(),
        labels: c.labels.into_iter().collect(),
        annotations: c.annotations.into_iter().collect(),
        log_path: c.log_path,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        resources: linux.resources.map(resources).unwrap_or_default(),
        security: linux
            .security_context
            .map(security_context)
            .transpose()?
            .unwrap_or_default(),
        stop_signal: None,
    })
}

fn mount(m: api::Mount) -> Result<domain::Mount, CriError> {
    if !m.container_path.starts_with('/') {
        return Err(invalid(format!(
            "mount container_path {:?} must be absolute",
            m.container_path
        )));
    }
    let image = image_volume(&m)?;
    if m.uid_mappings.is_empty() != m.gid_mappings.is_empty()
        || m.uid_mappings
            .iter()
            .chain(&m.gid_mappings)
            .any(|i| i.length == 0)
    {
        return Err(invalid(format!(
            "mount {}: uidMappings and gidMappings go together, each range at least 1 long",
            m.container_path
        )));
    }
    let mapping = |i: &api::IdMapping| IdMapping {
        container_id: i.container_id,
        host_id: i.host_id,
        length: i.length,
    };
    if image.is_none() && !m.host_path.starts_with('/') {
        return Err(invalid(format!(
            "mount host_path {:?} must be absolute",
            m.host_path
        )));
    }
    if m.recursive_read_only && !m.readonly {
        return Err(invalid(format!(
            "mount {}: recursive_read_only needs readonly",
            m.container_path
        )));
    }
    let propagation = match api::MountPropagation::try_from(m.propagation) {
        Ok(api::MountPropagation::PropagationPrivate) => domain::Propagation::Private,
        Ok(api::MountPropagation::PropagationHostToContainer) => {
            domain::Propagation::HostToContainer
        }
        Ok(api::MountPropagation::PropagationBidirectional) => domain::Propagation::Bidirectional,
        Err(_) => {
            return Err(invalid(format!(
                "mount {}: unknown propagation {}",
                m.container_path, m.propagation
            )))
        }
    };
    Ok(domain::Mount {
        container_path: PathBuf::from(m.container_path),
        // An image volume's source is the image, mounted by crius: a host path given
        // beside it is not used (as containerd does).
        host_path: if image.is_some() {
            PathBuf::new()
        } else {
            PathBuf::from(m.host_path)
        },
        // Image volumes are read-only whatever the request says.
        readonly: m.readonly || image.is_some(),
        recursive_read_only: m.recursive_read_only,
        selinux_relabel: m.selinux_relabel,
        propagation,
        image,
        uid_mappings: m.uid_mappings.iter().map(mapping).collect(),
        gid_mappings: m.gid_mappings.iter().map(mapping).collect(),
    })
}

/// The image of an image volume (`Mount.image`), with its sub path: relative, without
/// `..`, and only given with an image.
fn image_volume(m: &api::Mount) -> Result<Option<domain::ImageVolume>, CriError> {
    let image = m
        .image
        .as_ref()
        .map(|i| i.image.as_str())
        .filter(|i| !i.is_empty());
    let Some(image) = image else {
        if !m.image_sub_path.is_empty() {
            return Err(invalid(format!(
                "mount {}: image_sub_path is only for image volumes; set image.image too",
                m.container_path
            )));
        }
        return Ok(None);
    };
    let sub_path = PathBuf::from(&m.image_sub_path);
    if sub_path
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(invalid(format!(
            "mount {}: image_sub_path {:?} must be a path inside the image: relative, \
             without '.' or '..'",
            m.container_path, m.image_sub_path
        )));
    }
    Ok(Some(domain::ImageVolume {
        image: image.to_string(),
        sub_path,
    }))
}

fn device(d: api::Device) -> domain::Device {
    domain::Device {
        container_path: PathBuf::from(d.container_path),
        host_path: PathBuf::from(d.host_path),
        permissions: d.permissions,
    }
}

pub(crate) fn resources(r: api::LinuxContainerResources) -> domain::Resources {
    domain::Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus,
        cpuset_mems: r.cpuset_mems,
        hugepage_limits: r
            .hugepage_limits
            .into_iter()
            .map(|h| (h.page_size, h.limit))
            .collect(),
        unified: r.unified.into_iter().collect(),
    }
}

fn security_context(
    s: api::LinuxContainerSecurityContext,
) -> Result<domain::SecurityContext, CriError> {
    let caps = s.capabilities.unwrap_or_default();
    let ns = s.namespace_options.unwrap_or_default();
    let pid_namespace = match api::NamespaceMode::try_from(ns.pid) {
        Ok(api::NamespaceMode::Container) => domain::PidNamespace::Container,
        Ok(api::NamespaceMode::Pod) => domain::PidNamespace::Pod,
        Ok(api::NamespaceMode::Node) => domain::PidNamespace::Host,
        Ok(api::NamespaceMode::Target) => {
            return Err(invalid(
                "namespace_options.pid TARGET is not supported by crius".into(),
            ))
        }
        Err(_) => {
            return Err(invalid(format!(
                "namespace_options.pid: unknown mode {}",
                ns.pid
            )))
        }
    };
    let strict =
        api::SupplementalGroupsPolicy::try_from(s.supplemental_groups_policy).map_err(|_| {
            invalid(format!(
                "unknown supplemental_groups_policy {}",
                s.supplemental_groups_policy
            ))
        })? == api::SupplementalGroupsPolicy::Strict;
    Ok(domain::SecurityContext {
        privileged: s.privileged,
        add_capabilities: caps.add_capabilities,
        drop_capabilities: caps.drop_capabilities,
        add_ambient_capabilities: caps.add_ambient_capabilities,
        run_as_user: s.run_as_user.map(|v| v.value),
        run_as_group: s.run_as_group.map(|v| v.value),
        run_as_username: s.run_as_username,
        readonly_rootfs: s.readonly_rootfs,
        supplemental_groups: s.supplemental_groups,
        supplemental_groups_strict: strict,
        no_new_privs: s.no_new_privs,
        // The CRI cannot tell "unset" from "empty" for these lists; kubelet sends the
        // defaults it wants (or empty for `procMount: Unmasked`), so an empty list keeps
        // crius's defaults and only a non-empty one replaces them.
        masked_paths: Some(s.masked_paths).filter(|p| !p.is_empty()),
        readonly_paths: Some(s.readonly_paths).filter(|p| !p.is_empty()),
        seccomp: profile("seccomp", s.seccomp, &s.seccomp_profile_path)?,
        apparmor: profile("apparmor", s.apparmor, &s.apparmor_profile)?,
        selinux_label: s.selinux_options.map(|o| domain::SelinuxLabel {
            user: o.user,
            role: o.role,
            r#type: o.r#type,
            level: o.level,
        }),
        pid_namespace,
    })
}

/// A seccomp or AppArmor profile from the structured field, else the legacy string.
/// Nothing set means RuntimeDefault: crius is secure by default, as CRI-O is (containerd
/// would run such a container unconfined).
fn profile(
    what: &str,
    structured: Option<api::SecurityProfile>,
    legacy: &str,
) -> Result<domain::Profile, CriError> {
    use api::security_profile::ProfileType;
    if let Some(p) = structured {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(domain::Profile::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(domain::Profile::Unconfined),
            Ok(ProfileType::Localhost) if !p.localhost_ref.is_empty() => {
                Ok(domain::Profile::Localhost(p.localhost_ref))
            }
            Ok(ProfileType::Localhost) => Err(invalid(format!(
                "{what}: Localhost profile needs localhost_ref"
            ))),
            Err(_) => Err(invalid(format!(
                "{what}: unknown profile type {}",
                p.profile_type
            ))),
        };
    }
    match legacy {
        "" | "runtime/default" | "docker/default" => Ok(domain::Profile::RuntimeDefault),
        "unconfined" => Ok(domain::Profile::Unconfined),
        other => match other.strip_prefix("localhost/") {
            Some(path) if !path.is_empty() => Ok(domain::Profile::Localhost(path.to_string())),
            _ => Err(invalid(format!(
                "{what} profile {other:?}: use runtime/default, unconfined or localhost/<name>"
            ))),
        },
    }
}

/// `RunPodSandboxRequest` → the domain's pod config.
pub(crate) fn pod_config(
    c: api::PodSandboxConfig,
    runtime_handler: String,
) -> Result<PodConfig, CriError> {
    let metadata = c
        .metadata
        .ok_or_else(|| invalid("config.metadata is required".into()))?;
    if metadata.name.is_empty() || metadata.namespace.is_empty() || metadata.uid.is_empty() {
        return Err(invalid(
            "config.metadata needs name, namespace and uid".into(),
        ));
    }
    let linux = c.linux.unwrap_or_default();
    let security = linux.security_context.unwrap_or_default();
    let ns = security.namespace_options.unwrap_or_default();
    let mode = |field: &str, v: i32| {
        api::NamespaceMode::try_from(v)
            .map_err(|_| invalid(format!("namespace_options.{field}: unknown mode {v}")))
    };
    let network = mode("network", ns.network)?;
    let pid = mode("pid", ns.pid)?;
    let ipc = mode("ipc", ns.ipc)?;
    Ok(PodConfig {
        name: metadata.name,
        uid: metadata.uid,
        namespace: metadata.namespace,
        attempt: metadata.attempt,
        hostname: c.hostname,
        log_directory: c.log_directory,
        dns: c.dns_config.map(|d| DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings: c
            .port_mappings
            .into_iter()
            .map(port_mapping)
            .collect::<Result<_, _>>()?,
        labels: c.labels.into_iter().collect(),
        annotations: c.annotations.into_iter().collect(),
        cgroup_parent: linux.cgroup_parent,
        sysctls: linux.sysctls.into_iter().collect(),
        host_network: network == api::NamespaceMode::Node,
        host_pid: pid == api::NamespaceMode::Node,
        host_ipc: ipc == api::NamespaceMode::Node,
        share_pid: pid == api::NamespaceMode::Pod,
        user_namespace: ns.userns_options.map(user_namespace).transpose()?.flatten(),
        privileged: security.privileged,
        runtime_handler,
        resources: linux.resources.map(resources),
    })
}

fn port_mapping(p: api::PortMapping) -> Result<PortMapping, CriError> {
    let port = |what: &str, v: i32| {
        u16::try_from(v)
            .map_err(|_| invalid(format!("port_mappings: {what} {v} is not a port number")))
    };
    let protocol = match api::Protocol::try_from(p.protocol) {
        Ok(api::Protocol::Tcp) => Protocol::Tcp,
        Ok(api::Protocol::Udp) => Protocol::Udp,
        Ok(api::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => {
            return Err(invalid(format!(
                "port_mappings: unknown protocol {}",
                p.protocol
            )))
        }
    };
    let host_ip = if p.host_ip.is_empty() {
        None
    } else {
        Some(p.host_ip.parse().map_err(|_| {
            invalid(format!(
                "port_mappings: host_ip {:?} is not an IP",
                p.host_ip
            ))
        })?)
    };
    Ok(PortMapping {
        protocol,
        container_port: port("container_port", p.container_port)?,
        host_port: port("host_port", p.host_port)?,
        host_ip,
    })
}

/// `userns_options`: `POD` mode with mappings asks for a user namespace; `NODE` (or no
/// options) runs in the host's.
fn user_namespace(u: api::UserNamespace) -> Result<Option<IdMappings>, CriError> {
    match api::NamespaceMode::try_from(u.mode) {
        Ok(api::NamespaceMode::Node) => Ok(None),
        Ok(api::NamespaceMode::Pod) => {
            if u.uids.is_empty() || u.gids.is_empty() {
                return Err(invalid(
                    "userns_options: POD mode needs uid and gid mappings".into(),
                ));
            }
            let map = |m: &api::IdMapping| IdMapping {
                container_id: m.container_id,
                host_id: m.host_id,
                length: m.length,
            };
            Ok(Some(IdMappings {
                uids: u.uids.iter().map(map).collect(),
                gids: u.gids.iter().map(map).collect(),
            }))
        }
        _ => Err(invalid(format!(
            "userns_options: mode {} is not supported; use POD or NODE",
            u.mode
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> api::ContainerConfig {
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: "c".into(),
                attempt: 1,
            }),
            image: Some(api::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn missing_metadata_or_image_is_invalid() {
        let mut c = minimal();
        c.metadata = None;
        assert!(
            matches!(container_config(c), Err(CriError::InvalidArgument(m)) if m.contains("metadata"))
        );
        let mut c = minimal();
        c.image = None;
        assert!(
            matches!(container_config(c), Err(CriError::InvalidArgument(m)) if m.contains("image"))
        );
    }

    #[test]
    fn unset_profiles_are_runtime_default() {
        let c = container_config(minimal()).unwrap();
        assert_eq!(c.security.seccomp, domain::Profile::RuntimeDefault);
        assert_eq!(c.security.apparmor, domain::Profile::RuntimeDefault);
    }

    #[test]
    fn legacy_and_structured_profiles() {
        assert_eq!(
            profile("s", None, "unconfined").unwrap(),
            domain::Profile::Unconfined
        );
        assert_eq!(
            profile("s", None, "localhost/x.json").unwrap(),
            domain::Profile::Localhost("x.json".into())
        );
        assert!(profile("s", None, "bogus").is_err());
        let p = api::SecurityProfile {
            profile_type: 2,
            localhost_ref: String::new(),
        };
        assert!(profile("s", Some(p), "").is_err());
    }

    #[test]
    fn relative_mount_paths_are_refused() {
        let mut c = minimal();
        c.mounts.push(api::Mount {
            container_path: "data".into(),
            host_path: "/tmp".into(),
            ..Default::default()
        });
        assert!(container_config(c).is_err());
        let mut c = minimal();
        c.mounts.push(api::Mount {
            container_path: "/data".into(),
            host_path: "/tmp".into(),
            recursive_read_only: true,
            ..Default::default()
        });
        assert!(container_config(c).is_err(), "rro without ro accepted");
    }

    #[test]
    fn image_volumes_are_read_only_and_their_sub_paths_stay_inside() {
        let volume = |sub: &str| api::Mount {
            container_path: "/data".into(),
            host_path: "/ignored".into(),
            image: Some(api::ImageSpec {
                image: "registry.local/data:1".into(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            ..Default::default()
        };
        let mut c = minimal();
        c.mounts.push(volume("models/v1"));
        let m = &container_config(c).unwrap().mounts[0];
        assert!(m.readonly, "an image volume must be read-only");
        assert_eq!(
            m.host_path,
            PathBuf::new(),
            "the host path beside an image is used"
        );
        let image = m.image.as_ref().unwrap();
        assert_eq!(image.image, "registry.local/data:1");
        assert_eq!(image.sub_path, PathBuf::from("models/v1"));
        for bad in ["/models", "../x", "a/../../x", "./a"] {
            let mut c = minimal();
            c.mounts.push(volume(bad));
            let err = container_config(c).unwrap_err();
            assert!(err.to_string().contains("image_sub_path"), "{bad}: {err}");
        }
    }
}

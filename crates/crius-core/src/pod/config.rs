//! What a pod is asked to be: the CRI `PodSandboxConfig` as plain Rust.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::container::config::Resources;

/// A request to run a pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodConfig {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub hostname: String,
    /// Where kubelet wants container logs, absolute.
    pub log_directory: String,
    pub dns: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub cgroup_parent: String,
    pub sysctls: BTreeMap<String, String>,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// All containers of the pod share one PID namespace (`shareProcessNamespace`).
    pub share_pid: bool,
    pub user_namespace: Option<IdMappings>,
    pub privileged: bool,
    /// RuntimeClass handler; empty is the default.
    pub runtime_handler: String,
    /// Pod-level resources (overhead plus the sum kubelet computes), for the pod cgroup.
    pub resources: Option<Resources>,
}

/// DNS settings written to the pod's resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A host port forwarded to a pod port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: Option<IpAddr>,
}

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// User-namespace id mappings (container id → host id, length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMappings {
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

/// One contiguous id range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMapping {
    /// The host id container id `id` maps to through `maps`; `None` when no range holds it.
    pub fn host_id_of(maps: &[IdMapping], id: u32) -> Option<u32> {
        maps.iter()
            .find(|m| id >= m.container_id && id - m.container_id < m.length)
            .and_then(|m| m.host_id.checked_add(id - m.container_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_id_maps_through_the_range_that_holds_it() {
        let maps = [
            IdMapping {
                container_id: 0,
                host_id: 100_000,
                length: 1000,
            },
            IdMapping {
                container_id: 5000,
                host_id: 200_000,
                length: 10,
            },
        ];
        assert_eq!(IdMapping::host_id_of(&maps, 0), Some(100_000));
        assert_eq!(IdMapping::host_id_of(&maps, 999), Some(100_999));
        assert_eq!(IdMapping::host_id_of(&maps, 1000), None);
        assert_eq!(IdMapping::host_id_of(&maps, 5009), Some(200_009));
        let overflow = [IdMapping {
            container_id: 0,
            host_id: u32::MAX,
            length: 2,
        }];
        assert_eq!(IdMapping::host_id_of(&overflow, 1), None);
    }
}

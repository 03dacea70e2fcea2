//! Requests and answers of [`NetworkPlugin`](crate::NetworkPlugin), free of any wire type.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The lowercase name CNI and iptables use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A host port forwarded to a port of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The protocol.
    pub protocol: Protocol,
    /// The port inside the pod.
    pub container_port: u16,
    /// The port on the host; mappings with host port 0 are skipped.
    pub host_port: u16,
    /// The host address to listen on; `None` means every host address.
    pub host_ip: Option<IpAddr>,
}

/// The pod's DNS settings (CRI `DNSConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Name servers, as IP addresses.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// resolv.conf options such as `ndots:5`.
    pub options: Vec<String>,
}

/// Traffic shaping for the pod, in bits per second and bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Ingress rate (bit/s).
    pub ingress_rate: u64,
    /// Ingress burst (bits).
    pub ingress_burst: u64,
    /// Egress rate (bit/s).
    pub egress_rate: u64,
    /// Egress burst (bits).
    pub egress_burst: u64,
}

/// An address range for IPAM plugins that honour the `ipRanges` capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    /// The subnet in CIDR notation.
    pub subnet: String,
    /// First address to hand out.
    pub range_start: Option<IpAddr>,
    /// Last address to hand out.
    pub range_end: Option<IpAddr>,
    /// The gateway.
    pub gateway: Option<IpAddr>,
}

/// What [`NetworkPlugin::setup`](crate::NetworkPlugin::setup) and its siblings need to know
/// about a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetworkRequest {
    /// The pod sandbox id; also the CNI container id. `[A-Za-z0-9_.-]`, at most 128 bytes.
    pub pod_id: String,
    /// The pod's Kubernetes name.
    pub pod_name: String,
    /// The pod's Kubernetes namespace.
    pub pod_namespace: String,
    /// The pod's Kubernetes uid.
    pub pod_uid: String,
    /// The pinned network namespace (an nsfs bind mount).
    pub netns_path: PathBuf,
    /// Host ports to forward into the pod.
    pub port_mappings: Vec<PortMapping>,
    /// DNS settings passed to plugins that ask for the `dns` capability.
    pub dns: Option<DnsConfig>,
    /// Traffic shaping passed to plugins that ask for the `bandwidth` capability.
    pub bandwidth: Option<Bandwidth>,
    /// Address ranges (sets of ranges) for plugins that ask for the `ipRanges` capability.
    pub ip_ranges: Vec<Vec<IpRange>>,
}

/// The network a pod got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetworkStatus {
    /// The pod's addresses; the primary one (the first IPv4 if any) comes first.
    pub ips: Vec<IpAddr>,
    /// The interface inside the pod that carries them.
    pub interface: String,
    /// The default gateway, when known.
    pub gateway: Option<IpAddr>,
    /// Which network attached the pod: `cni:<network name>` or `builtin:<bridge>`.
    pub network: String,
}

/// Whether the network can set up pods (CRI `NetworkReady`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkReadiness {
    /// True when `setup` can succeed.
    pub ready: bool,
    /// A CamelCase reason when not ready, empty otherwise.
    pub reason: String,
    /// A human-readable explanation.
    pub message: String,
}

impl NetworkReadiness {
    pub(crate) fn ready(message: impl Into<String>) -> Self {
        NetworkReadiness {
            ready: true,
            reason: String::new(),
            message: message.into(),
        }
    }

    pub(crate) fn not_ready(reason: &str, message: impl Into<String>) -> Self {
        NetworkReadiness {
            ready: false,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// Longest pod id accepted; it names files and goes into interface-name hashes.
const MAX_POD_ID: usize = 128;

/// Checks that `id` can name a file and a CNI container id.
pub(crate) fn validate_pod_id(id: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidRequest {
        field: "pod_id",
        reason: format!("{id:?} {reason}"),
    };
    if id.is_empty() || id.len() > MAX_POD_ID {
        return Err(bad("must be 1 to 128 bytes long"));
    }
    if id.starts_with('.') || id.starts_with('-') {
        return Err(bad("must not start with '.' or '-'"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(bad("may only contain letters, digits, '_', '.' and '-'"));
    }
    Ok(())
}

impl PodNetworkRequest {
    /// Checks the fields every implementation relies on.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_pod_id(&self.pod_id)?;
        for (field, value) in [
            ("pod_name", &self.pod_name),
            ("pod_namespace", &self.pod_namespace),
            ("pod_uid", &self.pod_uid),
        ] {
            // CNI_ARGS is `;`- and `=`-separated; such bytes would forge other keys.
            if value.contains([';', '=', '\0', '\n']) {
                return Err(Error::InvalidRequest {
                    field,
                    reason: format!("{value:?} must not contain ';', '=', NUL or newline"),
                });
            }
        }
        if !self.netns_path.is_absolute() {
            return Err(Error::InvalidRequest {
                field: "netns_path",
                reason: format!("{} must be an absolute path", self.netns_path.display()),
            });
        }
        for (i, m) in self.port_mappings.iter().enumerate() {
            if m.container_port == 0 {
                return Err(Error::InvalidRequest {
                    field: "port_mappings",
                    reason: format!("container port of host port {} must not be 0", m.host_port),
                });
            }
            let earlier = self.port_mappings.get(..i).unwrap_or_default();
            let clash = earlier.iter().any(|e| {
                m.host_port != 0
                    && e.protocol == m.protocol
                    && e.host_port == m.host_port
                    && (e.host_ip.is_none() || m.host_ip.is_none() || e.host_ip == m.host_ip)
            });
            if clash {
                return Err(Error::InvalidRequest {
                    field: "port_mappings",
                    reason: format!(
                        "host port {}/{} is mapped twice",
                        m.protocol.as_str(),
                        m.host_port
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Puts the first IPv4 address first, keeping the order otherwise.
pub(crate) fn primary_first(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    ips.sort_by_key(|ip| !ip.is_ipv4());
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_id_with_path_separators_is_refused() {
        assert!(validate_pod_id("../etc").is_err());
        assert!(validate_pod_id("a/b").is_err());
        assert!(validate_pod_id("").is_err());
        assert!(validate_pod_id(&"a".repeat(129)).is_err());
        assert!(validate_pod_id("abc-DEF_0.1").is_ok());
    }

    #[test]
    fn cni_args_separators_in_names_are_refused() {
        let req = PodNetworkRequest {
            pod_id: "p1".into(),
            pod_name: "a;K8S_POD_UID=x".into(),
            netns_path: "/run/x".into(),
            ..Default::default()
        };
        assert_eq!(
            req.validate().map_err(|e| e.kind()).err(),
            Some(crate::ErrorKind::InvalidArgument)
        );
    }

    #[test]
    fn the_same_host_port_twice_is_refused() {
        let m = PortMapping {
            protocol: Protocol::Tcp,
            container_port: 80,
            host_port: 8080,
            host_ip: None,
        };
        let mut req = PodNetworkRequest {
            pod_id: "p1".into(),
            netns_path: "/run/x".into(),
            port_mappings: vec![m.clone(), m.clone()],
            ..Default::default()
        };
        assert!(req.validate().is_err());
        req.port_mappings[1].protocol = Protocol::Udp;
        assert!(req.validate().is_ok());
    }

    #[test]
    fn primary_ip_is_the_first_ipv4() {
        let v6: IpAddr = "fd00::2".parse().unwrap_or(IpAddr::from([0u8; 16]));
        let v4: IpAddr = "10.0.0.2".parse().unwrap_or(IpAddr::from([0u8; 4]));
        assert_eq!(primary_first(vec![v6, v4]), vec![v4, v6]);
    }
}

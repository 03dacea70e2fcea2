//! [`BuiltinNetwork`]: a network that needs no setup, for hosts without CNI configuration.
//!
//! ```text
//!   host netns                                   pod netns
//!   crius0 (bridge, gateway = first address) ── crius<hash> ══ veth ══ eth0 (pod address)
//!                                                                     lo up, default via gateway
//! ```
//!
//! Setup order, each step undone by teardown if a later one fails:
//! 1. record the pod (address, veth name, host ports) in the state file under its lock;
//! 2. ensure the bridge, its gateway address, and (with host ports) the iptables chains;
//! 3. create the veth pair with the pod end created directly inside the pod's namespace;
//! 4. configure the pod end on a dedicated thread inside the namespace;
//! 5. add the host-port DNAT rules.
//!
//! Teardown deletes the host veth (the pod end goes with it), removes the DNAT rules and then
//! the record, so a crash at any point leaves a record that the next teardown completes.
//! The bridge and chains are shared and stay; [`BuiltinNetwork::remove_host_state`] removes
//! them (uninstall, tests). No rule sends pod traffic towards the outside unless
//! [`BuiltinOptions::masquerade`] is set.

mod cidr;
mod hostport;
mod ipam;
mod link;
#[cfg(test)]
mod root_tests;

use std::net::IpAddr;
use std::path::PathBuf;

pub use cidr::{Ipv4Cidr, Ipv6Cidr};
use hostport::HostPorts;
use ipam::{PodRecord, Store};

use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::plugin::NetworkPlugin;
use crate::types::{validate_pod_id, NetworkReadiness, PodNetworkRequest, PodNetworkStatus};

/// How the built-in network implements host ports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostPortMode {
    /// iptables DNAT rules (needs the `iptables` binary, Debian package `iptables`).
    #[default]
    Iptables,
    /// Host ports are refused with `InvalidArgument`.
    Disabled,
}

/// Configuration of [`BuiltinNetwork`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinOptions {
    /// The bridge name (at most 15 bytes).
    pub bridge: String,
    /// The pod CIDR; the bridge gets its first address, pods the rest.
    pub pod_cidr: Ipv4Cidr,
    /// An IPv6 pod CIDR for dual-stack pods (none by default); host ports then forward
    /// IPv6 too.
    pub pod_cidr_v6: Option<Ipv6Cidr>,
    /// Where the state file (`network.json`) and its lock live.
    pub state_dir: PathBuf,
    /// How host ports are implemented.
    pub host_ports: HostPortMode,
    /// Masquerade pod traffic leaving the pod CIDR (off by default: pods reach only the
    /// host and each other unless the operator asks for more).
    pub masquerade: bool,
}

impl Default for BuiltinOptions {
    fn default() -> Self {
        BuiltinOptions {
            bridge: "crius0".to_owned(),
            pod_cidr: Ipv4Cidr::default(),
            pod_cidr_v6: None,
            state_dir: PathBuf::from("/var/lib/crius/network"),
            host_ports: HostPortMode::Iptables,
            masquerade: false,
        }
    }
}

/// The built-in bridge network.
///
/// Cheap to build: every bit of state is in the state dir, so the daemon builds a new one
/// when `UpdateRuntimeConfig` changes the pod CIDR; running pods keep their addresses and
/// are torn down from their records.
///
/// ```no_run
/// use crius_net::{BuiltinNetwork, BuiltinOptions, NetworkPlugin, PodNetworkRequest};
///
/// let net = BuiltinNetwork::new(BuiltinOptions {
///     pod_cidr: "10.88.0.0/16".parse()?,
///     ..Default::default()
/// })?;
/// let req = PodNetworkRequest {
///     pod_id: "4f1c2a".into(),
///     netns_path: "/run/crius/pods/4f1c2a/ns/net".into(),
///     ..Default::default()
/// };
/// let status = net.setup(&req)?;
/// assert_eq!(status.interface, "eth0");
/// # Ok::<(), crius_net::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BuiltinNetwork {
    opts: BuiltinOptions,
    store: Store,
}

impl BuiltinNetwork {
    /// A built-in network with `opts`; the kernel is not touched until the first setup.
    pub fn new(opts: BuiltinOptions) -> Result<Self> {
        let b = &opts.bridge;
        if b.is_empty()
            || b.len() > 15
            || !b
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(Error::InvalidRequest {
                field: "bridge",
                reason: format!("{b:?} must be 1 to 15 letters, digits, '-' or '_'"),
            });
        }
        let store = Store::new(&opts.state_dir);
        Ok(BuiltinNetwork { opts, store })
    }

    /// The options it was built with.
    pub fn options(&self) -> &BuiltinOptions {
        &self.opts
    }

    /// Deletes the bridge and the iptables chains of this network (uninstall). Refuses with
    /// `FailedPrecondition` while pods are attached.
    pub fn remove_host_state(&self) -> Result<()> {
        let attached = self.store.update(|db| Ok((false, db.pods.len())))?;
        if attached > 0 {
            return Err(Error::InUse {
                what: format!("bridge {}", self.opts.bridge),
                reason: format!("{attached} pods are still attached; tear them down first"),
            });
        }
        if let Some(bin) = hostport::find_iptables() {
            HostPorts::new(&bin, &self.opts.bridge).remove_all(self.opts.pod_cidr)?;
        }
        if let Some(bin) = hostport::find_ip6tables() {
            HostPorts::new_v6(&bin, &self.opts.bridge).remove_all(self.opts.pod_cidr)?;
        }
        let mut nl = Netlink::open().map_err(|source| Error::Netlink {
            op: "open socket".into(),
            source,
        })?;
        link::delete_link(&mut nl, &self.opts.bridge)
    }

    fn host_ports(&self) -> Result<HostPorts> {
        let bin = hostport::find_iptables().ok_or_else(|| Error::Iptables {
            args: String::new(),
            reason: "iptables not found: install the iptables package for host ports".into(),
        })?;
        Ok(HostPorts::new(&bin, &self.opts.bridge))
    }

    /// The IPv6 host-port rules, for pods with an IPv6 address.
    fn host_ports_v6(&self) -> Result<HostPorts> {
        let bin = hostport::find_ip6tables().ok_or_else(|| Error::Iptables {
            args: String::new(),
            reason: "ip6tables not found: install the iptables package for ipv6 host ports".into(),
        })?;
        Ok(HostPorts::new_v6(&bin, &self.opts.bridge))
    }

    fn validate_ports(&self, req: &PodNetworkRequest) -> Result<()> {
        let mapped = req.port_mappings.iter().any(|m| m.host_port != 0);
        if mapped && self.opts.host_ports == HostPortMode::Disabled {
            return Err(Error::InvalidRequest {
                field: "port_mappings",
                reason: "host ports are disabled for the built-in network".into(),
            });
        }
        if self.opts.pod_cidr_v6.is_none() {
            if let Some(m) = req
                .port_mappings
                .iter()
                .find(|m| m.host_port != 0 && matches!(m.host_ip, Some(IpAddr::V6(_))))
            {
                return Err(Error::InvalidRequest {
                    field: "port_mappings",
                    reason: format!(
                        "host ip {:?} is ipv6 but the built-in network has no ipv6 pod cidr; \
                         add one to pod_cidr (\"10.88.0.0/16,fd00:88::/64\")",
                        m.host_ip
                    ),
                });
            }
        }
        Ok(())
    }

    /// Step 1: the record, with a fresh (or the already recorded) address.
    fn record(&self, req: &PodNetworkRequest) -> Result<PodRecord> {
        let cidr = self.opts.pod_cidr;
        let cidr6 = self.opts.pod_cidr_v6;
        let ports: Vec<_> = req
            .port_mappings
            .iter()
            .filter(|m| m.host_port != 0)
            .cloned()
            .collect();
        self.store.update(|db| {
            for m in &ports {
                if let Some(owner) = db.port_owner(&req.pod_id, m) {
                    return Err(Error::HostPortInUse {
                        protocol: m.protocol.as_str().to_owned(),
                        port: m.host_port,
                        owner: owner.to_owned(),
                    });
                }
            }
            let old = db.pods.get(&req.pod_id).cloned();
            let ip = match &old {
                Some(r) if r.cidr == cidr => r.ip,
                _ => db.allocate(cidr)?,
            };
            let old6 = old
                .as_ref()
                .and_then(|r| r.ip6.filter(|_| r.cidr6 == cidr6));
            let ip6 = match (old6, cidr6) {
                (Some(ip6), _) => Some(ip6),
                (None, Some(c6)) => Some(db.allocate6(c6)?),
                (None, None) => None,
            };
            let rec = PodRecord {
                ip,
                cidr,
                ip6,
                cidr6,
                host_veth: link::host_veth_name(&req.pod_id),
                ports: ports.clone(),
            };
            db.pods.insert(req.pod_id.clone(), rec.clone());
            Ok((true, rec))
        })
    }

    /// Steps 2 to 5.
    fn attach(&self, req: &PodNetworkRequest, rec: &PodRecord) -> Result<()> {
        let mut nl = Netlink::open().map_err(|source| Error::Netlink {
            op: "open socket".into(),
            source,
        })?;
        let bridge = link::ensure_bridge(&mut nl, &self.opts.bridge, rec.cidr, rec.cidr6)?;
        let host_ports = if rec.ports.is_empty() && !self.opts.masquerade {
            None
        } else {
            let hp = self.host_ports()?;
            hp.ensure_chains()?;
            if self.opts.masquerade {
                hp.ensure_masquerade(rec.cidr)?;
            }
            Some(hp)
        };
        let host_ports_v6 = match rec.ip6 {
            Some(ip6) if !rec.ports.is_empty() => {
                let hp = self.host_ports_v6()?;
                hp.ensure_chains()?;
                Some((hp, ip6))
            }
            _ => None,
        };
        link::create_veth(&mut nl, &rec.host_veth, &req.netns_path, bridge)?;
        link::configure_pod(&req.netns_path, rec)?;
        if let Some(hp) = host_ports {
            hp.add(&req.pod_id, IpAddr::V4(rec.ip), &rec.ports)?;
        }
        if let Some((hp, ip6)) = host_ports_v6 {
            hp.add(&req.pod_id, IpAddr::V6(ip6), &rec.ports)?;
        }
        Ok(())
    }

    /// Undoes everything recorded for `pod_id`; idempotent.
    fn detach(&self, pod_id: &str) -> Result<()> {
        let rec = self.store.get(pod_id)?;
        let host_veth = rec
            .as_ref()
            .map_or_else(|| link::host_veth_name(pod_id), |r| r.host_veth.clone());
        let mut nl = Netlink::open().map_err(|source| Error::Netlink {
            op: "open socket".into(),
            source,
        })?;
        link::delete_link(&mut nl, &host_veth)?;
        if let Some(rec) = rec.as_ref().filter(|r| !r.ports.is_empty()) {
            self.host_ports()?
                .remove(pod_id, IpAddr::V4(rec.ip), &rec.ports)?;
            if let Some(ip6) = rec.ip6 {
                self.host_ports_v6()?
                    .remove(pod_id, IpAddr::V6(ip6), &rec.ports)?;
            }
        }
        self.store
            .update(|db| Ok((db.pods.remove(pod_id).is_some(), ())))
    }
}

impl NetworkPlugin for BuiltinNetwork {
    fn setup(&self, req: &PodNetworkRequest) -> Result<PodNetworkStatus> {
        req.validate()?;
        self.validate_ports(req)?;
        // Fail on a missing namespace before anything is allocated.
        drop(crate::netns::open(&req.netns_path)?);
        let rec = self.record(req)?;
        if let Err(source) = self.attach(req, &rec) {
            let cleanup = self.detach(&req.pod_id).err().map(Box::new);
            return Err(Error::SetupFailed {
                pod_id: req.pod_id.clone(),
                source: Box::new(source),
                cleanup,
            });
        }
        tracing::debug!(pod_id = %req.pod_id, ip = %rec.ip, veth = %rec.host_veth, "built-in network attached");
        let mut ips = vec![IpAddr::V4(rec.ip)];
        ips.extend(rec.ip6.map(IpAddr::V6));
        Ok(PodNetworkStatus {
            ips,
            interface: "eth0".to_owned(),
            gateway: Some(IpAddr::V4(rec.cidr.gateway())),
            network: format!("builtin:{}", self.opts.bridge),
        })
    }

    fn teardown(&self, req: &PodNetworkRequest) -> Result<()> {
        validate_pod_id(&req.pod_id)?;
        self.detach(&req.pod_id)
    }

    fn check(&self, req: &PodNetworkRequest) -> Result<()> {
        validate_pod_id(&req.pod_id)?;
        let rec = self
            .store
            .get(&req.pod_id)?
            .ok_or_else(|| Error::PodNotFound {
                pod_id: req.pod_id.clone(),
                reason: "no address recorded for it".into(),
            })?;
        let broken = |reason: String| Error::Inconsistent {
            pod_id: req.pod_id.clone(),
            reason,
        };
        let mut nl = Netlink::open().map_err(|source| Error::Netlink {
            op: "open socket".into(),
            source,
        })?;
        let bridge = nl
            .link_index(&self.opts.bridge)
            .map_err(|source| Error::Netlink {
                op: format!("get link {}", self.opts.bridge),
                source,
            })?
            .ok_or_else(|| broken(format!("bridge {} is missing", self.opts.bridge)))?;
        if !link::veth_attached(&mut nl, &rec.host_veth, bridge)? {
            return Err(broken(format!(
                "{} is missing, down or off the bridge",
                rec.host_veth
            )));
        }
        let addrs = link::pod_addresses(&req.netns_path)?;
        let wanted = std::iter::once(IpAddr::V4(rec.ip)).chain(rec.ip6.map(IpAddr::V6));
        for ip in wanted {
            if !addrs.contains(&ip) {
                return Err(broken(format!("eth0 in the pod lacks {ip}")));
            }
        }
        Ok(())
    }

    fn status(&self) -> NetworkReadiness {
        if let Err(e) = std::fs::create_dir_all(&self.opts.state_dir) {
            return NetworkReadiness::not_ready(
                "NetworkPluginNotReady",
                format!("state dir {}: {e}", self.opts.state_dir.display()),
            );
        }
        match Netlink::open() {
            Ok(_) => NetworkReadiness::ready(format!(
                "built-in bridge {} with pod cidr {}",
                self.opts.bridge, self.opts.pod_cidr
            )),
            Err(e) => NetworkReadiness::not_ready("NetworkPluginNotReady", format!("netlink: {e}")),
        }
    }

    fn attached(&self) -> Result<Vec<String>> {
        self.store
            .update(|db| Ok((false, db.pods.keys().cloned().collect())))
    }
}

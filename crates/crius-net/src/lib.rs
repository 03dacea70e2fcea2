//! Pod networking for criusd: attaching a pod's network namespace to a network and
//! detaching it again, behind the [`NetworkPlugin`] role.
//!
//! - [`CniNetwork`] runs CNI plugins (ADD/DEL/CHECK) from the first config of a conf dir,
//!   caching each ADD so DEL works after a daemon restart.
//! - [`BuiltinNetwork`] needs no setup: a bridge, a veth pair per pod, IPv4 (and IPv6) addresses from
//!   the pod CIDR with a file-based IPAM, host ports through iptables/ip6tables DNAT; all interface
//!   work through netlink.
//! - [`AutoNetwork`] uses CNI when a config exists and the built-in network otherwise.
//! - [`resolv_conf`] and [`hostname_file`] render a pod's resolv.conf and /etc/hostname.
//!
//! **Owns:** interfaces, addresses and routes it creates, its IPAM and cache files, the
//! iptables rules of its host-port chain. **Refuses:** creating or pinning network
//! namespaces (the pod monitor does that; this crate receives the nsfs path), hostNetwork
//! pods (the daemon never calls it for them), any rule that sends pod traffic to the outside
//! (no masquerade unless configured), touching interfaces or routes it did not create.
//!
//! **Threat model:** CNI configs and plugins are trusted (root-owned files); pod ids, names
//! and DNS settings come from kubelet and are validated before they reach a file name, an
//! environment variable or resolv.conf; plugin output is parsed defensively (size-capped,
//! malformed results are errors, never panics). Namespace entry (`setns`) happens only on
//! dedicated short-lived threads, through nix's safe API: this crate has no unsafe code.
#![forbid(unsafe_code)]

mod auto;
mod builtin;
mod cni;
mod dns;
mod error;
mod fsutil;
mod netlink;
mod netns;
mod plugin;
mod types;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod testutil;

pub use auto::AutoNetwork;
pub use builtin::{BuiltinNetwork, BuiltinOptions, HostPortMode, Ipv4Cidr, Ipv6Cidr};
pub use cni::{CniNetwork, CniOptions};
pub use dns::{hostname_file, resolv_conf};
pub use error::{Error, ErrorKind, Result};
pub use netns::{connect_in_netns, connect_loopback};
pub use plugin::NetworkPlugin;
pub use types::{
    Bandwidth, DnsConfig, IpRange, NetworkReadiness, PodNetworkRequest, PodNetworkStatus,
    PortMapping, Protocol,
};

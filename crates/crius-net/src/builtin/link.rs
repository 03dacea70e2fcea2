//! Netlink steps of the built-in network: the bridge, the veth pair, the in-pod setup.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::cidr::{Ipv4Cidr, Ipv6Cidr};
use super::ipam::PodRecord;
use crate::error::{Error, Result};
use crate::netlink::{self, Netlink};
use crate::netns;

fn nl_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let op = op.into();
    move |source| Error::Netlink { op, source }
}

/// The host-side veth name of `pod_id`: `crius` + 10 hex digits of a hash (15 bytes, the
/// kernel's IFNAMSIZ limit).
pub(crate) fn host_veth_name(pod_id: &str) -> String {
    // FNV-1a, 64 bit: stable across releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("crius{:010x}", h >> 24)
}

/// Creates the bridge if needed, gives it the gateway addresses and sets it up; returns its
/// index.
pub(crate) fn ensure_bridge(
    nl: &mut Netlink,
    name: &str,
    cidr: Ipv4Cidr,
    cidr6: Option<Ipv6Cidr>,
) -> Result<u32> {
    let index = match nl
        .link_index(name)
        .map_err(nl_err(format!("get link {name}")))?
    {
        Some(i) => i,
        None => {
            match nl.create_bridge(name) {
                Ok(()) => tracing::debug!(bridge = name, "bridge created"),
                Err(e) if netlink::is_exists(&e) => {}
                Err(e) => return Err(nl_err(format!("create bridge {name}"))(e)),
            }
            nl.link_index(name)
                .map_err(nl_err(format!("get link {name}")))?
                .ok_or_else(|| nl_err(format!("get link {name}"))(io::Error::other("vanished")))?
        }
    };
    let addrs = nl
        .addresses(index)
        .map_err(nl_err(format!("list addresses of {name}")))?;
    let mut wanted = vec![(IpAddr::V4(cidr.gateway()), cidr.prefix())];
    if let Some(c6) = cidr6 {
        wanted.push((IpAddr::V6(c6.gateway()), c6.prefix()));
    }
    for (gw, prefix) in wanted {
        if addrs.iter().any(|(a, _)| *a == gw) {
            continue;
        }
        match nl.add_address(index, gw, prefix) {
            Ok(()) => {}
            Err(e) if netlink::is_exists(&e) => {}
            Err(e) => return Err(nl_err(format!("add {gw} to {name}"))(e)),
        }
    }
    nl.set_up(index, None)
        .map_err(nl_err(format!("set {name} up")))?;
    Ok(index)
}

/// Creates the veth pair (`host` on the host, `eth0` in the pod), enslaves `host` to the
/// bridge and sets it up. A stale `host` link from a crashed setup is replaced.
pub(crate) fn create_veth(
    nl: &mut Netlink,
    host: &str,
    netns_path: &Path,
    bridge_index: u32,
) -> Result<()> {
    let ns = netns::open(netns_path)?;
    let op = format!("create veth {host} with eth0 in {}", netns_path.display());
    match nl.create_veth(host, "eth0", ns.as_raw_fd()) {
        Ok(()) => {}
        Err(e) if netlink::is_exists(&e) => {
            delete_link(nl, host)?;
            nl.create_veth(host, "eth0", ns.as_raw_fd())
                .map_err(nl_err(op))?;
        }
        Err(e) => return Err(nl_err(op)(e)),
    }
    let index = nl
        .link_index(host)
        .map_err(nl_err(format!("get link {host}")))?
        .ok_or_else(|| nl_err(format!("get link {host}"))(io::Error::other("vanished")))?;
    nl.set_up(index, Some(bridge_index))
        .map_err(nl_err(format!("attach {host} to the bridge")))
}

/// Deletes link `name`; a missing link is fine.
pub(crate) fn delete_link(nl: &mut Netlink, name: &str) -> Result<()> {
    let Some(index) = nl
        .link_index(name)
        .map_err(nl_err(format!("get link {name}")))?
    else {
        return Ok(());
    };
    match nl.delete_link(index) {
        Ok(()) => Ok(()),
        Err(e) if netlink::is_no_device(&e) => Ok(()),
        Err(e) => Err(nl_err(format!("delete link {name}"))(e)),
    }
}

/// Inside the pod: `lo` up, `eth0` gets the recorded addresses and goes up, default
/// routes via the gateways.
pub(crate) fn configure_pod(netns_path: &Path, rec: &PodRecord) -> Result<()> {
    let mut addrs = vec![(
        IpAddr::V4(rec.ip),
        rec.cidr.prefix(),
        IpAddr::V4(rec.cidr.gateway()),
    )];
    if let (Some(ip6), Some(c6)) = (rec.ip6, rec.cidr6) {
        addrs.push((IpAddr::V6(ip6), c6.prefix(), IpAddr::V6(c6.gateway())));
    }
    netns::run_in(netns_path, || {
        let mut nl = Netlink::open().map_err(nl_err("open socket in pod"))?;
        let lo = nl
            .link_index("lo")
            .map_err(nl_err("get link lo"))?
            .ok_or_else(|| nl_err("get link lo")(io::Error::other("missing")))?;
        nl.set_up(lo, None).map_err(nl_err("set lo up"))?;
        let eth0 = nl
            .link_index("eth0")
            .map_err(nl_err("get link eth0"))?
            .ok_or_else(|| nl_err("get link eth0")(io::Error::other("missing")))?;
        for (ip, prefix, _) in &addrs {
            match nl.add_address(eth0, *ip, *prefix) {
                Ok(()) => {}
                Err(e) if netlink::is_exists(&e) => {}
                Err(e) => return Err(nl_err(format!("add {ip} to eth0"))(e)),
            }
        }
        nl.set_up(eth0, None).map_err(nl_err("set eth0 up"))?;
        for (_, _, gw) in &addrs {
            match nl.add_default_route(*gw, eth0) {
                Ok(()) => {}
                Err(e) if netlink::is_exists(&e) => {}
                Err(e) => return Err(nl_err(format!("add default route via {gw}"))(e)),
            }
        }
        Ok(())
    })
}

/// Inside the pod: the addresses of `eth0` (empty when it is missing).
pub(crate) fn pod_addresses(netns_path: &Path) -> Result<Vec<IpAddr>> {
    netns::run_in(netns_path, || {
        let mut nl = Netlink::open().map_err(nl_err("open socket in pod"))?;
        let Some(eth0) = nl.link_index("eth0").map_err(nl_err("get link eth0"))? else {
            return Ok(Vec::new());
        };
        let addrs = nl
            .addresses(eth0)
            .map_err(nl_err("list addresses of eth0"))?;
        Ok(addrs.into_iter().map(|(a, _)| a).collect())
    })
}

/// Whether host link `name` is up and enslaved to `bridge_index`.
pub(crate) fn veth_attached(nl: &mut Netlink, name: &str, bridge_index: u32) -> Result<bool> {
    let link = nl.link(name).map_err(nl_err(format!("get link {name}")))?;
    Ok(link.is_some_and(|l| netlink::is_up(&l) && netlink::controller(&l) == Some(bridge_index)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_fit_ifnamsiz_and_differ() {
        let a = host_veth_name("pod-a");
        let b = host_veth_name("pod-b");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("crius"));
        assert_ne!(a, b);
        assert_eq!(a, host_veth_name("pod-a"));
    }
}

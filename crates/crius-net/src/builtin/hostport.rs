//! Host ports of the built-in network: iptables DNAT rules in a chain of our own.
//!
//! Chosen over a userspace proxy because the rules live in the kernel: they survive a
//! daemon restart (containers outlive criusd), cost no thread or copy per connection, and
//! keep the client's source address. Needs the `iptables` binary (Debian package
//! `iptables`); without it, a pod asking for host ports fails setup with a clear error.
//!
//! Layout, per bridge (so two built-in networks never touch each other's rules):
//! - `nat CRIUS-HP-<bridge>`: one DNAT rule per mapping, commented `crius:<pod_id>`, jumped
//!   to from `PREROUTING` and `OUTPUT` for destinations of type LOCAL;
//! - `nat CRIUS-HPM-<bridge>`: MASQUERADE of sources in 127.0.0.0/8 leaving through the
//!   bridge, with `route_localnet=1` on the bridge, so `127.0.0.1:<host port>` works from
//!   the host; this rewrites only host-loopback traffic into the bridge, nothing towards the
//!   outside.
//!
//! IPv6 (dual-stack pods) gets the same chains through `ip6tables`: a mapping without a host
//! IP is forwarded on both families, one with a host IP on that IP's family only. IPv6 has
//! no `route_localnet`: an IPv6 host port answers on the host's other addresses, not on
//! `[::1]` (as with kube-proxy).
//!
//! Limits: clients on other machines reach a host port only when the host forwards
//! (`net.ipv4.ip_forward=1` and a FORWARD policy that accepts), which crius leaves to the
//! operator; a pod reaching its own host port (hairpin) is not supported.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cidr::Ipv4Cidr;
use crate::error::{Error, Result};
use crate::types::PortMapping;

/// Where Debian's `iptables` package installs the binary.
const IPTABLES_CANDIDATES: [&str; 2] = ["/usr/sbin/iptables", "/sbin/iptables"];
/// Where it installs the IPv6 one.
const IP6TABLES_CANDIDATES: [&str; 2] = ["/usr/sbin/ip6tables", "/sbin/ip6tables"];

/// Finds the `iptables` binary.
pub(crate) fn find_iptables() -> Option<PathBuf> {
    IPTABLES_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Finds the `ip6tables` binary.
pub(crate) fn find_ip6tables() -> Option<PathBuf> {
    IP6TABLES_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The iptables (or ip6tables) rules of one built-in network.
#[derive(Debug, Clone)]
pub(crate) struct HostPorts {
    bin: PathBuf,
    bridge: String,
    ipv6: bool,
}

impl HostPorts {
    /// The IPv4 rules, through `bin` (iptables).
    pub(crate) fn new(bin: &Path, bridge: &str) -> Self {
        HostPorts {
            bin: bin.to_owned(),
            bridge: bridge.to_owned(),
            ipv6: false,
        }
    }

    /// The IPv6 rules, through `bin` (ip6tables).
    pub(crate) fn new_v6(bin: &Path, bridge: &str) -> Self {
        HostPorts {
            ipv6: true,
            ..HostPorts::new(bin, bridge)
        }
    }

    /// Whether mapping `m` is forwarded on this family.
    fn serves(&self, m: &PortMapping) -> bool {
        m.host_port != 0
            && match m.host_ip {
                None => true,
                Some(ip) => ip.is_ipv6() == self.ipv6,
            }
    }

    fn dnat_chain(&self) -> String {
        format!("CRIUS-HP-{}", self.bridge)
    }

    fn masq_chain(&self) -> String {
        format!("CRIUS-HPM-{}", self.bridge)
    }

    /// Runs iptables in the nat table; `Ok(false)` when it exits non-zero.
    fn try_run(&self, args: &[String]) -> Result<(bool, String)> {
        let out = Command::new(&self.bin)
            .arg("-w")
            .args(["-t", "nat"])
            .args(args)
            .output()
            .map_err(|e| Error::Iptables {
                args: args.join(" "),
                reason: format!("cannot run {}: {e}", self.bin.display()),
            })?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }

    fn run(&self, args: &[String]) -> Result<()> {
        match self.try_run(args)? {
            (true, _) => Ok(()),
            (false, stderr) => Err(Error::Iptables {
                args: args.join(" "),
                reason: stderr,
            }),
        }
    }

    /// Appends `rule` to `chain` unless an identical rule is there.
    fn ensure_rule(&self, chain: &str, rule: &[String]) -> Result<()> {
        let mut check = vec!["-C".to_owned(), chain.to_owned()];
        check.extend_from_slice(rule);
        if self.try_run(&check)?.0 {
            return Ok(());
        }
        let mut add = vec!["-A".to_owned(), chain.to_owned()];
        add.extend_from_slice(rule);
        self.run(&add)
    }

    fn ensure_chain(&self, chain: &str) -> Result<()> {
        if self.try_run(&["-S".to_owned(), chain.to_owned()])?.0 {
            return Ok(());
        }
        match self.try_run(&["-N".to_owned(), chain.to_owned()])? {
            (true, _) => Ok(()),
            // A concurrent setup created it between our two calls.
            (false, e) if e.contains("exists") => Ok(()),
            (false, e) => Err(Error::Iptables {
                args: format!("-N {chain}"),
                reason: e,
            }),
        }
    }

    /// Creates the chains and jumps (idempotent) and enables `route_localnet` on the bridge.
    pub(crate) fn ensure_chains(&self) -> Result<()> {
        let dnat = self.dnat_chain();
        self.ensure_chain(&dnat)?;
        let jump_local = strings(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", &dnat]);
        self.ensure_rule("PREROUTING", &jump_local)?;
        self.ensure_rule("OUTPUT", &jump_local)?;
        if self.ipv6 {
            // The kernel never routes a packet from ::1 out of the host (IPv6 has no
            // route_localnet), so there is no loopback to masquerade.
            return Ok(());
        }
        let masq = self.masq_chain();
        self.ensure_chain(&masq)?;
        self.ensure_rule("POSTROUTING", &strings(&["-j", &masq]))?;
        let loopback_masq = strings(&["-s", "127.0.0.0/8", "-o", &self.bridge, "-j", "MASQUERADE"]);
        self.ensure_rule(&masq, &loopback_masq)?;
        let sysctl = PathBuf::from(format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            self.bridge
        ));
        std::fs::write(&sysctl, b"1").map_err(|e| Error::io("enable", &sysctl, e))
    }

    /// Adds the opt-in masquerade of pod traffic leaving the pod CIDR.
    pub(crate) fn ensure_masquerade(&self, cidr: Ipv4Cidr) -> Result<()> {
        let net = cidr.to_string();
        let comment = format!("crius:masquerade:{}", self.bridge);
        let rule = strings(&[
            "-s",
            &net,
            "!",
            "-d",
            &net,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "MASQUERADE",
        ]);
        self.ensure_rule("POSTROUTING", &rule)
    }

    fn dnat_rule(pod_id: &str, ip: IpAddr, m: &PortMapping) -> Vec<String> {
        let mut rule = strings(&["-p", m.protocol.as_str()]);
        match m.host_ip {
            Some(IpAddr::V4(host_ip)) => rule.extend(strings(&["-d", &format!("{host_ip}/32")])),
            Some(IpAddr::V6(host_ip)) => rule.extend(strings(&["-d", &format!("{host_ip}/128")])),
            None => {}
        }
        let to = match ip {
            IpAddr::V4(ip) => format!("{ip}:{}", m.container_port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", m.container_port),
        };
        rule.extend(strings(&[
            "-m",
            m.protocol.as_str(),
            "--dport",
            &m.host_port.to_string(),
            "-m",
            "comment",
            "--comment",
            &format!("crius:{pod_id}"),
            "-j",
            "DNAT",
            "--to-destination",
            &to,
        ]));
        rule
    }

    /// Adds the DNAT rules of `pod_id` (at `ip`, of this family) for the mappings this
    /// family serves.
    pub(crate) fn add(&self, pod_id: &str, ip: IpAddr, ports: &[PortMapping]) -> Result<()> {
        let chain = self.dnat_chain();
        for m in ports.iter().filter(|m| self.serves(m)) {
            self.ensure_rule(&chain, &Self::dnat_rule(pod_id, ip, m))?;
        }
        Ok(())
    }

    /// Removes the DNAT rules of `pod_id`; rules already gone are fine.
    pub(crate) fn remove(&self, pod_id: &str, ip: IpAddr, ports: &[PortMapping]) -> Result<()> {
        let chain = self.dnat_chain();
        for m in ports.iter().filter(|m| self.serves(m)) {
            let rule = Self::dnat_rule(pod_id, ip, m);
            let mut check = vec!["-C".to_owned(), chain.clone()];
            check.extend_from_slice(&rule);
            if self.try_run(&check)?.0 {
                let mut del = vec!["-D".to_owned(), chain.clone()];
                del.extend(rule);
                self.run(&del)?;
            }
        }
        Ok(())
    }

    /// Removes the chains, their jumps and (IPv4) the masquerade rule (uninstall).
    pub(crate) fn remove_all(&self, cidr: Ipv4Cidr) -> Result<()> {
        let dnat = self.dnat_chain();
        let masq = self.masq_chain();
        let jump_local = strings(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", &dnat]);
        for (chain, rule) in [
            ("PREROUTING", jump_local.clone()),
            ("OUTPUT", jump_local),
            ("POSTROUTING", strings(&["-j", &masq])),
        ] {
            let mut del = vec!["-D".to_owned(), chain.to_owned()];
            del.extend(rule);
            while self.try_run(&del)?.0 {}
        }
        if !self.ipv6 {
            let net = cidr.to_string();
            let comment = format!("crius:masquerade:{}", self.bridge);
            let mut del = strings(&["-D", "POSTROUTING", "-s", &net, "!", "-d", &net]);
            del.extend(strings(&[
                "-m",
                "comment",
                "--comment",
                &comment,
                "-j",
                "MASQUERADE",
            ]));
            while self.try_run(&del)?.0 {}
        }
        for chain in [dnat, masq] {
            if self.try_run(&["-S".to_owned(), chain.clone()])?.0 {
                self.run(&["-F".to_owned(), chain.clone()])?;
                self.run(&["-X".to_owned(), chain])?;
            }
        }
        Ok(())
    }

    /// The DNAT rules currently in our chain (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn rules(&self) -> Vec<String> {
        let out = Command::new(&self.bin)
            .args(["-w", "-t", "nat", "-S", &self.dnat_chain()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .filter(|l| l.starts_with("-A"))
            .map(str::to_owned)
            .collect()
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

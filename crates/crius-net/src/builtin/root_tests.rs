//! Built-in network tests on the real kernel (as root).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use super::{BuiltinNetwork, BuiltinOptions, HostPorts, Ipv4Cidr};
use crate::conformance::{conformance_suite, Fixture};
use crate::error::ErrorKind;
use crate::netlink::Netlink;
use crate::plugin::NetworkPlugin;
use crate::testutil::{bridge_for, link_exists, port_for, request, subnet_for, TestNetns};
use crate::types::{PortMapping, Protocol};

/// A built-in network with a bridge and /24 unique to the test; removed on drop.
struct Env {
    _dir: tempfile::TempDir,
    opts: BuiltinOptions,
}

impl Env {
    fn new(name: &str, prefix: u8) -> Option<Self> {
        if !crius_testkit::require_root(name) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let opts = BuiltinOptions {
            bridge: bridge_for(name),
            pod_cidr: Ipv4Cidr::new(subnet_for(name), prefix).unwrap(),
            state_dir: dir.path().join("state"),
            ..Default::default()
        };
        Some(Env { _dir: dir, opts })
    }

    fn net(&self) -> BuiltinNetwork {
        BuiltinNetwork::new(self.opts.clone()).unwrap()
    }

    fn records(&self) -> usize {
        self.net()
            .store
            .update(|db| Ok((false, db.pods.len())))
            .unwrap()
    }

    /// Addresses on the bridge.
    fn bridge_addresses(&self) -> Vec<(IpAddr, u8)> {
        let mut nl = Netlink::open().unwrap();
        let Some(i) = nl.link_index(&self.opts.bridge).unwrap() else {
            return Vec::new();
        };
        nl.addresses(i)
            .unwrap()
            .into_iter()
            .filter(|(a, _)| a.is_ipv4())
            .collect()
    }

    fn dnat_rules(&self) -> Vec<String> {
        match super::hostport::find_iptables() {
            Some(bin) => HostPorts::new(&bin, &self.opts.bridge).rules(),
            None => Vec::new(),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.net().remove_host_state();
    }
}

#[test]
fn builtin_passes_the_conformance_suite() {
    let Some(env) = Env::new("builtin_passes_the_conformance_suite", 24) else {
        return;
    };
    let opts = env.opts.clone();
    let make =
        move || Box::new(BuiltinNetwork::new(opts.clone()).unwrap()) as Box<dyn NetworkPlugin>;
    conformance_suite(&Fixture {
        name: "builtin-conf",
        make: &make,
        subnet: env.opts.pod_cidr.network(),
        prefix: 24,
        check_with_host_ports: true,
    });
    assert_eq!(env.records(), 0);
    assert!(env.dnat_rules().is_empty(), "{:?}", env.dnat_rules());
    let gw = IpAddr::V4(env.opts.pod_cidr.gateway());
    assert_eq!(env.bridge_addresses(), vec![(gw, 24)]);
    // Default: no masquerade of the pod cidr towards the outside.
    let postrouting = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&postrouting.stdout);
    assert!(!text.contains(&env.opts.pod_cidr.to_string()), "{text}");
}

#[test]
fn two_hundred_pods_set_up_and_torn_down_leave_no_veth_address_or_record() {
    let Some(env) = Env::new(
        "two_hundred_pods_set_up_and_torn_down_leave_no_veth_address_or_record",
        24,
    ) else {
        return;
    };
    let net = env.net();
    let pods: Vec<(TestNetns, String)> = (0..200)
        .map(|i| (TestNetns::new(), format!("many-{i}")))
        .collect();
    let mut ips = std::collections::HashSet::new();
    for (ns, id) in &pods {
        let st = net.setup(&request(id, ns)).unwrap();
        assert!(ips.insert(st.ips[0]), "{} given twice", st.ips[0]);
    }
    assert_eq!(env.records(), 200);
    for (ns, id) in &pods {
        net.teardown(&request(id, ns)).unwrap();
    }
    assert_eq!(env.records(), 0);
    for (ns, id) in &pods {
        assert!(!link_exists(&super::link::host_veth_name(id)));
        assert!(super::link::pod_addresses(ns.path()).unwrap().is_empty());
    }
    let gw = IpAddr::V4(env.opts.pod_cidr.gateway());
    assert_eq!(env.bridge_addresses(), vec![(gw, 24)]);
}

#[test]
fn full_pod_cidr_is_resource_exhausted_and_leaks_nothing() {
    let Some(env) = Env::new("full_pod_cidr_is_resource_exhausted_and_leaks_nothing", 30) else {
        return;
    };
    let net = env.net();
    let (ns1, ns2) = (TestNetns::new(), TestNetns::new());
    let st = net.setup(&request("full-1", &ns1)).unwrap();
    assert_eq!(
        st.ips[0],
        IpAddr::V4(Ipv4Addr::from(u32::from(env.opts.pod_cidr.network()) + 2))
    );
    let err = net.setup(&request("full-2", &ns2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(!link_exists(&super::link::host_veth_name("full-2")));
    net.teardown(&request("full-1", &ns1)).unwrap();
    net.setup(&request("full-2", &ns2)).unwrap();
    net.teardown(&request("full-2", &ns2)).unwrap();
    assert_eq!(env.records(), 0);
}

#[test]
fn host_port_taken_by_another_pod_is_already_exists() {
    let Some(env) = Env::new("host_port_taken_by_another_pod_is_already_exists", 24) else {
        return;
    };
    let net = env.net();
    let (ns1, ns2) = (TestNetns::new(), TestNetns::new());
    let port = PortMapping {
        protocol: Protocol::Tcp,
        container_port: 80,
        host_port: port_for("host_port_taken_by_another_pod_is_already_exists"),
        host_ip: None,
    };
    let mut a = request("hp-a", &ns1);
    a.port_mappings.push(port.clone());
    let mut b = request("hp-b", &ns2);
    b.port_mappings.push(port);
    net.setup(&a).unwrap();
    assert_eq!(net.setup(&b).unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert_eq!(env.dnat_rules().len(), 1);
    net.teardown(&a).unwrap();
    assert!(env.dnat_rules().is_empty());
    assert_eq!(env.records(), 0);
}

#[test]
fn failed_in_pod_setup_is_rolled_back() {
    let Some(env) = Env::new("failed_in_pod_setup_is_rolled_back", 24) else {
        return;
    };
    let net = env.net();
    let ns = TestNetns::new();
    // An eth0 already in the pod makes the veth creation fail after the address is taken.
    let status = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args(["ip", "link", "add", "eth0", "type", "bridge"])
        .status()
        .unwrap();
    assert!(status.success());
    let err = net.setup(&request("rollback", &ns)).unwrap_err();
    assert!(
        matches!(err, crate::Error::SetupFailed { cleanup: None, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("eth0"), "{err}");
    assert_eq!(env.records(), 0);
    assert!(!link_exists(&super::link::host_veth_name("rollback")));
}

#[test]
fn dual_stack_pods_get_both_families_and_talk_over_ipv6() {
    let name = "dual_stack_pods_get_both_families_and_talk_over_ipv6";
    let Some(mut env) = Env::new(name, 24) else {
        return;
    };
    let h = crate::testutil::hash(name);
    let [_, _, a, b] = h.to_be_bytes();
    let v6 = format!("fd00:c{a:02x}:{b:02x}::/64");
    env.opts.pod_cidr_v6 = Some(v6.parse().unwrap());
    let net = env.net();
    let (ns1, ns2) = (TestNetns::new(), TestNetns::new());
    let (r1, r2) = (request("ds-1", &ns1), request("ds-2", &ns2));
    let st1 = net.setup(&r1).unwrap();
    let st2 = net.setup(&r2).unwrap();
    assert_eq!(st1.ips.len(), 2);
    assert!(
        st1.ips[0].is_ipv4() && st1.ips[1].is_ipv6(),
        "{:?}",
        st1.ips
    );
    assert_ne!(st1.ips[1], st2.ips[1]);
    net.check(&r1).unwrap();
    let server = crate::testutil::serve_once_on(ns1.path(), "::".parse().unwrap(), 7100);
    crate::testutil::ping(
        Some(ns2.path()),
        std::net::SocketAddr::new(st1.ips[1], 7100),
    )
    .unwrap();
    server.join().unwrap();
    net.teardown(&r1).unwrap();
    net.teardown(&r2).unwrap();
    assert_eq!(env.records(), 0);
}

#[test]
fn concurrent_setups_share_one_bridge_and_never_share_an_address() {
    let Some(env) = Env::new(
        "concurrent_setups_share_one_bridge_and_never_share_an_address",
        24,
    ) else {
        return;
    };
    let net = env.net();
    let pods: Vec<(TestNetns, String)> = (0..16)
        .map(|i| (TestNetns::new(), format!("conc-{i}")))
        .collect();
    let ips: Vec<IpAddr> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|(ns, id)| {
                let net = &net;
                s.spawn(move || net.setup(&request(id, ns)).unwrap().ips[0])
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: std::collections::HashSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), pods.len());
    std::thread::scope(|s| {
        for (ns, id) in &pods {
            let net = &net;
            s.spawn(move || net.teardown(&request(id, ns)).unwrap());
        }
    });
    assert_eq!(env.records(), 0);
    let gw = IpAddr::V4(env.opts.pod_cidr.gateway());
    assert_eq!(env.bridge_addresses(), vec![(gw, 24)]);
}

#[test]
fn dual_stack_host_port_answers_on_ipv4_and_ipv6_and_leaves_no_rule() {
    let name = "dual_stack_host_port_answers_on_ipv4_and_ipv6_and_leaves_no_rule";
    let Some(mut env) = Env::new(name, 24) else {
        return;
    };
    let Some(ip6tables) = super::hostport::find_ip6tables() else {
        eprintln!("SKIPPED {name}: ip6tables not installed");
        return;
    };
    let [_, _, a, b] = crate::testutil::hash(name).to_be_bytes();
    env.opts.pod_cidr_v6 = Some(format!("fd00:d{a:02x}:{b:02x}::/64").parse().unwrap());
    let net = env.net();
    let ns = TestNetns::new();
    let host_port = port_for(name);
    let mut req = request("hp6", &ns);
    req.port_mappings.push(PortMapping {
        protocol: Protocol::Tcp,
        container_port: 7200,
        host_port,
        host_ip: None,
    });
    let st = net.setup(&req).unwrap();
    let v6_rules = || HostPorts::new_v6(&ip6tables, &env.opts.bridge).rules();
    assert_eq!(v6_rules().len(), 1, "{:?}", v6_rules());
    assert!(v6_rules()[0].contains(&format!("[{}]:7200", st.ips[1])));
    // IPv6 needs the addresses to leave duplicate address detection first: retry a while.
    let reach = |addr: std::net::SocketAddr| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let server = crate::testutil::serve_once_on(ns.path(), "::".parse().unwrap(), 7200);
            let result = crate::testutil::ping(None, addr);
            if result.is_err() {
                // Unblock the server thread so it can be joined.
                let _ = crate::testutil::ping(
                    Some(ns.path()),
                    (std::net::Ipv6Addr::LOCALHOST, 7200).into(),
                );
            }
            server.join().unwrap();
            match result {
                Ok(()) => return,
                Err(e) if std::time::Instant::now() > deadline => panic!("{addr}: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    };
    // From the host to one of its own IPv6 addresses (the bridge's; ::1 cannot be routed
    // out of the host), and on IPv4 loopback.
    let gw6 = env.opts.pod_cidr_v6.unwrap().gateway();
    reach((gw6, host_port).into());
    reach((Ipv4Addr::LOCALHOST, host_port).into());
    net.teardown(&req).unwrap();
    assert!(v6_rules().is_empty(), "{:?}", v6_rules());
    assert!(env.dnat_rules().is_empty());
    assert_eq!(env.records(), 0);
}

#[test]
fn ipv6_host_ip_without_an_ipv6_pod_cidr_is_invalid_argument() {
    let name = "ipv6_host_ip_without_an_ipv6_pod_cidr_is_invalid_argument";
    let Some(env) = Env::new(name, 24) else {
        return;
    };
    let ns = TestNetns::new();
    let mut req = request("hp6-none", &ns);
    req.port_mappings.push(PortMapping {
        protocol: Protocol::Tcp,
        container_port: 80,
        host_port: port_for(name),
        host_ip: Some("::1".parse().unwrap()),
    });
    let err = env.net().setup(&req).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("pod_cidr"), "{err}");
    assert_eq!(env.records(), 0);
}

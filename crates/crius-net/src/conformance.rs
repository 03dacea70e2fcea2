//! The shared conformance suite every [`NetworkPlugin`] implementation runs (as root).

use std::net::{Ipv4Addr, SocketAddr};

use crate::error::ErrorKind;
use crate::plugin::NetworkPlugin;
use crate::testutil::{in_subnet, ping, port_for, request, serve_once, TestNetns};
use crate::types::{PortMapping, Protocol};

/// What the suite needs from an implementation's test.
pub(crate) struct Fixture<'a> {
    /// The test name; ids and host ports derive from it.
    pub(crate) name: &'a str,
    /// Builds a fresh instance over the same configuration and state (a daemon restart).
    pub(crate) make: &'a dyn Fn() -> Box<dyn NetworkPlugin>,
    /// The subnet pods must get addresses from.
    pub(crate) subnet: Ipv4Addr,
    /// Its prefix length.
    pub(crate) prefix: u8,
    /// Whether CHECK of a pod with host ports can pass. Debian bookworm's portmap fails
    /// CHECK looking for IPv6 rules of an IPv4-only pod (containernetworking/plugins#819).
    pub(crate) check_with_host_ports: bool,
}

/// Runs the contract of [`NetworkPlugin`] against `fx`.
pub(crate) fn conformance_suite(fx: &Fixture<'_>) {
    let net = (fx.make)();
    assert!(net.status().ready, "{:?}", net.status());
    let (ns_a, ns_b) = (TestNetns::new(), TestNetns::new());
    let host_port = port_for(fx.name);
    let mut req_a = request(&format!("{}-a", fx.name), &ns_a);
    req_a.port_mappings.push(PortMapping {
        protocol: Protocol::Tcp,
        container_port: 8080,
        host_port,
        host_ip: None,
    });
    let req_b = request(&format!("{}-b", fx.name), &ns_b);

    let st_a = net.setup(&req_a).unwrap();
    let st_b = net.setup(&req_b).unwrap();
    let attached = net.attached().unwrap();
    assert!(
        attached.contains(&req_a.pod_id) && attached.contains(&req_b.pod_id),
        "{attached:?}"
    );
    assert_eq!(st_a.interface, "eth0");
    let (ip_a, ip_b) = (st_a.ips[0], st_b.ips[0]);
    assert_ne!(ip_a, ip_b);
    assert!(
        in_subnet(ip_a, fx.subnet, fx.prefix),
        "{ip_a} outside {}",
        fx.subnet
    );
    assert!(
        in_subnet(ip_b, fx.subnet, fx.prefix),
        "{ip_b} outside {}",
        fx.subnet
    );
    if fx.check_with_host_ports {
        net.check(&req_a).unwrap();
    }
    net.check(&req_b).unwrap();

    // Pod to pod, both ways, over TCP.
    let server = serve_once(ns_a.path(), 7000);
    ping(Some(ns_b.path()), SocketAddr::new(ip_a, 7000)).unwrap();
    server.join().unwrap();
    let server = serve_once(ns_b.path(), 7001);
    ping(Some(ns_a.path()), SocketAddr::new(ip_b, 7001)).unwrap();
    server.join().unwrap();

    // The host port reaches pod A from the host's loopback.
    let server = serve_once(ns_a.path(), 8080);
    ping(None, SocketAddr::from(([127, 0, 0, 1], host_port))).unwrap();
    server.join().unwrap();

    // A fresh instance (daemon restart) tears down from persisted state; twice is fine.
    let restarted = (fx.make)();
    restarted.teardown(&req_a).unwrap();
    restarted.teardown(&req_a).unwrap();
    assert_eq!(
        restarted.check(&req_a).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(ping(None, SocketAddr::from(([127, 0, 0, 1], host_port))).is_err());

    // Unknown pods: teardown is a no-op, check is NotFound.
    let unknown = request(&format!("{}-unknown", fx.name), &ns_a);
    restarted.teardown(&unknown).unwrap();
    assert_eq!(
        restarted.check(&unknown).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // Bad input is InvalidArgument and touches nothing.
    let mut bad = request("../escape", &ns_a);
    assert_eq!(
        net.setup(&bad).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    bad.pod_id = format!("{}-c", fx.name);
    bad.netns_path = "relative/ns".into();
    assert_eq!(
        net.setup(&bad).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );

    // A namespace that does not exist fails setup and leaves nothing behind.
    bad.netns_path = ns_a.path().with_file_name("missing");
    assert!(net.setup(&bad).is_err());
    assert_eq!(net.check(&bad).unwrap_err().kind(), ErrorKind::NotFound);

    // Pod A's address is free again: a new pod in A's namespace can be set up.
    let req_a2 = request(&format!("{}-a2", fx.name), &ns_a);
    let st_a2 = net.setup(&req_a2).unwrap();
    assert!(in_subnet(st_a2.ips[0], fx.subnet, fx.prefix));
    net.teardown(&req_a2).unwrap();
    net.teardown(&req_b).unwrap();

    // A pod whose namespace is already gone (its monitor died) still tears down cleanly.
    let ns_c = TestNetns::new();
    let req_c = request(&format!("{}-c", fx.name), &ns_c);
    net.setup(&req_c).unwrap();
    drop(ns_c);
    (fx.make)().teardown(&req_c).unwrap();
    assert_eq!(net.check(&req_c).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(net.attached().unwrap(), Vec::<String>::new());
}

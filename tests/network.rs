//! Pod networking end to end, through criusd.
//!
//! - The built-in network: pods get addresses from the configured CIDR on a bridge of their
//!   own, reach each other, a host port answers on the host's loopback, NetworkReady is
//!   true, and removal leaves no veth on the bridge.
//! - CNI with Debian's plugins (bridge + host-local + loopback + portmap): NetworkReady
//!   follows the conf dir without a restart, two pods reach each other, a host port answers,
//!   and after a criusd restart DEL still runs from the cache and releases the addresses.
//! - Broken CNI configs (bad JSON, missing plugin, plugin that exits 1, plugin that hangs)
//!   fail RunPodSandbox with a clear error and leave no pod, netns pin or monitor behind.
//!
//! Each test uses its own bridge and /24, and removes the bridge and its iptables rules
//! afterwards. Nothing is ever routed or masqueraded towards the outside. Needs root.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    container_config, exec, pod_config, pod_dirs, remove_pod, run_container, run_pod_with,
    setup_with, Daemon,
};
use crius::api;

/// The test's bridge, removed (with its iptables chains) on drop.
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let rules = Command::new("iptables")
            .args(["-w", "-t", "nat", "-S"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ours: Vec<&str> = rules.lines().filter(|l| l.contains(&self.0)).collect();
        for rule in ours.iter().filter(|l| l.starts_with("-A ")) {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("iptables -w -t nat -D {}", &rule[3..]))
                .status();
        }
        for chain in ours.iter().filter_map(|l| l.strip_prefix("-N ")) {
            let _ = Command::new("iptables")
                .args(["-w", "-t", "nat", "-F", chain])
                .status();
            let _ = Command::new("iptables")
                .args(["-w", "-t", "nat", "-X", chain])
                .status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// Interfaces enslaved to `bridge`.
fn bridge_ports(bridge: &str) -> Vec<String> {
    std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn pod_ip(client: &mut crius::client::CriClient, pod: &str) -> Ipv4Addr {
    let status = client
        .runtime
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    status.network.unwrap().ip.parse().unwrap()
}

/// Reads what the server at `addr` sends, retrying while it starts.
fn fetch(addr: (Ipv4Addr, u16)) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)).and_then(
            |mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(3)))?;
                let mut reply = String::new();
                stream.read_to_string(&mut reply)?;
                Ok(reply)
            },
        );
        match attempt {
            Ok(reply) if !reply.is_empty() => return reply,
            other => assert!(
                Instant::now() < deadline,
                "{addr:?} did not answer: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn builtin_bridge_pods_reach_each_other_and_a_host_port_answers() {
    // Unique per test process: a bridge name, a /24 and a host port.
    let n = std::process::id();
    let bridge = format!("crt{:x}", n % 0xfffff);
    let subnet = format!("10.{}.{}", 100 + n % 100, (n / 100) % 250);
    let host_port = u16::try_from(20000 + n % 20000).unwrap();
    let mut guard = None;
    let Some(mut s) = setup_with("net-builtin", |layout| {
        layout.set_network(
            &format!("pod_cidr = \"{subnet}.0/24\""),
            &format!("mode = \"builtin\"\nbridge = \"{bridge}\"\nhost_ports = true"),
        );
        guard = Some(Bridge(bridge.clone()));
    })
    .await
    else {
        return;
    };

    let status = s
        .client
        .runtime
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let network = status
        .conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(network.status, "{network:?}");

    let mut server_pod = pod_config(&s.layout, "server");
    server_pod.port_mappings = vec![api::PortMapping {
        protocol: api::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: i32::from(host_port),
        host_ip: String::new(),
    }];
    let server = run_pod_with(&mut s.client, &server_pod).await;
    let client_pod = pod_config(&s.layout, "client");
    let client = run_pod_with(&mut s.client, &client_pod).await;
    let server_ip = pod_ip(&mut s.client, &server).await;
    let client_ip = pod_ip(&mut s.client, &client).await;
    for ip in [server_ip, client_ip] {
        assert!(ip.to_string().starts_with(&format!("{subnet}.")), "{ip}");
    }
    assert_ne!(server_ip, client_ip);

    let cfg = container_config(
        &s.image,
        "nc",
        &["/bin/nc", "-ll", "-p", "8080", "-e", "/bin/echo", "pong"],
    );
    run_container(&mut s, &server, &server_pod, cfg).await;
    let cfg = container_config(&s.image, "sh", &["/bin/sleep", "1000"]);
    let shell = run_container(&mut s, &client, &client_pod, cfg).await;

    // Pod to pod.
    let script = format!(
        "for i in $(seq 50); do r=$(nc -w 2 {server_ip} 8080 </dev/null) && [ -n \"$r\" ] && \
         echo \"$r\" && exit 0; sleep 0.2; done; exit 1"
    );
    let (code, out, err) = exec(&mut s.client, &shell, &["/bin/sh", "-c", &script]).await;
    assert_eq!((code, out.trim()), (0, "pong"), "{err}");
    // Host to pod, directly and through the host port on loopback.
    assert_eq!(fetch((server_ip, 8080)).trim(), "pong");
    let reply = tokio::task::spawn_blocking(move || fetch((Ipv4Addr::LOCALHOST, host_port)))
        .await
        .unwrap();
    assert_eq!(reply.trim(), "pong");
    assert_eq!(
        bridge_ports(&bridge).len(),
        2,
        "{:?}",
        bridge_ports(&bridge)
    );

    for pod in [&server, &client] {
        remove_pod(&mut s.client, pod).await;
    }
    assert_eq!(bridge_ports(&bridge), Vec::<String>::new());
    let nat = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout);
    for pod in [&server, &client] {
        assert!(
            !nat.contains(pod.as_str()),
            "a host port rule of {pod} remains: {nat}"
        );
    }
    drop(s);
    drop(guard);
}

/// Debian's containernetworking-plugins.
const DEBIAN_CNI: &str = "/usr/lib/cni";

async fn network_ready(client: &mut crius::client::CriClient) -> api::RuntimeCondition {
    let status = client
        .runtime
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    status
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap()
}

/// A bridge + host-local + loopback + portmap conflist on `bridge` and `subnet`.0/24.
fn conflist(bridge: &str, subnet: &str, ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("net-{bridge}"),
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("{subnet}.0/24")}]],
                      "dataDir": ipam_dir}},
            {"type": "loopback"},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// Addresses host-local still holds in `ipam_dir` for the network on `bridge`.
fn ipam_entries(ipam_dir: &Path, bridge: &str) -> Vec<String> {
    std::fs::read_dir(ipam_dir.join(format!("net-{bridge}")))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes portmap's shared chains when no mapping is left in them (the plugin creates
/// them on first use and never removes them).
fn remove_idle_portmap_chains() {
    let nat = |args: &[&str]| {
        Command::new("iptables")
            .args(["-w", "-t", "nat"])
            .args(args)
            .output()
            .map(|o| {
                (
                    o.status.success(),
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                )
            })
            .unwrap_or((false, String::new()))
    };
    let (exists, rules) = nat(&["-S", "CNI-HOSTPORT-DNAT"]);
    if !exists || rules.lines().any(|l| l.starts_with("-A")) {
        return;
    }
    let jump = [
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "CNI-HOSTPORT-DNAT",
    ];
    for chain in ["PREROUTING", "OUTPUT"] {
        let mut del = vec!["-D", chain];
        del.extend(jump);
        while nat(&del).0 {}
    }
    let masq = [
        "-D",
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        "CNI portfwd requiring masquerade",
        "-j",
        "CNI-HOSTPORT-MASQ",
    ];
    while nat(&masq).0 {}
    for chain in [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-MASQ",
        "CNI-HOSTPORT-SETMARK",
    ] {
        nat(&["-F", chain]);
        nat(&["-X", chain]);
    }
}

/// Mounts under `dir` (netns pins, rootfs) still in the mount table.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn cni_pods_reach_each_other_and_del_after_a_restart_releases_their_addresses() {
    if !Path::new(DEBIAN_CNI).join("bridge").exists() {
        eprintln!("SKIPPED: containernetworking-plugins not installed");
        return;
    }
    let n = std::process::id();
    let bridge = format!("crc{:x}", n % 0xfffff);
    let subnet = format!("10.{}.{}", 210 + n % 40, (n / 40) % 250);
    let host_port = u16::try_from(20000 + (n + 7919) % 20000).unwrap();
    let mut guard = None;
    let mut dirs = None;
    let Some(mut s) = setup_with("net-cni", |layout| {
        let conf_dir = layout.scratch.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        layout.set_network(
            "",
            &format!(
                "mode = \"cni\"\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"{DEBIAN_CNI}\"]",
                conf_dir.display()
            ),
        );
        dirs = Some((conf_dir, layout.scratch.path().join("ipam")));
        guard = Some(Bridge(bridge.clone()));
    })
    .await
    else {
        return;
    };
    let (conf_dir, ipam_dir): (PathBuf, PathBuf) = dirs.unwrap();

    // No config yet: not ready, saying why. A config appears: ready, with no restart.
    let cond = network_ready(&mut s.client).await;
    assert!(
        !cond.status && cond.message.contains("no cni network config"),
        "{cond:?}"
    );
    std::fs::write(
        conf_dir.join("10-test.conflist"),
        conflist(&bridge, &subnet, &ipam_dir),
    )
    .unwrap();
    let cond = network_ready(&mut s.client).await;
    assert!(cond.status, "{cond:?}");

    let mut server_pod = pod_config(&s.layout, "cni-server");
    server_pod.port_mappings = vec![api::PortMapping {
        protocol: api::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: i32::from(host_port),
        host_ip: String::new(),
    }];
    let server = run_pod_with(&mut s.client, &server_pod).await;
    let client_pod = pod_config(&s.layout, "cni-client");
    let client = run_pod_with(&mut s.client, &client_pod).await;
    let server_ip = pod_ip(&mut s.client, &server).await;
    let client_ip = pod_ip(&mut s.client, &client).await;
    for ip in [server_ip, client_ip] {
        assert!(ip.to_string().starts_with(&format!("{subnet}.")), "{ip}");
    }
    let mut held = ipam_entries(&ipam_dir, &bridge);
    held.sort();
    let mut want = vec![server_ip.to_string(), client_ip.to_string()];
    want.sort();
    assert_eq!(held, want);

    let cfg = container_config(
        &s.image,
        "nc",
        &["/bin/nc", "-ll", "-p", "8080", "-e", "/bin/echo", "pong"],
    );
    run_container(&mut s, &server, &server_pod, cfg).await;
    let cfg = container_config(&s.image, "sh", &["/bin/sleep", "1000"]);
    let shell = run_container(&mut s, &client, &client_pod, cfg).await;
    let script = format!(
        "for i in $(seq 50); do r=$(nc -w 2 {server_ip} 8080 </dev/null) && [ -n \"$r\" ] && \
         echo \"$r\" && exit 0; sleep 0.2; done; exit 1"
    );
    let (code, out, err) = exec(&mut s.client, &shell, &["/bin/sh", "-c", &script]).await;
    assert_eq!((code, out.trim()), (0, "pong"), "{err}");
    // The host port, through portmap, on the bridge's address (the gateway).
    let gateway: Ipv4Addr = format!("{subnet}.1").parse().unwrap();
    let reply = tokio::task::spawn_blocking(move || fetch((gateway, host_port)))
        .await
        .unwrap();
    assert_eq!(reply.trim(), "pong");

    // criusd dies between ADD and DEL, and the config is gone when it comes back: DEL
    // runs from the cached config and result, and host-local frees both addresses.
    s.daemon.kill_with(nix::sys::signal::Signal::SIGKILL);
    std::fs::remove_file(conf_dir.join("10-test.conflist")).unwrap();
    let daemon = Daemon::start(&s.layout, &[]);
    let mut c = daemon.client().await;
    assert!(!network_ready(&mut c).await.status);
    for pod in [&server, &client] {
        remove_pod(&mut c, pod).await;
    }
    assert_eq!(ipam_entries(&ipam_dir, &bridge), Vec::<String>::new());
    assert_eq!(bridge_ports(&bridge), Vec::<String>::new());
    let nat = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout);
    for pod in [&server, &client] {
        assert!(
            !nat.contains(pod.as_str()),
            "a portmap rule of {pod} remains: {nat}"
        );
    }
    let cache = s.layout.root.join("cni/cache");
    assert_eq!(std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0), 0);
    drop(daemon);
    drop(s);
    drop(guard);
    remove_idle_portmap_chains();
}

/// Writes an executable shell script `name` into `dir`.
fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn broken_cni_configs_fail_run_pod_clearly_and_leak_no_pod_or_netns() {
    if !Path::new(DEBIAN_CNI).join("bridge").exists() {
        eprintln!("SKIPPED: containernetworking-plugins not installed");
        return;
    }
    let n = std::process::id();
    let bridge = format!("crb{:x}", n % 0xfffff);
    let subnet = format!("10.{}.{}", 210 + (n + 17) % 40, (n / 40 + 3) % 250);
    let mut guard = None;
    let mut dirs = None;
    let Some(mut s) = setup_with("net-cni-broken", |layout| {
        let conf_dir = layout.scratch.path().join("net.d");
        let bin_dir = layout.scratch.path().join("bin");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::create_dir_all(&bin_dir).unwrap();
        layout.set_network(
            "",
            &format!(
                "mode = \"cni\"\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"{}\", \"{DEBIAN_CNI}\"]\n\
                 cni_timeout_seconds = 2",
                conf_dir.display(),
                bin_dir.display()
            ),
        );
        dirs = Some((conf_dir, bin_dir, layout.scratch.path().join("ipam")));
        guard = Some(Bridge(bridge.clone()));
    })
    .await
    else {
        return;
    };
    let (conf_dir, bin_dir, ipam_dir): (PathBuf, PathBuf, PathBuf) = dirs.unwrap();
    script(
        &bin_dir,
        "fail",
        r#"[ "$CNI_COMMAND" = ADD ] || exit 0; echo "bridge is on fire" >&2; exit 1"#,
    );
    script(
        &bin_dir,
        "hang",
        r#"[ "$CNI_COMMAND" = ADD ] || exit 0; sleep 1000"#,
    );
    let good = conflist(&bridge, &subnet, &ipam_dir);
    let with_plugin = |ty: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        v["plugins"]
            .as_array_mut()
            .unwrap()
            .insert(1, serde_json::json!({"type": ty}));
        v.to_string()
    };
    let file = conf_dir.join("10-test.conflist");
    let cases: [(&str, String, tonic::Code, &str); 4] = [
        (
            "bad json",
            "{\"name\": ".into(),
            tonic::Code::FailedPrecondition,
            "10-test.conflist",
        ),
        (
            "missing plugin",
            with_plugin("no-such-plugin"),
            tonic::Code::FailedPrecondition,
            "no-such-plugin",
        ),
        (
            "exit 1",
            with_plugin("fail"),
            tonic::Code::Internal,
            "bridge is on fire",
        ),
        (
            "hang",
            with_plugin("hang"),
            tonic::Code::DeadlineExceeded,
            "hang",
        ),
    ];
    for (i, (case, text, code, needle)) in cases.into_iter().enumerate() {
        std::fs::write(&file, text).unwrap();
        let config = pod_config(&s.layout, &format!("broken-{i}"));
        let err = s
            .client
            .runtime
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert!(err.message().contains(needle), "{case}: {err:?}");
        assert_eq!(err.code(), code, "{case}: {err:?}");
        let pods = s
            .client
            .runtime
            .list_pod_sandbox(api::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        assert!(pods.is_empty(), "{case}: {pods:?}");
        assert_eq!(pod_dirs(&s.layout), Vec::<String>::new(), "{case}");
        assert_eq!(
            mounts_under(&s.layout.state),
            Vec::<String>::new(),
            "{case}"
        );
        assert_eq!(
            ipam_entries(&ipam_dir, &bridge),
            Vec::<String>::new(),
            "{case}"
        );
        assert_eq!(bridge_ports(&bridge), Vec::<String>::new(), "{case}");
    }
    // Fixed in place: the next pod gets a network with no restart.
    std::fs::write(&file, &good).unwrap();
    assert!(network_ready(&mut s.client).await.status);
    let pod = run_pod_with(&mut s.client, &pod_config(&s.layout, "fixed")).await;
    assert!(pod_ip(&mut s.client, &pod)
        .await
        .to_string()
        .starts_with(&format!("{subnet}.")));
    remove_pod(&mut s.client, &pod).await;
    assert_eq!(ipam_entries(&ipam_dir, &bridge), Vec::<String>::new());
    assert_eq!(mounts_under(&s.layout.state), Vec::<String>::new());
    drop(s);
    drop(guard);
    remove_idle_portmap_chains();
}

#[tokio::test]
async fn a_network_left_by_a_crash_inside_run_pod_is_released_at_start() {
    if !crius_testkit::require_root("a_network_left_by_a_crash_inside_run_pod_is_released_at_start")
    {
        return;
    }
    let layout = common::Layout::new("net-stale");
    let conf_dir = layout.scratch.path().join("net.d");
    let bin_dir = layout.scratch.path().join("bin");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(&bin_dir).unwrap();
    let log = layout.scratch.path().join("calls");
    script(
        &bin_dir,
        "spy",
        &format!(
            r#"cat > /dev/null; echo "$CNI_COMMAND $CNI_CONTAINERID" >> {}"#,
            log.display()
        ),
    );
    let conf =
        serde_json::json!({"cniVersion": "1.0.0", "name": "spy", "plugins": [{"type": "spy"}]});
    let conf_file = conf_dir.join("10-spy.conflist");
    std::fs::write(&conf_file, conf.to_string()).unwrap();
    layout.set_network(
        "",
        &format!(
            "mode = \"cni\"\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"{}\"]",
            conf_dir.display(),
            bin_dir.display()
        ),
    );
    // What an ADD leaves in the cache before its plugins run, for a pod the store never
    // recorded (criusd died inside RunPodSandbox).
    let cache = layout.root.join("cni/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let entry = serde_json::json!({
        "version": 1, "pod_id": "stalepod", "ifname": "eth0", "netns": "/nonexistent/net",
        "cni_args": "IgnoreUnknown=1", "source": conf_file, "config": conf,
        "runtime_config": {}, "result": null,
    });
    std::fs::write(cache.join("stalepod.json"), entry.to_string()).unwrap();
    let daemon = Daemon::start(&layout, &[]);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "DEL stalepod\n"
    );
    assert!(!cache.join("stalepod.json").exists());
    drop(daemon);
}

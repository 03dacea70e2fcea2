//! The built-in pod network end to end: pods get addresses from the configured CIDR on
//! a bridge of their own, reach each other, a host port answers on the host's loopback,
//! NetworkReady is true, and removal leaves no veth on the bridge. Each test uses its own
//! bridge and /24, and removes the bridge and its iptables chains afterwards. Nothing is
//! ever routed or masqueraded towards the outside. Needs root.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    container_config, exec, pod_config, remove_pod, run_container, run_pod_with, setup_with,
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

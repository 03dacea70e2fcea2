//! CNI tests on the real kernel with Debian's containernetworking-plugins (as root).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{CniNetwork, CniOptions};
use crate::conformance::{conformance_suite, Fixture};
use crate::error::ErrorKind;
use crate::plugin::NetworkPlugin;
use crate::testutil::{bridge_for, delete_link, request, subnet_for, TestNetns};

const DEBIAN_CNI: &str = "/usr/lib/cni";

/// A conf dir, cache dir and host-local data dir for one test, plus its bridge.
struct Env {
    dir: tempfile::TempDir,
    bridge: String,
    subnet: std::net::Ipv4Addr,
}

impl Env {
    fn new(name: &str) -> Option<Self> {
        if !crius_testkit::require_root(name) {
            return None;
        }
        if !Path::new(DEBIAN_CNI).join("bridge").exists() {
            eprintln!("SKIPPED {name}: containernetworking-plugins not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        Some(Env {
            dir,
            bridge: bridge_for(name),
            subnet: subnet_for(name),
        })
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    fn options(&self) -> CniOptions {
        CniOptions {
            conf_dir: self.dir.path().join("conf"),
            bin_dirs: vec![self.dir.path().join("bin"), PathBuf::from(DEBIAN_CNI)],
            cache_dir: self.dir.path().join("cache"),
            timeout: Duration::from_secs(10),
            ifname: "eth0".into(),
        }
    }

    /// Writes a bridge + host-local + portmap conflist; `extra` plugins go after bridge.
    fn write_conflist(&self, version: &str, extra: &[serde_json::Value]) {
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("{}/24", self.subnet)}]],
                "dataDir": self.ipam_dir(),
            }
        })];
        plugins.extend_from_slice(extra);
        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
        let conf = json!({"cniVersion": version, "name": format!("net-{}", self.bridge), "plugins": plugins});
        std::fs::write(
            self.dir.path().join("conf/10-test.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
    }

    fn script(&self, name: &str, body: &str) {
        let path = self.dir.path().join("bin").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Addresses host-local still holds.
    fn ipam_entries(&self) -> Vec<String> {
        let dir = self.ipam_dir().join(format!("net-{}", self.bridge));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        delete_link(&self.bridge);
    }
}

#[test]
fn cni_passes_the_conformance_suite() {
    let Some(env) = Env::new("cni_passes_the_conformance_suite") else {
        return;
    };
    env.write_conflist("1.0.0", &[]);
    let opts = env.options();
    let make = move || Box::new(CniNetwork::new(opts.clone())) as Box<dyn NetworkPlugin>;
    conformance_suite(&Fixture {
        name: "cni-conf",
        make: &make,
        subnet: env.subnet,
        prefix: 24,
        check_with_host_ports: false,
    });
    assert!(env.ipam_entries().is_empty(), "{:?}", env.ipam_entries());
}

#[test]
fn del_releases_the_host_local_address_and_the_cache() {
    let Some(env) = Env::new("del_releases_the_host_local_address_and_the_cache") else {
        return;
    };
    env.write_conflist("0.4.0", &[]);
    let ns = TestNetns::new();
    let req = request("cni-release", &ns);
    let net = CniNetwork::new(env.options());
    let st = net.setup(&req).unwrap();
    assert_eq!(env.ipam_entries(), vec![st.ips[0].to_string()]);
    assert!(env.options().cache_dir.join("cni-release.json").exists());
    // Restart: a new object with only the cache; the conf dir is even gone.
    std::fs::remove_file(env.dir.path().join("conf/10-test.conflist")).unwrap();
    let restarted = CniNetwork::new(env.options());
    assert!(!restarted.status().ready);
    restarted.check(&req).unwrap();
    restarted.teardown(&req).unwrap();
    assert!(env.ipam_entries().is_empty());
    assert!(!env.options().cache_dir.join("cni-release.json").exists());
}

#[test]
fn failing_plugin_rolls_back_the_add_with_its_error() {
    let Some(env) = Env::new("failing_plugin_rolls_back_the_add_with_its_error") else {
        return;
    };
    env.script(
        "fail",
        r#"[ "$CNI_COMMAND" = ADD ] || exit 0; echo '{"cniVersion":"1.0.0","code":100,"msg":"refusing on purpose","details":"test"}'; exit 1"#,
    );
    env.write_conflist("1.0.0", &[json!({"type": "fail"})]);
    let ns = TestNetns::new();
    let req = request("cni-fail", &ns);
    let err = CniNetwork::new(env.options()).setup(&req).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("refusing on purpose") && text.contains("code 100"),
        "{text}"
    );
    assert!(
        env.ipam_entries().is_empty(),
        "address leaked: {:?}",
        env.ipam_entries()
    );
    assert!(!env.options().cache_dir.join("cni-fail.json").exists());
}

#[test]
fn hanging_plugin_times_out_and_rolls_back() {
    let Some(env) = Env::new("hanging_plugin_times_out_and_rolls_back") else {
        return;
    };
    env.script("hang", r#"[ "$CNI_COMMAND" = ADD ] || exit 0; sleep 1000"#);
    env.write_conflist("1.0.0", &[json!({"type": "hang"})]);
    let ns = TestNetns::new();
    let req = request("cni-hang", &ns);
    let mut opts = env.options();
    opts.timeout = Duration::from_millis(1500);
    let start = Instant::now();
    let err = CniNetwork::new(opts).setup(&req).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(
        env.ipam_entries().is_empty(),
        "address leaked: {:?}",
        env.ipam_entries()
    );
}

#[test]
fn missing_plugin_and_bad_json_are_not_ready_and_fail_setup_cleanly() {
    let Some(env) = Env::new("missing_plugin_and_bad_json_are_not_ready_and_fail_setup_cleanly")
    else {
        return;
    };
    let net = CniNetwork::new(env.options());
    let ns = TestNetns::new();
    let req = request("cni-broken", &ns);
    let st = net.status();
    assert!(
        !st.ready && st.message.contains("no cni network config"),
        "{st:?}"
    );
    assert_eq!(
        net.setup(&req).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );

    env.write_conflist("1.0.0", &[json!({"type": "no-such-plugin"})]);
    let st = net.status();
    assert!(!st.ready && st.message.contains("no-such-plugin"), "{st:?}");
    let err = net.setup(&req).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    // Stopping a pod that never got a network must not fail on the broken config.
    net.teardown(&req).unwrap();

    std::fs::write(env.dir.path().join("conf/10-test.conflist"), "{\"name\": ").unwrap();
    let st = net.status();
    assert!(!st.ready && st.message.contains("not valid json"), "{st:?}");
    assert!(net
        .setup(&req)
        .unwrap_err()
        .to_string()
        .contains("10-test.conflist"));

    // Fixing the file makes the network ready without a restart.
    env.write_conflist("1.0.0", &[]);
    assert!(net.status().ready);
    assert!(env.ipam_entries().is_empty());
    assert!(!env.options().cache_dir.join("cni-broken.json").exists());
}

#[test]
fn spec_0_3_1_chain_sets_up_and_tears_down() {
    let Some(env) = Env::new("spec_0_3_1_chain_sets_up_and_tears_down") else {
        return;
    };
    env.write_conflist("0.3.1", &[]);
    let ns = TestNetns::new();
    let req = request("cni-031", &ns);
    let net = CniNetwork::new(env.options());
    let st = net.setup(&req).unwrap();
    assert!(crate::testutil::in_subnet(st.ips[0], env.subnet, 24));
    assert_eq!(
        st.gateway,
        Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(env.subnet) + 1
        )))
    );
    // CHECK does not exist before 0.4.0: it only confirms the pod is known.
    net.check(&req).unwrap();
    net.teardown(&req).unwrap();
    assert!(env.ipam_entries().is_empty());
}

#[test]
fn plugins_get_the_runtime_config_their_capabilities_ask_for_and_the_k8s_args() {
    let Some(env) =
        Env::new("plugins_get_the_runtime_config_their_capabilities_ask_for_and_the_k8s_args")
    else {
        return;
    };
    let seen = env.dir.path().join("seen");
    env.script(
        "spy",
        &format!(
            r#"cat > {seen}.$CNI_COMMAND.json; echo "$CNI_ARGS" > {seen}.$CNI_COMMAND.args
[ "$CNI_COMMAND" = ADD ] && echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.99.0.5/24","gateway":"10.99.0.1"}}]}}'
exit 0"#,
            seen = seen.display()
        ),
    );
    let conf = json!({"cniVersion": "1.0.0", "name": "spy", "plugins": [
        {"type": "spy", "capabilities": {"dns": true, "ipRanges": true, "portMappings": false}}
    ]});
    std::fs::write(
        env.dir.path().join("conf/10-spy.conflist"),
        conf.to_string(),
    )
    .unwrap();
    let ns = TestNetns::new();
    let mut req = request("cni-spy", &ns);
    req.dns = Some(crate::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    req.ip_ranges = vec![vec![crate::IpRange {
        subnet: "10.99.0.0/24".into(),
        ..Default::default()
    }]];
    req.port_mappings.push(crate::PortMapping {
        protocol: crate::Protocol::Udp,
        container_port: 53,
        host_port: 5353,
        host_ip: None,
    });
    let net = CniNetwork::new(env.options());
    let st = net.setup(&req).unwrap();
    assert_eq!(
        st.ips,
        vec!["10.99.0.5".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(st.gateway, Some("10.99.0.1".parse().unwrap()));
    let add: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.ADD.json", seen.display())).unwrap())
            .unwrap();
    assert_eq!(add["runtimeConfig"]["dns"]["servers"][0], "10.96.0.10");
    assert_eq!(
        add["runtimeConfig"]["ipRanges"][0][0]["subnet"],
        "10.99.0.0/24"
    );
    assert!(add["runtimeConfig"].get("portMappings").is_none(), "{add}");
    let args = std::fs::read_to_string(format!("{}.ADD.args", seen.display())).unwrap();
    assert!(args.contains("K8S_POD_NAME=name-cni-spy") && args.contains("K8S_POD_UID=uid-cni-spy"));
    // DEL after a restart gets the cached result as prevResult and the same runtimeConfig.
    CniNetwork::new(env.options()).teardown(&req).unwrap();
    let del: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.DEL.json", seen.display())).unwrap())
            .unwrap();
    assert_eq!(del["prevResult"]["ips"][0]["address"], "10.99.0.5/24");
    assert_eq!(
        del["runtimeConfig"]["dns"]["searches"][0],
        "svc.cluster.local"
    );
}

#[test]
fn del_runs_once_and_also_for_an_add_cut_short_by_a_crash() {
    let Some(env) = Env::new("del_runs_once_and_also_for_an_add_cut_short_by_a_crash") else {
        return;
    };
    let log = env.dir.path().join("calls");
    env.script(
        "spy",
        &format!(
            r#"cat > /dev/null; echo "$CNI_COMMAND" >> {log}
[ "$CNI_COMMAND" = ADD ] && echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.98.0.5/24"}}]}}'
exit 0"#,
            log = log.display()
        ),
    );
    let conf = json!({"cniVersion": "1.0.0", "name": "spy", "plugins": [{"type": "spy"}]});
    std::fs::write(
        env.dir.path().join("conf/10-spy.conflist"),
        conf.to_string(),
    )
    .unwrap();
    let calls = || std::fs::read_to_string(&log).unwrap_or_default();
    let ns = TestNetns::new();
    let req = request("cni-once", &ns);
    let net = CniNetwork::new(env.options());
    net.setup(&req).unwrap();
    net.teardown(&req).unwrap();
    // Stop then remove: the second teardown finds no entry and runs no plugin.
    net.teardown(&req).unwrap();
    assert_eq!(calls(), "ADD\nDEL\n");

    // A daemon that died during ADD left the entry written before the plugins ran, with
    // no result: teardown after the restart still runs DEL, without a prevResult.
    let mut pending =
        super::cache::CacheEntry::new("cni-once", "eth0", ns.path(), "IgnoreUnknown=1");
    pending.source = env.dir.path().join("conf/10-spy.conflist");
    pending.config = conf;
    super::cache::write(&env.options().cache_dir, &pending).unwrap();
    assert_eq!(
        net.check(&req).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    CniNetwork::new(env.options()).teardown(&req).unwrap();
    assert_eq!(calls(), "ADD\nDEL\nDEL\n");
    assert!(!env.options().cache_dir.join("cni-once.json").exists());
}

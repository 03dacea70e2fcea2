//! Cgroup-backed requests (stats, update, OOM), log reopening, terminals, user
//! namespaces and sysctls.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crius_monitor::protocol::CreateContainer;
use crius_monitor::{IdMappings, PodNamespaces};
use crius_oci::cgroup::CgroupManager;
use oci_spec::runtime::{
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder,
};

use common::{namespaces, wait_exited, wait_log, Pod};

/// A cgroup parent unique to this test, removed (with its children) on drop.
struct CgroupParent(PathBuf);

impl CgroupParent {
    fn new(name: &str) -> Self {
        Self(PathBuf::from(format!(
            "crius-monitor-test-{name}-{}",
            std::process::id()
        )))
    }

    fn child(&self, id: &str) -> PathBuf {
        self.0.join(id)
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        if let Ok(m) = CgroupManager::new(&self.0) {
            let _ = m.delete();
        }
    }
}

fn memory_limit(bytes: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(bytes).build().unwrap())
        .build()
        .unwrap()
}

fn with_cgroup(
    mut req: CreateContainer,
    path: &Path,
    res: Option<LinuxResources>,
) -> CreateContainer {
    let linux = req.spec.linux_mut().as_mut().unwrap();
    linux.set_cgroups_path(Some(path.to_path_buf()));
    linux.set_resources(res);
    req
}

fn v1_memory_file(path: &Path, file: &str) -> Option<String> {
    let p = Path::new("/sys/fs/cgroup/memory").join(path).join(file);
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn stats_and_resource_updates_use_the_container_cgroup() {
    if !crius_testkit::require_root("stats_and_resource_updates") {
        return;
    }
    let parent = CgroupParent::new("stats");
    let pod = Pod::start("stats", namespaces(false));
    let mut client = pod.client();
    let path = parent.child("c");
    let req = with_cgroup(pod.create_request("c", &["/bin/sleep", "60"]), &path, None);
    client.create(req).unwrap();
    client.start("c").unwrap();
    let stats = client.stats("c").unwrap();
    assert!(stats.timestamp_ns > 0);
    assert!(stats.memory_working_set_bytes > 0, "{stats:?}");
    assert_eq!(stats.oom_events, 0);
    assert!(stats.page_faults > 0, "{stats:?}");
    client
        .update_resources("c", memory_limit(64 << 20))
        .unwrap();
    if let Some(limit) = v1_memory_file(&path, "memory.limit_in_bytes") {
        assert_eq!(limit, (64u64 << 20).to_string());
    }
    client
        .stop("c", Duration::from_secs(2), libc::SIGTERM)
        .unwrap();
    client.remove("c").unwrap();
    assert!(!CgroupManager::new(&path).unwrap().exists());
    let err = client.stats("c").unwrap_err();
    assert_eq!(err.kind(), crius_monitor::ErrorKind::NotFound);
}

#[test]
fn a_runc_handler_container_is_updated_by_the_cli() {
    if !crius_testkit::require_root("a_runc_handler_container_is_updated") {
        return;
    }
    let runc = Path::new("/usr/sbin/runc");
    assert!(
        runc.exists(),
        "runc is not installed (scripts/install-deps.sh --test)"
    );
    let parent = CgroupParent::new("runc-update");
    let pod = Pod::start("runc-update", namespaces(false));
    let mut client = pod.client();
    let path = parent.child("r");
    let mut req = with_cgroup(pod.create_request("r", &["/bin/sleep", "60"]), &path, None);
    req.runtime = crius_monitor::protocol::RuntimeChoice::Binary { path: runc.into() };
    client.create(req).unwrap();
    client.start("r").unwrap();
    client
        .update_resources("r", memory_limit(48 << 20))
        .unwrap();
    if let Some(limit) = v1_memory_file(&path, "memory.limit_in_bytes") {
        assert_eq!(limit, (48u64 << 20).to_string());
    }
    client
        .stop("r", Duration::from_millis(200), libc::SIGTERM)
        .unwrap();
    client.remove("r").unwrap();
}

#[test]
fn an_oom_kill_is_recorded_as_oomkilled() {
    if !crius_testkit::require_root("an_oom_kill_is_recorded") {
        return;
    }
    let parent = CgroupParent::new("oom");
    let pod = Pod::start("oom", namespaces(false));
    let mut client = pod.client();
    let req = with_cgroup(
        pod.create_request(
            "hog",
            &[
                "/bin/sh",
                "-c",
                "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
            ],
        ),
        &parent.child("hog"),
        Some(memory_limit(16 << 20)),
    );
    client.create(req).unwrap();
    client.start("hog").unwrap();
    let s = wait_exited(&mut client, "hog");
    assert!(s.oom_killed, "{s:?}");
    assert_eq!(s.reason, "OOMKilled");
    client.remove("hog").unwrap();
}

#[test]
fn reopen_log_moves_output_to_a_fresh_file() {
    if !crius_testkit::require_root("reopen_log_moves_output") {
        return;
    }
    let pod = Pod::start("reopen", namespaces(false));
    let mut client = pod.client();
    pod.run(
        &mut client,
        "ticker",
        &[
            "/bin/sh",
            "-c",
            "while true; do echo tick; sleep 0.05; done",
        ],
    );
    wait_log(&pod, "ticker", |l| l.contains("tick"));
    let rotated = pod.log_path("ticker").with_extension("1");
    std::fs::rename(pod.log_path("ticker"), &rotated).unwrap();
    client.reopen_log("ticker").unwrap();
    wait_log(&pod, "ticker", |l| l.contains("stdout F tick"));
    client
        .stop("ticker", Duration::from_secs(2), libc::SIGKILL)
        .unwrap();
    assert!(std::fs::read_to_string(rotated).unwrap().contains("tick"));
}

#[test]
fn a_terminal_container_logs_its_pty_output_as_stdout() {
    if !crius_testkit::require_root("a_terminal_container_logs_its_pty") {
        return;
    }
    let pod = Pod::start("tty", namespaces(false));
    let mut client = pod.client();
    let mut req = pod.create_request("t", &["/bin/sh", "-c", "tty; echo from-tty"]);
    req.tty = true;
    req.stdin = true;
    req.spec
        .process_mut()
        .as_mut()
        .unwrap()
        .set_terminal(Some(true));
    client.create(req).unwrap();
    client.start("t").unwrap();
    assert_eq!(wait_exited(&mut client, "t").exit_code, 0);
    let log = wait_log(&pod, "t", |l| l.contains("from-tty"));
    assert!(log.contains("stdout F /dev/pts/"), "{log}");
    // A tty flag that disagrees with the spec is refused.
    let mut bad = pod.create_request("u", &["/bin/true"]);
    bad.tty = true;
    let err = client.create(bad).unwrap_err();
    assert_eq!(err.kind(), crius_monitor::ErrorKind::InvalidArgument);
}

#[test]
fn a_user_namespaced_pod_maps_root_to_an_unprivileged_host_id() {
    if !crius_testkit::require_root("a_user_namespaced_pod") {
        return;
    }
    let map = |c: u32, h: u32, s: u32| {
        LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(s)
            .build()
            .unwrap()
    };
    let ns = PodNamespaces {
        user: Some(IdMappings {
            uid_mappings: vec![map(0, 200_000, 65536)],
            gid_mappings: vec![map(0, 200_000, 65536)],
        }),
        // A shared pid namespace too: its reaper must live in the pod's user namespace.
        ..namespaces(true)
    };
    let pod = Pod::start("userns", ns);
    // The rootfs must be owned by the mapped root for the container to use it.
    let rootfs = pod.bundle().join("rootfs");
    std::process::Command::new("chown")
        .args(["-R", "200000:200000"])
        .arg(&rootfs)
        .status()
        .unwrap();
    let mut client = pod.client();
    let mut req = pod.create_request(
        "u",
        &["/bin/sh", "-c", "cat /proc/self/uid_map; ps -o pid,args"],
    );
    let linux = req.spec.linux_mut().as_mut().unwrap();
    linux.set_uid_mappings(Some(vec![map(0, 200_000, 65536)]));
    linux.set_gid_mappings(Some(vec![map(0, 200_000, 65536)]));
    client.create(req).unwrap();
    client.start("u").unwrap();
    let s = wait_exited(&mut client, "u");
    let log = wait_log(&pod, "u", |l| {
        l.contains("200000") && l.contains("crius-reaper")
    });
    assert_eq!(s.exit_code, 0, "{log}");
}

#[test]
fn pod_sysctls_apply_inside_the_pod_network_namespace() {
    if !crius_testkit::require_root("pod_sysctls_apply") {
        return;
    }
    let mut pod = Pod::prepare("sysctl", namespaces(false));
    pod.config
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
    pod.config
        .sysctls
        .insert("kernel.shmmni".into(), "1234".into());
    pod.handle = Some(crius_monitor::spawn_monitor(common::MONITOR.as_ref(), &pod.config).unwrap());
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let mut client = pod.client();
    pod.run(
        &mut client,
        "s",
        &[
            "/bin/sh",
            "-c",
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmni; ip link show lo",
        ],
    );
    wait_exited(&mut client, "s");
    let lines = pod.log_lines("s");
    assert_eq!(lines[..2], ["80", "1234"], "{lines:?}");
    assert!(lines[2].contains("UP"), "{lines:?}");
    assert_ne!(host.trim(), "80");
}

#[test]
fn a_bad_sysctl_fails_the_spawn_with_the_monitor_message() {
    if !crius_testkit::require_root("a_bad_sysctl_fails_the_spawn") {
        return;
    }
    let mut pod = Pod::prepare("badsysctl", namespaces(false));
    pod.config
        .sysctls
        .insert("net.ipv4.no_such_knob".into(), "1".into());
    let err = crius_monitor::spawn_monitor(common::MONITOR.as_ref(), &pod.config).unwrap_err();
    assert!(err.to_string().contains("no_such_knob"), "{err}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(pod.config.state_dir.to_str().unwrap()));
    assert!(!pod.config.socket_path().exists());
}

#[test]
fn stats_work_for_a_container_in_the_runtime_default_cgroup() {
    if !crius_testkit::require_root("stats_work_for_a_default_cgroup") {
        return;
    }
    let pod = Pod::start("defcg", namespaces(false));
    let mut client = pod.client();
    let id = format!("crius-monitor-defcg-{}", std::process::id());
    let mut req = pod.create_request(&id, &["/bin/sleep", "60"]);
    req.spec
        .linux_mut()
        .as_mut()
        .unwrap()
        .set_cgroups_path(None);
    client.create(req).unwrap();
    client.start(&id).unwrap();
    let stats = client.stats(&id).unwrap();
    assert!(stats.pids >= 1, "{stats:?}");
    client
        .stop(&id, Duration::from_secs(2), libc::SIGKILL)
        .unwrap();
    client.remove(&id).unwrap();
}

//! Isolation seen from inside the container: what the security context of the request
//! asks for is what the process gets (capabilities, seccomp, no_new_privs, masked and
//! read-only /proc, user, read-only rootfs), pod namespaces are shared or the host's as
//! asked, and a memory limit ends in `OOMKilled`. Checked through ExecSync and container
//! logs against a real criusd. Needs root.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use std::time::{Duration, Instant};

use common::{
    container_config, exec, pod_config, remove_pod, run_container, run_pod, run_pod_with, setup,
    status, wait_exited_of, Setup,
};
use crius::api;

/// Docker's (and containerd's) default capability set.
const DOCKER_DEFAULT_CAPS: &str = "00000000a80425fb";

/// The value of `field` in a /proc/<pid>/status text.
fn field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

fn secure(sc: api::LinuxContainerSecurityContext) -> Option<api::LinuxContainerConfig> {
    Some(api::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    })
}

fn runtime_default() -> Option<api::SecurityProfile> {
    Some(api::SecurityProfile {
        profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    })
}

/// Waits until the container's log contains `marker` and returns the log.
async fn log_with(s: &mut Setup, id: &str, marker: &str) -> String {
    let path = status(s, id).await.log_path;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains(marker) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {marker:?} in log {log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const PROBE: &str = "grep -E '^(Uid|CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status; \
    for f in /proc/kcore /proc/timer_list /proc/interrupts; do \
        [ -e $f ] && echo masked $f=$(wc -c < $f); done; \
    (echo evil > /proc/sys/kernel/hostname) 2>/dev/null && echo hostname=written || echo hostname=refused; \
    touch /x 2>/dev/null && echo touch=ok || echo touch=refused; \
    echo DONE; exec sleep 1000";

/// The probe's findings from a CRI log (`<time> stdout F <line>`).
fn probe_lines(log: &str) -> String {
    log.lines()
        .filter_map(|l| l.split_once(" stdout F ").map(|(_, m)| m))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_security_context_reaches_the_process() {
    let Some(mut s) = setup("iso-secctx").await else {
        return;
    };
    let (pod, sandbox) = run_pod(&mut s, "secure").await;

    let mut cfg = container_config(&s.image, "default", &["/bin/sh", "-c", PROBE]);
    cfg.linux = secure(api::LinuxContainerSecurityContext {
        seccomp: runtime_default(),
        no_new_privs: true,
        ..Default::default()
    });
    let default = run_container(&mut s, &pod, &sandbox, cfg).await;
    let out = probe_lines(&log_with(&mut s, &default, "DONE").await);
    assert_eq!(field(&out, "CapEff"), DOCKER_DEFAULT_CAPS, "{out}");
    assert_eq!(field(&out, "CapBnd"), DOCKER_DEFAULT_CAPS, "{out}");
    assert_eq!(field(&out, "Seccomp"), "2", "{out}");
    assert_eq!(field(&out, "NoNewPrivs"), "1", "{out}");
    assert!(field(&out, "Uid").starts_with("0\t"), "{out}");
    // Masked /proc files read empty (this kernel may lack /proc/kcore: check what exists).
    for path in ["/proc/kcore", "/proc/timer_list", "/proc/interrupts"] {
        if std::path::Path::new(path).exists() {
            assert!(
                out.contains(&format!("masked {path}=0")),
                "{path} is not masked: {out}"
            );
        }
    }
    assert!(
        out.contains("hostname=refused"),
        "/proc/sys is writable: {out}"
    );
    assert!(out.contains("touch=ok"), "{out}");
    // An exec gets the same confinement as the container's init.
    let (code, status_text, err) =
        exec(&mut s.client, &default, &["/bin/cat", "/proc/self/status"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(field(&status_text, "CapEff"), DOCKER_DEFAULT_CAPS);
    assert_eq!(field(&status_text, "CapBnd"), DOCKER_DEFAULT_CAPS);
    assert_eq!(field(&status_text, "Seccomp"), "2");
    assert_eq!(field(&status_text, "NoNewPrivs"), "1");

    let mut cfg = container_config(&s.image, "user", &["/bin/sh", "-c", PROBE]);
    cfg.linux = secure(api::LinuxContainerSecurityContext {
        seccomp: runtime_default(),
        run_as_user: Some(api::Int64Value { value: 1000 }),
        readonly_rootfs: true,
        no_new_privs: false,
        ..Default::default()
    });
    let user = run_container(&mut s, &pod, &sandbox, cfg).await;
    let out = probe_lines(&log_with(&mut s, &user, "DONE").await);
    assert!(field(&out, "Uid").starts_with("1000\t"), "{out}");
    assert_eq!(field(&out, "NoNewPrivs"), "0", "{out}");
    assert_eq!(field(&out, "CapEff"), "0000000000000000", "{out}");
    assert!(
        out.contains("touch=refused"),
        "the read-only rootfs took a write: {out}"
    );
    let (code, _, _) = exec(&mut s.client, &user, &["/bin/touch", "/x"]).await;
    assert_ne!(code, 0, "exec wrote to the read-only rootfs");

    remove_pod(&mut s.client, &pod).await;
}

fn pod_namespaces(
    s: &Setup,
    name: &str,
    ns: api::NamespaceOption,
    privileged: bool,
) -> api::PodSandboxConfig {
    let mut config = pod_config(&s.layout, name);
    config.linux = Some(api::LinuxPodSandboxConfig {
        security_context: Some(api::LinuxSandboxSecurityContext {
            namespace_options: Some(ns.clone()),
            privileged,
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

fn interfaces(net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn pod_namespaces_are_shared_or_the_hosts_as_asked() {
    let Some(mut s) = setup("iso-ns").await else {
        return;
    };
    // Shared PID namespace: one container sees the other's sleep.
    let shared = api::NamespaceOption {
        pid: api::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let sandbox = pod_namespaces(&s, "sharepid", shared.clone(), false);
    let pod = run_pod_with(&mut s.client, &sandbox).await;
    let mut cfg = container_config(&s.image, "sleeper", &["/bin/sleep", "4242"]);
    cfg.linux = secure(api::LinuxContainerSecurityContext {
        namespace_options: Some(shared.clone()),
        ..Default::default()
    });
    run_container(&mut s, &pod, &sandbox, cfg).await;
    let mut cfg = container_config(&s.image, "looker", &["/bin/sleep", "1000"]);
    cfg.linux = secure(api::LinuxContainerSecurityContext {
        namespace_options: Some(shared.clone()),
        ..Default::default()
    });
    let looker = run_container(&mut s, &pod, &sandbox, cfg).await;
    let (code, ps, err) = exec(&mut s.client, &looker, &["/bin/ps", "-o", "args"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        ps.contains("sleep 4242"),
        "the pod's other container is invisible: {ps}"
    );

    // A private PID namespace per container hides it.
    let private = api::NamespaceOption {
        pid: api::NamespaceMode::Container as i32,
        ..Default::default()
    };
    let sandbox = pod_namespaces(&s, "ownpid", private.clone(), false);
    let pod2 = run_pod_with(&mut s.client, &sandbox).await;
    let mut cfg = container_config(&s.image, "sleeper", &["/bin/sleep", "4343"]);
    cfg.linux = secure(api::LinuxContainerSecurityContext {
        namespace_options: Some(private.clone()),
        ..Default::default()
    });
    run_container(&mut s, &pod2, &sandbox, cfg).await;
    let mut cfg = container_config(&s.image, "looker", &["/bin/sleep", "1000"]);
    cfg.linux = secure(api::LinuxContainerSecurityContext {
        namespace_options: Some(private.clone()),
        ..Default::default()
    });
    let looker = run_container(&mut s, &pod2, &sandbox, cfg).await;
    let (_, ps, _) = exec(&mut s.client, &looker, &["/bin/ps", "-o", "args"]).await;
    assert!(
        !ps.contains("sleep 4343"),
        "a private pid namespace leaks: {ps}"
    );

    // hostNetwork: the host's interfaces.
    let host = api::NamespaceOption {
        network: api::NamespaceMode::Node as i32,
        pid: api::NamespaceMode::Container as i32,
        ..Default::default()
    };
    let sandbox = pod_namespaces(&s, "hostnet", host.clone(), false);
    let pod3 = run_pod_with(&mut s.client, &sandbox).await;
    let mut cfg = container_config(&s.image, "net", &["/bin/sleep", "1000"]);
    cfg.linux = secure(api::LinuxContainerSecurityContext {
        namespace_options: Some(host.clone()),
        ..Default::default()
    });
    let net = run_container(&mut s, &pod3, &sandbox, cfg).await;
    let (code, dev, err) = exec(&mut s.client, &net, &["/bin/cat", "/proc/net/dev"]).await;
    assert_eq!(code, 0, "{err}");
    let host_dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let (inside, outside) = (interfaces(&dev), interfaces(&host_dev));
    // Interfaces of other tests' pods may come and go meanwhile: compare the stable ones.
    let stable = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| !n.starts_with("veth") && !n.starts_with("crt"))
            .cloned()
            .collect()
    };
    assert_eq!(stable(&inside), stable(&outside));
    assert!(inside.len() > 1, "only loopback: {inside:?}");

    for pod in [pod, pod2, pod3] {
        remove_pod(&mut s.client, &pod).await;
    }
}

#[tokio::test]
async fn a_privileged_container_gets_the_daemons_bounding_set() {
    let Some(mut s) = setup("iso-priv").await else {
        return;
    };
    let ns = api::NamespaceOption {
        pid: api::NamespaceMode::Container as i32,
        ..Default::default()
    };
    let sandbox = pod_namespaces(&s, "priv", ns.clone(), true);
    let pod = run_pod_with(&mut s.client, &sandbox).await;
    let mut cfg = container_config(&s.image, "root", &["/bin/sleep", "1000"]);
    cfg.linux = secure(api::LinuxContainerSecurityContext {
        privileged: true,
        namespace_options: Some(ns.clone()),
        ..Default::default()
    });
    let id = run_container(&mut s, &pod, &sandbox, cfg).await;
    let (code, inside, err) = exec(&mut s.client, &id, &["/bin/cat", "/proc/1/status"]).await;
    assert_eq!(code, 0, "{err}");
    let daemon = std::fs::read_to_string(format!("/proc/{}/status", s.daemon.pid())).unwrap();
    assert_eq!(field(&inside, "CapBnd"), field(&daemon, "CapBnd"));
    assert_eq!(field(&inside, "CapEff"), field(&daemon, "CapBnd"));
    assert_eq!(field(&inside, "Seccomp"), "0");
    remove_pod(&mut s.client, &pod).await;
}

#[tokio::test]
async fn a_memory_hog_over_its_limit_is_oom_killed() {
    let Some(mut s) = setup("iso-oom").await else {
        return;
    };
    let (pod, sandbox) = run_pod(&mut s, "hog").await;
    let mut cfg = container_config(
        &s.image,
        "hog",
        &["/bin/sh", "-c", "x=a; while true; do x=$x$x; done"],
    );
    cfg.linux = Some(api::LinuxContainerConfig {
        resources: Some(api::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_container(&mut s, &pod, &sandbox, cfg).await;
    let st = wait_exited_of(&mut s.client, &id, Duration::from_secs(60)).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");
    assert_eq!(st.exit_code, 137, "{st:?}");
    remove_pod(&mut s.client, &pod).await;
}

#[tokio::test]
async fn the_systemd_driver_runs_containers_in_scopes_systemd_creates() {
    let test = "the_systemd_driver_runs_containers_in_scopes_systemd_creates";
    // A real systemd (a user manager of the test's own: this host's init is not systemd).
    let Some(manager) = crius_testkit::systemd::SystemdUserManager::start(test) else {
        return;
    };
    let bus = manager.socket();
    let Some(mut s) = common::setup_with("iso-systemd", |l| l.use_systemd(&bus)).await else {
        return;
    };
    // A top slice of its own, so concurrent tests and a real kubelet are never touched.
    let top = format!("criustest{}", std::process::id());
    let slice = format!("{top}-besteffort-pod{}.slice", std::process::id());
    let mut sandbox = pod_config(&s.layout, "sd");
    sandbox.linux = Some(api::LinuxPodSandboxConfig {
        cgroup_parent: slice.clone(),
        ..Default::default()
    });
    let pod = run_pod_with(&mut s.client, &sandbox).await;
    let cfg = container_config(&s.image, "sd", &["/bin/sleep", "60"]);
    let id = run_container(&mut s, &pod, &sandbox, cfg).await;

    // systemd has the scope, active, at the manager's root + the slice's levels.
    let unit = format!("crius-{id}.scope");
    let scope = format!(
        "{}/{top}.slice/{top}-besteffort.slice/{slice}/{unit}",
        manager.root()
    );
    assert_eq!(manager.unit_property(&unit, "ActiveState"), "active");
    assert_eq!(manager.unit_property(&unit, "ControlGroup"), scope);
    // systemd holds the container's device rules (its default would open every device
    // to the scope whenever it re-applies the unit's settings).
    assert_eq!(manager.unit_property(&unit, "DevicePolicy"), "strict");
    let allow = manager.unit_property(&unit, "DeviceAllow");
    for want in ["/dev/char/1:3 rwm", "char-pts rwm", "char-* m"] {
        assert!(allow.lines().any(|l| l == want), "{want} not in {allow}");
    }
    assert!(!allow.contains("1:11"), "{allow}");
    let dirs = common::cgroup_dirs(&scope);
    for controller in ["memory", "pids", "systemd"] {
        let hierarchy = std::path::Path::new("/sys/fs/cgroup").join(controller);
        if hierarchy.is_dir() {
            let want = hierarchy.join(scope.trim_start_matches('/'));
            assert!(dirs.contains(&want), "{want:?} not in {dirs:?}");
        }
    }
    let pids = common::cgroup_pids(&scope);
    assert_eq!(pids.len(), 1, "the container's sleep alone: {pids:?}");
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", pids[0])).unwrap();
    assert!(cmdline.starts_with("/bin/sleep"), "{cmdline:?}");

    // Stats are read from the scope's directories.
    let stats = s
        .client
        .runtime
        .container_stats(api::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let memory = stats.memory.unwrap();
    assert!(
        memory
            .working_set_bytes
            .map(|v| v.value)
            .unwrap_or_default()
            > 0,
        "{memory:?}"
    );

    // A live update reaches systemd too (a daemon-reload would otherwise bring back the
    // creation's limits), and the files.
    s.client
        .runtime
        .update_container_resources(api::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: 48 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let property = if v2 { "MemoryMax" } else { "MemoryLimit" };
    assert_eq!(
        manager.unit_property(&unit, property),
        (48u64 << 20).to_string()
    );
    let memory = if v2 {
        std::path::Path::new("/sys/fs/cgroup")
            .join(scope.trim_start_matches('/'))
            .join("memory.max")
    } else {
        std::path::Path::new("/sys/fs/cgroup/memory")
            .join(scope.trim_start_matches('/'))
            .join("memory.limit_in_bytes")
    };
    assert_eq!(
        std::fs::read_to_string(&memory).unwrap().trim(),
        (48u64 << 20).to_string()
    );

    // a cgroupfs path, or a name that is no slice, is refused before anything is made
    for bad in [
        "/kubepods/burstable/pod1",
        "kubepods-burstable-pod1",
        "a--b.slice",
    ] {
        let mut cfg = pod_config(&s.layout, "sd-bad");
        cfg.linux = Some(api::LinuxPodSandboxConfig {
            cgroup_parent: bad.into(),
            ..Default::default()
        });
        let err = s
            .client
            .runtime
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(cfg),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains(".slice"), "{bad}: {err:?}");
    }

    // Stop + remove: the scope is stopped and unloaded, its directories gone.
    remove_pod(&mut s.client, &pod).await;
    assert_eq!(manager.unit_property(&unit, "LoadState"), "not-found");
    assert!(common::cgroup_dirs(&scope).is_empty(), "scope left behind");
}

/// Unmounts (lazily) what the test mounted on the host, even when it fails.
struct HostMount(std::path::PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn cri_devices_and_recursive_read_only_mounts_reach_the_container() {
    let Some(mut s) = setup("iso-dev-rro").await else {
        return;
    };
    let src = s.layout.scratch.path().join("rro-src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(src.join("sub"))
        .status()
        .unwrap();
    assert!(mounted.success());
    let _submount = HostMount(src.join("sub"));

    let (pod, sandbox) = run_pod(&mut s, "devrro").await;
    let mut cfg = container_config(&s.image, "devrro", &["/bin/sleep", "60"]);
    cfg.devices = vec![api::Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    cfg.mounts = vec![
        api::Mount {
            container_path: "/rro".into(),
            host_path: src.display().to_string(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        },
        api::Mount {
            container_path: "/ro".into(),
            host_path: src.display().to_string(),
            readonly: true,
            ..Default::default()
        },
    ];
    let id = run_container(&mut s, &pod, &sandbox, cfg).await;
    let script = "stat -c '%t:%T %F' /dev/mynull; echo x > /dev/mynull && echo MYNULL-OK; \
                  for d in /rro/sub /ro/sub; do \
                    (touch $d/probe) 2>/dev/null && echo $d WRITABLE || echo $d READONLY; done";
    let (code, out, err) = exec(&mut s.client, &id, &["/bin/sh", "-c", script]).await;
    assert_eq!(code, 0, "{out} {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "1:3 character special file",
            "MYNULL-OK",
            "/rro/sub READONLY",
            "/ro/sub WRITABLE"
        ],
        "{err}"
    );
    remove_pod(&mut s.client, &pod).await;
}

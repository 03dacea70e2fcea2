//! Privilege, resource and namespace settings of the built-in runtime, observed from
//! inside the container (root only).
#![allow(clippy::unwrap_used)] // fixtures below the tests: a failure is a test failure

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{id, run, status_field, Bundle};
use crius_oci::{BuiltinRuntime, ErrorKind, ExitStatus, OciRuntime};
use oci_spec::runtime::{LinuxCapabilities, LinuxNamespace, LinuxNamespaceType, Spec};

fn set_process(spec: &mut Spec, v: serde_json::Value) {
    let mut process = serde_json::to_value(spec.process().clone().unwrap()).unwrap();
    for (k, val) in v.as_object().unwrap() {
        process[k] = val.clone();
    }
    spec.set_process(Some(serde_json::from_value(process).unwrap()));
}

fn run_builtin(bundle: &Bundle, name: &str, spec: &Spec) -> common::Output {
    run(&mut BuiltinRuntime::new(), &id(name), bundle.path(), spec).unwrap()
}

#[test]
fn a_custom_profile_returns_each_rule_its_own_errno() {
    if !crius_testkit::require_root("a_custom_profile_returns_each_rule_its_own_errno") {
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&[
        "/bin/sh",
        "-c",
        "mkdir /tmp/d; touch /tmp/f && echo touched",
    ]);
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    spec.linux_mut()
        .as_mut()
        .unwrap()
        .set_seccomp(Some(serde_json::from_value(profile).unwrap()));
    let out = run_builtin(&bundle, "seccomp-errno", &spec);
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert_eq!(out.stdout.trim(), "touched");
}

#[test]
fn a_read_only_rootfs_refuses_writes() {
    if !crius_testkit::require_root("a_read_only_rootfs_refuses_writes") {
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["/bin/touch", "/written"]);
    spec.root_mut().as_mut().unwrap().set_readonly(Some(true));
    let out = run_builtin(&bundle, "rofs", &spec);
    assert_ne!(out.status, ExitStatus::Exited(0));
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    assert!(!bundle.rootfs().join("written").exists());
}

#[test]
fn rlimits_umask_and_oom_score_adj_are_applied_and_oom_adj_never_lowered() {
    if !crius_testkit::require_root(
        "rlimits_umask_and_oom_score_adj_are_applied_and_oom_adj_never_lowered",
    ) {
        return;
    }
    let bundle = Bundle::new();
    let script = "ulimit -n; ulimit -Hn; umask; cat /proc/self/oom_score_adj";
    let mut spec = bundle.spec(&["/bin/sh", "-c", script]);
    set_process(
        &mut spec,
        serde_json::json!({
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}],
            "user": {"uid": 0, "gid": 0, "umask": 0o077},
            "oomScoreAdj": -1000
        }),
    );
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    let out = run_builtin(&bundle, "limits", &spec);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["123", "456", "0077", own.trim()], "{out:?}");

    set_process(&mut spec, serde_json::json!({"oomScoreAdj": 500}));
    let out = run_builtin(&bundle, "limits2", &spec);
    assert_eq!(out.stdout.lines().last(), Some("500"));
}

#[test]
fn sysctls_are_written_in_the_container_namespaces() {
    if !crius_testkit::require_root("sysctls_are_written_in_the_container_namespaces") {
        return;
    }
    let bundle = Bundle::new();
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let mut spec = bundle.spec(&["/bin/cat", "/proc/sys/net/ipv4/ip_forward"]);
    let value = if host.trim() == "1" { "0" } else { "1" };
    let sysctl = [("net.ipv4.ip_forward".to_string(), value.to_string())]
        .into_iter()
        .collect();
    spec.linux_mut().as_mut().unwrap().set_sysctl(Some(sysctl));
    let out = run_builtin(&bundle, "sysctl", &spec);
    assert_eq!(out.stdout.trim(), value, "{out:?}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host
    );
}

#[test]
fn a_non_root_user_keeps_exactly_its_ambient_capabilities() {
    if !crius_testkit::require_root("a_non_root_user_keeps_exactly_its_ambient_capabilities") {
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["/bin/cat", "/proc/self/status"]);
    let net_bind: LinuxCapabilities = serde_json::from_value(serde_json::json!({
        "bounding": ["CAP_NET_BIND_SERVICE"], "effective": ["CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_NET_BIND_SERVICE"], "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"]
    }))
    .unwrap();
    set_process(
        &mut spec,
        serde_json::json!({"user": {"uid": 1000, "gid": 1000}, "capabilities": net_bind, "noNewPrivileges": false}),
    );
    let out = run_builtin(&bundle, "ambient", &spec);
    let mask = format!("{:016x}", common::cap_mask(&["CAP_NET_BIND_SERVICE"]));
    assert_eq!(status_field(&out.stdout, "CapEff:"), mask, "{out:?}");
    assert_eq!(status_field(&out.stdout, "CapAmb:"), mask);
    assert_eq!(status_field(&out.stdout, "CapBnd:"), mask);
    assert_eq!(status_field(&out.stdout, "NoNewPrivs:"), "0");
    assert_eq!(
        status_field(&out.stdout, "Seccomp:"),
        "2",
        "seccomp installed before dropping CAP_SYS_ADMIN"
    );
    assert_eq!(
        status_field(&out.stdout, "Uid:")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000"; 4]
    );
}

#[test]
fn dev_holds_the_default_devices_and_links() {
    if !crius_testkit::require_root("dev_holds_the_default_devices_and_links") {
        return;
    }
    let bundle = Bundle::new();
    let spec = bundle.spec(&[
        "/bin/sh",
        "-c",
        "echo x > /dev/null && ls /dev && readlink /dev/ptmx && readlink /dev/fd",
    ]);
    let out = run_builtin(&bundle, "dev", &spec);
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    for want in [
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "pts",
        "shm",
        "mqueue",
        "fd",
        "stdin",
        "pts/ptmx",
        "/proc/self/fd",
    ] {
        assert!(words.contains(&want), "{want} missing: {out:?}");
    }
}

#[test]
fn a_namespace_given_by_path_is_joined() {
    if !crius_testkit::require_root("a_namespace_given_by_path_is_joined") {
        return;
    }
    let name = id("crius-oci-netns");
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip netns add");
    let path = format!("/run/netns/{name}");
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["/bin/readlink", "/proc/self/ns/net"]);
    let linux = spec.linux_mut().as_mut().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap();
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
    let mut net = LinuxNamespace::default();
    net.set_typ(LinuxNamespaceType::Network);
    net.set_path(Some(path.clone().into()));
    namespaces.push(net);
    linux.set_namespaces(Some(namespaces));
    let out = run_builtin(&bundle, "netns", &spec);
    let ino = std::fs::metadata(&path).unwrap().ino();
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &name])
        .status();
    assert_eq!(out.stdout.trim(), format!("net:[{ino}]"), "{out:?}");
}

#[test]
fn a_failing_mount_reports_the_prepare_rootfs_step_and_leaves_nothing_behind() {
    if !crius_testkit::require_root(
        "a_failing_mount_reports_the_prepare_rootfs_step_and_leaves_nothing_behind",
    ) {
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["/bin/true"]);
    let bad = serde_json::from_value(
        serde_json::json!({"destination": "/x", "type": "nosuchfs", "source": "none"}),
    )
    .unwrap();
    spec.mounts_mut().as_mut().unwrap().push(bad);
    let ctr = id("badmount");
    spec.linux_mut()
        .as_mut()
        .unwrap()
        .set_cgroups_path(Some(format!("crius-oci-test-{ctr}").into()));
    let mut rt = BuiltinRuntime::new();
    let err = rt
        .create(&ctr, bundle.path(), &spec, crius_oci::Stdio::default())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("prepare_rootfs: mount /x: mount nosuchfs"),
        "{text}"
    );
    assert_eq!(rt.state(&ctr).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids/crius-oci-test-{ctr}")).exists());
}

#[test]
fn an_apparmor_profile_on_a_host_without_apparmor_is_a_clear_error() {
    if !crius_testkit::require_root(
        "an_apparmor_profile_on_a_host_without_apparmor_is_a_clear_error",
    ) {
        return;
    }
    if Path::new("/sys/module/apparmor/parameters/enabled").exists() {
        eprintln!("SKIPPED: AppArmor is present on this host");
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["/bin/true"]);
    set_process(
        &mut spec,
        serde_json::json!({"apparmorProfile": "crius-default"}),
    );
    let err = BuiltinRuntime::new()
        .create(&id("aa"), bundle.path(), &spec, crius_oci::Stdio::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("AppArmor is not enabled"), "{err}");
}

#[test]
fn a_missing_working_directory_is_created_inside_the_rootfs() {
    if !crius_testkit::require_root("a_missing_working_directory_is_created_inside_the_rootfs") {
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["/bin/pwd"]);
    set_process(&mut spec, serde_json::json!({"cwd": "/work/dir"}));
    let out = run_builtin(&bundle, "cwd", &spec);
    assert_eq!(out.stdout.trim(), "/work/dir", "{out:?}");
    assert!(bundle.rootfs().join("work/dir").is_dir());
}

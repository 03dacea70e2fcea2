//! Isolation rules of the built-in runtime, each test trying to break one (root only).
#![allow(clippy::unwrap_used)] // fixtures below the tests: a failure is a test failure

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{id, run, Bundle};
use crius_oci::{BuiltinRuntime, ExitStatus, OciRuntime, Stdio};
use oci_spec::runtime::{
    LinuxIdMapping, LinuxNamespace, LinuxNamespaceType, LinuxResources, Mount, Spec,
};

fn resources(spec: &mut Spec, cgroup: &str, r: serde_json::Value) {
    let linux = spec.linux_mut().as_mut().unwrap();
    linux.set_cgroups_path(Some(cgroup.into()));
    linux.set_resources(Some(serde_json::from_value::<LinuxResources>(r).unwrap()));
}

fn bind(src: &Path, dest: &str) -> Mount {
    serde_json::from_value(serde_json::json!({
        "destination": dest, "type": "bind", "source": src, "options": ["rbind", "rw"]
    }))
    .unwrap()
}

#[test]
fn a_proc_symlink_cannot_redirect_the_proc_mount_or_masks_onto_the_host() {
    if !crius_testkit::require_root(
        "a_proc_symlink_cannot_redirect_the_proc_mount_or_masks_onto_the_host",
    ) {
        return;
    }
    let bundle = Bundle::new();
    let host_target = tempfile::Builder::new()
        .prefix("crius-oci-host-target")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::remove_dir(bundle.rootfs().join("proc")).unwrap();
    std::os::unix::fs::symlink(host_target.path(), bundle.rootfs().join("proc")).unwrap();
    let spec = bundle.spec(&[
        "/bin/sh",
        "-c",
        "cat /proc/kcore | wc -c; test -e /proc/self/status && echo PROC",
    ]);
    let out = run(
        &mut BuiltinRuntime::new(),
        &id("procsym"),
        bundle.path(),
        &spec,
    )
    .unwrap();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "PROC"],
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_dir(host_target.path()).unwrap().count(),
        0,
        "host directory touched"
    );
    let inside = bundle
        .rootfs()
        .join(host_target.path().strip_prefix("/").unwrap());
    assert!(
        inside.is_dir(),
        "the mount point was not created inside the rootfs"
    );
}

#[test]
fn a_symlinked_mount_destination_stays_inside_the_rootfs() {
    if !crius_testkit::require_root("a_symlinked_mount_destination_stays_inside_the_rootfs") {
        return;
    }
    let bundle = Bundle::new();
    let host_target = tempfile::Builder::new()
        .prefix("crius-oci-host-target")
        .tempdir_in("/tmp")
        .unwrap();
    let src = bundle.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("marker"), "MARKER").unwrap();
    let escape = format!("../../../../../..{}", host_target.path().display());
    std::os::unix::fs::symlink(&escape, bundle.rootfs().join("data")).unwrap();
    let mut spec = bundle.spec(&["/bin/cat", "/data/marker"]);
    spec.mounts_mut()
        .as_mut()
        .unwrap()
        .push(bind(&src, "/data"));
    let out = run(
        &mut BuiltinRuntime::new(),
        &id("mntsym"),
        bundle.path(),
        &spec,
    )
    .unwrap();
    assert_eq!(out.stdout, "MARKER", "{out:?}");
    assert_eq!(
        std::fs::read_dir(host_target.path()).unwrap().count(),
        0,
        "host directory touched"
    );
}

#[test]
fn a_memory_hog_is_oom_killed_at_its_limit_and_reported() {
    if !crius_testkit::require_root("a_memory_hog_is_oom_killed_at_its_limit_and_reported") {
        return;
    }
    let bundle = Bundle::new();
    let ctr = id("oom");
    let mut spec = bundle.spec(&["/bin/sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done"]);
    let limit = 32 * 1024 * 1024;
    resources(
        &mut spec,
        &format!("crius-oci-test-{ctr}"),
        serde_json::json!({"memory": {"limit": limit, "swap": limit}}),
    );
    let mut rt = BuiltinRuntime::new();
    let p = rt
        .create(&ctr, bundle.path(), &spec, Stdio::default())
        .unwrap();
    rt.start(&ctr).unwrap();
    assert_eq!(p.wait().unwrap(), ExitStatus::Signaled(9));
    let stats = rt.cgroup(&ctr).unwrap().stats().unwrap();
    assert!(stats.oom_kills >= 1, "{stats:?}");
    rt.delete(&ctr, false).unwrap();
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/crius-oci-test-{ctr}")).exists());
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    if !crius_testkit::require_root("a_fork_bomb_stops_at_the_pids_limit") {
        return;
    }
    let bundle = Bundle::new();
    let ctr = id("pids");
    let mut spec = bundle.spec(&[
        "/bin/sh",
        "-c",
        "for i in 1 2 3 4; do sleep 2 & done; (for i in 1 2 3 4 5 6 7 8; do sleep 2 & done); wait",
    ]);
    resources(
        &mut spec,
        &format!("crius-oci-test-{ctr}"),
        serde_json::json!({"pids": {"limit": 6}}),
    );
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut rt = BuiltinRuntime::new();
    let p = rt
        .create(
            &ctr,
            bundle.path(),
            &spec,
            Stdio {
                stderr: Some(err_w),
                ..Stdio::default()
            },
        )
        .unwrap();
    rt.start(&ctr).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stats = rt.cgroup(&ctr).unwrap().stats().unwrap();
    let early = stats.clone();
    p.wait().unwrap();
    let stderr = common::read_all(err_r);
    assert!(early.pids <= 6 && early.pids >= 2, "{early:?} {stderr}");
    assert!(stderr.contains("fork"), "{stderr}");
    rt.delete(&ctr, false).unwrap();
}

fn chown_tree(path: &Path, base: u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    std::os::unix::fs::lchown(path, Some(base + meta.uid()), Some(base + meta.gid())).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), base);
        }
    }
}

fn id_map(base: u32) -> LinuxIdMapping {
    serde_json::from_value(serde_json::json!({"containerID": 0, "hostID": base, "size": 65536}))
        .unwrap()
}

/// A spec with a new user namespace mapping container 0.. to host `base`.., with the
/// rootfs chowned to match.
fn userns_spec(bundle: &Bundle, base: u32, args: &[&str]) -> Spec {
    chown_tree(&bundle.rootfs(), base);
    let mut spec = bundle.spec(args);
    let linux = spec.linux_mut().as_mut().unwrap();
    linux.set_uid_mappings(Some(vec![id_map(base)]));
    linux.set_gid_mappings(Some(vec![id_map(base)]));
    let mut ns = linux.namespaces().clone().unwrap();
    let mut user = LinuxNamespace::default();
    user.set_typ(LinuxNamespaceType::User);
    ns.push(user);
    linux.set_namespaces(Some(ns));
    spec
}

#[test]
fn user_namespace_root_is_the_mapped_host_uid_on_bind_mounts() {
    if !crius_testkit::require_root("user_namespace_root_is_the_mapped_host_uid_on_bind_mounts") {
        return;
    }
    let bundle = Bundle::new();
    let base = 200_000;
    let data = bundle.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let script = "touch /data/made-inside; cat /proc/self/uid_map; id -u";
    let mut spec = userns_spec(&bundle, base, &["/bin/sh", "-c", script]);
    spec.mounts_mut()
        .as_mut()
        .unwrap()
        .push(bind(&data, "/data"));
    let out = run(
        &mut BuiltinRuntime::new(),
        &id("userns"),
        bundle.path(),
        &spec,
    )
    .unwrap();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words, ["0", "200000", "65536", "0"], "{out:?}");
    let meta = std::fs::metadata(data.join("made-inside")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (base, base));
}

#[test]
fn in_a_user_namespace_a_device_is_the_host_node_bound_at_its_container_path() {
    if !crius_testkit::require_root(
        "in_a_user_namespace_a_device_is_the_host_node_bound_at_its_container_path",
    ) {
        return;
    }
    let bundle = Bundle::new();
    let script = "stat -c '%t:%T' /dev/mynull; echo x > /dev/mynull && echo WRITE-OK; \
                  grep -c ' /dev/mynull ' /proc/self/mountinfo";
    let mut spec = userns_spec(&bundle, 300_000, &["/bin/sh", "-c", script]);
    let device = |minor: i64| -> Vec<oci_spec::runtime::LinuxDevice> {
        serde_json::from_value(serde_json::json!([{
            "path": "/dev/mynull", "type": "c", "major": 1, "minor": minor
        }]))
        .unwrap()
    };
    let linux = spec.linux_mut().as_mut().unwrap();
    linux.set_devices(Some(device(3)));
    let out = run(
        &mut BuiltinRuntime::new(),
        &id("userns-dev"),
        bundle.path(),
        &spec,
    )
    .unwrap();
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert_eq!(lines, ["1:3", "WRITE-OK", "1"], "{out:?}");

    // a number no host node has cannot be bound (mknod is never allowed there)
    let linux = spec.linux_mut().as_mut().unwrap();
    linux.set_devices(Some(device(250)));
    let err = BuiltinRuntime::new()
        .create(&id("userns-nodev"), bundle.path(), &spec, Stdio::default())
        .unwrap_err();
    assert_eq!(err.kind(), crius_oci::ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("char 1:250"), "{err}");
}

#[test]
fn an_id_mapped_bind_mount_lets_container_root_own_host_root_files() {
    if !crius_testkit::require_root(
        "an_id_mapped_bind_mount_lets_container_root_own_host_root_files",
    ) {
        return;
    }
    let bundle = Bundle::new();
    let base = 300_000;
    let data = bundle.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = "stat -c %u /data; touch /data/f && echo written";
    let plain = {
        let mut spec = userns_spec(&bundle, base, &["/bin/sh", "-c", script]);
        spec.mounts_mut()
            .as_mut()
            .unwrap()
            .push(bind(&data, "/data"));
        spec
    };
    let out = run(
        &mut BuiltinRuntime::new(),
        &id("noidmap"),
        bundle.path(),
        &plain,
    )
    .unwrap();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["65534"],
        "control: {out:?}"
    );

    let mut spec = plain.clone();
    let mut mount = bind(&data, "/data");
    mount.set_uid_mappings(Some(vec![id_map(base)]));
    mount.set_gid_mappings(Some(vec![id_map(base)]));
    spec.mounts_mut().as_mut().unwrap().pop();
    spec.mounts_mut().as_mut().unwrap().push(mount);
    let out = run(
        &mut BuiltinRuntime::new(),
        &id("idmap"),
        bundle.path(),
        &spec,
    )
    .unwrap();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "written"],
        "{out:?}"
    );
    let meta = std::fs::metadata(data.join("f")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "written through the mapping as host root"
    );
}

#[test]
fn exec_joins_the_running_container() {
    if !crius_testkit::require_root("exec_joins_the_running_container") {
        return;
    }
    let bundle = Bundle::new();
    let ctr = id("exec");
    let spec = bundle.spec(&["/bin/sleep", "30"]);
    let mut rt = BuiltinRuntime::new();
    let init = rt
        .create(&ctr, bundle.path(), &spec, Stdio::default())
        .unwrap();
    rt.start(&ctr).unwrap();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "hostname; echo $$; grep -E '^(Seccomp|CapEff):' /proc/self/status".into(),
    ]));
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let p = rt
        .exec(
            &ctr,
            &process,
            Stdio {
                stdout: Some(w),
                ..Stdio::default()
            },
        )
        .unwrap();
    let out = common::read_all(r);
    assert_eq!(p.wait().unwrap(), ExitStatus::Exited(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "crius", "{out}");
    let pid: i32 = lines[1].parse().unwrap();
    assert!(
        pid > 1 && pid < 100,
        "not in the container's pid namespace: {pid}"
    );
    assert!(out.contains("Seccomp:\t2"), "{out}");

    // an exec as another user gets exactly that user and no capabilities
    let mut as_user = spec.process().clone().unwrap();
    as_user.set_args(Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "id -u; id -G; grep CapEff /proc/self/status".into(),
    ]));
    as_user.user_mut().set_uid(1000);
    as_user.user_mut().set_gid(1000);
    as_user.user_mut().set_additional_gids(Some(vec![2000]));
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let p = rt
        .exec(
            &ctr,
            &as_user,
            Stdio {
                stdout: Some(w),
                ..Stdio::default()
            },
        )
        .unwrap();
    let out = common::read_all(r);
    assert_eq!(p.wait().unwrap(), ExitStatus::Exited(0));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1000", "1000", "2000", "CapEff:", "0000000000000000"],
        "{out}"
    );

    rt.delete(&ctr, true).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(9));
}

#[test]
fn a_terminal_process_gets_a_pty_and_the_caller_the_master() {
    if !crius_testkit::require_root("a_terminal_process_gets_a_pty_and_the_caller_the_master") {
        return;
    }
    common::terminal_suite(&mut BuiltinRuntime::new(), "builtin");
}

#[test]
fn a_second_container_joins_the_first_ones_user_pid_and_net_namespaces() {
    if !crius_testkit::require_root(
        "a_second_container_joins_the_first_ones_user_pid_and_net_namespaces",
    ) {
        return;
    }
    let bundle = Bundle::new();
    let base = 400_000;
    let first = userns_spec(&bundle, base, &["/bin/sleep", "30"]);
    let mut rt = BuiltinRuntime::new();
    let pod = id("pod");
    let init = rt
        .create(&pod, bundle.path(), &first, Stdio::default())
        .unwrap();
    rt.start(&pod).unwrap();

    let script =
        "cat /proc/self/uid_map; echo $$; cat /proc/1/cmdline; echo; readlink /proc/self/ns/net";
    let mut second = bundle.spec(&["/bin/sh", "-c", script]);
    let linux = second.linux_mut().as_mut().unwrap();
    let mut namespaces: Vec<LinuxNamespace> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|n| {
            !matches!(
                n.typ(),
                LinuxNamespaceType::Pid | LinuxNamespaceType::Network
            )
        })
        .collect();
    for (typ, name) in [
        (LinuxNamespaceType::User, "user"),
        (LinuxNamespaceType::Pid, "pid"),
        (LinuxNamespaceType::Network, "net"),
    ] {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ);
        ns.set_path(Some(format!("/proc/{}/ns/{name}", init.pid()).into()));
        namespaces.push(ns);
    }
    linux.set_namespaces(Some(namespaces));
    let out = run(&mut rt, &id("pod-member"), bundle.path(), &second).unwrap();
    let net = std::fs::read_link(format!("/proc/{}/ns/net", init.pid())).unwrap();
    rt.delete(&pod, true).unwrap();
    init.wait().unwrap();

    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", "400000", "65536"],
        "{out:?}"
    );
    let pid: u32 = lines[1].parse().unwrap();
    assert!(
        pid > 1,
        "joined the pod's pid namespace, where the first init is pid 1"
    );
    assert!(lines[2].starts_with("/bin/sleep"), "{out:?}");
    assert_eq!(lines[3], net.to_string_lossy());
}

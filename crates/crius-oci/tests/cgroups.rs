//! cgroup managers on the real kernel: v1 hierarchies of this hybrid host, and v2 on its
//! unified mount (root only).
#![allow(clippy::unwrap_used)] // fixtures below the tests: a failure is a test failure

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{id, Bundle};
use crius_oci::cgroup::CgroupManager;
use crius_oci::{BuiltinRuntime, OciRuntime, Stdio};
use oci_spec::runtime::LinuxResources;

fn resources(v: serde_json::Value) -> LinuxResources {
    serde_json::from_value(v).unwrap()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

fn sleeper() -> Child {
    Command::new("/bin/busybox")
        .args(["sleep", "30"])
        .spawn()
        .unwrap()
}

/// Deletes the cgroup even when an assertion fails first.
struct Cleanup(CgroupManager);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.delete();
    }
}

fn v1_host() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
}

#[test]
fn v1_limits_apply_update_live_and_report_stats() {
    if !crius_testkit::require_root("v1_limits_apply_update_live_and_report_stats") || !v1_host() {
        return;
    }
    let name = id("crius-oci-v1");
    let cg = CgroupManager::new(Path::new(&name)).unwrap();
    let _cleanup = Cleanup(cg.clone());
    assert!(matches!(cg, CgroupManager::V1(_)));
    cg.create().unwrap();
    cg.apply(&resources(serde_json::json!({
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 64 << 20},
        "pids": {"limit": 40}
    })))
    .unwrap();
    assert_eq!(
        read(&format!("/sys/fs/cgroup/cpu/{name}/cpu.shares")),
        "512"
    );
    assert_eq!(
        read(&format!("/sys/fs/cgroup/cpu/{name}/cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(
        read(&format!("/sys/fs/cgroup/cpuset/{name}/cpuset.cpus")),
        "0"
    );
    assert_eq!(
        read(&format!(
            "/sys/fs/cgroup/memory/{name}/memory.limit_in_bytes"
        )),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read(&format!(
            "/sys/fs/cgroup/memory/{name}/memory.soft_limit_in_bytes"
        )),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(&format!("/sys/fs/cgroup/pids/{name}/pids.max")), "40");

    let mut child = sleeper();
    cg.add_process(i32::try_from(child.id()).unwrap()).unwrap();
    assert_eq!(
        cg.processes().unwrap(),
        vec![i32::try_from(child.id()).unwrap()]
    );
    // live update: raising memory above memsw must reorder the writes
    cg.apply(&resources(serde_json::json!({"memory": {"limit": 128 << 20, "swap": 128 << 20}, "pids": {"limit": 0}})))
        .unwrap();
    assert_eq!(
        read(&format!(
            "/sys/fs/cgroup/memory/{name}/memory.limit_in_bytes"
        )),
        (128u64 << 20).to_string()
    );
    assert_eq!(read(&format!("/sys/fs/cgroup/pids/{name}/pids.max")), "max");
    let stats = cg.stats().unwrap();
    assert_eq!(stats.pids, 1);
    // v1 does not move charges with a task, so usage may be 0 here.
    assert!(stats.memory_working_set <= stats.memory_usage, "{stats:?}");

    cg.freeze(true).unwrap();
    assert_eq!(
        read(&format!("/sys/fs/cgroup/freezer/{name}/freezer.state")),
        "FROZEN"
    );
    cg.freeze(false).unwrap();
    cg.delete().unwrap();
    assert!(!cg.exists());
    assert!(
        child.wait().unwrap().code().is_none(),
        "the process was killed by delete"
    );
    cg.delete().unwrap();
}

#[test]
fn v1_refuses_unified_entries() {
    if !crius_testkit::require_root("v1_refuses_unified_entries") || !v1_host() {
        return;
    }
    let name = id("crius-oci-v1-unified");
    let cg = CgroupManager::new(Path::new(&name)).unwrap();
    let _cleanup = Cleanup(cg.clone());
    cg.create().unwrap();
    let err = cg
        .apply(&resources(
            serde_json::json!({"unified": {"memory.high": "1000000"}}),
        ))
        .unwrap_err();
    assert_eq!(err.kind(), crius_oci::ErrorKind::InvalidArgument);
    cg.delete().unwrap();
}

#[test]
fn v2_creates_freezes_kills_and_deletes_on_the_unified_mount() {
    let mount = Path::new("/sys/fs/cgroup/unified");
    if !crius_testkit::require_root("v2_creates_freezes_kills_and_deletes_on_the_unified_mount")
        || !mount.join("cgroup.controllers").exists()
    {
        return;
    }
    let name = id("crius-oci-v2");
    let cg = CgroupManager::v2_at(mount, Path::new(&name)).unwrap();
    let _cleanup = Cleanup(cg.clone());
    cg.create().unwrap();
    let dir = mount.join(&name);
    if dir.join("hugetlb.2MB.max").exists() {
        cg.apply(&resources(
            serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 21}]}),
        ))
        .unwrap();
        assert_eq!(
            read(dir.join("hugetlb.2MB.max").to_str().unwrap()),
            (4u64 << 21).to_string()
        );
    }
    cg.apply(&resources(
        serde_json::json!({"unified": {"cgroup.max.descendants": "3"}}),
    ))
    .unwrap();
    assert_eq!(
        read(dir.join("cgroup.max.descendants").to_str().unwrap()),
        "3"
    );
    let mut child = sleeper();
    cg.add_process(i32::try_from(child.id()).unwrap()).unwrap();
    assert_eq!(cg.processes().unwrap().len(), 1);
    cg.freeze(true).unwrap();
    cg.freeze(false).unwrap();
    cg.delete().unwrap();
    assert!(!dir.exists());
    assert!(child.wait().unwrap().code().is_none());
}

#[test]
fn cpu_quota_holds_under_a_busy_loop() {
    if !crius_testkit::require_root("cpu_quota_holds_under_a_busy_loop") || !v1_host() {
        return;
    }
    let bundle = Bundle::new();
    let ctr = id("quota");
    let mut spec = bundle.spec(&["/bin/sh", "-c", "while true; do :; done"]);
    let linux = spec.linux_mut().as_mut().unwrap();
    linux.set_cgroups_path(Some(format!("crius-oci-test-{ctr}").into()));
    linux.set_resources(Some(resources(
        serde_json::json!({"cpu": {"quota": 10000, "period": 100000}}),
    )));
    let mut rt = BuiltinRuntime::new();
    let p = rt
        .create(&ctr, bundle.path(), &spec, Stdio::default())
        .unwrap();
    rt.start(&ctr).unwrap();
    let start = Instant::now();
    let before = rt.cgroup(&ctr).unwrap().stats().unwrap().cpu_usage_ns;
    std::thread::sleep(Duration::from_millis(1000));
    let used = rt.cgroup(&ctr).unwrap().stats().unwrap().cpu_usage_ns - before;
    let wall = u64::try_from(start.elapsed().as_nanos()).unwrap();
    // 10% quota; allow generous slack for accounting granularity.
    assert!(used < wall * 3 / 10, "used {used} ns of cpu in {wall} ns");
    rt.delete(&ctr, true).unwrap();
    p.wait().unwrap();
}

/// Runs `script` in busybox sh inside `cg` and returns its output words. The shell waits
/// on stdin until it is in the cgroup; its stderr (the open errors) goes to /dev/null,
/// opened here, outside the cgroup's rules.
fn run_in(cg: &CgroupManager, script: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let mut child = Command::new("/bin/busybox")
        .args(["sh", "-c", &format!("read x; {script}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    cg.add_process(i32::try_from(child.id()).unwrap()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child.wait().unwrap();
    out.split_whitespace().map(String::from).collect()
}

/// A v2 cgroup on the hybrid host's unified mount, or none when there is no such mount.
fn unified_cgroup(name: &str) -> Option<CgroupManager> {
    let mount = Path::new("/sys/fs/cgroup/unified");
    if !mount.join("cgroup.controllers").exists() {
        return None;
    }
    Some(CgroupManager::v2_at(mount, Path::new(name)).unwrap())
}

#[test]
fn v2_device_rules_are_enforced_by_a_bpf_program() {
    if !crius_testkit::require_root("v2_device_rules_are_enforced_by_a_bpf_program") {
        return;
    }
    let Some(cg) = unified_cgroup(&id("crius-oci-v2-dev")) else {
        return;
    };
    let _cleanup = Cleanup(cg.clone());
    cg.create().unwrap();
    // Rules apply in order: fuse allowed, then its write access taken away again.
    let spec_rules = resources(serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
        {"allow": false, "type": "c", "major": 10, "minor": 229, "access": "w"}
    ]}));
    let rules = crius_oci::cgroup::device_rules(Some(&spec_rules), &[]);
    let mut with_rules = LinuxResources::default();
    with_rules.set_devices(Some(rules));
    cg.apply(&with_rules).unwrap();
    let out = run_in(
        &cg,
        "(echo x > /dev/null) && echo NULL-OK; \
        (exec 3</dev/console) 2>/dev/null && echo CONSOLE-OPENED || echo CONSOLE-DENIED; \
        (exec 3</dev/fuse) 2>/dev/null && echo FUSE-READ-OK || echo FUSE-READ-DENIED; \
        (exec 3<>/dev/fuse) 2>/dev/null && echo FUSE-RW-OK || echo FUSE-RW-DENIED",
    );
    cg.delete().unwrap();
    assert_eq!(
        out,
        [
            "NULL-OK",
            "CONSOLE-DENIED",
            "FUSE-READ-OK",
            "FUSE-RW-DENIED"
        ]
    );
}

/// v1 merges the access of allow rules naming the same device and lets a later deny take
/// away just its bits; the v2 program must decide the same. Both are checked on the
/// kernel: v2 on the unified mount, v1 on the devices hierarchy (each where present).
#[test]
fn split_device_rules_add_up_on_v2_as_on_v1() {
    if !crius_testkit::require_root("split_device_rules_add_up_on_v2_as_on_v1") {
        return;
    }
    // /dev/null opened read-write, read-only and write-only.
    let script = "(exec 3<>/dev/null) && echo RW-OK || echo RW-DENIED; \
        (exec 3</dev/null) && echo R-OK || echo R-DENIED; \
        (exec 3>/dev/null) && echo W-OK || echo W-DENIED";
    let split = serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"}
    ]});
    let narrowed = serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"}
    ]});
    let cases = [
        ("split", split, ["RW-OK", "R-OK", "W-OK"]),
        ("narrowed", narrowed, ["RW-DENIED", "R-OK", "W-DENIED"]),
    ];
    let mut checked = Vec::new();
    for (name, rules, want) in &cases {
        let mut managers = Vec::new();
        if let Some(cg) = unified_cgroup(&id(&format!("crius-oci-v2-{name}"))) {
            managers.push(("v2", cg));
        }
        if Path::new("/sys/fs/cgroup/devices/devices.list").exists() {
            let cg = CgroupManager::new(Path::new(&id(&format!("crius-oci-v1-{name}")))).unwrap();
            assert!(matches!(cg, CgroupManager::V1(_)));
            managers.push(("v1", cg));
        }
        for (version, cg) in managers {
            let _cleanup = Cleanup(cg.clone());
            cg.create().unwrap();
            cg.apply(&resources(rules.clone())).unwrap();
            let out = run_in(&cg, script);
            cg.delete().unwrap();
            assert_eq!(out, want, "{name} rules on cgroup {version}");
            checked.push(version);
        }
    }
    eprintln!("device rules checked on cgroup {checked:?}");
    assert!(
        !checked.is_empty(),
        "neither a v2 nor a v1 device cgroup to test on"
    );
}

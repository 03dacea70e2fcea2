//! The systemd cgroup driver against a real systemd: a `systemd --user` manager from
//! crius-testkit (this host's init is not systemd), reached on its private socket, and
//! dbus-daemon for the message-bus transport. Root only.
#![allow(clippy::unwrap_used)] // fixtures below the tests: a failure is a test failure

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as CmdStdio};
use std::time::{Duration, Instant};

use common::{id, Bundle};
use crius_oci::cgroup::dbus::{Connection, DbusError, Transport, Value};
use crius_oci::cgroup::systemd::Systemd;
use crius_oci::{BuiltinRuntime, ErrorKind, OciRuntime, Signal, Stdio};
use crius_testkit::systemd::SystemdUserManager;
use oci_spec::runtime::Spec;

fn with_cgroup(mut spec: Spec, path: &str, resources: serde_json::Value) -> Spec {
    let mut linux = spec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(path.into()));
    linux.set_resources(Some(serde_json::from_value(resources).unwrap()));
    spec.set_linux(Some(linux));
    spec
}

/// The directory of cgroup `rel` in every mounted hierarchy.
fn hierarchy_dirs(rel: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join(rel.trim_start_matches('/')))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// `sleep 300` started with a 64 MiB memory and 40 pids limit in the scope
/// `crius-<cid>.scope` of `slice`, and where systemd puts that scope.
struct Scoped {
    _bundle: Bundle,
    cid: String,
    spec: Spec,
    unit: String,
    /// The scope's directory below each hierarchy's root.
    rel: String,
    rt: BuiltinRuntime,
    process: crius_oci::Process,
}

fn start_in_scope(manager: &SystemdUserManager, tag: &str, slice: &str) -> Scoped {
    let bundle = Bundle::new();
    let cid = id(tag);
    let spec = with_cgroup(
        bundle.spec(&["sleep", "300"]),
        &format!("{slice}:crius:{cid}"),
        serde_json::json!({"memory": {"limit": 64 << 20}, "pids": {"limit": 40}}),
    );
    let unit = format!("crius-{cid}.scope");
    let slice_dir = crius_oci::cgroup::systemd::slice_path(slice).unwrap();
    let rel = format!("{}{slice_dir}/{unit}", manager.root());
    let mut rt = BuiltinRuntime::new().with_systemd_bus(manager.socket());
    let process = rt
        .create(&cid, bundle.path(), &spec, Stdio::default())
        .unwrap();
    rt.start(&cid).unwrap();
    Scoped {
        _bundle: bundle,
        cid,
        spec,
        unit,
        rel,
        rt,
        process,
    }
}

#[test]
fn a_container_runs_in_a_scope_systemd_knows_with_its_limits() {
    let test = "a_container_runs_in_a_scope_systemd_knows_with_its_limits";
    let Some(manager) = SystemdUserManager::start(test) else {
        return;
    };
    let Scoped {
        _bundle,
        cid,
        spec,
        unit,
        rel,
        mut rt,
        process,
    } = start_in_scope(&manager, "sd-scope", "kubepods-besteffort-pod1.slice");
    let pid = process.pid();

    // systemd has the unit, active, at the expected cgroup, with the container in it.
    let mut systemd = Systemd::connect(&manager.socket()).unwrap();
    assert_eq!(systemd.manager_root().unwrap(), manager.root());
    assert_eq!(
        systemd.active_state(&unit).unwrap().as_deref(),
        Some("active")
    );
    assert_eq!(manager.unit_property(&unit, "ControlGroup"), rel);
    assert_eq!(manager.unit_property(&unit, "TasksMax"), "40");
    let tracked = if Path::new("/sys/fs/cgroup/systemd").is_dir() {
        Path::new("/sys/fs/cgroup/systemd").join(rel.trim_start_matches('/'))
    } else {
        Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'))
    };
    assert!(
        read(&tracked.join("cgroup.procs"))
            .lines()
            .any(|l| l == pid.to_string()),
        "pid {pid} not in {}",
        tracked.display()
    );
    // The container is in the scope in every hierarchy, the v1 controllers included.
    let cgroups = read(Path::new(&format!("/proc/{pid}/cgroup")));
    for line in cgroups.lines() {
        assert!(line.ends_with(&rel), "{line} is not in {rel}:\n{cgroups}");
    }
    // The limits are in the files.
    let memory = Path::new("/sys/fs/cgroup/memory").join(rel.trim_start_matches('/'));
    if memory.is_dir() {
        assert_eq!(
            read(&memory.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        let pids = Path::new("/sys/fs/cgroup/pids").join(rel.trim_start_matches('/'));
        assert_eq!(read(&pids.join("pids.max")), "40");
    }
    // An exec'd process joins the same scope.
    let exec = rt
        .exec(
            &cid,
            &spec.process().clone().unwrap_or_default(),
            Stdio::default(),
        )
        .unwrap();
    let exec_cgroups = read(Path::new(&format!("/proc/{}/cgroup", exec.pid())));
    for line in exec_cgroups.lines() {
        assert!(line.ends_with(&rel), "exec: {line} is not in {rel}");
    }

    // The init's death kills the exec'd process, whose parent (this test) must reap it
    // before the pid namespace, and so the init, is gone.
    rt.kill(&cid, Signal::SIGKILL).unwrap();
    exec.wait().unwrap();
    process.wait().unwrap();
    rt.delete(&cid, true).unwrap();
    assert_eq!(systemd.active_state(&unit).unwrap(), None);
    for dir in hierarchy_dirs(&rel) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn a_live_update_reaches_the_scope_and_survives_a_daemon_reload() {
    let test = "a_live_update_reaches_the_scope_and_survives_a_daemon_reload";
    let Some(manager) = SystemdUserManager::start(test) else {
        return;
    };
    let Scoped {
        _bundle,
        cid,
        unit,
        rel,
        mut rt,
        process,
        ..
    } = start_in_scope(&manager, "sd-update", "kubepods-burstable-pod2.slice");
    assert_eq!(manager.unit_property(&unit, "TasksMax"), "40");

    let update = serde_json::from_value(serde_json::json!({
        "memory": {"limit": 32 << 20}, "pids": {"limit": 25}
    }))
    .unwrap();
    rt.update(&cid, &update).unwrap();
    let memory_property = if crius_oci::cgroup::unified_host() {
        "MemoryMax"
    } else {
        "MemoryLimit"
    };
    let check = |when: &str| {
        assert_eq!(manager.unit_property(&unit, "TasksMax"), "25", "{when}");
        assert_eq!(
            manager.unit_property(&unit, memory_property),
            (32u64 << 20).to_string(),
            "{when}"
        );
        // The pids limit as the kernel enforces it: the v1 pids hierarchy's file, or
        // the unified one's.
        let file = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .iter()
            .map(|h| {
                Path::new(h)
                    .join(rel.trim_start_matches('/'))
                    .join("pids.max")
            })
            .find(|f| f.exists())
            .expect("the scope has a pids.max");
        assert_eq!(read(&file), "25", "{when}: {}", file.display());
    };
    check("after the update");
    // A reload re-reads the units and applies their properties to the cgroups of the
    // controllers the manager manages: the unit must hold the updated limits, or the
    // kernel's files go back to the creation's. (The test's user manager on a v1 hybrid
    // host manages neither the v1 memory nor the pids hierarchy, only devices, so there
    // the files' check after the reload holds either way and the unit's properties carry
    // the test; on a v2 host both do.)
    let reload = manager.systemctl(&["daemon-reload"]);
    assert!(reload.status.success(), "daemon-reload: {reload:?}");
    check("after daemon-reload");

    rt.kill(&cid, Signal::SIGKILL).unwrap();
    process.wait().unwrap();
    rt.delete(&cid, false).unwrap();
    let mut systemd = Systemd::connect(&manager.socket()).unwrap();
    assert_eq!(systemd.active_state(&unit).unwrap(), None);
}

#[test]
fn a_bad_systemd_path_is_an_invalid_spec() {
    if !crius_testkit::require_root("a_bad_systemd_path_is_an_invalid_spec") {
        return;
    }
    let bundle = Bundle::new();
    let mut rt = BuiltinRuntime::new().with_systemd_bus("/nonexistent/systemd/private");
    for (n, path) in [
        "kubepods.slice/kubepods-besteffort.slice:crius:x",
        "kubepods:crius:x",
        "kubepods--a.slice:crius:x",
        "system.slice:crius:sub.slice",
    ]
    .into_iter()
    .enumerate()
    {
        let cid = id(&format!("sd-bad-{n}"));
        let spec = with_cgroup(bundle.spec(&["true"]), path, serde_json::json!({}));
        let err = rt
            .create(&cid, bundle.path(), &spec, Stdio::default())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{path}: {err}");
        assert!(err.to_string().contains(path), "{err}");
    }
}

#[test]
fn an_unreachable_manager_is_unavailable_not_a_silent_fallback() {
    if !crius_testkit::require_root("an_unreachable_manager_is_unavailable_not_a_silent_fallback") {
        return;
    }
    let bundle = Bundle::new();
    let cid = id("sd-nobus");
    let bus = "/nonexistent/systemd/private";
    let mut rt = BuiltinRuntime::new().with_systemd_bus(bus);
    let spec = with_cgroup(
        bundle.spec(&["true"]),
        &format!("system.slice:crius:{cid}"),
        serde_json::json!({}),
    );
    let err = rt
        .create(&cid, bundle.path(), &spec, Stdio::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains(bus), "{err}");
    assert!(rt.state(&cid).is_err(), "no container is recorded");
    for dir in hierarchy_dirs(&format!("system.slice/crius-{cid}.scope")) {
        assert!(!dir.exists(), "{} created", dir.display());
    }
}

/// A private dbus-daemon on a socket in a temporary directory; killed on drop.
struct MessageBus {
    child: Child,
    dir: tempfile::TempDir,
}

impl MessageBus {
    fn start() -> Option<Self> {
        let daemon = Path::new("/usr/bin/dbus-daemon");
        if !daemon.exists() {
            assert!(
                std::env::var("CI").map(|v| v != "true").unwrap_or(true),
                "dbus-daemon is missing (scripts/install-deps.sh --test installs it)"
            );
            eprintln!("SKIPPED: dbus-daemon is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(daemon)
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!(
                "--address=unix:path={}",
                dir.path().join("bus").display()
            ))
            .stdout(CmdStdio::null())
            .stderr(CmdStdio::null())
            .spawn()
            .unwrap();
        let bus = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !bus.socket().exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(bus)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("bus")
    }
}

impl Drop for MessageBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_message_bus_is_greeted_and_calls_are_routed_by_destination() {
    let Some(bus) = MessageBus::start() else {
        return;
    };
    let mut conn = Connection::open(&bus.socket(), Transport::Bus, Duration::from_secs(10))
        .expect("Hello is accepted");
    let id = conn
        .call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetId",
            &[],
        )
        .unwrap();
    assert!(
        matches!(&id[..], [Value::Str(s)] if s.len() == 32),
        "{id:?}"
    );
    // The bus refuses a call to a name nobody owns (and no service file activates),
    // naming the error.
    let err = conn
        .call(
            "org.crius.test.Nobody",
            "/org/crius/test",
            "org.crius.test.Nobody",
            "GetUnit",
            &[Value::Str("x.scope".into())],
        )
        .unwrap_err();
    assert_eq!(
        err.remote_name(),
        Some("org.freedesktop.DBus.Error.ServiceUnknown"),
        "{err}"
    );
    assert!(matches!(err, DbusError::Remote { .. }));
    // Without Hello a bus drops the connection instead of answering.
    let mut raw = Connection::open(&bus.socket(), Transport::Peer, Duration::from_secs(10))
        .expect("authentication alone succeeds");
    assert!(raw
        .call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetId",
            &[],
        )
        .is_err());
}

/// Runs `script` in the running container `cid` and returns its stdout.
fn exec_out(rt: &mut BuiltinRuntime, cid: &str, spec: &Spec, script: &str) -> String {
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(vec!["/bin/sh".into(), "-c".into(), script.into()]));
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let stdio = Stdio {
        stdout: Some(w),
        ..Stdio::default()
    };
    let exec = rt.exec(cid, &process, stdio).unwrap();
    let out = common::read_all(r);
    exec.wait().unwrap();
    out
}

/// What the probe below prints for /dev/kmsg (1:11, outside the standard set; opened
/// for writing only, which needs no syslog privilege and never blocks) and /dev/null.
const DEVICE_PROBE: &str = "mknod /tmp/kmsg c 1 11 2>/dev/null; \
    (exec 3>/tmp/kmsg) 2>/dev/null && echo KMSG-OK || echo KMSG-DENIED; \
    (echo x > /dev/null) 2>/dev/null && echo NULL-OK || echo NULL-DENIED";

/// The (specifier, access) pairs of a unit's `DeviceAllow`, as the manager returns them.
fn device_allow(systemd: &mut Systemd, unit: &str) -> Vec<(String, String)> {
    let value = systemd.scope_property(unit, "DeviceAllow").unwrap();
    let Value::Variant(inner) = value else {
        panic!("DeviceAllow is not a variant: {value:?}");
    };
    let Value::Array(sig, items) = *inner else {
        panic!("DeviceAllow is not an array: {inner:?}");
    };
    assert_eq!(sig, "(ss)");
    items
        .into_iter()
        .map(|item| match item {
            Value::Struct(f) => (
                f[0].as_str().unwrap().to_string(),
                f[1].as_str().unwrap().to_string(),
            ),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Waits until `check` holds for the text of `file`, which systemd rewrites once it
/// re-applied a unit's settings after a reload (it may do so after the reload's reply).
fn wait_for_file(file: &Path, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = read(file);
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what} did not happen within 10 s:\n{text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_scope_keeps_the_containers_device_rules_across_a_daemon_reload() {
    let test = "a_scope_keeps_the_containers_device_rules_across_a_daemon_reload";
    let Some(manager) = SystemdUserManager::start(test) else {
        return;
    };
    let bundle = Bundle::new();
    let slice = "kubepods-besteffort-pod3.slice";
    let slice_dir = format!(
        "{}/kubepods.slice/kubepods-besteffort.slice/{slice}",
        manager.root()
    );
    // A container with the usual rules (deny all, then the standard set) and a
    // privileged one (deny all, allow all) in the same slice.
    let cid = id("sd-dev");
    let spec = with_cgroup(
        bundle.spec(&["sleep", "300"]),
        &format!("{slice}:crius:{cid}"),
        serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]}),
    );
    let pid_ = id("sd-dev-priv");
    let privileged = with_cgroup(
        bundle.spec(&["sleep", "300"]),
        &format!("{slice}:crius:{pid_}"),
        serde_json::json!({"devices": [
            {"allow": false, "access": "rwm"}, {"allow": true, "access": "rwm"}
        ]}),
    );
    let (unit, punit) = (format!("crius-{cid}.scope"), format!("crius-{pid_}.scope"));
    let mut rt = BuiltinRuntime::new().with_systemd_bus(manager.socket());
    let process = rt
        .create(&cid, bundle.path(), &spec, Stdio::default())
        .unwrap();
    rt.start(&cid).unwrap();
    let pprocess = rt
        .create(&pid_, bundle.path(), &privileged, Stdio::default())
        .unwrap();
    rt.start(&pid_).unwrap();

    // systemd knows the rules: strict with the standard set, read back as a(ss).
    let mut systemd = Systemd::connect(&manager.socket()).unwrap();
    assert_eq!(
        systemd
            .scope_property(&unit, "DevicePolicy")
            .unwrap()
            .as_str(),
        Some("strict")
    );
    let allow = device_allow(&mut systemd, &unit);
    for want in [
        ("/dev/char/1:3", "rwm"),
        ("/dev/char/1:9", "rwm"),
        ("/dev/char/5:2", "rwm"),
        ("char-pts", "rwm"),
        ("char-*", "m"),
        ("block-*", "m"),
    ] {
        assert!(
            allow.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} not in {allow:?}"
        );
    }
    assert_eq!(allow.len(), 10, "{allow:?}");
    assert!(manager
        .unit_property(&unit, "DeviceAllow")
        .lines()
        .any(|l| l == "/dev/char/1:3 rwm"));
    assert_eq!(manager.unit_property(&punit, "DevicePolicy"), "auto");
    assert!(device_allow(&mut systemd, &punit).is_empty());
    assert_eq!(
        exec_out(&mut rt, &cid, &spec, DEVICE_PROBE),
        "KMSG-DENIED\nNULL-OK\n"
    );

    // On a host with the v1 devices hierarchy: a mark systemd's re-application wipes
    // (an extra allow for kmsg in the container's list, an extra deny in the privileged
    // one's), to know it happened and that the probe sees the files' changes.
    let v1 = Path::new("/sys/fs/cgroup/devices");
    let v1 = v1.is_dir().then(|| {
        let dir = |unit: &str| v1.join(slice_dir.trim_start_matches('/')).join(unit);
        (dir(&unit), dir(&punit))
    });
    if let Some((dir, pdir)) = &v1 {
        std::fs::write(dir.join("devices.allow"), "c 1:11 w").unwrap();
        std::fs::write(pdir.join("devices.deny"), "c 1:11 w").unwrap();
        assert_eq!(
            exec_out(&mut rt, &cid, &spec, DEVICE_PROBE),
            "KMSG-OK\nNULL-OK\n"
        );
    }
    let reload = manager.systemctl(&["daemon-reload"]);
    assert!(reload.status.success(), "daemon-reload: {reload:?}");
    if let Some((dir, pdir)) = &v1 {
        // systemd manages the devices hierarchy here (the mark goes): it wrote its own
        // list, which must be the container's, not `a *:* rwm`.
        let list = wait_for_file(&dir.join("devices.list"), "systemd's rewrite", |l| {
            !l.lines().any(|l| l == "c 1:11 w")
        });
        assert!(!list.contains("a *:* rwm"), "{list}");
        for want in ["c 1:3 rwm", "c 136:* rwm", "c *:* m", "b *:* m"] {
            assert!(list.lines().any(|l| l == want), "{want} not in\n{list}");
        }
        // The privileged scope (auto, no list) is opened to every device again: what
        // systemd did to every crius container's scope before it was told the rules.
        wait_for_file(&pdir.join("devices.list"), "allow-all", |l| {
            l == "a *:* rwm"
        });
    }
    assert_eq!(
        exec_out(&mut rt, &cid, &spec, DEVICE_PROBE),
        "KMSG-DENIED\nNULL-OK\n"
    );
    assert_eq!(
        exec_out(&mut rt, &pid_, &privileged, DEVICE_PROBE),
        "KMSG-OK\nNULL-OK\n"
    );

    // An update carrying device rules adds them to the ones in force, for systemd too.
    let update = serde_json::from_value(serde_json::json!({"devices": [
        {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "w"}
    ]}))
    .unwrap();
    rt.update(&cid, &update).unwrap();
    let allow = device_allow(&mut systemd, &unit);
    assert!(
        allow.contains(&("/dev/char/1:11".into(), "w".into())),
        "{allow:?}"
    );
    assert_eq!(allow.len(), 11, "{allow:?}");
    let reload = manager.systemctl(&["daemon-reload"]);
    assert!(reload.status.success(), "daemon-reload: {reload:?}");
    assert_eq!(
        exec_out(&mut rt, &cid, &spec, DEVICE_PROBE),
        "KMSG-OK\nNULL-OK\n"
    );

    for (c, p) in [(&cid, process), (&pid_, pprocess)] {
        rt.kill(c, Signal::SIGKILL).unwrap();
        p.wait().unwrap();
        rt.delete(c, false).unwrap();
    }
}

#[test]
fn rules_systemd_cannot_express_refuse_the_container_before_it_starts() {
    let test = "rules_systemd_cannot_express_refuse_the_container_before_it_starts";
    if !crius_testkit::require_root(test) {
        return;
    }
    let bundle = Bundle::new();
    let cid = id("sd-dev-deny");
    // No manager is needed to refuse: the rules are checked first.
    let mut rt = BuiltinRuntime::new().with_systemd_bus("/nonexistent/systemd/private");
    let spec = with_cgroup(
        bundle.spec(&["true"]),
        &format!("system.slice:crius:{cid}"),
        serde_json::json!({"devices": [
            {"allow": true, "access": "rwm"},
            {"allow": false, "type": "c", "major": 1, "minor": 11, "access": "rwm"}
        ]}),
    );
    let err = rt
        .create(&cid, bundle.path(), &spec, Stdio::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("DeviceAllow="), "{err}");
    assert!(rt.state(&cid).is_err(), "no container is recorded");
}

//! The systemd cgroup driver: a container's cgroup is a transient scope unit that systemd
//! created (StartTransientUnit over D-Bus), so systemd knows the cgroup is taken and a
//! `daemon-reload` re-applies the container's limits instead of resetting them.
//!
//! `linux.cgroupsPath` takes runc's systemd form `slice:prefix:name`: the scope
//! `<prefix>-<name>.scope` (`<name>.scope` with no prefix) in `slice`, where an empty slice
//! is `system.slice` and `-` the root slice. A `name` ending in `.slice` (runc would make a
//! slice unit) is refused: crius only runs containers in scopes.
//!
//! The cgroup directory is the manager's own root (its `ControlGroup`: "" for the system
//! manager, the manager's cgroup for a user manager) + the slice's nested directories
//! (systemd.slice(5)) + the unit name, in every hierarchy. systemd creates it in the
//! hierarchies it manages; crius then creates the rest (the v1 controllers a manager
//! leaves alone), applies the spec's resources to the files as with cgroupfs, and adds
//! the process to every hierarchy.
//!
//! The scope also carries the container's device rules as `DevicePolicy=` and
//! `DeviceAllow=` ([`device_properties`]), or systemd would open every device to it the
//! next time it applies the unit's settings.

mod device_allow;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::dbus::{Connection, DbusError, Transport, Value};
use crate::error::{Error, Result};

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SCOPE: &str = "org.freedesktop.systemd1.Scope";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// How long one D-Bus read or write may take before the manager is declared hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a scope may take to become active, or to go away after it stopped.
const UNIT_TIMEOUT: Duration = Duration::from_secs(10);

/// systemd's private socket: peer-to-peer, usable before the bus runs, root only.
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";
/// The system message bus.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// The socket to reach the system manager on when none is configured: its private socket
/// when present, else the system bus.
pub fn default_bus() -> PathBuf {
    if Path::new(PRIVATE_SOCKET).exists() {
        PathBuf::from(PRIVATE_SOCKET)
    } else {
        PathBuf::from(SYSTEM_BUS_SOCKET)
    }
}

/// A slice name systemd would refuse or that does not name a slice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slice {name:?} {why}")]
pub struct InvalidSlice {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The cgroup directory path of systemd slice `name`: each `-` in a slice name is one
/// level of nesting (systemd.slice(5)), so `kubepods-burstable-pod1.slice` lives at
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice`, and `-.slice`
/// is the root (`/`). A path, a name without `.slice`, an empty level (`a--b`, a leading
/// or trailing `-`) or a character systemd refuses in unit names is an error.
pub fn slice_path(name: &str) -> std::result::Result<String, InvalidSlice> {
    let invalid = |why| InvalidSlice {
        name: name.to_string(),
        why,
    };
    if name.contains('/') {
        return Err(invalid("is a path, not a slice name"));
    }
    let stem = name
        .strip_suffix(".slice")
        .ok_or_else(|| invalid("does not end in .slice"))?;
    if stem == "-" {
        return Ok("/".to_string());
    }
    if stem.is_empty() {
        return Err(invalid("has an empty name"));
    }
    if name.len() > 255 {
        return Err(invalid("is longer than 255 characters"));
    }
    if !stem.chars().all(unit_name_char) {
        return Err(invalid(
            "holds a character other than letters, digits, ':', '-', '_', '.' and '\\'",
        ));
    }
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(
            "has an empty level (a leading or trailing '-', or '--')",
        ));
    }
    let mut path = String::new();
    for i in 1..=parts.len() {
        path.push('/');
        path.push_str(&parts[..i].join("-"));
        path.push_str(".slice");
    }
    Ok(path)
}

/// Characters systemd accepts in a unit name (systemd.unit(5)), besides `@` for templates.
fn unit_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\')
}

/// Whether `cgroups_path` is in runc's systemd form `slice:prefix:name` (not a path).
pub fn is_systemd_path(cgroups_path: &Path) -> bool {
    let s = cgroups_path.to_string_lossy();
    !s.starts_with('/') && s.matches(':').count() == 2
}

/// A container's scope, parsed from a systemd-form `cgroupsPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePath {
    /// The slice the scope goes in (`system.slice` when the path gave none).
    pub slice: String,
    /// The scope unit's name, `<prefix>-<name>.scope`.
    pub unit: String,
}

impl ScopePath {
    /// Parses `slice:prefix:name`. A bad slice, an empty or bad name, or a `.slice` name
    /// is InvalidSpec.
    pub fn parse(cgroups_path: &Path) -> Result<Self> {
        let s = cgroups_path.to_string_lossy();
        let invalid = |why: String| Error::InvalidSpec(format!("cgroupsPath {s:?}: {why}"));
        let parts: Vec<&str> = s.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            return Err(invalid("is not of the form slice:prefix:name".into()));
        };
        let slice = match slice {
            "" => "system.slice".to_string(),
            "-" => "-.slice".to_string(),
            other => other.to_string(),
        };
        slice_path(&slice).map_err(|e| invalid(e.to_string()))?;
        if name.is_empty() {
            return Err(invalid("has an empty name".into()));
        }
        if name.ends_with(".slice") {
            return Err(invalid(
                "names a slice unit; crius runs containers in scope units only".into(),
            ));
        }
        let unit = if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        if unit.len() > 255 || !unit.chars().all(unit_name_char) {
            return Err(invalid(format!("{unit:?} is not a valid unit name")));
        }
        Ok(Self { slice, unit })
    }

    /// The scope's cgroup path relative to each hierarchy's root, under the manager's
    /// root `manager_root` (its `ControlGroup`).
    pub fn cgroup_path(&self, manager_root: &str) -> PathBuf {
        // Validated in `parse`, so the slice has a path.
        let slice = slice_path(&self.slice).unwrap_or_else(|_| "/".into());
        let mut path = PathBuf::from("/");
        for part in [manager_root, slice.as_str()] {
            path.push(part.trim_start_matches('/'));
        }
        path.push(&self.unit);
        path
    }
}

/// systemd's "infinity" for limits and durations (`CGROUP_LIMIT_MAX`, `USEC_INFINITY`).
const INFINITY: u64 = u64::MAX;

/// The spec's resources systemd should know as unit properties, so that a
/// `daemon-reload` re-applies the container's limits rather than resetting them. The rest
/// is written to the cgroup files only (as runc's systemd driver does, the files are
/// written either way). A limit the spec lifts (a negative memory limit or CPU quota, a
/// pids limit of 0 or less, which the cgroup files get as `max`) is `infinity`, so an
/// update that lifts a limit reaches the unit too.
pub fn resource_properties(r: &LinuxResources, unified: bool) -> Vec<Value> {
    let mut props = Vec::new();
    if let Some(limit) = r.memory().as_ref().and_then(|m| m.limit()) {
        let name = if unified { "MemoryMax" } else { "MemoryLimit" };
        let limit = u64::try_from(limit).unwrap_or(INFINITY);
        props.push(Value::property(name, Value::Uint64(limit)));
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            props.push(if unified {
                Value::property(
                    "CPUWeight",
                    Value::Uint64(super::v2::shares_to_weight(shares)),
                )
            } else {
                Value::property("CPUShares", Value::Uint64(shares))
            });
        }
        if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
            let per_sec = match u64::try_from(quota) {
                Ok(quota) => {
                    let period = cpu.period().filter(|p| *p > 0).unwrap_or(100_000);
                    // systemd keeps the quota per second at 1% (10 ms) granularity: round
                    // up so the unit never allows less than the spec (the cgroup file gets
                    // the exact figure right after).
                    (quota.saturating_mul(1_000_000) / period).div_ceil(10_000) * 10_000
                }
                Err(_) => INFINITY,
            };
            props.push(Value::property(
                "CPUQuotaPerSecUSec",
                Value::Uint64(per_sec),
            ));
        }
    }
    if let Some(limit) = r.pids().as_ref().map(|p| p.limit()) {
        let limit = u64::try_from(limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(INFINITY);
        props.push(Value::property("TasksMax", Value::Uint64(limit)));
    }
    props
}

/// `DevicePolicy=` and `DeviceAllow=` for a scope whose cgroup gets the device `rules`
/// (the container's complete list, in the order the v1 files get it): `strict` with an
/// entry per device the rules allow, or `auto` and no entry when they allow every
/// device (a privileged container). systemd applies these whenever it realizes the
/// unit, and its default would allow every device. Rules that allow every device but
/// some cannot be expressed and are InvalidSpec. `unified`: whether the host runs
/// cgroup v2 (an exception systemd cannot name exactly is widened there, left out on
/// v1; see the `device_allow` module).
pub fn device_properties(rules: &[LinuxDeviceCgroup], unified: bool) -> Result<Vec<Value>> {
    let settings =
        device_allow::device_settings(rules, &device_allow::DeviceGroups::read(), unified)?;
    let allow = settings
        .allow
        .into_iter()
        .map(|(path, access)| Value::Struct(vec![Value::Str(path), Value::Str(access)]))
        .collect();
    Ok(vec![
        Value::property("DevicePolicy", Value::Str(settings.policy.into())),
        // Always sent, empty too: SetUnitProperties with an empty list clears the one
        // set before.
        Value::property("DeviceAllow", Value::Array("(ss)".into(), allow)),
    ])
}

/// A connection to a systemd manager.
#[derive(Debug)]
pub struct Systemd {
    conn: Connection,
}

impl Systemd {
    /// Connects to the manager at `bus` (peer-to-peer for systemd's private sockets, a
    /// message bus otherwise). No manager there is Unavailable.
    pub fn connect(bus: &Path) -> Result<Self> {
        let conn =
            Connection::open(bus, Transport::for_path(bus), CALL_TIMEOUT).map_err(|source| {
                match source {
                    DbusError::Connect { path, source } => Error::Unavailable(format!(
                        "no systemd manager answers on {} ({source}); the systemd cgroup driver \
                     needs one (set the bus socket to a running manager's)",
                        path.display()
                    )),
                    other => Error::Systemd {
                        op: "connect".into(),
                        source: other,
                    },
                }
            })?;
        Ok(Self { conn })
    }

    fn call(
        &mut self,
        path: &str,
        interface: &str,
        member: &str,
        args: &[Value],
    ) -> Result<Vec<Value>> {
        self.conn
            .call(SYSTEMD, path, interface, member, args)
            .map_err(|source| Error::Systemd {
                op: member.into(),
                source,
            })
    }

    fn property(&mut self, path: &str, interface: &str, name: &str) -> Result<Value> {
        let reply = self.call(
            path,
            PROPERTIES,
            "Get",
            &[Value::Str(interface.into()), Value::Str(name.into())],
        )?;
        reply.into_iter().next().ok_or_else(|| Error::Systemd {
            op: format!("Get {name}"),
            source: DbusError::Malformed("empty reply".into()),
        })
    }

    /// The manager's own cgroup (its `ControlGroup`), under which it places every unit:
    /// "" for the system manager, the manager's cgroup for a user manager.
    pub fn manager_root(&mut self) -> Result<String> {
        let v = self.property(MANAGER_PATH, MANAGER, "ControlGroup")?;
        let root = match (v.as_str(), v.as_bytes()) {
            (Some(s), _) => s.to_string(),
            (None, Some(b)) => String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .to_string(),
            (None, None) => {
                return Err(Error::Systemd {
                    op: "Get ControlGroup".into(),
                    source: DbusError::Malformed(format!("ControlGroup is a {}", v.signature())),
                })
            }
        };
        Ok(root.trim_end_matches('/').to_string())
    }

    /// The unit's `ActiveState`, `None` when systemd has no such unit loaded.
    pub fn active_state(&mut self, unit: &str) -> Result<Option<String>> {
        let path = match self.call(MANAGER_PATH, MANAGER, "GetUnit", &[Value::Str(unit.into())]) {
            Ok(reply) => reply
                .first()
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_default(),
            Err(e) if no_such_unit(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match self.property(&path, UNIT, "ActiveState") {
            Ok(v) => Ok(Some(v.as_str().unwrap_or_default().to_string())),
            // Unloaded between the two calls.
            Err(e) if unknown_object(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A property of loaded scope unit `unit` (its `org.freedesktop.systemd1.Scope`
    /// interface, where the cgroup settings such as `DeviceAllow` are); NoSuchUnit when
    /// the unit is not loaded.
    pub fn scope_property(&mut self, unit: &str, name: &str) -> Result<Value> {
        let reply = self.call(MANAGER_PATH, MANAGER, "GetUnit", &[Value::Str(unit.into())])?;
        let path = reply
            .first()
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.property(&path, SCOPE, name)
    }

    /// Creates scope `scope` holding `pid`, delegated (the container's runtime manages the
    /// cgroup's inside), with `properties` (the container's resources and devices, from
    /// [`resource_properties`] and [`device_properties`]) as unit properties, and waits
    /// until it is active.
    pub fn start_scope(
        &mut self,
        scope: &ScopePath,
        pid: i32,
        properties: Vec<Value>,
    ) -> Result<()> {
        let pid = u32::try_from(pid)
            .map_err(|_| Error::InvalidSpec(format!("pid {pid} cannot join a scope")))?;
        let mut props = vec![
            Value::property("Slice", Value::Str(scope.slice.clone())),
            Value::property(
                "Description",
                Value::Str(format!("crius container {}", scope.unit)),
            ),
            Value::property("PIDs", Value::Array("u".into(), vec![Value::Uint32(pid)])),
            Value::property("Delegate", Value::Bool(true)),
            // No implicit ordering against shutdown.target or the like: a container's
            // scope comes and goes with the container, not with the boot.
            Value::property("DefaultDependencies", Value::Bool(false)),
            // A scope that failed is unloaded too, so the name can be used again.
            Value::property("CollectMode", Value::Str("inactive-or-failed".into())),
        ];
        props.extend(properties);
        self.call(
            MANAGER_PATH,
            MANAGER,
            "StartTransientUnit",
            &[
                Value::Str(scope.unit.clone()),
                Value::Str("replace".into()),
                Value::Array("(sv)".into(), props),
                Value::Array("(sa(sv))".into(), Vec::new()),
            ],
        )?;
        let deadline = Instant::now() + UNIT_TIMEOUT;
        loop {
            let state = self.active_state(&scope.unit)?;
            match state.as_deref() {
                Some("active") => return Ok(()),
                Some("failed") => {
                    return Err(Error::Cgroup {
                        path: scope.unit.clone().into(),
                        message: "systemd reports the scope failed while starting".into(),
                    })
                }
                _ if Instant::now() > deadline => {
                    return Err(Error::Cgroup {
                        path: scope.unit.clone().into(),
                        message: format!(
                            "scope not active after {UNIT_TIMEOUT:?} (state {state:?})"
                        ),
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Changes properties of loaded unit `unit` at runtime (`SetUnitProperties` with
    /// `runtime` true: kept until the unit is gone, not written to /etc), as live
    /// updates of a container's limits need so that a `daemon-reload` keeps them.
    pub fn set_unit_properties(&mut self, unit: &str, properties: Vec<Value>) -> Result<()> {
        self.call(
            MANAGER_PATH,
            MANAGER,
            "SetUnitProperties",
            &[
                Value::Str(unit.into()),
                Value::Bool(true),
                Value::Array("(sv)".into(), properties),
            ],
        )
        .map(drop)
    }

    /// SIGKILLs what is left in `unit`, stops it and waits until systemd has unloaded it;
    /// a unit that is already gone is success. A failed unit's record is reset so that it
    /// is unloaded too.
    pub fn stop_scope(&mut self, unit: &str) -> Result<()> {
        // The kill first, through systemd: it reaches every process in the scope's tree,
        // cgroups the container made inside it included, and spares StopUnit's SIGTERM
        // and its stop timeout (90 s by default), which a container init in its own pid
        // namespace would sit out, as it ignores SIGTERM unless it handles it.
        let kill = [
            Value::Str(unit.into()),
            Value::Str("all".into()),
            Value::Int32(libc::SIGKILL),
        ];
        match self.call(MANAGER_PATH, MANAGER, "KillUnit", &kill) {
            Ok(_) => {}
            Err(e) if no_such_unit(&e) => return Ok(()),
            // StopUnit still kills what is left, only later.
            Err(e) => tracing::debug!(unit, error = %e, "KillUnit failed; stopping anyway"),
        }
        let args = [Value::Str(unit.into()), Value::Str("replace".into())];
        match self.call(MANAGER_PATH, MANAGER, "StopUnit", &args) {
            Ok(_) => {}
            Err(e) if no_such_unit(&e) => {}
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + UNIT_TIMEOUT;
        loop {
            match self.active_state(unit)?.as_deref() {
                None => return Ok(()),
                Some("failed") | Some("inactive") => {
                    // Best effort: only matters for a unit systemd keeps after failing.
                    let _ = self.call(
                        MANAGER_PATH,
                        MANAGER,
                        "ResetFailedUnit",
                        &[Value::Str(unit.into())],
                    );
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(Error::Cgroup {
                    path: unit.into(),
                    message: format!("scope still loaded {UNIT_TIMEOUT:?} after StopUnit"),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn no_such_unit(e: &Error) -> bool {
    matches!(e, Error::Systemd { source, .. }
        if source.remote_name() == Some("org.freedesktop.systemd1.NoSuchUnit"))
}

fn unknown_object(e: &Error) -> bool {
    matches!(e, Error::Systemd { source, .. }
        if matches!(source.remote_name(), Some("org.freedesktop.DBus.Error.UnknownObject")
            | Some("org.freedesktop.systemd1.NoSuchUnit")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_names_expand_to_nested_slice_directories() {
        assert_eq!(
            slice_path("kubepods-burstable-pod1234_abcd.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_abcd.slice"
        );
        assert_eq!(slice_path("kubepods.slice").unwrap(), "/kubepods.slice");
        assert_eq!(slice_path("-.slice").unwrap(), "/");
        for bad in [
            "/kubepods/burstable/pod1",
            "kubepods-burstable",
            ".slice",
            "-kubepods.slice",
            "kubepods--burstable.slice",
            "kube pods.slice",
            "",
        ] {
            assert!(slice_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn systemd_paths_name_a_scope_in_a_slice() {
        let p = ScopePath::parse(Path::new("kubepods-besteffort-pod1.slice:crius:abc")).unwrap();
        assert_eq!(p.slice, "kubepods-besteffort-pod1.slice");
        assert_eq!(p.unit, "crius-abc.scope");
        assert_eq!(
            p.cgroup_path(""),
            PathBuf::from(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crius-abc.scope"
            )
        );
        assert_eq!(
            p.cgroup_path("/crius-sd-1"),
            PathBuf::from(
                "/crius-sd-1/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crius-abc.scope"
            )
        );
        let p = ScopePath::parse(Path::new("::abc")).unwrap();
        assert_eq!(
            (p.slice.as_str(), p.unit.as_str()),
            ("system.slice", "abc.scope")
        );
        let p = ScopePath::parse(Path::new("-:x:abc")).unwrap();
        assert_eq!(p.cgroup_path("/"), PathBuf::from("/x-abc.scope"));
        for bad in [
            "kubepods/x.slice:crius:abc",
            "kubepods:crius:abc",
            "system.slice:crius:",
            "system.slice:crius:sub.slice",
            "system.slice:crius:a/b",
        ] {
            let e = ScopePath::parse(Path::new(bad)).unwrap_err();
            assert!(matches!(e, Error::InvalidSpec(_)), "{bad}: {e}");
        }
        assert!(is_systemd_path(Path::new("a.slice:p:n")));
        assert!(!is_systemd_path(Path::new("/a:b:c")));
        assert!(!is_systemd_path(Path::new("crius/pod/c")));
    }

    #[test]
    fn limits_become_unit_properties_of_the_hierarchy_in_use() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 64 << 20},
            "cpu": {"shares": 1024, "quota": 25_000, "period": 100_000},
            "pids": {"limit": 40}
        }))
        .unwrap();
        let names = |props: &[Value]| -> Vec<(String, Value)> {
            props
                .iter()
                .map(|p| match p {
                    Value::Struct(f) => (
                        f[0].as_str().unwrap().to_string(),
                        match &f[1] {
                            Value::Variant(v) => (**v).clone(),
                            other => other.clone(),
                        },
                    ),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(
            names(&resource_properties(&r, false)),
            vec![
                ("MemoryLimit".into(), Value::Uint64(64 << 20)),
                ("CPUShares".into(), Value::Uint64(1024)),
                ("CPUQuotaPerSecUSec".into(), Value::Uint64(250_000)),
                ("TasksMax".into(), Value::Uint64(40)),
            ]
        );
        let v2 = names(&resource_properties(&r, true));
        assert_eq!(v2[0], ("MemoryMax".into(), Value::Uint64(64 << 20)));
        assert_eq!(v2[1], ("CPUWeight".into(), Value::Uint64(39)));
        assert!(resource_properties(&LinuxResources::default(), true).is_empty());
        // Lifted limits are infinity in the unit, as `max` in the files.
        let lifted: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": -1},
            "cpu": {"quota": -1},
            "pids": {"limit": 0}
        }))
        .unwrap();
        assert_eq!(
            names(&resource_properties(&lifted, true)),
            vec![
                ("MemoryMax".into(), Value::Uint64(u64::MAX)),
                ("CPUQuotaPerSecUSec".into(), Value::Uint64(u64::MAX)),
                ("TasksMax".into(), Value::Uint64(u64::MAX)),
            ]
        );
    }
}

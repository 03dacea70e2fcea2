//! The built-in runtime: [`OciRuntime`] on top of the `clone` module, for the
//! single-threaded monitor. Container records live in memory (the monitor persists what
//! it needs); no tokio, no threads.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxIdMapping, LinuxResources, Process as ProcessSpec, Spec,
};

use crate::cgroup::dbus::Value;
use crate::cgroup::systemd::{self, ScopePath, Systemd};
use crate::cgroup::{CgroupManager, CgroupStats};
use crate::clone::{pidfd_send_signal, set_winsize, spawn};
use crate::error::{Error, InitError, Result};
use crate::message::{Channel, Message};
use crate::plan::{self, HeldFds};
use crate::runtime::{rootfs_of, validate_id, ContainerState, OciRuntime, Process, Status, Stdio};

#[derive(Debug)]
struct Record {
    pid: i32,
    pidfd: OwnedFd,
    /// Present until the container started.
    channel: Option<Channel>,
    spec: Spec,
    cgroup: Option<CgroupManager>,
    /// The systemd scope holding the cgroup (systemd-form `cgroupsPath`).
    scope: Option<ScopePath>,
    /// Every device rule written to the cgroup so far, in order (creation's completed
    /// list, then each update's): what systemd's `DeviceAllow=` must follow.
    device_rules: Vec<LinuxDeviceCgroup>,
}

/// A container's cgroup before its process joins it.
#[derive(Debug)]
struct ContainerCgroup {
    mgr: CgroupManager,
    /// The spec's resources with the device rules completed.
    resources: LinuxResources,
    /// For a systemd-form path: the scope to create and a connection to its manager.
    scope: Option<SystemdScope>,
}

/// A scope still to be created.
#[derive(Debug)]
struct SystemdScope {
    path: ScopePath,
    manager: Systemd,
    /// The unit's resource and device properties.
    properties: Vec<Value>,
}

/// The built-in runtime. Must be used from a single-threaded process (see `clone`).
#[derive(Debug, Default)]
pub struct BuiltinRuntime {
    containers: HashMap<String, Record>,
    /// The systemd manager's socket for systemd-form cgroup paths; `None` picks
    /// [`systemd::default_bus`] when one is needed.
    systemd_bus: Option<PathBuf>,
}

impl BuiltinRuntime {
    /// An empty runtime.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reaches the systemd manager on `bus` (its private socket or a message bus) for
    /// containers whose `cgroupsPath` is in the systemd form `slice:prefix:name`.
    pub fn with_systemd_bus(mut self, bus: impl Into<PathBuf>) -> Self {
        self.systemd_bus = Some(bus.into());
        self
    }

    fn systemd(&self) -> Result<Systemd> {
        let bus = self
            .systemd_bus
            .clone()
            .unwrap_or_else(systemd::default_bus);
        Systemd::connect(&bus)
    }

    /// The cgroup of container `id` (for live updates and stats).
    pub fn cgroup(&self, id: &str) -> Option<&CgroupManager> {
        self.containers.get(id).and_then(|r| r.cgroup.as_ref())
    }

    fn record(&self, id: &str) -> Result<&Record> {
        self.containers
            .get(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// The container's cgroup: `linux.cgroupsPath`, or `/<id>` like runc when absent.
    /// Resources are applied with the device rules completed (spec rules, the default
    /// allow list, the spec's devices). A cgroupfs cgroup is created and configured here;
    /// a systemd scope only once its first process exists (see [`join_cgroup`]).
    fn cgroup_for(&self, id: &str, spec: &Spec) -> Result<ContainerCgroup> {
        let linux = spec.linux().clone().unwrap_or_default();
        let path = linux
            .cgroups_path()
            .clone()
            .unwrap_or_else(|| format!("/{id}").into());
        let mut resources = linux.resources().clone().unwrap_or_default();
        let devices = linux.devices().clone().unwrap_or_default();
        resources.set_devices(Some(crate::cgroup::device_rules(
            linux.resources().as_ref(),
            &devices,
        )));
        if systemd::is_systemd_path(&path) {
            let scope = ScopePath::parse(&path)?;
            // Before any process exists: rules systemd cannot take refuse the container.
            let unified = crate::cgroup::unified_host();
            let mut properties = systemd::resource_properties(&resources, unified);
            properties.extend(systemd::device_properties(
                resources.devices().as_deref().unwrap_or_default(),
                unified,
            )?);
            let mut manager = self.systemd()?;
            let root = manager.manager_root()?;
            let mgr = CgroupManager::for_scope(&scope.cgroup_path(&root))?;
            return Ok(ContainerCgroup {
                mgr,
                resources,
                scope: Some(SystemdScope {
                    path: scope,
                    manager,
                    properties,
                }),
            });
        }
        let mgr = CgroupManager::new(&path)?;
        mgr.create()?;
        if let Err(e) = mgr.apply(&resources) {
            let _ = mgr.delete();
            return Err(e);
        }
        Ok(ContainerCgroup {
            mgr,
            resources,
            scope: None,
        })
    }

    /// Removes a container's cgroup: kills what is left in it, stops its scope (if any)
    /// and removes the directories systemd did not.
    fn remove_cgroup(&self, mgr: &CgroupManager, scope: Option<&ScopePath>) -> Result<()> {
        mgr.kill_all(Duration::from_secs(5))?;
        if let Some(scope) = scope {
            self.systemd()?.stop_scope(&scope.unit)?;
        }
        mgr.delete()
    }
}

/// Puts the container's first process `pid` in its cgroup. For a systemd scope: systemd
/// creates the scope with `pid` in it, then crius creates the directories systemd left
/// alone (v1 controllers a manager does not manage), writes the resources and adds `pid`
/// to every hierarchy.
fn join_cgroup(cg: &mut ContainerCgroup, pid: i32) -> Result<()> {
    if let Some(scope) = cg.scope.as_mut() {
        let properties = std::mem::take(&mut scope.properties);
        scope.manager.start_scope(&scope.path, pid, properties)?;
        tracing::debug!(unit = %scope.path.unit, pid, "systemd scope started");
        cg.mgr.create()?;
        cg.mgr.apply(&cg.resources)?;
    }
    cg.mgr.add_process(pid)
}

fn write_id_maps(pid: Pid, spec: &Spec) -> std::result::Result<(), String> {
    let linux = spec.linux().as_ref().ok_or("no linux section")?;
    let fmt = |maps: &Option<Vec<LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    for (file, maps) in [
        ("uid_map", linux.uid_mappings()),
        ("gid_map", linux.gid_mappings()),
    ] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, fmt(maps)).map_err(|e| format!("write {path}: {e}"))?;
    }
    Ok(())
}

/// Whether the process behind `pidfd` has exited (pidfd is readable then).
fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Kills and reaps a child that failed during setup.
fn abandon(pidfd: &OwnedFd) {
    let _ = pidfd_send_signal(pidfd, Signal::SIGKILL);
    let _ = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED);
}

/// Receives the pty master when the process asked for a terminal, sized as the spec says.
fn receive_pty(id: &str, channel: &Channel, process: &ProcessSpec) -> Result<Option<OwnedFd>> {
    if !process.terminal().unwrap_or(false) {
        return Ok(None);
    }
    let master = channel
        .expect(&Message::Pty)
        .map_err(|r| Error::Init {
            id: id.into(),
            source: r.into_init_error(),
        })?
        .ok_or_else(|| Error::Protocol("Pty message without a descriptor".into()))?;
    if let Some(size) = process.console_size() {
        let rows = u16::try_from(size.height()).unwrap_or(u16::MAX);
        let cols = u16::try_from(size.width()).unwrap_or(u16::MAX);
        set_winsize(master.as_fd(), rows, cols).map_err(|e| Error::sys("TIOCSWINSZ", e))?;
    }
    Ok(Some(master))
}

/// Spawns the children for `plan`, places the process with `place` (into its cgroup),
/// and lets it go on.
/// Writes the process's oom_score_adj from here, the parent: a process in a user
/// namespace cannot write its own (while it is non-dumpable, its /proc files belong to
/// the host's root), which is also why runc writes it from outside.
fn set_oom_score_adj(pid: Pid, adj: Option<i32>) -> Result<()> {
    let Some(adj) = adj else { return Ok(()) };
    let path = format!("/proc/{pid}/oom_score_adj");
    std::fs::write(&path, adj.to_string()).map_err(|e| Error::io(path, e))
}

fn launch(
    id: &str,
    plan: &crate::init::InitPlan,
    spec: &Spec,
    place: &mut dyn FnMut(i32) -> Result<()>,
) -> Result<(Channel, crate::clone::Spawned)> {
    let (parent, child) = Channel::pair().map_err(|e| Error::sys("socketpair", e))?;
    let mut map = |pid: Pid| write_id_maps(pid, spec);
    let spawned = spawn(plan, &parent, child, &mut map).map_err(|source| Error::Init {
        id: id.into(),
        source,
    })?;
    let go = place(spawned.pid.as_raw())
        .and_then(|()| set_oom_score_adj(spawned.pid, plan.process.oom_score_adj))
        .and_then(|()| {
            parent
                .send(&Message::Continue, None)
                .map_err(Error::Protocol)
        });
    if let Err(e) = go {
        abandon(&spawned.pidfd);
        return Err(e);
    }
    Ok((parent, spawned))
}

impl BuiltinRuntime {
    fn cgroup_of(&self, id: &str, op: &'static str) -> Result<&CgroupManager> {
        self.record(id)?
            .cgroup
            .as_ref()
            .ok_or_else(|| Error::WrongState {
                id: id.into(),
                op,
                state: "without a cgroup (no linux.cgroupsPath)".into(),
            })
    }
}

impl OciRuntime for BuiltinRuntime {
    fn name(&self) -> &str {
        "builtin"
    }

    fn create(&mut self, id: &str, bundle: &Path, spec: &Spec, stdio: Stdio) -> Result<Process> {
        validate_id(id)?;
        if self.containers.contains_key(id) {
            return Err(Error::AlreadyExists(id.to_string()));
        }
        let rootfs = rootfs_of(bundle, spec)?;
        let mut held = HeldFds::default();
        let plan = plan::for_container(spec, bundle, &rootfs, stdio, &mut held)?;
        let mut cgroup = self.cgroup_for(id, spec)?;
        let launched = launch(id, &plan, spec, &mut |pid| join_cgroup(&mut cgroup, pid));
        drop(held.fds);
        let scope = cgroup.scope.take().map(|s| s.path);
        let device_rules = cgroup.resources.devices().clone().unwrap_or_default();
        let cgroup = cgroup.mgr;
        let (channel, spawned) = match launched {
            Ok(l) => l,
            Err(e) => {
                let _ = self.remove_cgroup(&cgroup, scope.as_ref());
                return Err(e);
            }
        };
        let process_spec = spec.process().clone().unwrap_or_default();
        let ready = receive_pty(id, &channel, &process_spec).and_then(|pty| {
            channel
                .expect(&Message::Created)
                .map(|_| pty)
                .map_err(|r| Error::Init {
                    id: id.into(),
                    source: r.into_init_error(),
                })
        });
        let pty = match ready {
            Ok(pty) => pty,
            Err(e) => {
                abandon(&spawned.pidfd);
                let _ = self.remove_cgroup(&cgroup, scope.as_ref());
                return Err(e);
            }
        };
        let pidfd = spawned
            .pidfd
            .try_clone()
            .map_err(|e| Error::io("pidfd", e))?;
        tracing::debug!(container_id = %id, pid = spawned.pid.as_raw(), "container created");
        self.containers.insert(
            id.to_string(),
            Record {
                pid: spawned.pid.as_raw(),
                pidfd: spawned.pidfd,
                channel: Some(channel),
                spec: spec.clone(),
                cgroup: Some(cgroup),
                scope,
                device_rules,
            },
        );
        Ok(Process::new(spawned.pid.as_raw(), pidfd, pty))
    }

    fn start(&mut self, id: &str) -> Result<()> {
        let rec = self
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let Some(channel) = rec.channel.take() else {
            return Err(Error::WrongState {
                id: id.into(),
                op: "start",
                state: "started".into(),
            });
        };
        channel
            .send(&Message::Start, None)
            .map_err(Error::Protocol)?;
        // The socket is close-on-exec: EOF means the exec happened.
        match channel.recv() {
            Ok(None) => Ok(()),
            Ok(Some((Message::Failed(source), _))) => Err(Error::Init {
                id: id.into(),
                source,
            }),
            Ok(Some((other, _))) => Err(Error::Protocol(format!(
                "expected EOF after Start, got {other:?}"
            ))),
            Err(e) => Err(Error::Protocol(e)),
        }
    }

    fn kill(&mut self, id: &str, signal: Signal) -> Result<()> {
        let rec = self.record(id)?;
        tracing::debug!(container_id = %id, %signal, "signal container init");
        match pidfd_send_signal(&rec.pidfd, signal) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(e) => Err(Error::sys(format!("signal {signal} to {id}"), e)),
        }
    }

    fn state(&mut self, id: &str) -> Result<ContainerState> {
        let rec = self.record(id)?;
        let status = if exited(&rec.pidfd) {
            Status::Stopped
        } else if rec.channel.is_some() {
            Status::Created
        } else {
            Status::Running
        };
        Ok(ContainerState {
            id: id.to_string(),
            status,
            pid: Some(rec.pid),
        })
    }

    fn delete(&mut self, id: &str, force: bool) -> Result<()> {
        let rec = self.record(id)?;
        let running = !exited(&rec.pidfd);
        if running && !force && rec.channel.is_none() {
            return Err(Error::WrongState {
                id: id.into(),
                op: "delete",
                state: "running".into(),
            });
        }
        if running {
            let _ = pidfd_send_signal(&rec.pidfd, Signal::SIGKILL);
            let mut fds = [PollFd::new(rec.pidfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(5000u16));
        }
        if let Some(c) = &rec.cgroup {
            self.remove_cgroup(c, rec.scope.as_ref())?;
        }
        self.containers.remove(id);
        tracing::debug!(container_id = %id, force, "container deleted");
        Ok(())
    }

    fn exec(&mut self, id: &str, process: &ProcessSpec, stdio: Stdio) -> Result<Process> {
        let rec = self.record(id)?;
        if rec.channel.is_some() || exited(&rec.pidfd) {
            return Err(Error::WrongState {
                id: id.into(),
                op: "exec",
                state: "not running".into(),
            });
        }
        let mut held = HeldFds::default();
        let plan = plan::for_exec(&rec.spec, rec.pid, process, stdio, &mut held)?;
        let cgroup = rec.cgroup.as_ref();
        let mut place = |pid| cgroup.map_or(Ok(()), |c| c.add_process(pid));
        let launched = launch(id, &plan, &rec.spec, &mut place);
        drop(held.fds);
        let (channel, spawned) = launched?;
        let pty = match receive_pty(id, &channel, process) {
            Ok(pty) => pty,
            Err(e) => {
                abandon(&spawned.pidfd);
                return Err(e);
            }
        };
        match channel.recv() {
            Ok(None) => {}
            Ok(Some((Message::Failed(source), _))) => {
                let _ = waitid(Id::PIDFd(spawned.pidfd.as_fd()), WaitPidFlag::WEXITED);
                return Err(Error::Init {
                    id: id.into(),
                    source,
                });
            }
            Ok(Some((other, _))) => {
                abandon(&spawned.pidfd);
                return Err(Error::Init {
                    id: id.into(),
                    source: InitError::Sync(format!("unexpected {other:?}")),
                });
            }
            Err(e) => return Err(Error::Protocol(e)),
        }
        Ok(Process::new(spawned.pid.as_raw(), spawned.pidfd, pty))
    }

    /// For a container in a systemd scope the new limits go to systemd first (as unit
    /// properties, runtime only): a `daemon-reload` re-applies a unit's properties to its
    /// cgroup and would otherwise bring back the limits set at creation. The files are
    /// written after either way, with the exact figures. Device rules in `resources` are
    /// written after the ones already in the cgroup (as the v1 files take them), so
    /// systemd gets the device list all of them together leave.
    fn update(&mut self, id: &str, resources: &LinuxResources) -> Result<()> {
        let rec = self.record(id)?;
        let cgroup = self.cgroup_of(id, "update")?;
        let new_rules = resources.devices().as_ref().filter(|d| !d.is_empty());
        let device_rules = new_rules.map(|new| {
            let mut all = rec.device_rules.clone();
            all.extend(new.iter().cloned());
            all
        });
        if let Some(scope) = &rec.scope {
            let unified = crate::cgroup::unified_host();
            let mut properties = systemd::resource_properties(resources, unified);
            if let Some(rules) = &device_rules {
                properties.extend(systemd::device_properties(rules, unified)?);
            }
            if !properties.is_empty() {
                self.systemd()?
                    .set_unit_properties(&scope.unit, properties)?;
                tracing::debug!(container_id = %id, unit = %scope.unit, "scope limits updated");
            }
        }
        cgroup.apply(resources)?;
        if let (Some(rules), Some(rec)) = (device_rules, self.containers.get_mut(id)) {
            rec.device_rules = rules;
        }
        Ok(())
    }

    fn stats(&mut self, id: &str) -> Result<CgroupStats> {
        self.cgroup_of(id, "read stats")?.stats()
    }
}

//! The pod configuration, the monitor's file layout, and [`spawn_monitor`].
//!
//! Layout of a pod's state dir (created by criusd):
//!
//! ```text
//! <state_dir>/pod.json                  PodConfig, written by spawn_monitor (criusd's)
//! <state_dir>/monitor.log               the monitor's own log, rotated at 4 MiB to
//!                                       monitor.log.1 (criusd removes both)
//! <state_dir>/monitor.sock              the socket, 0600
//! <state_dir>/monitor.lock              flock held by the live monitor
//! <state_dir>/ns/{user,net,ipc,uts,pid} namespace pins (bind mounts of nsfs files)
//! <state_dir>/containers/<id>/status.json  last recorded ContainerStatus
//! <state_dir>/runtime/<name>/           --root of a runc-compatible binary
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_spec::runtime::{
    LinuxIdMapping, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
};
use serde::{Deserialize, Serialize};

use crate::client::MonitorClient;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::ContainerStatus;

/// How long [`spawn_monitor`] waits for the monitor to report ready.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(20);

/// User namespace id maps (container id → host id ranges).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMappings {
    /// uid ranges.
    pub uid_mappings: Vec<LinuxIdMapping>,
    /// gid ranges.
    pub gid_mappings: Vec<LinuxIdMapping>,
}

/// Which namespaces the pod gets. `false` means the host's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNamespaces {
    /// New network namespace (loopback up); false: host network.
    pub network: bool,
    /// New IPC namespace.
    pub ipc: bool,
    /// New UTS namespace with the pod's hostname.
    pub uts: bool,
    /// A pod-wide pid namespace with a tiny reaper as PID 1 (share_process_namespace).
    pub pid: bool,
    /// A user namespace with these maps; the other new namespaces belong to it.
    pub user: Option<IdMappings>,
}

/// Everything the monitor needs to know about its pod (`<state_dir>/pod.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodConfig {
    /// Pod (sandbox) id.
    pub pod_id: String,
    /// The pod's state dir, created by criusd (e.g. `/run/crius/pods/<id>`).
    pub state_dir: PathBuf,
    /// Hostname set in the pod's UTS namespace.
    pub hostname: String,
    /// Namespaces to create and pin.
    pub namespaces: PodNamespaces,
    /// Sysctls applied inside the pod namespaces (validated by criusd).
    pub sysctls: BTreeMap<String, String>,
    /// The pod cgroup (recorded; container cgroups come in each spec).
    pub cgroup_parent: Option<PathBuf>,
    /// The systemd manager's socket, for containers whose `cgroupsPath` is in the systemd
    /// form (`slice:prefix:name`, the systemd cgroup driver); `None` is systemd's default.
    #[serde(default)]
    pub systemd_bus: Option<PathBuf>,
}

/// A spawned monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorHandle {
    /// The monitor's pid.
    pub pid: i32,
    /// Its socket.
    pub socket: PathBuf,
}

impl PodConfig {
    /// `<state_dir>/pod.json`.
    pub fn config_path(&self) -> PathBuf {
        self.state_dir.join("pod.json")
    }

    /// `<state_dir>/monitor.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.state_dir.join("monitor.sock")
    }

    /// `<state_dir>/monitor.log`.
    pub fn log_path(&self) -> PathBuf {
        self.state_dir.join("monitor.log")
    }

    /// `<state_dir>/ns/<name>` (`net`, `ipc`, `uts`, `pid`, `user`).
    pub fn ns_path(&self, name: &str) -> PathBuf {
        self.state_dir.join("ns").join(name)
    }

    /// `<state_dir>/containers/<id>/status.json`.
    pub fn status_path(&self, id: &str) -> PathBuf {
        self.state_dir
            .join("containers")
            .join(id)
            .join("status.json")
    }

    /// The namespaces a container of this pod joins by path, ready for the spec's
    /// `linux.namespaces` (add new `mount` and `cgroup`, and a new `pid` when the pod
    /// does not share one).
    pub fn namespaces_to_join(&self) -> Vec<LinuxNamespace> {
        let ns = &self.namespaces;
        let wanted = [
            (ns.user.is_some(), LinuxNamespaceType::User, "user"),
            (ns.network, LinuxNamespaceType::Network, "net"),
            (ns.ipc, LinuxNamespaceType::Ipc, "ipc"),
            (ns.uts, LinuxNamespaceType::Uts, "uts"),
            (ns.pid, LinuxNamespaceType::Pid, "pid"),
        ];
        wanted
            .into_iter()
            .filter(|(on, _, _)| *on)
            .filter_map(|(_, typ, name)| {
                LinuxNamespaceBuilder::default()
                    .typ(typ)
                    .path(self.ns_path(name))
                    .build()
                    .ok()
            })
            .collect()
    }

    /// Checks what the monitor relies on: a non-empty pod id without `/`, an absolute
    /// existing state dir, sysctl keys without path tricks.
    pub fn validate(&self) -> Result<()> {
        if self.pod_id.is_empty() || self.pod_id.contains('/') {
            return Err(Error::InvalidConfig(format!(
                "pod id {:?}: must be non-empty without '/'",
                self.pod_id
            )));
        }
        if !self.state_dir.is_absolute() || !self.state_dir.is_dir() {
            return Err(Error::InvalidConfig(format!(
                "state dir {}: must be an existing absolute directory",
                self.state_dir.display()
            )));
        }
        for key in self.sysctls.keys() {
            let ok = !key.is_empty()
                && key
                    .split(['.', '/'])
                    .all(|p| !p.is_empty() && p != ".." && p != ".");
            if !ok {
                return Err(Error::InvalidConfig(format!(
                    "sysctl {key:?} is not a sysctl name"
                )));
            }
        }
        Ok(())
    }
}

/// Reads a container's last recorded status from disk (for a criusd that cannot reach
/// the monitor any more).
pub fn read_status(config: &PodConfig, id: &str) -> Result<ContainerStatus> {
    let path = config.status_path(id);
    let data = std::fs::read(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
    serde_json::from_slice(&data).map_err(|e| Error::State {
        path,
        message: e.to_string(),
    })
}

/// Reads every container status recorded under `<state_dir>/containers/` (sorted by id);
/// unreadable entries are skipped. What criusd falls back to when the monitor is gone.
pub fn read_all_statuses(config: &PodConfig) -> Vec<ContainerStatus> {
    let Ok(entries) = std::fs::read_dir(config.state_dir.join("containers")) else {
        return Vec::new();
    };
    let mut all: Vec<ContainerStatus> = entries
        .flatten()
        .filter_map(|e| read_status(config, &e.file_name().to_string_lossy()).ok())
        .collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all
}

/// Cleans up after a monitor that died without `Shutdown` (killed, crashed): lazily
/// unmounts the namespace pins and removes the socket, the pins and the container
/// records, leaving `pod.json` and `monitor.log` to criusd. Refused while a monitor
/// still answers on the socket. Container processes that survived the monitor (those
/// not in a shared pid namespace) are not touched: kill them through their cgroups.
pub fn cleanup_after_dead_monitor(config: &PodConfig) -> Result<()> {
    let socket = config.socket_path();
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(Error::InvalidConfig(format!(
            "a monitor still serves {}; use Shutdown",
            socket.display()
        )));
    }
    let mut first_err = None;
    for name in ["net", "ipc", "uts", "pid", "user"] {
        let path = config.ns_path(name);
        match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => {
                first_err.get_or_insert(Error::sys(format!("umount {}", path.display()), e));
            }
        }
    }
    let remove = |p: PathBuf, dir: bool| {
        let r = if dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", p.display()), e))
            }
            _ => Ok(()),
        }
    };
    let dir = &config.state_dir;
    for (path, is_dir) in [
        (socket, false),
        (dir.join("monitor.lock"), false),
        (dir.join("ns"), true),
        (dir.join("containers"), true),
        (dir.join("runtime"), true),
    ] {
        if let Err(e) = remove(path, is_dir) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Writes `<state_dir>/pod.json`, spawns `binary --config <file>` (which detaches into
/// its own session, double-forked, so it survives criusd), reaps the intermediate
/// process, and waits until the monitor reports ready and answers `Hello`. A setup
/// failure comes back as [`Error::Spawn`] carrying the monitor's own message.
///
/// Safe to call from a multi-threaded process: it only uses `std::process::Command`.
/// Blocking (up to [`SPAWN_TIMEOUT`]): call it from a blocking thread in criusd.
///
/// ```no_run
/// # fn main() -> Result<(), crius_monitor::Error> {
/// use crius_monitor::{spawn_monitor, PodConfig, PodNamespaces};
/// let config = PodConfig {
///     pod_id: "p1".into(),
///     state_dir: "/run/crius/pods/p1".into(),
///     hostname: "web-0".into(),
///     namespaces: PodNamespaces { network: true, ipc: true, uts: true, ..Default::default() },
///     ..Default::default()
/// };
/// let monitor = spawn_monitor("/usr/libexec/crius/crius-monitor".as_ref(), &config)?;
/// // Containers of this pod join config.namespaces_to_join(); talk over monitor.socket.
/// # let _ = monitor; Ok(()) }
/// ```
pub fn spawn_monitor(binary: &Path, config: &PodConfig) -> Result<MonitorHandle> {
    config.validate()?;
    let spawn_err = |message: String| Error::Spawn {
        pod_id: config.pod_id.clone(),
        kind: ErrorKind::Internal,
        message,
    };
    let path = config.config_path();
    write_atomic(
        &path,
        &serde_json::to_vec_pretty(config).map_err(|e| spawn_err(e.to_string()))?,
    )?;
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| spawn_err(format!("{}: {e}", binary.display())))?;
    let stdout = child.stdout.take();
    let status = child.wait().map_err(|e| spawn_err(format!("wait: {e}")))?;
    let Some(mut stdout) = stdout else {
        return Err(spawn_err("no report pipe".into()));
    };
    let report = read_report(&mut stdout, SPAWN_TIMEOUT).map_err(spawn_err)?;
    let pid = match report.split_once(' ') {
        Some(("READY", pid)) => pid
            .trim()
            .parse::<i32>()
            .map_err(|_| spawn_err(format!("bad report {report:?}")))?,
        Some(("ERROR", rest)) => {
            return Err(Error::Spawn {
                pod_id: config.pod_id.clone(),
                kind: parse_kind(rest).0,
                message: parse_kind(rest).1.trim().to_string(),
            })
        }
        _ if report.is_empty() => {
            return Err(spawn_err(format!(
                "exited ({status}) without a report; see {}",
                config.log_path().display()
            )))
        }
        _ => return Err(spawn_err(format!("bad report {report:?}"))),
    };
    let socket = config.socket_path();
    let client = MonitorClient::connect(&socket, SPAWN_TIMEOUT)?;
    if client.monitor_pid() != pid {
        return Err(spawn_err(format!(
            "socket answered by pid {}, expected {pid}",
            client.monitor_pid()
        )));
    }
    Ok(MonitorHandle { pid, socket })
}

/// Splits `<Kind> <message>` (the monitor's error report); an unknown kind is Internal
/// and stays part of the message.
fn parse_kind(rest: &str) -> (ErrorKind, &str) {
    rest.split_once(' ')
        .and_then(|(k, m)| {
            let kind = serde_json::from_value(serde_json::Value::String(k.into())).ok()?;
            Some((kind, m))
        })
        .unwrap_or((ErrorKind::Internal, rest))
}

/// Reads the monitor's one-line report (up to EOF or newline) within `timeout`.
fn read_report(pipe: &mut std::process::ChildStdout, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no report within the spawn timeout".into());
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll report pipe: {e}")),
        }
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.contains(&b'\n') || out.len() > 64 * 1024 {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read report pipe: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Write-temp, fsync, rename: readers see the old file or the new one, never half.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |e| Error::io(format!("write {}", path.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_monitor_binary_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = PodConfig {
            pod_id: "p".into(),
            state_dir: dir.path().into(),
            ..Default::default()
        };
        let err = spawn_monitor(Path::new("/no/such/crius-monitor"), &c).unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
        let bad = PodConfig {
            state_dir: "relative".into(),
            ..c
        };
        let err = spawn_monitor(Path::new("/bin/true"), &bad).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
    }

    #[test]
    fn sysctl_keys_cannot_name_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = PodConfig {
            pod_id: "p".into(),
            state_dir: dir.path().into(),
            ..Default::default()
        };
        c.validate().unwrap();
        for bad in ["../../etc/passwd", "net..ipv4", "", "net/./x"] {
            c.sysctls = BTreeMap::from([(bad.to_string(), "1".to_string())]);
            assert!(c.validate().is_err(), "{bad:?} accepted");
        }
        c.sysctls = BTreeMap::from([("net.ipv4.ip_forward".into(), "1".into())]);
        c.validate().unwrap();
    }

    #[test]
    fn namespaces_to_join_follow_the_pod_config() {
        let c = PodConfig {
            pod_id: "p".into(),
            state_dir: "/run/x".into(),
            namespaces: PodNamespaces {
                network: true,
                ipc: true,
                uts: false,
                pid: true,
                user: None,
            },
            ..Default::default()
        };
        let ns = c.namespaces_to_join();
        let types: Vec<_> = ns.iter().map(|n| n.typ()).collect();
        assert_eq!(
            types,
            [
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Pid
            ]
        );
        assert_eq!(ns[0].path().as_deref(), Some(Path::new("/run/x/ns/net")));
    }
}

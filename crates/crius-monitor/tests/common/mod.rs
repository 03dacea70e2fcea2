//! Fixtures: a pod (state dir, busybox rootfs, a spawned monitor) and container specs
//! that join the pod's pinned namespaces.
#![allow(dead_code, clippy::unwrap_used)] // test fixtures: a failure is a test failure

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crius_monitor::protocol::{ContainerState, ContainerStatus, CreateContainer, RuntimeChoice};
use crius_monitor::{spawn_monitor, MonitorClient, MonitorHandle, PodConfig, PodNamespaces};
use crius_testkit::rootfs::BusyboxRootfs;
use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

pub const MONITOR: &str = env!("CARGO_BIN_EXE_crius-monitor");
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A pod with a running monitor; shut down (or killed) on drop.
pub struct Pod {
    pub dir: tempfile::TempDir,
    pub config: PodConfig,
    pub handle: Option<MonitorHandle>,
}

pub fn namespaces(pid: bool) -> PodNamespaces {
    PodNamespaces {
        network: true,
        ipc: true,
        uts: true,
        pid,
        user: None,
    }
}

impl Pod {
    /// State dir and rootfs, no monitor yet.
    pub fn prepare(name: &str, ns: PodNamespaces) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("crius-monitor-{name}-"))
            .tempdir_in("/tmp")
            .unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        BusyboxRootfs::create(&dir.path().join("rootfs")).unwrap();
        let config = PodConfig {
            pod_id: format!("{name}-{}", std::process::id()),
            state_dir,
            hostname: format!("pod-{name}"),
            namespaces: ns,
            ..Default::default()
        };
        Self {
            dir,
            config,
            handle: None,
        }
    }

    pub fn start(name: &str, ns: PodNamespaces) -> Self {
        let mut pod = Self::prepare(name, ns);
        pod.handle = Some(spawn_monitor(Path::new(MONITOR), &pod.config).unwrap());
        pod
    }

    pub fn client(&self) -> MonitorClient {
        MonitorClient::connect(&self.config.socket_path(), TIMEOUT).unwrap()
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{id}.log"))
    }

    /// The secure default spec running `args`, joining the pod's namespaces.
    pub fn spec(&self, args: &[&str]) -> Spec {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut spec = crius_oci::spec::secure_default(&args, Path::new("rootfs")).unwrap();
        spec.set_hostname(None);
        let mut ns = self.config.namespaces_to_join();
        let mut fresh = vec![LinuxNamespaceType::Mount, LinuxNamespaceType::Cgroup];
        if !self.config.namespaces.pid {
            fresh.push(LinuxNamespaceType::Pid);
        }
        for typ in fresh {
            ns.push(LinuxNamespaceBuilder::default().typ(typ).build().unwrap());
        }
        spec.linux_mut().as_mut().unwrap().set_namespaces(Some(ns));
        spec
    }

    /// A create request; the container gets its own top-level cgroup named after the
    /// pod and container (crius-oci's default `/<id>` would be shared by tests reusing
    /// an id), removed with the container.
    pub fn create_request(&self, id: &str, args: &[&str]) -> CreateContainer {
        let mut spec = self.spec(args);
        let cgroup = PathBuf::from(format!("crius-monitor-{}-{id}", self.config.pod_id));
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_cgroups_path(Some(cgroup));
        CreateContainer {
            id: id.into(),
            bundle: self.bundle(),
            spec,
            log_path: self.log_path(id),
            stdin: false,
            stdin_once: false,
            tty: false,
            runtime: RuntimeChoice::Builtin,
        }
    }

    /// create + start.
    pub fn run(&self, client: &mut MonitorClient, id: &str, args: &[&str]) -> i32 {
        let pid = client.create(self.create_request(id, args)).unwrap();
        client.start(id).unwrap();
        pid
    }

    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// The messages of the log's F entries, in order.
    pub fn log_lines(&self, id: &str) -> Vec<String> {
        self.log(id)
            .lines()
            .filter_map(|l| {
                let mut p = l.splitn(4, ' ');
                let (_ts, _stream, tag) = (p.next()?, p.next()?, p.next()?);
                (tag == "F").then(|| p.next().unwrap_or("").to_string())
            })
            .collect()
    }

    pub fn shutdown(&mut self) {
        if let Some(h) = self.handle.take() {
            let mut c = MonitorClient::connect(&h.socket, TIMEOUT).unwrap();
            c.shutdown().unwrap();
            wait_gone(h.pid);
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let clean = MonitorClient::connect(&h.socket, TIMEOUT)
                .and_then(|mut c| c.shutdown())
                .is_ok();
            if !clean {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(h.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                for name in ["net", "ipc", "uts", "pid", "user"] {
                    let _ = nix::mount::umount2(
                        &self.config.ns_path(name),
                        nix::mount::MntFlags::MNT_DETACH,
                    );
                }
            }
        }
    }
}

/// Polls the container until it exited.
pub fn wait_exited(client: &mut MonitorClient, id: &str) -> ContainerStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = client.state(id).unwrap();
        if s.state == ContainerState::Exited {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until `cond` holds on the pod's log of `id`.
pub fn wait_log(pod: &Pod, id: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let log = pod.log(id);
        if cond(&log) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "log of {id} never matched: {log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is gone (or a zombie).
pub fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

pub fn wait_gone(pid: i32) {
    let deadline = Instant::now() + TIMEOUT;
    while !is_gone(pid) {
        assert!(Instant::now() < deadline, "pid {pid} still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

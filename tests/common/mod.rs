//! The end-to-end harness: a real criusd on temporary root/state dirs and socket, and the
//! generated tonic client talking to it. Each test gets its own daemon.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crius::api;
use crius::client::CriClient;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        // Short: a pod's monitor socket lives at <state>/pods/<64-hex id>/monitor.sock and
        // unix socket paths are limited to 107 bytes.
        let _ = tag;
        let dir = PathBuf::from(format!("/tmp/ce{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        release_pods(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a test left running under `scratch` (a failed assertion, or a test that never
/// removes its pods): each pod's monitor is asked to shut down (it kills and removes its
/// containers and releases its namespace pins), then every mount still below `scratch`
/// (container rootfs overlays, a pod's shm) is detached, so no monitor, mount or scratch
/// directory outlives the test.
fn release_pods(scratch: &Path) {
    let states = fs::read_dir(scratch).into_iter().flatten().flatten();
    for state in states {
        let pods = fs::read_dir(state.path().join("pods"))
            .into_iter()
            .flatten()
            .flatten();
        for pod in pods {
            let socket = pod.path().join("monitor.sock");
            if socket.exists() {
                let _ = crius_monitor::MonitorClient::connect(&socket, Duration::from_secs(5))
                    .and_then(|mut m| m.shutdown());
            }
        }
    }
    let prefix = format!("{}/", scratch.display());
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    // Deepest first, so a parent is never detached before what is mounted inside it.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount")
            .args(["-l", &m])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directories and socket a daemon runs on.
#[derive(Debug)]
pub struct Layout {
    pub scratch: Scratch,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
}

impl Layout {
    /// A layout whose config turns pod networking off (tests that need a network set
    /// their own bridge and CIDR, so parallel daemons never share one).
    pub fn new(tag: &str) -> Self {
        let scratch = Scratch::new(tag);
        let root = scratch.path().join("root");
        let state = scratch.path().join("s");
        let socket = scratch.path().join("run/crius.sock");
        let layout = Self {
            scratch,
            root,
            state,
            socket,
        };
        fs::write(layout.config(), "[network]\nmode = \"none\"\n").expect("write config");
        layout
    }

    /// The config file every daemon of this layout reads.
    pub fn config(&self) -> PathBuf {
        self.scratch.path().join("base.toml")
    }

    /// The runtime a daemon of this layout opens (its config, root and state), for a test
    /// to change the store while no daemon runs.
    pub fn open_runtime(&self) -> crius_core::Runtime {
        let mut config = crius::config::Config::load(&self.config()).expect("load config");
        config.root = self.root.clone();
        config.state = self.state.clone();
        crius_core::Runtime::open(config.runtime_options()).expect("open the runtime")
    }

    /// Puts the daemon on the systemd cgroup driver, talking to the manager at `bus`.
    pub fn use_systemd(&self, bus: &Path) {
        // Top-level keys: before the layout's [network] table.
        let base = fs::read_to_string(self.config()).expect("read config");
        let driver = format!(
            "cgroup_driver = \"systemd\"\nsystemd_bus = \"{}\"\n",
            bus.display()
        );
        fs::write(self.config(), format!("{driver}{base}")).expect("write config");
    }

    /// Adds TOML to the layout's config file.
    pub fn add_config(&self, toml: &str) {
        let mut text = fs::read_to_string(self.config()).expect("read config");
        text.push_str(toml);
        fs::write(self.config(), text).expect("write config");
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.config().display().to_string(),
            "--root".into(),
            self.root.display().to_string(),
            "--state".into(),
            self.state.display().to_string(),
            "--listen".into(),
            format!("unix://{}", self.socket.display()),
            "--log-level".into(),
            "debug".into(),
        ]
    }
}

pub fn criusd_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_criusd"))
}

/// A running criusd, killed on drop if the test did not stop it.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts criusd on `layout` with extra flags and waits until it answers.
    pub fn start(layout: &Layout, extra: &[&str]) -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let log = layout.scratch.path().join(format!("criusd-{n}.log"));
        let child = criusd_command()
            .args(layout.args())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).expect("log file"))
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn criusd");
        let daemon = Self {
            child: Some(child),
            socket: layout.socket.clone(),
            log,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "criusd did not come up on {}:\n{}",
            self.socket.display(),
            self.log()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn client(&self) -> CriClient {
        crius::client::connect(&self.socket)
            .await
            .expect("connect to criusd")
    }

    /// Sends `signal` and waits for the daemon to exit.
    pub fn stop_with(mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal criusd");
        wait_timeout(&mut child, Duration::from_secs(20)).expect("criusd exits after signal")
    }

    pub fn stop(self) -> ExitStatus {
        self.stop_with(nix::sys::signal::Signal::SIGTERM)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Runs criusd to completion (for start-up failures) with a timeout.
pub fn run_criusd(layout: &Layout, extra: &[&str]) -> Output {
    let mut child = criusd_command()
        .args(layout.args())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn criusd");
    if wait_timeout(&mut child, Duration::from_secs(20)).is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("criusd output")
}

/// A local registry holding the busybox test image as `<host>/busybox:latest`, marked
/// plain HTTP in the layout's config.
pub struct RegistryFixture {
    pub registry: crius_testkit::registry::Registry,
}

impl std::fmt::Debug for RegistryFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryFixture")
            .field("host", &self.registry.host())
            .finish()
    }
}

impl RegistryFixture {
    pub async fn start(layout: &Layout) -> Self {
        let registry = crius_testkit::registry::Registry::start().expect("start docker-registry");
        crius_testkit::images::busybox_image("amd64")
            .push(registry.host(), "busybox", "latest", None)
            .await
            .expect("push busybox");
        layout.add_config(&format!(
            "[registries.\"{}\"]\ninsecure = true\n",
            registry.host()
        ));
        Self { registry }
    }

    pub fn image(&self) -> String {
        format!("{}/busybox:latest", self.registry.host())
    }
}

impl Layout {
    /// Replaces the layout's network settings (the default turns networking off) with
    /// `top` (top-level keys such as `pod_cidr`) and `network` (keys of `[network]`).
    pub fn set_network(&self, top: &str, network: &str) {
        let text = fs::read_to_string(self.config()).expect("read config");
        let rest = text.replacen("[network]\nmode = \"none\"\n", "", 1);
        fs::write(
            self.config(),
            format!("{top}\n[network]\n{network}\n{rest}"),
        )
        .expect("write config");
    }
}

impl Daemon {
    /// Sends `signal` and waits for the daemon to exit, keeping the value (for tests that
    /// start a new daemon in its place).
    pub fn kill_with(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal criusd");
        wait_timeout(&mut child, Duration::from_secs(20)).expect("criusd exits after signal")
    }
}

/// A daemon with the busybox image pulled, on its own layout and registry.
pub struct Setup {
    pub layout: Layout,
    pub fixture: RegistryFixture,
    pub daemon: Daemon,
    pub client: CriClient,
    pub image: String,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("layout", &self.layout)
            .finish()
    }
}

/// [`setup_with`] with the default config (networking off).
pub async fn setup(tag: &str) -> Option<Setup> {
    setup_with(tag, |_| {}).await
}

/// Root-only: a layout configured by `configure`, a registry with busybox, a daemon, and
/// the image pulled. `None` (the test returns early) when not root.
pub async fn setup_with(tag: &str, configure: impl FnOnce(&Layout)) -> Option<Setup> {
    if !crius_testkit::require_root(tag) {
        return None;
    }
    let layout = Layout::new(tag);
    configure(&layout);
    let fixture = RegistryFixture::start(&layout).await;
    let daemon = Daemon::start(&layout, &[]);
    let mut client = daemon.client().await;
    let image = fixture.image();
    client
        .image
        .pull_image(api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pull busybox");
    Some(Setup {
        layout,
        fixture,
        daemon,
        client,
        image,
    })
}

pub fn pod_config(layout: &Layout, name: &str) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: layout
            .scratch
            .path()
            .join("logs")
            .join(name)
            .display()
            .to_string(),
        ..Default::default()
    }
}

pub fn container_config(image: &str, name: &str, command: &[&str]) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

/// Runs the pod `config` and returns its id.
pub async fn run_pod_with(client: &mut CriClient, config: &api::PodSandboxConfig) -> String {
    client
        .runtime
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id
}

pub async fn run_pod(s: &mut Setup, name: &str) -> (String, api::PodSandboxConfig) {
    let config = pod_config(&s.layout, name);
    let id = run_pod_with(&mut s.client, &config).await;
    (id, config)
}

pub async fn create_with(
    client: &mut CriClient,
    pod: &str,
    sandbox: &api::PodSandboxConfig,
    config: api::ContainerConfig,
) -> String {
    client
        .runtime
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        })
        .await
        .expect("create container")
        .into_inner()
        .container_id
}

/// What CreateContainer answers for `config` in `pod`, which must be a refusal.
pub async fn create_refused(
    client: &mut CriClient,
    pod: &str,
    sandbox: Option<&api::PodSandboxConfig>,
    config: api::ContainerConfig,
) -> tonic::Status {
    client
        .runtime
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: sandbox.cloned(),
        })
        .await
        .expect_err("CreateContainer accepted what it must refuse")
}

pub async fn create(
    s: &mut Setup,
    pod: &str,
    sandbox: &api::PodSandboxConfig,
    config: api::ContainerConfig,
) -> String {
    create_with(&mut s.client, pod, sandbox, config).await
}

pub async fn start(client: &mut CriClient, id: &str) {
    client
        .runtime
        .start_container(api::StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .expect("start container");
}

/// Creates and starts a container running `command` in `pod`.
pub async fn run_container(
    s: &mut Setup,
    pod: &str,
    sandbox: &api::PodSandboxConfig,
    config: api::ContainerConfig,
) -> String {
    let id = create(s, pod, sandbox, config).await;
    start(&mut s.client, &id).await;
    id
}

pub async fn status_of(client: &mut CriClient, id: &str) -> api::ContainerStatus {
    client
        .runtime
        .container_status(api::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("container status")
        .into_inner()
        .status
        .expect("status present")
}

pub async fn status(s: &mut Setup, id: &str) -> api::ContainerStatus {
    status_of(&mut s.client, id).await
}

/// The container's pid from the verbose status info.
pub async fn pid_of(client: &mut CriClient, id: &str) -> Option<u32> {
    let info = client
        .runtime
        .container_status(api::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("container status")
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    info.get("pid")?
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
}

pub async fn wait_exited_of(
    client: &mut CriClient,
    id: &str,
    timeout: Duration,
) -> api::ContainerStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let st = status_of(client, id).await;
        if st.state == api::ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_exited(s: &mut Setup, id: &str) -> api::ContainerStatus {
    wait_exited_of(&mut s.client, id, Duration::from_secs(20)).await
}

/// ExecSync `cmd` in container `id`: (exit code, stdout, stderr).
pub async fn exec(client: &mut CriClient, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let out = client
        .runtime
        .exec_sync(api::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .expect("exec sync")
        .into_inner();
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub async fn stop_pod(client: &mut CriClient, pod: &str) {
    client
        .runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .expect("stop pod");
}

pub async fn remove_pod(client: &mut CriClient, pod: &str) {
    client
        .runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .expect("remove pod");
}

/// The entries left under `<state>/pods`.
pub fn pod_dirs(layout: &Layout) -> Vec<String> {
    fs::read_dir(layout.state.join("pods"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The pids in every cgroup directory named `relative` (under each hierarchy).
pub fn cgroup_pids(relative: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for dir in cgroup_dirs(relative) {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The existing cgroup directories `/sys/fs/cgroup/<hierarchy>/<relative>` (and the v2 one).
pub fn cgroup_dirs(relative: &str) -> Vec<PathBuf> {
    let relative = relative.trim_start_matches('/');
    let mut dirs = Vec::new();
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let dir = e.path().join(relative);
            if e.file_type().is_ok_and(|t| t.is_dir()) && dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    let v2 = Path::new("/sys/fs/cgroup").join(relative);
    if v2.join("cgroup.procs").exists() && !dirs.contains(&v2) {
        dirs.push(v2);
    }
    dirs
}

/// Pushes a one-layer image holding only `models/weights.bin` ("0123456789") to the
/// setup's registry and pulls it; returns its reference.
pub async fn pull_data_image(s: &mut Setup) -> String {
    let layer = crius_testkit::images::LayerBuilder::new()
        .dir("models")
        .file("models/weights.bin", b"0123456789", 0o644)
        .build(crius_testkit::images::Compression::Gzip);
    let host = s.fixture.registry.host().to_string();
    crius_testkit::images::TestImage::oci(vec![layer], "amd64")
        .push(&host, "artifact", "v1", None)
        .await
        .unwrap();
    let reference = format!("{host}/artifact:v1");
    s.client
        .image
        .pull_image(api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    reference
}

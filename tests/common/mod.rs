//! The end-to-end harness: a real criusd on temporary root/state dirs and socket, and the
//! generated tonic client talking to it. Each test gets its own daemon.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
        let _ = fs::remove_dir_all(&self.0);
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

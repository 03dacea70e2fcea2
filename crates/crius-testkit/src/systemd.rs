//! A real systemd to test the systemd cgroup driver against, on hosts whose init is not
//! systemd: a `systemd --user` manager started in a cgroup of its own.
//!
//! A user manager refuses to run unless sd_booted(3) holds (`/run/systemd/system` is a
//! directory), so it runs in a private mount namespace with a tmpfs over `/run/systemd`
//! holding that directory: the host's `/run/systemd` is untouched. Its cgroup root is
//! `/<name>` in the `name=systemd` and unified hierarchies (the whole unified tree on a
//! v2 host), where it places the units it starts (`/<name>/<slice path>/<unit>`). It
//! listens peer-to-peer on `$XDG_RUNTIME_DIR/systemd/private`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SYSTEMD: &str = "/lib/systemd/systemd";
const CGROUP: &str = "/sys/fs/cgroup";

/// A running `systemd --user` manager; dropping it stops it and removes its cgroups.
#[derive(Debug)]
pub struct SystemdUserManager {
    child: Child,
    name: String,
    runtime_dir: PathBuf,
}

impl SystemdUserManager {
    /// Starts a manager for `test` and waits for its private socket. Returns `None` (with
    /// a loud skip notice) when not root or when systemd is not installed, except under
    /// `CI=true`, where the CI runs as root and installs it, and either fails the test.
    pub fn start(test: &str) -> Option<Self> {
        if !crate::require_root(test) {
            return None;
        }
        if !Path::new(SYSTEMD).exists() {
            assert!(
                std::env::var("CI").map(|v| v != "true").unwrap_or(true),
                "{test}: needs {SYSTEMD} (scripts/install-deps.sh --test installs it), and \
                 CI=true forbids skipping"
            );
            eprintln!("SKIPPED {test}: {SYSTEMD} is not installed");
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "crius-sd-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let runtime_dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&runtime_dir).expect("create XDG_RUNTIME_DIR");
        std::fs::set_permissions(
            &runtime_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod XDG_RUNTIME_DIR");
        let mut join = String::new();
        for dir in manager_dirs(&name) {
            std::fs::create_dir_all(&dir).expect("create the manager's cgroup");
            join.push_str(&format!("echo $$ > {}/cgroup.procs && ", dir.display()));
        }
        // sh moves itself into the manager's cgroups, then execs (no fork) into the
        // namespace and the manager, so the child's pid is the manager's.
        let script = format!(
            "{join}exec unshare --mount --propagation private sh -c \
             'mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && \
             mkdir /run/systemd/system && exec {SYSTEMD} --user'"
        );
        let log = std::fs::File::create(runtime_dir.join("manager.log")).expect("log file");
        let child = Command::new("sh")
            .args(["-c", &script])
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn systemd --user");
        let mut manager = Self {
            child,
            name,
            runtime_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !manager.socket().exists() {
            if let Ok(Some(status)) = manager.child.try_wait() {
                panic!(
                    "systemd --user exited with {status}: {}",
                    std::fs::read_to_string(manager.runtime_dir.join("manager.log"))
                        .unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "systemd --user did not create {} in 30 s",
                manager.socket().display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(manager)
    }

    /// The manager's private socket (peer-to-peer D-Bus).
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("systemd/private")
    }

    /// The manager's cgroup (its `ControlGroup`), relative to each hierarchy's root.
    pub fn root(&self) -> String {
        format!("/{}", self.name)
    }

    /// Its `XDG_RUNTIME_DIR`.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// Runs `systemctl --user <args>` against this manager.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        Command::new("systemctl")
            .arg("--user")
            .args(args)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .output()
            .expect("run systemctl")
    }

    /// A unit property as `systemctl --user show -p <property> --value <unit>` prints it.
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        let out = self.systemctl(&["show", "-p", property, "--value", unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The manager's own cgroup directories: in systemd's named hierarchy and the unified one.
fn manager_dirs(name: &str) -> Vec<PathBuf> {
    let cgroup = Path::new(CGROUP);
    if cgroup.join("cgroup.controllers").exists() {
        return vec![cgroup.join(name)];
    }
    vec![
        cgroup.join("systemd").join(name),
        cgroup.join("unified").join(name),
    ]
}

impl Drop for SystemdUserManager {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // Its tree in every hierarchy (crius adds the v1 controllers' directories): kill
        // what is left, then remove the directories depth-first.
        let hierarchies: Vec<PathBuf> = std::fs::read_dir(CGROUP)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        for root in hierarchies
            .iter()
            .map(|h| h.join(&self.name))
            .chain([Path::new(CGROUP).join(&self.name)])
        {
            if root.is_dir() {
                remove_tree(&root);
            }
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

/// Kills every process below `dir` and removes its cgroup directories, children first.
fn remove_tree(dir: &Path) {
    let children: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    for child in children {
        remove_tree(&child);
    }
    for _ in 0..100 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("cannot remove cgroup {}", dir.display());
}

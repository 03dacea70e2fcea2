//! Running one CNI plugin binary: environment, stdin config, timeout, error objects.
//!
//! The plugin runs in its own process group so that a timeout kills the plugin and anything
//! it started (a shell script's `sleep`), which would otherwise hold the output pipe open.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::Value;

use crate::error::{Error, Result};

/// Largest plugin output read; real results are a few KiB.
const MAX_OUTPUT: u64 = 4 << 20;
/// How much of stderr is kept for an error message.
const STDERR_TAIL: usize = 2048;
/// PATH for plugins (portmap and firewall run iptables) when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One CNI invocation.
#[derive(Debug)]
pub(crate) struct Invocation<'a> {
    /// `ADD`, `DEL`, `CHECK` or `VERSION`.
    pub(crate) command: &'static str,
    /// `CNI_CONTAINERID`.
    pub(crate) container_id: &'a str,
    /// `CNI_NETNS`.
    pub(crate) netns: &'a Path,
    /// `CNI_IFNAME`.
    pub(crate) ifname: &'a str,
    /// `CNI_ARGS`.
    pub(crate) args: &'a str,
    /// The bin dirs, for `CNI_PATH`.
    pub(crate) bin_dirs: &'a [PathBuf],
    /// How long the plugin may run.
    pub(crate) timeout: Duration,
}

/// Finds the executable for plugin `ty` in `bin_dirs`.
pub(crate) fn find_plugin(ty: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf> {
    for dir in bin_dirs {
        let path = dir.join(ty);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(path);
            }
        }
    }
    Err(Error::PluginNotFound {
        plugin: ty.to_owned(),
        dirs: bin_dirs.to_vec(),
    })
}

/// Runs plugin `ty` with `config` on stdin; returns its stdout on success.
pub(crate) fn run(ty: &str, config: &Value, inv: &Invocation<'_>) -> Result<Vec<u8>> {
    let path = find_plugin(ty, inv.bin_dirs)?;
    let io_err = |source| Error::PluginIo {
        plugin: ty.to_owned(),
        command: inv.command,
        source,
    };
    let stdin_bytes = serde_json::to_vec(config).map_err(|e| io_err(e.into()))?;
    let cni_path = std::env::join_paths(inv.bin_dirs)
        .map_err(|e| io_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let mut cmd = Command::new(&path);
    // Plugins inherit the daemon's environment, as under libcni (some read proxy or
    // kubeconfig variables), minus any CNI_* variable that would confuse the protocol.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(key);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    let mut child = cmd
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(io_err)?;
    tracing::debug!(
        plugin = ty,
        command = inv.command,
        pid = child.id(),
        "cni plugin started"
    );
    let outputs = collect_outputs(&mut child);
    if let Some(mut stdin) = child.stdin.take() {
        // On its own thread: a plugin that never reads stdin must not block us past the
        // timeout. EPIPE (the plugin exited without reading) is not our error.
        thread::spawn(move || {
            let _ = stdin.write_all(&stdin_bytes);
        });
    }
    let exited = wait_with_timeout(&child, inv.timeout);
    // Exited or not, anything left in the plugin's group must not live on or hold our pipes.
    let status = kill_group(&mut child).map_err(io_err)?;
    if !exited.map_err(io_err)? {
        return Err(Error::PluginTimeout {
            plugin: ty.to_owned(),
            command: inv.command,
            timeout: inv.timeout,
        });
    }
    let (stdout, stderr) = outputs
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    if status.success() {
        return Ok(stdout);
    }
    Err(plugin_error(
        ty,
        inv.command,
        status.code(),
        &stdout,
        &stderr,
    ))
}

/// Reads stdout and stderr on helper threads so a chatty plugin never blocks on a full pipe.
fn collect_outputs(child: &mut Child) -> mpsc::Receiver<(Vec<u8>, Vec<u8>)> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    thread::spawn(move || {
        let err_thread = thread::spawn(move || read_capped(stderr));
        let out = read_capped(stdout);
        let err = err_thread.join().unwrap_or_default();
        let _ = tx.send((out, err));
    });
    rx
}

fn read_capped(reader: Option<impl Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(r) = reader {
        let _ = r.take(MAX_OUTPUT).read_to_end(&mut buf);
    }
    buf
}

/// Waits until the plugin exits or `timeout` passes; `true` when it exited.
///
/// The exit is observed with `WNOWAIT`: the child stays a zombie, so its pid, which is also
/// its process-group id, cannot be reused before [`kill_group`] signals the group.
fn wait_with_timeout(child: &Child, timeout: Duration) -> std::io::Result<bool> {
    let pid = child_pid(child)?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn child_pid(child: &Child) -> std::io::Result<Pid> {
    i32::try_from(child.id())
        .map(Pid::from_raw)
        .map_err(|_| std::io::Error::other("child pid out of range"))
}

/// Kills the plugin's process group (the plugin and anything it started), then reaps the
/// plugin and returns its exit status.
fn kill_group(child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
    if let Ok(pid) = child_pid(child) {
        // ESRCH (nothing left in the group) is the normal case after a clean exit.
        let _ = killpg(pid, Signal::SIGKILL);
    }
    child.wait()
}

/// Builds the error for a failed plugin from its CNI error object, or its stderr.
fn plugin_error(
    ty: &str,
    command: &'static str,
    exit: Option<i32>,
    stdout: &[u8],
    stderr: &[u8],
) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(stdout).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(0);
    let mut msg = field("msg");
    if msg.is_empty() {
        msg = match exit {
            Some(c) => format!("exited with status {c}"),
            None => "killed by a signal".to_owned(),
        };
        let out = String::from_utf8_lossy(stdout);
        if !out.trim().is_empty() {
            msg.push_str(&format!(", stdout: {}", tail(out.trim())));
        }
    }
    let stderr = String::from_utf8_lossy(stderr);
    Error::PluginFailed {
        plugin: ty.to_owned(),
        command,
        code,
        msg,
        details: field("details"),
        stderr: tail(stderr.trim()).to_owned(),
    }
}

fn tail(s: &str) -> &str {
    if s.len() <= STDERR_TAIL {
        return s;
    }
    let mut start = s.len() - STDERR_TAIL;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn inv<'a>(dirs: &'a [PathBuf], timeout: Duration) -> Invocation<'a> {
        Invocation {
            command: "ADD",
            container_id: "c1",
            netns: Path::new("/nonexistent"),
            ifname: "eth0",
            args: "IgnoreUnknown=1",
            bin_dirs: dirs,
            timeout,
        }
    }

    #[test]
    fn error_object_code_msg_and_details_are_surfaced() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "bad",
            r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"no subnet"}'; exit 1"#,
        );
        let dirs = [dir.path().to_owned()];
        let err = run("bad", &Value::Null, &inv(&dirs, Duration::from_secs(10))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("code 7") && text.contains("invalid network config"),
            "{text}"
        );
        assert!(text.contains("no subnet"), "{text}");
    }

    #[test]
    fn plugin_sees_cni_environment_and_config_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "env",
            r#"read -r line; printf '{"cmd":"%s","id":"%s","if":"%s","in":%s}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_IFNAME" "$line""#,
        );
        let dirs = [dir.path().to_owned()];
        let out = run(
            "env",
            &serde_json::json!({"a":1}),
            &inv(&dirs, Duration::from_secs(10)),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cmd"], "ADD");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["if"], "eth0");
        assert_eq!(v["in"]["a"], 1);
    }

    #[test]
    fn hanging_plugin_and_its_children_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "hang", "sleep 1000");
        let dirs = [dir.path().to_owned()];
        let start = Instant::now();
        let err = run(
            "hang",
            &Value::Null,
            &inv(&dirs, Duration::from_millis(300)),
        )
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::DeadlineExceeded);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn background_children_holding_stdout_do_not_block_the_result() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "bg",
            r#"sleep 1000 & echo '{"cniVersion":"1.0.0"}'"#,
        );
        let dirs = [dir.path().to_owned()];
        let start = Instant::now();
        let out = run("bg", &Value::Null, &inv(&dirs, Duration::from_secs(10))).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("1.0.0"));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn plain_exit_1_reports_status_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "exit1", "echo 'bridge is on fire' >&2; exit 1");
        let dirs = [dir.path().to_owned()];
        let err = run("exit1", &Value::Null, &inv(&dirs, Duration::from_secs(10))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exited with status 1"), "{text}");
        assert!(text.contains("bridge is on fire"), "{text}");
    }

    #[test]
    fn missing_plugin_names_the_dirs() {
        let dirs = [PathBuf::from("/nonexistent-cni-bin")];
        let err = run("nope", &Value::Null, &inv(&dirs, Duration::from_secs(1))).unwrap_err();
        assert!(err.to_string().contains("nonexistent-cni-bin"));
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
    }
}

//! criusd as a process: its socket, its lifecycle, and the runtime-level RPCs.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: panics are failures

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{run_criusd, Daemon, Layout};
use crius::api;
use nix::sys::signal::Signal;
use tonic::Code;

#[tokio::test]
async fn version_names_crius_and_cri_v1() {
    let layout = Layout::new("version");
    let daemon = Daemon::start(&layout, &[]);
    let v = daemon
        .client()
        .await
        .runtime
        .version(api::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crius");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.runtime_api_version, "v1");
    assert!(!v.version.is_empty());
}

#[tokio::test]
async fn status_reports_honest_conditions_and_handlers() {
    let layout = Layout::new("status");
    let daemon = Daemon::start(&layout, &[]);
    let mut client = daemon.client().await;
    let s = client
        .runtime
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let conditions = s.status.unwrap().conditions;
    let find = |t: &str| conditions.iter().find(|c| c.r#type == t).cloned().unwrap();
    // The monitor binary is built beside criusd, so the runtime can run pods.
    let runtime = find("RuntimeReady");
    assert!(
        runtime.status,
        "RuntimeReady false: {} {}",
        runtime.reason, runtime.message
    );
    // The test layout turns networking off: the condition must say so.
    let network = find("NetworkReady");
    assert!(!network.status, "NetworkReady claims readiness");
    assert_eq!(network.reason, "NetworkDisabled");
    assert!(
        !network.reason.is_empty() && !network.message.is_empty(),
        "NetworkReady lacks reason/message"
    );
    assert!(s.info.is_empty(), "non-verbose status carries info");
    let names: Vec<_> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["", "crius"]);
    assert!(s.runtime_handlers.iter().all(|h| h.features.is_some()));

    let s = client
        .runtime
        .status(api::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let config: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(config["root"], layout.root.display().to_string());
    let runtime: serde_json::Value = serde_json::from_str(&s.info["runtime"]).unwrap();
    assert!(runtime["cgroupDriver"].is_string());
}

#[tokio::test]
async fn runtime_config_reports_the_detected_cgroup_driver() {
    let layout = Layout::new("rtconfig");
    let expected = if std::path::Path::new("/run/systemd/system").is_dir() {
        api::CgroupDriver::Systemd
    } else {
        api::CgroupDriver::Cgroupfs
    };
    let daemon = Daemon::start(&layout, &[]);
    let r = daemon
        .client()
        .await
        .runtime
        .runtime_config(api::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.linux.unwrap().cgroup_driver(), expected);
}

#[tokio::test]
async fn configured_cgroup_driver_wins_over_detection() {
    let test = "configured_cgroup_driver_wins_over_detection";
    // The systemd driver needs a manager to reach: a real one of the test's own.
    let Some(manager) = crius_testkit::systemd::SystemdUserManager::start(test) else {
        return;
    };
    let layout = Layout::new("rtconfig-sd");
    layout.use_systemd(&manager.socket());
    let daemon = Daemon::start(&layout, &[]);
    let r = daemon
        .client()
        .await
        .runtime
        .runtime_config(api::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.linux.unwrap().cgroup_driver(), api::CgroupDriver::Systemd);
}

fn runtime_config_request(cidr: &str) -> api::UpdateRuntimeConfigRequest {
    api::UpdateRuntimeConfigRequest {
        runtime_config: Some(api::RuntimeConfig {
            network_config: Some(api::NetworkConfig {
                pod_cidr: cidr.to_string(),
            }),
        }),
    }
}

async fn reported_pod_cidr(daemon: &Daemon) -> serde_json::Value {
    let s = daemon
        .client()
        .await
        .runtime
        .status(api::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let runtime: serde_json::Value = serde_json::from_str(&s.info["runtime"]).unwrap();
    runtime["podCIDR"].clone()
}

#[tokio::test]
async fn pod_cidr_is_kept_across_restarts_and_validated() {
    let layout = Layout::new("podcidr");
    let daemon = Daemon::start(&layout, &[]);
    let mut client = daemon.client().await;
    client
        .runtime
        .update_runtime_config(runtime_config_request("10.244.1.0/24"))
        .await
        .unwrap();
    // kubelet often sends an empty CIDR; it must not erase the known one.
    client
        .runtime
        .update_runtime_config(runtime_config_request(""))
        .await
        .unwrap();
    let err = client
        .runtime
        .update_runtime_config(runtime_config_request("10.244.1.0/40"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("10.244.1.0/40"), "{}", err.message());
    assert_eq!(reported_pod_cidr(&daemon).await, "10.244.1.0/24");
    drop(client);
    assert!(daemon.stop().success());

    let daemon = Daemon::start(&layout, &[]);
    assert_eq!(reported_pod_cidr(&daemon).await, "10.244.1.0/24");
}

#[tokio::test]
async fn later_rpcs_answer_unimplemented_with_their_name() {
    let layout = Layout::new("unimpl");
    let daemon = Daemon::start(&layout, &[]);
    let mut client = daemon.client().await;
    let err = client
        .runtime
        .checkpoint_container(api::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
}

#[test]
fn socket_is_0660_and_removed_on_sigterm() {
    let layout = Layout::new("socket");
    let daemon = Daemon::start(&layout, &[]);
    let mode = std::fs::metadata(&layout.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
    let root_mode = std::fs::metadata(&layout.root)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(root_mode, 0o700, "root dir mode {root_mode:o}");
    let status = daemon.stop();
    assert!(status.success(), "criusd exited with {status:?} on SIGTERM");
    assert!(!layout.socket.exists(), "socket left behind after shutdown");
}

#[tokio::test]
async fn shutdown_does_not_wait_forever_for_idle_clients() {
    let layout = Layout::new("idle");
    let config = layout.scratch.path().join("config.toml");
    std::fs::write(&config, "shutdown_grace_seconds = 1\n").unwrap();
    let daemon = Daemon::start(&layout, &["--config", config.to_str().unwrap()]);
    // A connection kept open, as kubelet keeps one, whose task cannot answer GOAWAY while
    // this thread blocks in stop().
    let mut client = daemon.client().await;
    client
        .runtime
        .version(api::VersionRequest::default())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(daemon.stop().success());
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    drop(client);
}

#[test]
fn sigint_also_shuts_down_cleanly() {
    let layout = Layout::new("sigint");
    let daemon = Daemon::start(&layout, &[]);
    assert!(daemon.stop_with(Signal::SIGINT).success());
}

#[test]
fn second_daemon_on_the_same_socket_is_refused_naming_the_first() {
    let layout = Layout::new("twice");
    let first = Daemon::start(&layout, &[]);
    let other = Layout::new("twice-other");
    // Same socket, different root and state: only the socket is contested.
    let out = run_criusd(
        &other,
        &["--listen", &format!("unix://{}", layout.socket.display())],
    );
    assert!(!out.status.success(), "second criusd started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&first.pid().to_string()),
        "message does not name pid {}: {stderr}",
        first.pid()
    );
    assert!(stderr.contains("already served"), "{stderr}");
    // The first daemon is unharmed.
    assert!(std::os::unix::net::UnixStream::connect(&layout.socket).is_ok());
}

#[test]
fn a_socket_served_by_another_program_is_never_taken_over() {
    let layout = Layout::new("foreign");
    std::fs::create_dir_all(layout.socket.parent().unwrap()).unwrap();
    let _foreign = std::os::unix::net::UnixListener::bind(&layout.socket).unwrap();
    let out = run_criusd(&layout, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&std::process::id().to_string()), "{stderr}");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let layout = Layout::new("stale");
    std::fs::create_dir_all(layout.socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&layout.socket).unwrap());
    assert!(layout.socket.exists());
    let daemon = Daemon::start(&layout, &[]);
    assert!(daemon.log().contains("stale"), "{}", daemon.log());
}

#[test]
fn a_killed_daemon_leaves_nothing_that_blocks_the_next() {
    let layout = Layout::new("killed");
    let daemon = Daemon::start(&layout, &[]);
    daemon.stop_with(Signal::SIGKILL);
    Daemon::start(&layout, &[]);
}

#[test]
fn the_systemd_driver_without_a_manager_stops_start_up_naming_the_socket() {
    let layout = Layout::new("sd-nobus");
    let bus = layout.scratch.path().join("systemd/private");
    layout.use_systemd(&bus);
    let out = run_criusd(&layout, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&bus.display().to_string()), "{stderr}");
    assert!(stderr.contains("systemd manager"), "{stderr}");
}

#[test]
fn bad_config_is_refused_with_the_offending_key() {
    let layout = Layout::new("badconfig");
    let config = layout.scratch.path().join("config.toml");
    std::fs::write(&config, "listen = \"unix:///tmp/x.sock\"\nmax_pods = 3\n").unwrap();
    let out = run_criusd(&layout, &["--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_pods"));

    let out = run_criusd(&layout, &["--listen", "tcp://0.0.0.0:10010"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unix://"));
}

#[test]
fn flags_override_the_config_file() {
    let layout = Layout::new("override");
    let config = layout.scratch.path().join("config.toml");
    let file_socket = layout.scratch.path().join("from-file.sock");
    std::fs::write(
        &config,
        format!(
            "listen = \"unix://{}\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n",
            file_socket.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&layout, &["--config", config.to_str().unwrap()]);
    assert!(!file_socket.exists(), "the file's listen won over --listen");
    // The file's log format still applies: every line is JSON.
    let log = daemon.log();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "not JSON: {first}"
    );
}

#[test]
fn crius_config_default_prints_a_config_criusd_accepts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crius"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        crius::config::Config::parse(&text).unwrap(),
        crius::config::Config::default()
    );
    assert!(text.contains("/var/lib/crius") && text.contains("unix:///run/crius/crius.sock"));
}

#[test]
fn crius_cli_talks_to_the_daemon() {
    let layout = Layout::new("cli");
    let _daemon = Daemon::start(&layout, &[]);
    let endpoint = format!("unix://{}", layout.socket.display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crius"))
        .args(["--endpoint", &endpoint, "status", "--verbose"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("RuntimeReady") && text.contains("NetworkReady"),
        "{text}"
    );
}

#[tokio::test]
async fn network_is_ready_out_of_the_box_with_the_builtin_bridge() {
    let layout = Layout::new("netready");
    let config = layout.scratch.path().join("auto.toml");
    // No CNI config in this directory: auto mode falls back to the built-in bridge.
    let empty = layout.scratch.path().join("cni");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(
        &config,
        format!(
            "[network]\ncni_conf_dir = \"{}\"\nbridge = \"crt-ready\"\n",
            empty.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&layout, &["--config", config.to_str().unwrap()]);
    let s = daemon
        .client()
        .await
        .runtime
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let network = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(network.status, "{} {}", network.reason, network.message);
}

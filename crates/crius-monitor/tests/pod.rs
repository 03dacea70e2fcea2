//! The monitor against the real kernel: pods, containers, logs, exits, exec, survival.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use crius_monitor::protocol::{ContainerState, ExecSync};
use crius_monitor::ErrorKind;

use common::{namespaces, wait_exited, wait_gone, wait_log, Pod};

#[test]
fn container_output_lands_in_the_cri_log_and_the_exit_is_recorded() {
    if !crius_testkit::require_root("container_output_lands_in_the_cri_log") {
        return;
    }
    let pod = Pod::start("log", namespaces(false));
    let mut client = pod.client();
    pod.run(
        &mut client,
        "c1",
        &[
            "/bin/sh",
            "-c",
            "echo one; echo two >&2; head -c 20000 /dev/zero | tr '\\0' a; echo; exit 3",
        ],
    );
    let status = wait_exited(&mut client, "c1");
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.signal, None);
    assert_eq!(status.reason, "Error");
    assert!(status.finished_at_ns >= status.started_at_ns && status.started_at_ns > 0);
    let on_disk = crius_monitor::read_status(&pod.config, "c1").unwrap();
    assert_eq!(on_disk, status);
    assert_eq!(crius_monitor::read_all_statuses(&pod.config), vec![status]);

    let log = wait_log(&pod, "c1", |l| l.lines().count() >= 4);
    let entries: Vec<(&str, &str, &str)> = log
        .lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next().unwrap();
            assert!(
                ts.ends_with('Z') && ts.contains('T') && ts.len() == 30,
                "{ts}"
            );
            (p.next().unwrap(), p.next().unwrap(), p.next().unwrap_or(""))
        })
        .collect();
    assert!(entries.contains(&("stdout", "F", "one")), "{log}");
    assert!(entries.contains(&("stderr", "F", "two")), "{log}");
    let long: Vec<_> = entries.iter().filter(|e| e.2.starts_with("aaa")).collect();
    assert_eq!(long.len(), 2, "{log}");
    assert_eq!((long[0].1, long[0].2.len()), ("P", 16384));
    assert_eq!((long[1].1, long[1].2.len()), ("F", 20000 - 16384));
}

#[test]
fn containers_of_a_pod_share_its_network_uts_and_ipc_namespaces() {
    if !crius_testkit::require_root("containers_of_a_pod_share_namespaces") {
        return;
    }
    let pod = Pod::start("share", namespaces(false));
    let mut client = pod.client();
    let script = "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts; hostname";
    for id in ["a", "b"] {
        pod.run(&mut client, id, &["/bin/sh", "-c", script]);
        assert_eq!(wait_exited(&mut client, id).exit_code, 0);
    }
    let a = wait_log(&pod, "a", |l| l.lines().count() == 4);
    let _ = wait_log(&pod, "b", |l| l.lines().count() == 4);
    assert_eq!(pod.log_lines("a"), pod.log_lines("b"), "{a}");
    let lines = pod.log_lines("a");
    assert_eq!(lines[3], pod.config.hostname);
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        lines[0],
        host_net.to_string_lossy(),
        "pod must not use the host netns"
    );
    use std::os::unix::fs::MetadataExt;
    let pinned = std::fs::metadata(pod.config.ns_path("net")).unwrap().ino();
    assert_eq!(lines[0], format!("net:[{pinned}]"));
}

#[test]
fn a_pod_sharing_its_pid_namespace_lets_containers_see_each_other() {
    if !crius_testkit::require_root("a_pod_sharing_its_pid_namespace") {
        return;
    }
    let pod = Pod::start("pidns", namespaces(true));
    let mut client = pod.client();
    pod.run(&mut client, "sleeper", &["/bin/sleep", "60"]);
    pod.run(&mut client, "looker", &["/bin/ps", "-o", "pid,args"]);
    assert_eq!(wait_exited(&mut client, "looker").exit_code, 0);
    let log = wait_log(&pod, "looker", |l| l.contains("sleep 60"));
    assert!(log.contains("crius-reaper") || log.contains(" 1 "), "{log}");
    client
        .stop("sleeper", Duration::from_secs(5), libc::SIGTERM)
        .unwrap();
    assert_eq!(
        client.state("sleeper").unwrap().state,
        ContainerState::Exited
    );
}

#[test]
fn stop_kills_a_container_that_ignores_sigterm_after_the_timeout() {
    if !crius_testkit::require_root("stop_kills_after_timeout") {
        return;
    }
    let pod = Pod::start("stop", namespaces(false));
    let mut client = pod.client();
    pod.run(
        &mut client,
        "stubborn",
        &[
            "/bin/sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 1; done",
        ],
    );
    wait_log(&pod, "stubborn", |l| l.contains("ready"));
    let t = Instant::now();
    client
        .stop("stubborn", Duration::from_millis(400), libc::SIGTERM)
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(400));
    let s = client.state("stubborn").unwrap();
    assert_eq!(s.state, ContainerState::Exited);
    assert_eq!(s.signal, Some(libc::SIGKILL));
    assert_eq!(s.exit_code, 128 + libc::SIGKILL);
    // Stop of an exited and of an unknown container succeeds at once.
    client
        .stop("stubborn", Duration::from_secs(1), libc::SIGTERM)
        .unwrap();
    client
        .stop("nope", Duration::from_secs(1), libc::SIGTERM)
        .unwrap();
    client.remove("stubborn").unwrap();
    client.remove("stubborn").unwrap();
    let err = client.state("stubborn").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!pod.config.status_path("stubborn").exists());
}

#[test]
fn remove_refuses_a_running_container() {
    if !crius_testkit::require_root("remove_refuses_a_running_container") {
        return;
    }
    let pod = Pod::start("rm", namespaces(false));
    let mut client = pod.client();
    pod.run(&mut client, "r", &["/bin/sleep", "60"]);
    let err = client.remove("r").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let err = client
        .create(pod.create_request("r", &["/bin/true"]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    client.stop_pod(Duration::from_secs(5)).unwrap();
    assert_eq!(client.list().unwrap()[0].state, ContainerState::Exited);
}

fn exec(pod: &Pod, id: &str, args: &[&str], timeout_ms: u64, cap: u64) -> ExecSync {
    let mut process = pod.spec(args).process().clone().unwrap();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    ExecSync {
        id: id.into(),
        process,
        timeout_ms,
        output_cap: cap,
    }
}

#[test]
fn exec_sync_collects_output_and_enforces_timeout_and_cap() {
    if !crius_testkit::require_root("exec_sync") {
        return;
    }
    let pod = Pod::start("exec", namespaces(false));
    let mut client = pod.client();
    pod.run(&mut client, "box", &["/bin/sleep", "60"]);

    let out = client
        .exec_sync(exec(
            &pod,
            "box",
            &["/bin/sh", "-c", "echo hi; echo err >&2; exit 7"],
            5000,
            1 << 20,
        ))
        .unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"err\n");
    assert!(!out.timed_out && !out.truncated);

    let t = Instant::now();
    let out = client
        .exec_sync(exec(&pod, "box", &["/bin/sleep", "30"], 300, 1024))
        .unwrap();
    assert!(out.timed_out, "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(10));

    let out = client
        .exec_sync(exec(
            &pod,
            "box",
            &["/bin/sh", "-c", "head -c 100000 /dev/zero"],
            5000,
            1000,
        ))
        .unwrap();
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.truncated && !out.timed_out);
    assert_eq!(out.exit_code, 0);

    let err = client
        .exec_sync(exec(&pod, "nope", &["/bin/true"], 0, 10))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn shutdown_leaves_no_mount_process_or_socket() {
    if !crius_testkit::require_root("shutdown_leaves_nothing") {
        return;
    }
    let mut pod = Pod::start("down", namespaces(true));
    let mut client = pod.client();
    let pid = pod.run(&mut client, "s", &["/bin/sleep", "60"]);
    let monitor = pod.handle.as_ref().unwrap().pid;
    let state_dir = pod.config.state_dir.clone();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mounts.contains(state_dir.to_str().unwrap()));
    pod.shutdown();
    wait_gone(pid);
    wait_gone(monitor);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(state_dir.to_str().unwrap()), "{mounts}");
    assert!(!pod.config.socket_path().exists());
    assert!(!state_dir.join("ns").exists());
    assert!(!state_dir.join("containers").exists());
    let mut left: Vec<String> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["monitor.log", "pod.json"]);
}

#[test]
fn a_second_monitor_for_the_same_pod_is_refused() {
    if !crius_testkit::require_root("a_second_monitor_is_refused") {
        return;
    }
    let pod = Pod::start("single", namespaces(false));
    let err = crius_monitor::spawn_monitor(common::MONITOR.as_ref(), &pod.config).unwrap_err();
    assert!(err.to_string().contains("already serves"), "{err}");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    // The first one still answers.
    pod.client().list().unwrap();
}

#[test]
fn a_runc_handler_container_joins_the_pod_and_reports_its_exit() {
    if !crius_testkit::require_root("a_runc_handler_container") {
        return;
    }
    let runc = std::path::Path::new("/usr/sbin/runc");
    if !runc.exists() {
        eprintln!("SKIPPED a_runc_handler_container: runc is not installed");
        return;
    }
    let pod = Pod::start("runc", namespaces(false));
    let mut client = pod.client();
    let mut req = pod.create_request("r1", &["/bin/sleep", "60"]);
    req.runtime = crius_monitor::protocol::RuntimeChoice::Binary { path: runc.into() };
    client.create(req).unwrap();
    client.start("r1").unwrap();
    let out = client
        .exec_sync(exec(&pod, "r1", &["/bin/hostname"], 5000, 1024))
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pod.config.hostname
    );
    client
        .stop("r1", Duration::from_millis(200), libc::SIGTERM)
        .unwrap();
    let s = client.state("r1").unwrap();
    assert_eq!(s.state, ContainerState::Exited);
    assert!(s.signal.is_some(), "{s:?}");
    client.remove("r1").unwrap();
}

#[test]
fn a_start_that_cannot_exec_fails_and_records_the_exit() {
    if !crius_testkit::require_root("a_start_that_cannot_exec_fails") {
        return;
    }
    let pod = Pod::start("noexec", namespaces(false));
    let mut client = pod.client();
    client
        .create(pod.create_request("x", &["/no/such/binary"]))
        .unwrap();
    let err = client.start("x").unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    let s = wait_exited(&mut client, "x");
    assert_ne!(s.exit_code, 0);
    assert!(s.message.contains("/no/such/binary"), "{s:?}");
    assert_eq!(crius_monitor::read_status(&pod.config, "x").unwrap(), s);
    let err = client.start("x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn exec_sync_with_a_terminal_returns_the_pty_output_as_stdout() {
    if !crius_testkit::require_root("exec_sync_with_a_terminal") {
        return;
    }
    let pod = Pod::start("exectty", namespaces(false));
    let mut client = pod.client();
    pod.run(&mut client, "box", &["/bin/sleep", "60"]);
    let mut req = exec(&pod, "box", &["/bin/tty"], 5000, 4096);
    req.process.set_terminal(Some(true));
    let out = client.exec_sync(req).unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"),
        "{out:?}"
    );
}

#[test]
fn stdin_is_kept_open_for_a_later_attach() {
    if !crius_testkit::require_root("stdin_is_kept_open") {
        return;
    }
    let pod = Pod::start("stdin", namespaces(false));
    let mut client = pod.client();
    let mut req = pod.create_request("open", &["/bin/cat"]);
    req.stdin = true;
    client.create(req).unwrap();
    client.start("open").unwrap();
    pod.run(&mut client, "closed", &["/bin/cat"]);
    assert_eq!(wait_exited(&mut client, "closed").exit_code, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        client.state("open").unwrap().state,
        ContainerState::Running,
        "cat saw EOF: the stdin pipe was not kept"
    );
    client
        .stop("open", Duration::from_secs(2), libc::SIGKILL)
        .unwrap();
}

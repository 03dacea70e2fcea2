//! The monitor outlives its spawner, serves new clients, pushes events, and answers bad
//! frames with errors while it keeps serving.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crius_monitor::protocol::{
    encode, read_frame, write_frame, ContainerState, Request, Response, PROTOCOL_VERSION,
};
use crius_monitor::{ErrorKind, MonitorClient, MonitorHandle};

use common::{namespaces, wait_exited, Pod, MONITOR, TIMEOUT};

/// Starts the monitor from a shell standing in for criusd, then SIGKILLs the shell's
/// whole process group.
fn spawn_from_doomed_parent(pod: &mut Pod) {
    let cfg = pod.config.config_path();
    std::fs::write(&cfg, serde_json::to_vec(&pod.config).unwrap()).unwrap();
    let report = pod.dir.path().join("report");
    let mut standin = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "{MONITOR} --config {} > {}; exec sleep 600",
            cfg.display(),
            report.display()
        ))
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let pid = loop {
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        if let Some(pid) = text.strip_prefix("READY ") {
            break pid.trim().parse::<i32>().unwrap();
        }
        assert!(Instant::now() < deadline, "no READY: {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(standin.id()).unwrap());
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    standin.wait().unwrap();
    pod.handle = Some(MonitorHandle {
        pid,
        socket: pod.config.socket_path(),
    });
}

#[test]
fn the_monitor_survives_its_spawner_and_serves_a_new_client() {
    if !crius_testkit::require_root("the_monitor_survives_its_spawner") {
        return;
    }
    let mut pod = Pod::prepare("survive", namespaces(false));
    spawn_from_doomed_parent(&mut pod);
    std::thread::sleep(Duration::from_millis(100));
    let mut first = pod.client();
    pod.run(&mut first, "long", &["/bin/sleep", "60"]);
    pod.run(&mut first, "short", &["/bin/true"]);
    wait_exited(&mut first, "short");
    drop(first);

    let mut second = pod.client();
    assert_eq!(second.monitor_pid(), pod.handle.as_ref().unwrap().pid);
    let list = second.list().unwrap();
    let states: Vec<(&str, ContainerState)> =
        list.iter().map(|s| (s.id.as_str(), s.state)).collect();
    assert_eq!(
        states,
        [
            ("long", ContainerState::Running),
            ("short", ContainerState::Exited)
        ]
    );
}

#[test]
fn subscribers_receive_created_started_and_exited_events() {
    if !crius_testkit::require_root("subscribers_receive_events") {
        return;
    }
    let pod = Pod::start("events", namespaces(false));
    let mut events = pod.client().subscribe().unwrap();
    events.set_timeout(Some(TIMEOUT)).unwrap();
    let mut client = pod.client();
    pod.run(&mut client, "e", &["/bin/true"]);
    let mut seen = Vec::new();
    for event in events.by_ref() {
        let event = event.unwrap();
        assert_eq!(event.id, event.status.id);
        seen.push(event.status.state);
        if event.status.state == ContainerState::Exited {
            assert_eq!(event.status.exit_code, 0);
            break;
        }
    }
    assert_eq!(
        seen,
        [
            ContainerState::Created,
            ContainerState::Running,
            ContainerState::Exited
        ]
    );
}

#[test]
fn garbage_and_oversized_frames_get_an_error_and_the_monitor_keeps_serving() {
    if !crius_testkit::require_root("garbage_frames_get_an_error") {
        return;
    }
    let pod = Pod::start("garbage", namespaces(false));
    let socket = pod.config.socket_path();

    // A request before Hello.
    let mut s = UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write_frame(&mut s, &Request::ListContainers).unwrap();
    let r: Response = read_frame(&mut s).unwrap();
    assert!(
        matches!(
            r,
            Response::Error {
                kind: ErrorKind::InvalidArgument,
                ..
            }
        ),
        "{r:?}"
    );

    // A version mismatch.
    let mut s = UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write_frame(
        &mut s,
        &Request::Hello {
            version: PROTOCOL_VERSION + 1,
        },
    )
    .unwrap();
    let r: Response = read_frame(&mut s).unwrap();
    assert!(
        matches!(
            r,
            Response::Error {
                kind: ErrorKind::FailedPrecondition,
                ..
            }
        ),
        "{r:?}"
    );

    // Garbage JSON after a good Hello: an error answer, the connection stays usable.
    let mut s = UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write_frame(
        &mut s,
        &Request::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .unwrap();
    let _: Response = read_frame(&mut s).unwrap();
    s.write_all(&5u32.to_be_bytes()).unwrap();
    s.write_all(b"{nope").unwrap();
    let r: Response = read_frame(&mut s).unwrap();
    assert!(
        matches!(
            r,
            Response::Error {
                kind: ErrorKind::InvalidArgument,
                ..
            }
        ),
        "{r:?}"
    );
    s.write_all(&encode(&Request::ListContainers).unwrap())
        .unwrap();
    assert!(matches!(
        read_frame::<_, Response>(&mut s).unwrap(),
        Response::Containers(_)
    ));

    // An oversized header: an error, then the monitor closes that connection.
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let r: Response = read_frame(&mut s).unwrap();
    assert!(
        matches!(
            r,
            Response::Error {
                kind: ErrorKind::ResourceExhausted,
                ..
            }
        ),
        "{r:?}"
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());

    // A client that vanished mid-frame does not disturb anyone.
    let mut s = UnixStream::connect(&socket).unwrap();
    s.write_all(&100u32.to_be_bytes()).unwrap();
    drop(s);
    let mut client = MonitorClient::connect(&socket, TIMEOUT).unwrap();
    assert!(client.list().unwrap().is_empty());
}

/// Pids of every process whose pid namespace has inode `ino`.
fn processes_in_pid_ns(ino: u64) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok_and(|m| m.ino() == ino)
                && !common::is_gone(*pid)
        })
        .collect()
}

#[test]
fn a_shared_pid_namespace_dies_with_its_monitor() {
    if !crius_testkit::require_root("a_shared_pid_namespace_dies_with_its_monitor") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let pod = Pod::start("pdeath", namespaces(true));
    let mut client = pod.client();
    let pid = pod.run(&mut client, "s", &["/bin/sleep", "60"]);
    let ino = std::fs::metadata(pod.config.ns_path("pid")).unwrap().ino();
    let inside = processes_in_pid_ns(ino);
    assert!(inside.contains(&pid) && inside.len() >= 2, "{inside:?}");
    let monitor = pod.handle.as_ref().unwrap().pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !processes_in_pid_ns(ino).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", processes_in_pid_ns(ino));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut pod = pod;
    pod.handle = None;
    crius_monitor::cleanup_after_dead_monitor(&pod.config).unwrap();
    // The container's cgroup outlives a killed monitor; criusd deletes it (here: we do).
    let cgroup = format!("crius-monitor-{}-s", pod.config.pod_id);
    crius_oci::cgroup::CgroupManager::new(cgroup.as_ref())
        .unwrap()
        .delete()
        .unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(pod.config.state_dir.to_str().unwrap()));
    assert!(!pod.config.socket_path().exists());
    assert!(!pod.config.state_dir.join("ns").exists());
}

#[test]
fn a_client_that_never_reads_does_not_block_others() {
    if !crius_testkit::require_root("a_client_that_never_reads") {
        return;
    }
    let pod = Pod::start("slow", namespaces(false));
    let mut hog = UnixStream::connect(pod.config.socket_path()).unwrap();
    write_frame(
        &mut hog,
        &Request::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .unwrap();
    hog.set_nonblocking(true).unwrap();
    let frame = encode(&Request::ListContainers).unwrap();
    for _ in 0..20_000 {
        if hog.write_all(&frame).is_err() {
            break;
        }
    }
    let mut client = pod.client();
    pod.run(&mut client, "x", &["/bin/true"]);
    wait_exited(&mut client, "x");

    // Parallel exec clients are served side by side.
    pod.run(&mut client, "box", &["/bin/sleep", "60"]);
    let process = pod.spec(&["/bin/sleep", "1"]).process().clone().unwrap();
    let started = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let socket = pod.config.socket_path();
            let process = process.clone();
            std::thread::spawn(move || {
                let mut c = MonitorClient::connect(&socket, TIMEOUT).unwrap();
                c.exec_sync(crius_monitor::protocol::ExecSync {
                    id: "box".into(),
                    process,
                    timeout_ms: 5000,
                    output_cap: 1024,
                })
                .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().exit_code, 0);
    }
    // Served one after the other they would take 4 s.
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    drop(hog);
}

//! Interactive exec and attach against a real monitor and real containers: descriptors
//! pass over the socket, output reaches the sinks, exits and cancellation are reported.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crius_monitor::protocol::{
    read_frame, write_frame, Attach, ContainerState, Exec, Request, Response, ATTACH_ENDED_EXITED,
    ATTACH_ENDED_TOO_SLOW, PROTOCOL_VERSION,
};
use crius_monitor::{terminal, Error, ErrorKind, ExecFds};

use common::{is_gone, namespaces, wait_exited, wait_gone, Pod, TIMEOUT};

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap()
}

fn exec_request(pod: &Pod, id: &str, args: &[&str], terminal: bool) -> Exec {
    let mut process = pod.spec(args).process().clone().unwrap();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    process.set_terminal(Some(terminal));
    Exec {
        id: id.into(),
        process,
        stdin: false,
        stdout: false,
        stderr: false,
    }
}

/// Reads `fd` until the output contains `want` (panics after the test timeout). A pty
/// master reads EIO once the slave side closed: that ends the output like EOF.
fn read_until(fd: BorrowedFd<'_>, want: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "never read {want:?}; got {:?}",
            String::from_utf8_lossy(&out)
        );
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap();
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(ms)).unwrap() == 0 {
            continue;
        }
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(nix::Error::EIO) => {
                panic!(
                    "{want:?} never came; output ended with {:?}",
                    String::from_utf8_lossy(&out)
                )
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_to_end(fd: OwnedFd) -> String {
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).unwrap();
    s
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn exec_without_a_terminal_uses_the_passed_descriptors_and_reports_the_exit() {
    if !crius_testkit::require_root("exec_without_a_terminal") {
        return;
    }
    let pod = Pod::start("sexec", namespaces(false));
    let mut client = pod.client();
    pod.run(&mut client, "box", &["/bin/sleep", "60"]);
    let (in_r, in_w) = pipe();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let mut req = exec_request(
        &pod,
        "box",
        &["/bin/sh", "-c", "cat; echo err >&2; exit 3"],
        false,
    );
    (req.stdin, req.stdout, req.stderr) = (true, true, true);
    let fds = ExecFds {
        stdin: Some(in_r),
        stdout: Some(out_w),
        stderr: Some(err_w),
    };
    let session = pod.client().exec(req, fds).unwrap();
    assert!(session.pid > 0 && session.pty_master.is_none());
    let mut stdin = std::fs::File::from(in_w);
    stdin.write_all(b"hello through stdin\n").unwrap();
    drop(stdin);
    assert_eq!(read_to_end(out_r), "hello through stdin\n");
    assert_eq!(read_to_end(err_r), "err\n");
    assert_eq!(session.wait().unwrap(), 3);
}

#[test]
fn exec_with_a_terminal_returns_the_master_and_follows_resizes() {
    if !crius_testkit::require_root("exec_with_a_terminal") {
        return;
    }
    let pod = Pod::start("sexectty", namespaces(false));
    let mut client = pod.client();
    pod.run(&mut client, "box", &["/bin/sleep", "60"]);
    let req = exec_request(
        &pod,
        "box",
        &["/bin/sh", "-c", "echo ready; read x; stty size; exit 4"],
        true,
    );
    let session = client.exec(req, ExecFds::default()).unwrap();
    let master = session.pty_master.as_ref().unwrap().try_clone().unwrap();
    read_until(master.as_fd(), "ready");
    terminal::resize(master.as_fd(), 101, 33).unwrap();
    nix::unistd::write(&master, b"go\n").unwrap();
    read_until(master.as_fd(), "33 101");
    assert_eq!(session.wait().unwrap(), 4);
}

#[test]
fn cancelling_an_exec_kills_its_process() {
    if !crius_testkit::require_root("cancelling_an_exec") {
        return;
    }
    let pod = Pod::start("scancel", namespaces(false));
    let mut client = pod.client();
    pod.run(&mut client, "box", &["/bin/sleep", "60"]);
    let session = pod
        .client()
        .exec(
            exec_request(&pod, "box", &["/bin/sleep", "300"], false),
            ExecFds::default(),
        )
        .unwrap();
    let pid = session.pid;
    assert!(!is_gone(pid));
    let handle = session.handle().unwrap();
    let waiter = std::thread::spawn(move || session.wait());
    handle.cancel();
    let err = waiter.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::Closed), "{err}");
    wait_gone(pid);
    // The monitor forgot the session and still serves.
    assert_eq!(client.state("box").unwrap().state, ContainerState::Running);
}

#[test]
fn exec_in_a_container_that_is_not_running_is_refused() {
    if !crius_testkit::require_root("exec_not_running") {
        return;
    }
    let pod = Pod::start("sexecnr", namespaces(false));
    let mut client = pod.client();
    client
        .create(pod.create_request("idle", &["/bin/true"]))
        .unwrap();
    let err = pod
        .client()
        .exec(
            exec_request(&pod, "idle", &["/bin/true"], false),
            ExecFds::default(),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
}

#[test]
fn several_attachers_see_the_same_output_and_end_when_the_container_exits() {
    if !crius_testkit::require_root("several_attachers") {
        return;
    }
    let pod = Pod::start("sattach", namespaces(false));
    let mut client = pod.client();
    pod.run(
        &mut client,
        "counter",
        &[
            "/bin/sh",
            "-c",
            "i=0; while true; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.05; done",
        ],
    );
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let req = Attach {
            id: "counter".into(),
            stdin: false,
            stdout: true,
            stderr: true,
        };
        let session = pod.client().attach(req, Some(out_w), Some(err_w)).unwrap();
        assert!(!session.tty && session.stdin.is_none());
        sessions.push((session, out_r, err_r));
    }
    // Both see the same lines, from the moment each attached.
    let seen = read_until(sessions[0].1.as_fd(), "tick");
    let last: u64 = seen
        .lines()
        .last()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let later = format!("tick {}\n", last + 3);
    read_until(sessions[0].1.as_fd(), &later);
    read_until(sessions[1].1.as_fd(), &later);
    read_until(sessions[0].2.as_fd(), "tock");
    read_until(sessions[1].2.as_fd(), "tock");

    client
        .stop("counter", Duration::from_secs(5), libc::SIGKILL)
        .unwrap();
    for (session, out_r, _err_r) in sessions {
        assert_eq!(session.wait().unwrap(), ATTACH_ENDED_EXITED);
        // The monitor closed its sink: the reader reaches EOF.
        let rest = read_to_end(out_r);
        assert!(rest.is_empty() || rest.contains("tick"), "{rest}");
    }
}

#[test]
fn an_attacher_that_does_not_read_is_dropped_while_logging_goes_on() {
    if !crius_testkit::require_root("slow_attacher") {
        return;
    }
    let pod = Pod::start("sslow", namespaces(false));
    let mut client = pod.client();
    let script = "read x; head -c 3000000 /dev/zero; echo; echo flood done; sleep 60";
    let mut req = pod.create_request("flood", &["/bin/sh", "-c", script]);
    req.stdin = true;
    client.create(req).unwrap();
    client.start("flood").unwrap();
    // The flood starts only once attached, into a sink nobody reads.
    let (_never_read, out_w) = pipe();
    let req = Attach {
        id: "flood".into(),
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let session = pod.client().attach(req, Some(out_w), None).unwrap();
    nix::unistd::write(session.stdin.as_ref().unwrap(), b"go\n").unwrap();
    assert_eq!(session.wait().unwrap(), ATTACH_ENDED_TOO_SLOW);
    common::wait_log(&pod, "flood", |l| l.contains("flood done"));
    assert_eq!(
        client.state("flood").unwrap().state,
        ContainerState::Running
    );
}

#[test]
fn attach_with_stdin_echoes_through_cat_and_stdin_once_ends_it() {
    if !crius_testkit::require_root("attach_with_stdin") {
        return;
    }
    let pod = Pod::start("sstdin", namespaces(false));
    let mut client = pod.client();
    let mut req = pod.create_request("cat", &["/bin/cat"]);
    (req.stdin, req.stdin_once) = (true, true);
    client.create(req).unwrap();
    client.start("cat").unwrap();
    let (out_r, out_w) = pipe();
    let req = Attach {
        id: "cat".into(),
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let mut session = pod.client().attach(req, Some(out_w), None).unwrap();
    let stdin = session.stdin.take().unwrap();
    nix::unistd::write(&stdin, b"ping pong\n").unwrap();
    read_until(out_r.as_fd(), "ping pong");
    assert_eq!(client.state("cat").unwrap().state, ContainerState::Running);
    let handle = session.handle().unwrap();
    drop(stdin);
    handle.stdin_closed().unwrap();
    let status = wait_exited(&mut client, "cat");
    assert_eq!(status.exit_code, 0);
    assert_eq!(session.wait().unwrap(), ATTACH_ENDED_EXITED);
    assert!(pod.log("cat").contains("ping pong"));
}

#[test]
fn attach_to_a_tty_container_reads_the_terminal_and_refuses_stderr() {
    if !crius_testkit::require_root("attach_tty") {
        return;
    }
    let pod = Pod::start("stty", namespaces(false));
    let mut client = pod.client();
    let mut req = pod.create_request("tty", &["/bin/sh"]);
    req.spec
        .process_mut()
        .as_mut()
        .unwrap()
        .set_terminal(Some(true));
    (req.tty, req.stdin) = (true, true);
    client.create(req).unwrap();
    client.start("tty").unwrap();

    let (_r, w) = pipe();
    let (_r2, w2) = pipe();
    let bad = Attach {
        id: "tty".into(),
        stdin: false,
        stdout: true,
        stderr: true,
    };
    let err = pod.client().attach(bad, Some(w), Some(w2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    let (out_r, out_w) = pipe();
    let req = Attach {
        id: "tty".into(),
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let session = pod.client().attach(req, Some(out_w), None).unwrap();
    assert!(session.tty);
    let stdin = session.stdin.as_ref().unwrap();
    write_all_nonblocking(stdin.as_fd(), b"echo $((6*7))x; exit 9\n");
    read_until(out_r.as_fd(), "42x");
    assert_eq!(wait_exited(&mut client, "tty").exit_code, 9);
    assert_eq!(session.wait().unwrap(), ATTACH_ENDED_EXITED);
}

/// The stdin of a tty container shares the monitor's non-blocking pty master.
fn write_all_nonblocking(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EAGAIN) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("write: {e}"),
        }
    }
}

#[test]
fn attach_to_a_container_that_is_not_running_is_refused() {
    if !crius_testkit::require_root("attach_not_running") {
        return;
    }
    let pod = Pod::start("sattachnr", namespaces(false));
    let mut client = pod.client();
    client
        .create(pod.create_request("idle", &["/bin/true"]))
        .unwrap();
    pod.run(&mut client, "done", &["/bin/true"]);
    wait_exited(&mut client, "done");
    for id in ["idle", "done"] {
        let (_r, w) = pipe();
        let req = Attach {
            id: id.into(),
            stdin: false,
            stdout: true,
            stderr: false,
        };
        let err = pod.client().attach(req, Some(w), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{id}: {err}");
    }
    let req = Attach {
        id: "nope".into(),
        stdin: false,
        stdout: false,
        stderr: false,
    };
    let err = pod.client().attach(req, None, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// A raw connection after Hello, to send frames the client would refuse to build.
fn raw_connection(pod: &Pod) -> UnixStream {
    let mut s = UnixStream::connect(pod.config.socket_path()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write_frame(
        &mut s,
        &Request::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .unwrap();
    assert!(matches!(
        read_frame::<_, Response>(&mut s).unwrap(),
        Response::Hello { .. }
    ));
    s
}

#[test]
fn surplus_descriptors_are_refused_and_closed_without_leaking() {
    if !crius_testkit::require_root("surplus_descriptors") {
        return;
    }
    let pod = Pod::start("sfds", namespaces(false));
    let mut client = pod.client();
    pod.run(&mut client, "box", &["/bin/sleep", "60"]);
    let monitor = pod.handle.as_ref().unwrap().pid;
    let mut s = raw_connection(&pod);
    let before = open_fds(monitor);
    let null = std::fs::File::open("/dev/null").unwrap();
    let many: Vec<BorrowedFd<'_>> = (0..40).map(|_| null.as_fd()).collect();
    for round in 0..3 {
        let mut req = exec_request(&pod, "box", &["/bin/true"], false);
        req.stdin = true;
        let frame = crius_monitor::protocol::encode(&Request::Exec(req)).unwrap();
        let n = crius_monitor::fdpass::send(s.as_fd(), &frame, &many, false).unwrap();
        s.write_all(&frame[n..]).unwrap();
        match read_frame::<_, Response>(&mut s).unwrap() {
            Response::Error { kind, message } => {
                assert_eq!(kind, ErrorKind::InvalidArgument, "{round}: {message}");
            }
            other => panic!("{round}: {other:?}"),
        }
        // Descriptors sent with a request that takes none are closed too.
        let frame = crius_monitor::protocol::encode(&Request::ListContainers).unwrap();
        let n = crius_monitor::fdpass::send(s.as_fd(), &frame, &many[..3], false).unwrap();
        s.write_all(&frame[n..]).unwrap();
        assert!(matches!(
            read_frame::<_, Response>(&mut s).unwrap(),
            Response::Containers(_)
        ));
    }
    assert_eq!(open_fds(monitor), before, "the monitor leaked descriptors");
    // The connection and the monitor still serve.
    assert_eq!(client.state("box").unwrap().state, ContainerState::Running);
}

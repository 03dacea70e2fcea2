use std::io::Cursor;

use super::*;

fn status() -> ContainerStatus {
    ContainerStatus {
        id: "c1".into(),
        state: ContainerState::Exited,
        pid: Some(42),
        created_at_ns: 1,
        started_at_ns: 2,
        finished_at_ns: 3,
        exit_code: 137,
        signal: Some(9),
        oom_killed: true,
        reason: "OOMKilled".into(),
        message: String::new(),
    }
}

fn every_request() -> Vec<Request> {
    let spec = crius_oci::spec::secure_default(&["/bin/true".into()], "rootfs".as_ref()).unwrap();
    let process = spec.process().clone().unwrap();
    vec![
        Request::Hello { version: 1 },
        Request::CreateContainer(CreateContainer {
            id: "c1".into(),
            bundle: "/b".into(),
            spec,
            log_path: "/l".into(),
            stdin: true,
            stdin_once: false,
            tty: false,
            runtime: RuntimeChoice::Binary {
                path: "/usr/sbin/runc".into(),
            },
        }),
        Request::StartContainer { id: "c1".into() },
        Request::Signal {
            id: "c1".into(),
            signal: 15,
        },
        Request::StopContainer {
            id: "c1".into(),
            timeout_ms: 10,
            signal: 15,
        },
        Request::RemoveContainer { id: "c1".into() },
        Request::ContainerState { id: "c1".into() },
        Request::ListContainers,
        Request::ExecSync(ExecSync {
            id: "c1".into(),
            process,
            timeout_ms: 5,
            output_cap: 7,
        }),
        Request::ReopenLog { id: "c1".into() },
        Request::UpdateResources {
            id: "c1".into(),
            resources: LinuxResources::default(),
        },
        Request::Stats { id: "c1".into() },
        Request::Subscribe,
        Request::StopPod { timeout_ms: 3 },
        Request::Shutdown,
        Request::Exec(Exec {
            id: "c1".into(),
            process: exec_process(),
            stdin: true,
            stdout: true,
            stderr: false,
        }),
        Request::Attach(Attach {
            id: "c1".into(),
            stdin: false,
            stdout: true,
            stderr: true,
        }),
        Request::CloseStdin,
    ]
}

fn exec_process() -> Process {
    let spec = crius_oci::spec::secure_default(&["/bin/sh".into()], "rootfs".as_ref()).unwrap();
    spec.process().clone().unwrap()
}

fn every_response() -> Vec<Response> {
    vec![
        Response::Hello {
            version: 1,
            monitor_pid: 7,
        },
        Response::Ok,
        Response::Created { pid: 9 },
        Response::State(status()),
        Response::Containers(vec![status(), status()]),
        Response::Containers(Vec::new()),
        Response::ExecResult {
            exit_code: 1,
            stdout: b"out\0\xff".to_vec(),
            stderr: Vec::new(),
            timed_out: true,
            truncated: false,
        },
        Response::Stats(ContainerStats {
            cpu_usage_ns: 1,
            memory_working_set_bytes: 2,
            memory_rss_bytes: 3,
            page_faults: 4,
            pids: 5,
            oom_events: 6,
            timestamp_ns: 7,
        }),
        Response::Event(ContainerEvent {
            id: "c1".into(),
            status: status(),
        }),
        Response::Error {
            kind: ErrorKind::NotFound,
            message: "container c1 not found".into(),
        },
        Response::ExecStarted {
            pid: 5,
            terminal: true,
        },
        Response::ExecExited { exit_code: 137 },
        Response::Attached {
            tty: false,
            stdin: true,
        },
        Response::AttachEnded {
            reason: ATTACH_ENDED_TOO_SLOW.into(),
        },
    ]
}

#[test]
fn every_request_survives_a_frame_round_trip() {
    for req in every_request() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &req).unwrap();
        let back: Request = read_frame(&mut Cursor::new(&wire)).unwrap();
        assert_eq!(back, req);
        let mut buf = wire.clone();
        let body = take_frame(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(decode::<Request>(&body).unwrap(), req);
    }
}

#[test]
fn every_response_survives_a_frame_round_trip() {
    for resp in every_response() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &resp).unwrap();
        let back: Response = read_frame(&mut Cursor::new(&wire)).unwrap();
        assert_eq!(back, resp);
    }
}

#[test]
fn requests_are_tagged_by_op_and_responses_by_kind() {
    let v = serde_json::to_value(Request::StartContainer { id: "x".into() }).unwrap();
    assert_eq!(v["op"], "start_container");
    let v = serde_json::to_value(Response::Created { pid: 3 }).unwrap();
    assert_eq!(v["kind"], "created");
    assert_eq!(v["body"]["pid"], 3);
}

#[test]
fn interactive_requests_and_answers_have_a_stable_json_shape() {
    let v = serde_json::to_value(Request::Exec(Exec {
        id: "c".into(),
        process: exec_process(),
        stdin: true,
        stdout: false,
        stderr: true,
    }))
    .unwrap();
    assert_eq!(v["op"], "exec");
    assert_eq!(v["id"], "c");
    assert_eq!(
        (&v["stdin"], &v["stdout"], &v["stderr"]),
        (&true.into(), &false.into(), &true.into())
    );
    assert_eq!(v["process"]["args"][0], "/bin/sh");
    let v = serde_json::to_value(Request::Attach(Attach {
        id: "c".into(),
        stdin: true,
        stdout: true,
        stderr: false,
    }))
    .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"op": "attach", "id": "c", "stdin": true, "stdout": true, "stderr": false})
    );
    let v = serde_json::to_value(Request::CloseStdin).unwrap();
    assert_eq!(v, serde_json::json!({"op": "close_stdin"}));
    let v = serde_json::to_value(Response::ExecStarted {
        pid: 3,
        terminal: false,
    })
    .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"kind": "exec_started", "body": {"pid": 3, "terminal": false}})
    );
    let v = serde_json::to_value(Response::ExecExited { exit_code: 3 }).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"kind": "exec_exited", "body": {"exit_code": 3}})
    );
    let v = serde_json::to_value(Response::Attached {
        tty: true,
        stdin: false,
    })
    .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"kind": "attached", "body": {"tty": true, "stdin": false}})
    );
    let v = serde_json::to_value(Response::AttachEnded {
        reason: ATTACH_ENDED_EXITED.into(),
    })
    .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"kind": "attach_ended", "body": {"reason": "container exited"}})
    );
}

#[test]
fn an_oversized_frame_is_refused_without_allocating_it() {
    let mut wire = u32::MAX.to_be_bytes().to_vec();
    wire.extend_from_slice(b"{}");
    let err = read_frame::<_, Request>(&mut Cursor::new(&wire)).unwrap_err();
    assert!(matches!(err, Error::FrameTooLarge { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    let mut buf = wire;
    assert!(take_frame(&mut buf).is_err());
    let just_over = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
    assert!(take_frame(&mut just_over.to_vec()).is_err());
}

#[test]
fn a_truncated_or_empty_stream_is_an_error_not_a_panic() {
    assert!(matches!(
        read_frame::<_, Request>(&mut Cursor::new(Vec::new())),
        Err(Error::Closed)
    ));
    let mut wire = Vec::new();
    write_frame(&mut wire, &Request::ListContainers).unwrap();
    wire.pop();
    assert!(read_frame::<_, Request>(&mut Cursor::new(&wire)).is_err());
    let mut buf = wire;
    assert!(take_frame(&mut buf).unwrap().is_none());
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..5000 {
        let n = usize::try_from(rng.next() % 64).unwrap();
        let mut bytes = rng.bytes(n);
        if round % 2 == 0 && bytes.len() >= 4 {
            // A plausible small header over garbage.
            let len = u32::try_from(bytes.len() - 4).unwrap();
            bytes[..4].copy_from_slice(&len.to_be_bytes());
        }
        let _ = read_frame::<_, Request>(&mut Cursor::new(&bytes));
        let _ = read_frame::<_, Response>(&mut Cursor::new(&bytes));
        let mut buf = bytes.clone();
        while let Ok(Some(body)) = take_frame(&mut buf) {
            let _ = decode::<Request>(&body);
        }
        let _ = decode::<Request>(&bytes);
    }
}

#[test]
fn mutated_valid_frames_never_panic_the_decoder() {
    let mut rng = Rng(42);
    let frames: Vec<Vec<u8>> = every_request().iter().map(|r| encode(r).unwrap()).collect();
    for _ in 0..3000 {
        let idx = usize::try_from(rng.next()).unwrap() % frames.len();
        let mut f = frames[idx].clone();
        for _ in 0..(rng.next() % 4 + 1) {
            let pos = usize::try_from(rng.next()).unwrap() % f.len();
            f[pos] = rng.next().to_le_bytes()[0];
        }
        let _ = read_frame::<_, Request>(&mut Cursor::new(&f));
    }
}

#[test]
fn an_exec_result_with_both_streams_at_the_cap_fits_one_frame() {
    let full = vec![0xffu8; usize::try_from(MAX_EXEC_OUTPUT_CAP).unwrap()];
    let frame = encode(&Response::ExecResult {
        exit_code: 0,
        stdout: full.clone(),
        stderr: full,
        timed_out: false,
        truncated: true,
    })
    .unwrap();
    assert!(frame.len() <= MAX_FRAME + 4);
}

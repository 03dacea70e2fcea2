//! The pod and container lifecycle end to end, as crictl drives it: a real criusd, a real
//! registry, real monitors and real kernel isolation. Needs root.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use std::collections::HashMap;

use common::{container_config, create, pod_config, run_pod, setup, status, wait_exited};
use crius::api;
use tonic::Code;

#[tokio::test]
async fn run_create_start_logs_exec_stop_remove() {
    let Some(mut s) = setup("pods-flow").await else {
        return;
    };
    let (pod, sandbox) = run_pod(&mut s, "web").await;

    // A container that prints and fails: exit code, reason and CRI log lines.
    let cfg = container_config(
        &s.image,
        "once",
        &["/bin/sh", "-c", "echo hello crius; echo oops >&2; exit 3"],
    );
    let once = create(&mut s, &pod, &sandbox, cfg).await;
    let st = status(&mut s, &once).await;
    assert_eq!(st.state, api::ContainerState::ContainerCreated as i32);
    assert!(st.image_ref.starts_with("sha256:"));
    // The pod's files are bind mounts the status reports, as containerd's does.
    assert!(
        st.mounts.iter().any(|m| m.container_path == "/etc/resolv.conf" && m.host_path.ends_with("resolv.conf")),
        "{:?}",
        st.mounts
    );
    s.client
        .runtime
        .start_container(api::StartContainerRequest {
            container_id: once.clone(),
        })
        .await
        .unwrap();
    let st = wait_exited(&mut s, &once).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, "Error");
    let log = std::fs::read_to_string(&st.log_path).unwrap();
    assert!(
        log.lines().any(|l| l.ends_with(" stdout F hello crius")),
        "{log}"
    );
    assert!(log.lines().any(|l| l.ends_with(" stderr F oops")), "{log}");

    // A long-running container: exec into it, see the pod's hostname.
    let cfg = container_config(&s.image, "sleeper", &["/bin/sleep", "1000"]);
    let sleeper = create(&mut s, &pod, &sandbox, cfg).await;
    s.client
        .runtime
        .start_container(api::StartContainerRequest {
            container_id: sleeper.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        status(&mut s, &sleeper).await.state,
        api::ContainerState::ContainerRunning as i32
    );
    let out = s
        .client
        .runtime
        .exec_sync(api::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "hostname; echo err >&2; exit 7".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "web-host\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let listed = s
        .client
        .runtime
        .list_containers(api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);

    s.client
        .runtime
        .stop_container(api::StopContainerRequest {
            container_id: sleeper.clone(),
            timeout: 2,
        })
        .await
        .unwrap();
    let st = status(&mut s, &sleeper).await;
    assert_eq!(st.state, api::ContainerState::ContainerExited as i32);

    s.client
        .runtime
        .remove_container(api::RemoveContainerRequest {
            container_id: once.clone(),
        })
        .await
        .unwrap();
    let err = s
        .client
        .runtime
        .container_status(api::ContainerStatusRequest {
            container_id: once.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    s.client
        .runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let pods = s
        .client
        .runtime
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pods.items[0].state,
        api::PodSandboxState::SandboxNotready as i32
    );
    s.client
        .runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let err = s
        .client
        .runtime
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        !s.layout.state.join("pods").join(&pod).exists(),
        "pod state directory left behind"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&pod), "a mount of the removed pod remains");
    drop(s.daemon);
}

#[tokio::test]
async fn containers_of_a_pod_share_its_namespaces() {
    let Some(mut s) = setup("pods-share").await else {
        return;
    };
    let (pod, sandbox) = run_pod(&mut s, "shared").await;
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let cfg = container_config(&s.image, name, &["/bin/sleep", "1000"]);
        let id = create(&mut s, &pod, &sandbox, cfg).await;
        s.client
            .runtime
            .start_container(api::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
        ids.push(id);
    }
    let mut seen = HashMap::new();
    for id in &ids {
        let out = s
            .client
            .runtime
            .exec_sync(api::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "for ns in net uts ipc mnt; do readlink /proc/self/ns/$ns; done".into(),
                ],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        seen.insert(id.clone(), String::from_utf8(out.stdout).unwrap());
    }
    let a: Vec<&str> = seen[&ids[0]].lines().collect();
    let b: Vec<&str> = seen[&ids[1]].lines().collect();
    assert_eq!(
        a[..3],
        b[..3],
        "net/uts/ipc differ between containers of one pod"
    );
    assert_ne!(a[3], b[3], "containers share a mount namespace");
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        a[0],
        host_net.to_string_lossy(),
        "the pod runs in the host network namespace"
    );

    // One /dev/shm per pod: what one container puts there (POSIX shm lives there) the
    // other sees, and it is the pod's tmpfs, not the host's.
    let sh = |id: &String, script: &str| api::ExecSyncRequest {
        container_id: id.clone(),
        cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
        timeout: 10,
    };
    let wrote = s
        .client
        .runtime
        .exec_sync(sh(&ids[0], "echo shared-by-pod > /dev/shm/crius-probe"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        wrote.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&wrote.stderr)
    );
    let read = s
        .client
        .runtime
        .exec_sync(sh(
            &ids[1],
            "cat /dev/shm/crius-probe; grep ' /dev/shm ' /proc/mounts",
        ))
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8_lossy(&read.stdout);
    assert_eq!(
        read.exit_code,
        0,
        "{text} {}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(text.starts_with("shared-by-pod\n"), "{text}");
    assert!(
        text.contains("tmpfs") && text.contains("size=65536k"),
        "{text}"
    );
    assert!(
        !std::path::Path::new("/dev/shm/crius-probe").exists(),
        "the container wrote into the host's /dev/shm"
    );
    let pod_shm = s.layout.state.join("pods").join(&pod).join("shm");
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(pod_shm.to_str().unwrap()))
    };
    assert!(
        mounted(),
        "the pod's shm is not mounted at {}",
        pod_shm.display()
    );
    s.client
        .runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    assert!(!mounted(), "a stopped pod keeps its shm mounted");
    s.client
        .runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_requests_get_the_right_codes_and_leave_nothing() {
    let Some(mut s) = setup("pods-bad").await else {
        return;
    };
    let (pod, sandbox) = run_pod(&mut s, "strict").await;

    let err = common::create_refused(
        &mut s.client,
        "no-such-pod",
        None,
        container_config(&s.image, "x", &["/bin/true"]),
    )
    .await;
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let mut cfg = container_config(&s.image, "escape", &["/bin/true"]);
    cfg.log_path = "../../outside.log".into();
    let err = common::create_refused(&mut s.client, &pod, None, cfg).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let cfg = container_config(&s.image, "dup", &["/bin/true"]);
    create(&mut s, &pod, &sandbox, cfg.clone()).await;
    let err = common::create_refused(&mut s.client, &pod, None, cfg).await;
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    let mut bad_pod = pod_config(&s.layout, "sysctl");
    bad_pod.linux = Some(api::LinuxPodSandboxConfig {
        sysctls: HashMap::from([("kernel.panic".to_string(), "1".to_string())]),
        ..Default::default()
    });
    let err = s
        .client
        .runtime
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(bad_pod),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("kernel.panic"), "{}", err.message());

    let err = s
        .client
        .runtime
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_config(&s.layout, "h")),
            runtime_handler: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let err = s
        .client
        .runtime
        .run_pod_sandbox(api::RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Stop and remove of unknown ids succeed (CRI contract).
    s.client
        .runtime
        .stop_container(api::StopContainerRequest {
            container_id: "nope".into(),
            timeout: 0,
        })
        .await
        .unwrap();
    s.client
        .runtime
        .remove_container(api::RemoveContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap();
    s.client
        .runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: "nope".into(),
        })
        .await
        .unwrap();
    s.client
        .runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: "nope".into(),
        })
        .await
        .unwrap();

    // Only the one good pod exists; the refused ones left no directory.
    let pods = s
        .client
        .runtime
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pods.items.len(), 1);
    let dirs = std::fs::read_dir(s.layout.state.join("pods"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1, "a refused pod left a state directory");
    s.client
        .runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_retried_run_pod_returns_the_same_pod() {
    let Some(mut s) = setup("pods-retry").await else {
        return;
    };
    let config = pod_config(&s.layout, "retry");
    let request = api::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    };
    let mut other = s.daemon.client().await;
    let (a, b) = tokio::join!(
        s.client.runtime.run_pod_sandbox(request.clone()),
        other.runtime.run_pod_sandbox(request.clone())
    );
    let (a, b) = (
        a.unwrap().into_inner().pod_sandbox_id,
        b.unwrap().into_inner().pod_sandbox_id,
    );
    assert_eq!(a, b, "a retry created a second pod");
    s.client
        .runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: a })
        .await
        .unwrap();
}

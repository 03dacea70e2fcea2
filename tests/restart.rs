//! Restart survival end to end: containers outlive a `kill -9` of criusd and a new criusd
//! reports them as they are, exits that happened while it was down included; a monitor
//! killed with `kill -9` leaves its containers reported as exited and really gone. Needs root.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use std::time::{Duration, Instant};

use common::{
    cgroup_pids, container_config, pid_of, pod_dirs, remove_pod, run_container, run_pod, setup,
    status, stop_pod, wait_exited, Daemon,
};
use crius::api;
use nix::sys::signal::Signal;

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

async fn list_pods(s: &mut common::Setup) -> Vec<api::PodSandbox> {
    let mut items = s
        .client
        .runtime
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    items.sort_by(|a, b| a.id.cmp(&b.id));
    items
}

async fn list_containers(s: &mut common::Setup) -> Vec<api::Container> {
    let mut items = s
        .client
        .runtime
        .list_containers(api::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    items.sort_by(|a, b| a.id.cmp(&b.id));
    items
}

/// The cgroup (relative to a hierarchy) the container runs in, from its runtime spec.
async fn cgroup_of(s: &mut common::Setup, id: &str) -> String {
    let info = s
        .client
        .runtime
        .container_status(api::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    info.pointer("/runtimeSpec/linux/cgroupsPath")
        .and_then(serde_json::Value::as_str)
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn containers_survive_a_killed_daemon_and_exits_while_it_was_down_are_reported() {
    let Some(mut s) = setup("restart-daemon").await else {
        return;
    };
    let mut pods = Vec::new();
    let mut sleepers = Vec::new();
    let mut shorts = Vec::new();
    for name in ["r1", "r2"] {
        let (pod, sandbox) = run_pod(&mut s, name).await;
        let cfg = container_config(&s.image, "sleeper", &["/bin/sleep", "1000"]);
        let sleeper = run_container(&mut s, &pod, &sandbox, cfg).await;
        let cfg = container_config(&s.image, "short", &["/bin/sh", "-c", "sleep 2; exit 4"]);
        let short = run_container(&mut s, &pod, &sandbox, cfg).await;
        pods.push(pod);
        sleepers.push(sleeper);
        shorts.push(short);
    }
    let mut pids = Vec::new();
    for id in &sleepers {
        pids.push(
            pid_of(&mut s.client, id)
                .await
                .expect("running container has a pid"),
        );
    }
    let pods_before = list_pods(&mut s).await;
    let containers_before = list_containers(&mut s).await;

    s.daemon.kill_with(Signal::SIGKILL);
    // The short containers exit while criusd is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for pid in &pids {
        assert!(alive(*pid), "container {pid} died with criusd");
    }
    s.daemon = Daemon::start(&s.layout, &[]);
    s.client = s.daemon.client().await;

    let pods_after = list_pods(&mut s).await;
    assert_eq!(
        pods_after
            .iter()
            .map(|p| (&p.id, p.state))
            .collect::<Vec<_>>(),
        pods_before
            .iter()
            .map(|p| (&p.id, p.state))
            .collect::<Vec<_>>()
    );
    let containers_after = list_containers(&mut s).await;
    assert_eq!(
        containers_after.iter().map(|c| &c.id).collect::<Vec<_>>(),
        containers_before.iter().map(|c| &c.id).collect::<Vec<_>>()
    );
    for (id, pid) in sleepers.iter().zip(&pids) {
        let st = status(&mut s, id).await;
        assert_eq!(
            st.state,
            api::ContainerState::ContainerRunning as i32,
            "{st:?}"
        );
        assert_eq!(pid_of(&mut s.client, id).await, Some(*pid));
    }
    for id in &shorts {
        let st = wait_exited(&mut s, id).await;
        assert_eq!(st.exit_code, 4, "{st:?}");
        assert_eq!(st.reason, "Error", "{st:?}");
        assert!(st.finished_at > st.started_at, "{st:?}");
    }
    // ListContainers (the store alone) agrees once the watchers synced.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = list_containers(&mut s).await;
        let exited = listed
            .iter()
            .filter(|c| c.state == api::ContainerState::ContainerExited as i32)
            .count();
        if exited == shorts.len() {
            break;
        }
        assert!(Instant::now() < deadline, "list still shows {listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for pod in &pods {
        stop_pod(&mut s.client, pod).await;
    }
    for pid in &pids {
        assert!(!alive(*pid), "container {pid} survived its pod's stop");
    }
    for pod in &pods {
        remove_pod(&mut s.client, pod).await;
    }
    assert!(list_containers(&mut s).await.is_empty());
    assert!(list_pods(&mut s).await.is_empty());
    assert_eq!(pod_dirs(&s.layout), Vec::<String>::new());
}

/// The pid of the monitor serving `pod`: the peer of its socket.
fn monitor_pid(layout: &common::Layout, pod: &str) -> i32 {
    let socket = layout.state.join("pods").join(pod).join("monitor.sock");
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .unwrap()
        .pid()
}

/// Kills the monitor serving `pod` with SIGKILL and waits until it is gone.
async fn kill_monitor(layout: &common::Layout, pod: &str) {
    let monitor = monitor_pid(layout, pod);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(u32::try_from(monitor).unwrap()) {
        assert!(Instant::now() < deadline, "monitor {monitor} did not die");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the pod's watcher noticed its monitor is gone on its own: ListContainers
/// (what kubelet relists) stops reporting the pod's containers as running without any
/// status call.
async fn wait_none_running(s: &mut common::Setup, pod: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running = s
            .client
            .runtime
            .list_containers(api::ListContainersRequest {
                filter: Some(api::ContainerFilter {
                    pod_sandbox_id: pod.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers
            .iter()
            .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
            .count();
        if running == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ListContainers still reports {running} running after the monitor died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_killed_monitor_leaves_its_containers_exited_and_gone() {
    let Some(mut s) = setup("restart-monitor").await else {
        return;
    };
    let (pod, sandbox) = run_pod(&mut s, "lost").await;
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let cfg = container_config(&s.image, name, &["/bin/sleep", "1000"]);
        ids.push(run_container(&mut s, &pod, &sandbox, cfg).await);
    }
    let mut cgroups = Vec::new();
    for id in &ids {
        let cgroup = cgroup_of(&mut s, id).await;
        assert!(!cgroup_pids(&cgroup).is_empty(), "no process in {cgroup}");
        cgroups.push(cgroup);
    }
    kill_monitor(&s.layout, &pod).await;
    wait_none_running(&mut s, &pod).await;

    for id in &ids {
        let st = status(&mut s, id).await;
        assert_eq!(
            st.state,
            api::ContainerState::ContainerExited as i32,
            "{st:?}"
        );
        assert!(!st.reason.is_empty() && st.reason != "Completed", "{st:?}");
        assert!(st.message.contains("monitor"), "{st:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for cgroup in &cgroups {
        loop {
            let left = cgroup_pids(cgroup);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "processes {left:?} of a lost container still run in {cgroup}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop_pod(&mut s.client, &pod).await;
    remove_pod(&mut s.client, &pod).await;
    assert_eq!(pod_dirs(&s.layout), Vec::<String>::new());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&pod), "a mount of the removed pod remains");
    for cgroup in &cgroups {
        assert!(
            common::cgroup_dirs(cgroup).is_empty(),
            "{cgroup} left behind"
        );
    }
}

#[tokio::test]
async fn a_killed_monitor_leaves_no_systemd_scope_behind() {
    let test = "a_killed_monitor_leaves_no_systemd_scope_behind";
    // A real systemd (a user manager of the test's own: this host's init is not systemd).
    let Some(manager) = crius_testkit::systemd::SystemdUserManager::start(test) else {
        return;
    };
    let bus = manager.socket();
    let Some(mut s) = common::setup_with("restart-sd", |l| l.use_systemd(&bus)).await else {
        return;
    };
    // A top slice of its own, so concurrent tests and a real kubelet are never touched.
    let top = format!("criusrestart{}", std::process::id());
    let slice = format!("{top}-pod.slice");
    let mut sandbox = common::pod_config(&s.layout, "lost-sd");
    sandbox.linux = Some(api::LinuxPodSandboxConfig {
        cgroup_parent: slice.clone(),
        ..Default::default()
    });
    let pod = common::run_pod_with(&mut s.client, &sandbox).await;
    let cfg = container_config(&s.image, "sd", &["/bin/sleep", "1000"]);
    let id = run_container(&mut s, &pod, &sandbox, cfg).await;
    let unit = format!("crius-{id}.scope");
    let scope = format!("{}/{top}.slice/{slice}/{unit}", manager.root());
    assert_eq!(manager.unit_property(&unit, "ActiveState"), "active");
    let pids = cgroup_pids(&scope);
    assert_eq!(pids.len(), 1, "the container's sleep alone: {pids:?}");
    // The scope is delegated, so its container may make cgroups of its own inside it;
    // move the sleep into one, in every hierarchy. crius's own kill of a lost container
    // reads the scope's directories only, so here only systemd stopping the scope (it
    // kills the whole tree) ends the container: a scope left to systemd would keep it
    // running, and loaded.
    let sleep = pids[0];
    for dir in common::cgroup_dirs(&scope) {
        let nested = dir.join("nested");
        std::fs::create_dir(&nested).unwrap();
        for file in ["cpuset.cpus", "cpuset.mems"] {
            // A v1 cpuset cgroup starts with no cpus and mems: no task could join it.
            if nested.join(file).exists() {
                let parent = std::fs::read_to_string(dir.join(file)).unwrap();
                std::fs::write(nested.join(file), parent.trim()).unwrap();
            }
        }
        std::fs::write(nested.join("cgroup.procs"), sleep.to_string()).unwrap();
    }
    assert!(cgroup_pids(&scope).is_empty(), "the sleep is nested now");

    kill_monitor(&s.layout, &pod).await;
    wait_none_running(&mut s, &pod).await;
    // The container was recorded exited after its scope was stopped: systemd killed the
    // nested process and unloaded the unit.
    let st = status(&mut s, &id).await;
    assert_eq!(
        st.state,
        api::ContainerState::ContainerExited as i32,
        "{st:?}"
    );
    assert_eq!(manager.unit_property(&unit, "LoadState"), "not-found");
    let u32_pid = u32::try_from(sleep).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(u32_pid) {
        assert!(
            Instant::now() < deadline,
            "the lost container's process {sleep} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop_pod(&mut s.client, &pod).await;
    remove_pod(&mut s.client, &pod).await;
    assert_eq!(pod_dirs(&s.layout), Vec::<String>::new());
    assert!(
        common::cgroup_dirs(&scope).is_empty(),
        "{scope} left behind: {:?}",
        common::cgroup_dirs(&scope)
    );
}

/// One pod's whole life: run, create, start, stop, remove; returns its id.
async fn pod_life(
    mut client: crius::client::CriClient,
    sandbox: api::PodSandboxConfig,
    image: String,
) -> String {
    let pod = common::run_pod_with(&mut client, &sandbox).await;
    let cfg = container_config(&image, "c", &["/bin/sleep", "1000"]);
    let id = common::create_with(&mut client, &pod, &sandbox, cfg).await;
    common::start(&mut client, &id).await;
    client
        .runtime
        .stop_container(api::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    client
        .runtime
        .remove_container(api::RemoveContainerRequest { container_id: id })
        .await
        .unwrap();
    stop_pod(&mut client, &pod).await;
    remove_pod(&mut client, &pod).await;
    pod
}

#[tokio::test]
async fn thirty_pods_created_and_removed_leave_nothing_behind() {
    let Some(s) = setup("restart-cleanup").await else {
        return;
    };
    let started = Instant::now();
    let mut pods = Vec::new();
    for batch in 0..6 {
        let mut tasks = Vec::new();
        for i in 0..5 {
            let sandbox = common::pod_config(&s.layout, &format!("p{batch}-{i}"));
            tasks.push(tokio::spawn(pod_life(
                s.client.clone(),
                sandbox,
                s.image.clone(),
            )));
        }
        for task in tasks {
            pods.push(task.await.unwrap());
        }
    }
    assert_eq!(pods.len(), 30);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "30 pods took {:?}",
        started.elapsed()
    );
    assert_eq!(pod_dirs(&s.layout), Vec::<String>::new());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mounts.lines() {
        assert!(
            !line.contains(&*s.layout.state.to_string_lossy())
                && !line.contains(&*s.layout.root.join("containers").to_string_lossy()),
            "a mount remains: {line}"
        );
        for pod in &pods {
            assert!(
                !line.contains(pod.as_str()),
                "a mount of {pod} remains: {line}"
            );
        }
    }
    for pod in &pods {
        let left = common::cgroup_dirs(&format!("/crius/{pod}"));
        assert!(left.is_empty(), "cgroups of {pod} remain: {left:?}");
    }
}

#[tokio::test]
async fn a_pod_a_killed_daemon_never_recorded_is_released_at_start() {
    let Some(s) = setup("restart-stale-pod").await else {
        return;
    };
    let common::Setup {
        layout,
        fixture: _fixture,
        daemon,
        mut client,
        image: _,
    } = s;
    let sandbox = common::pod_config(&layout, "stale-pod");
    let pod = common::run_pod_with(&mut client, &sandbox).await;
    let dir = layout.state.join("pods").join(&pod);
    let monitor = monitor_pid(&layout, &pod);
    assert!(alive(u32::try_from(monitor).unwrap()));
    drop(client);
    daemon.stop_with(Signal::SIGKILL);

    // What a daemon killed inside RunPodSandbox leaves: a pod directory with a live
    // monitor, its namespace pins and its /dev/shm, but no record.
    let runtime = layout.open_runtime();
    let txn = runtime.store().write().unwrap();
    assert!(txn.pods().remove(&pod).unwrap());
    txn.commit().unwrap();
    drop(runtime);

    let _daemon = Daemon::start(&layout, &[]);
    assert!(
        !dir.exists(),
        "the unrecorded pod's directory is still there"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(u32::try_from(monitor).unwrap()) {
        assert!(
            Instant::now() < deadline,
            "monitor {monitor} of {pod} still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.lines().any(|l| l.contains(&pod)),
        "mounts of {pod} left: {mounts}"
    );
}

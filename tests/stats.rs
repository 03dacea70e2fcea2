//! Stats, metrics, events, resource updates and log reopening end to end: a real criusd,
//! a real registry, real monitors and real cgroups. Needs root.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use std::time::{Duration, Instant};

use common::{setup, Setup};
use crius::api;
use tokio_stream::StreamExt;
use tonic::Code;

/// Runs a pod and creates (not starts) a container running `script` in it.
async fn pod_with_container(s: &mut Setup, name: &str, script: &str) -> (String, String) {
    let (pod, config) = common::run_pod(s, name).await;
    let container = common::container_config(&s.image, "work", &["/bin/sh", "-c", script]);
    let id = common::create(s, &pod, &config, container).await;
    (pod, id)
}

async fn start(s: &mut Setup, id: &str) {
    common::start(&mut s.client, id).await;
}

async fn status(s: &mut Setup, id: &str) -> (api::ContainerStatus, String) {
    let r = s
        .client
        .runtime
        .container_status(api::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info = r.info.get("info").cloned().unwrap_or_default();
    (r.status.unwrap(), info)
}

async fn wait_state(s: &mut Setup, id: &str, state: api::ContainerState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, _) = status(s, id).await;
        if st.state == state as i32 {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never {state:?}: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn container_stats(s: &mut Setup, id: &str) -> api::ContainerStats {
    s.client
        .runtime
        .container_stats(api::ContainerStatsRequest {
            container_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
}

fn value(v: &Option<api::UInt64Value>) -> u64 {
    v.as_ref().map(|v| v.value).unwrap_or_default()
}

/// The memory limit file of the cgroup process `pid` is in (v1 or v2).
fn memory_limit_file(pid: u64) -> std::path::PathBuf {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return std::path::Path::new("/sys/fs/cgroup/memory")
                .join(path)
                .join("memory.limit_in_bytes");
        }
    }
    let v2 = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    std::path::Path::new("/sys/fs/cgroup")
        .join(v2.trim_start_matches('/'))
        .join("memory.max")
}

#[tokio::test]
async fn a_running_container_reports_cpu_memory_layer_and_metrics() {
    let Some(mut s) = setup("stats").await else {
        return;
    };
    // Write 1 MiB to the writable layer, burn CPU for a moment, then idle.
    let script = "head -c 1048576 /dev/zero > /blob; i=0; \
                  while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 300";
    let (pod, id) = pod_with_container(&mut s, "stats", script).await;
    start(&mut s, &id).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let first = container_stats(&mut s, &id).await;
    assert_eq!(first.attributes.as_ref().unwrap().id, id);
    let cpu = first.cpu.as_ref().unwrap();
    assert!(value(&cpu.usage_core_nano_seconds) > 0, "{first:?}");
    let memory = first.memory.as_ref().unwrap();
    assert!(value(&memory.working_set_bytes) > 0, "{first:?}");
    let layer = first.writable_layer.as_ref().unwrap();
    assert!(value(&layer.used_bytes) >= 1 << 20, "{layer:?}");
    assert!(value(&layer.inodes_used) >= 1, "{layer:?}");

    // A second sample over a second later carries a CPU rate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = container_stats(&mut s, &id).await;
    assert!(second.cpu.unwrap().usage_nano_cores.is_some());

    let listed = s
        .client
        .runtime
        .list_container_stats(api::ListContainerStatsRequest {
            filter: Some(api::ContainerStatsFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    let streamed: Vec<_> = s
        .client
        .runtime
        .stream_container_stats(api::StreamContainerStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(streamed.len(), 1);
    assert_eq!(streamed[0].as_ref().unwrap().container_stats.len(), 1);

    let pod_stats = s
        .client
        .runtime
        .pod_sandbox_stats(api::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = pod_stats.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(value(&linux.process.unwrap().process_count) >= 1);
    assert!(value(&linux.cpu.unwrap().usage_core_nano_seconds) > 0);
    let all = s
        .client
        .runtime
        .list_pod_sandbox_stats(api::ListPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);

    let descriptors = s
        .client
        .runtime
        .list_metric_descriptors(api::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    assert!(!descriptors.is_empty());
    let metrics = s
        .client
        .runtime
        .list_pod_sandbox_metrics(api::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    assert_eq!(metrics[0].pod_sandbox_id, pod);
    let container = &metrics[0].container_metrics[0];
    assert_eq!(container.container_id, id);
    let cpu = container
        .metrics
        .iter()
        .find(|m| m.name == "container_cpu_usage_seconds_total")
        .unwrap();
    let desc = descriptors.iter().find(|d| d.name == cpu.name).unwrap();
    assert_eq!(cpu.label_values.len(), desc.label_keys.len());
}

#[tokio::test]
async fn resources_update_reaches_the_cgroup_and_log_reopen_needs_a_running_container() {
    let Some(mut s) = setup("update").await else {
        return;
    };
    let (_pod, id) = pod_with_container(&mut s, "update", "sleep 300").await;
    start(&mut s, &id).await;
    wait_state(&mut s, &id, api::ContainerState::ContainerRunning).await;
    let (_, info) = status(&mut s, &id).await;
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let pid = info["pid"].as_u64().unwrap();

    let limit: i64 = 96 << 20;
    s.client
        .runtime
        .update_container_resources(api::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: limit,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let file = memory_limit_file(pid);
    let seen = std::fs::read_to_string(&file).unwrap();
    assert_eq!(seen.trim(), limit.to_string(), "{}", file.display());
    // ContainerStatus reports the resources as updated.
    let reported = s
        .client
        .runtime
        .container_status(api::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    assert_eq!(reported, Some(limit));
    // The new limit is what stats measure availability against.
    let stats = container_stats(&mut s, &id).await;
    let available = value(&stats.memory.unwrap().available_bytes);
    assert!(available > 0 && available <= limit as u64, "{available}");

    s.client
        .runtime
        .reopen_container_log(api::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    s.client
        .runtime
        .stop_container(api::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let err = s
        .client
        .runtime
        .reopen_container_log(api::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // An exited container's stats are zeros, not an error.
    let stats = container_stats(&mut s, &id).await;
    assert_eq!(value(&stats.cpu.unwrap().usage_core_nano_seconds), 0);
}

#[tokio::test]
async fn container_events_arrive_created_started_stopped_deleted() {
    let Some(mut s) = setup("events").await else {
        return;
    };
    let mut events = s
        .client
        .runtime
        .get_container_events(api::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let (pod, id) = pod_with_container(&mut s, "events", "exit 0").await;
    start(&mut s, &id).await;
    wait_state(&mut s, &id, api::ContainerState::ContainerExited).await;
    s.client
        .runtime
        .remove_container(api::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();

    use api::ContainerEventType as T;
    let mut seen = Vec::new();
    while seen.last() != Some(&T::ContainerDeletedEvent) {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        assert_eq!(event.container_id, id);
        let kind = T::try_from(event.container_event_type).unwrap();
        assert_eq!(event.pod_sandbox_status.as_ref().unwrap().id, pod);
        let listed = event.containers_statuses.iter().any(|c| c.id == id);
        assert_eq!(listed, kind != T::ContainerDeletedEvent, "{kind:?}");
        seen.push(kind);
    }
    assert_eq!(
        seen,
        [
            T::ContainerCreatedEvent,
            T::ContainerStartedEvent,
            T::ContainerStoppedEvent,
            T::ContainerDeletedEvent
        ]
    );
}

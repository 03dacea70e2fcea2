//! Stats and metrics RPCs of the RuntimeService: `ContainerStats`, `PodSandboxStats`,
//! their list and stream forms, and the cAdvisor-named metrics kubelet's CRI metrics
//! collector scrapes (`ListMetricDescriptors`, `ListPodSandboxMetrics`). All come from the
//! same domain stats. Network stats are not reported (the pod's interfaces are not
//! sampled yet).

use std::sync::Arc;

use crius_core::container::{ContainerFilter, ContainerStats, PodStats};
use crius_core::pod::PodFilter;
use crius_core::Runtime;

use super::{blocking, CriError};
use crate::api;

pub(crate) async fn container(
    rt: &Arc<Runtime>,
    id: String,
) -> Result<api::ContainerStatsResponse, CriError> {
    let rt = rt.clone();
    let s = blocking(move || rt.container_stats(&id).map_err(CriError::from)).await?;
    Ok(api::ContainerStatsResponse {
        stats: Some(container_stats(&s)),
    })
}

pub(crate) async fn list_containers(
    rt: &Arc<Runtime>,
    filter: Option<api::ContainerStatsFilter>,
) -> Result<Vec<api::ContainerStats>, CriError> {
    let f = filter.unwrap_or_default();
    let filter = ContainerFilter {
        id: Some(f.id).filter(|id| !id.is_empty()),
        pod_id: Some(f.pod_sandbox_id).filter(|id| !id.is_empty()),
        state: None,
        labels: f.label_selector.into_iter().collect(),
    };
    let rt = rt.clone();
    let list = blocking(move || rt.list_container_stats(&filter).map_err(CriError::from)).await?;
    Ok(list.iter().map(container_stats).collect())
}

pub(crate) async fn pod(
    rt: &Arc<Runtime>,
    id: String,
) -> Result<api::PodSandboxStatsResponse, CriError> {
    let rt = rt.clone();
    let s = blocking(move || rt.pod_stats(&id).map_err(CriError::from)).await?;
    Ok(api::PodSandboxStatsResponse {
        stats: Some(pod_stats(&s)),
    })
}

pub(crate) async fn list_pods(
    rt: &Arc<Runtime>,
    filter: Option<api::PodSandboxStatsFilter>,
) -> Result<Vec<api::PodSandboxStats>, CriError> {
    let rt = rt.clone();
    let list = blocking(move || pod_list(&rt, filter)).await?;
    Ok(list.iter().map(pod_stats).collect())
}

fn pod_list(
    rt: &Runtime,
    filter: Option<api::PodSandboxStatsFilter>,
) -> Result<Vec<PodStats>, CriError> {
    let f = filter.unwrap_or_default();
    let filter = PodFilter {
        id: Some(f.id).filter(|id| !id.is_empty()),
        state: None,
        labels: f.label_selector.into_iter().collect(),
    };
    Ok(rt.list_pod_stats(&filter)?)
}

fn value(v: u64) -> Option<api::UInt64Value> {
    Some(api::UInt64Value { value: v })
}

fn cpu(timestamp: i64, usage_ns: u64, nano_cores: Option<u64>) -> api::CpuUsage {
    api::CpuUsage {
        timestamp,
        usage_core_nano_seconds: value(usage_ns),
        usage_nano_cores: nano_cores.and_then(value),
        psi: None,
    }
}

fn container_stats(s: &ContainerStats) -> api::ContainerStats {
    api::ContainerStats {
        attributes: Some(api::ContainerAttributes {
            id: s.id.clone(),
            metadata: Some(api::ContainerMetadata {
                name: s.name.clone(),
                attempt: s.attempt,
            }),
            labels: s.labels.clone().into_iter().collect(),
            annotations: s.annotations.clone().into_iter().collect(),
        }),
        cpu: Some(cpu(s.timestamp_ns, s.cpu_usage_ns, s.cpu_nano_cores)),
        memory: Some(api::MemoryUsage {
            timestamp: s.timestamp_ns,
            working_set_bytes: value(s.memory_working_set_bytes),
            available_bytes: s.memory_available_bytes.and_then(value),
            usage_bytes: None,
            rss_bytes: value(s.memory_rss_bytes),
            page_faults: value(s.page_faults),
            major_page_faults: value(s.major_page_faults),
            psi: None,
        }),
        writable_layer: s.writable_layer.as_ref().map(|l| api::FilesystemUsage {
            timestamp: l.timestamp_ns,
            fs_id: Some(api::FilesystemIdentifier {
                mountpoint: l.mountpoint.display().to_string(),
            }),
            used_bytes: value(l.bytes),
            inodes_used: value(l.inodes),
        }),
        swap: None,
        io: None,
    }
}

fn pod_stats(s: &PodStats) -> api::PodSandboxStats {
    api::PodSandboxStats {
        attributes: Some(api::PodSandboxAttributes {
            id: s.id.clone(),
            metadata: Some(api::PodSandboxMetadata {
                name: s.name.clone(),
                uid: s.uid.clone(),
                namespace: s.namespace.clone(),
                attempt: s.attempt,
            }),
            labels: s.labels.clone().into_iter().collect(),
            annotations: s.annotations.clone().into_iter().collect(),
        }),
        linux: Some(api::LinuxPodSandboxStats {
            cpu: Some(cpu(s.timestamp_ns, s.cpu_usage_ns, s.cpu_nano_cores)),
            memory: Some(api::MemoryUsage {
                timestamp: s.timestamp_ns,
                working_set_bytes: value(s.memory_working_set_bytes),
                rss_bytes: value(s.memory_rss_bytes),
                page_faults: value(s.page_faults),
                major_page_faults: value(s.major_page_faults),
                ..Default::default()
            }),
            network: None,
            process: Some(api::ProcessUsage {
                timestamp: s.timestamp_ns,
                process_count: value(s.processes),
            }),
            containers: s.containers.iter().map(container_stats).collect(),
            io: None,
        }),
        windows: None,
    }
}

/// The label keys of every metric, as cAdvisor names them.
const LABEL_KEYS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// The figures one metric set is made of: a container's, or a pod's sums.
struct Sample<'a> {
    labels: [&'a str; 6],
    timestamp_ns: i64,
    cpu_usage_ns: u64,
    working_set: u64,
    rss: u64,
    memory_limit: u64,
    fs_usage: Option<u64>,
    processes: u64,
    oom_events: u64,
    start_ns: i64,
}

/// A metric kubelet may scrape: its cAdvisor name, help, type, and how to read it.
struct MetricDef {
    name: &'static str,
    help: &'static str,
    counter: bool,
    read: fn(&Sample<'_>) -> Option<u64>,
}

const NS_PER_S: u64 = 1_000_000_000;

fn secs(ns: i64) -> u64 {
    u64::try_from(ns).unwrap_or(0) / NS_PER_S
}

const METRICS: [MetricDef; 9] = [
    MetricDef {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative cpu time consumed in seconds.",
        counter: true,
        read: |s| Some(s.cpu_usage_ns / NS_PER_S),
    },
    MetricDef {
        name: "container_memory_working_set_bytes",
        help: "Current working set in bytes.",
        counter: false,
        read: |s| Some(s.working_set),
    },
    MetricDef {
        name: "container_memory_rss",
        help: "Size of RSS in bytes.",
        counter: false,
        read: |s| Some(s.rss),
    },
    MetricDef {
        name: "container_spec_memory_limit_bytes",
        help: "Memory limit for the container.",
        counter: false,
        read: |s| Some(s.memory_limit),
    },
    MetricDef {
        name: "container_fs_usage_bytes",
        help: "Number of bytes that are consumed by the container on this filesystem.",
        counter: false,
        read: |s| s.fs_usage,
    },
    MetricDef {
        name: "container_processes",
        help: "Number of processes running inside the container.",
        counter: false,
        read: |s| Some(s.processes),
    },
    MetricDef {
        name: "container_oom_events_total",
        help: "Count of out of memory events observed for the container.",
        counter: true,
        read: |s| Some(s.oom_events),
    },
    MetricDef {
        name: "container_start_time_seconds",
        help: "Start time of the container since unix epoch in seconds.",
        counter: false,
        read: |s| Some(secs(s.start_ns)),
    },
    MetricDef {
        name: "container_last_seen",
        help: "Last time a container was seen by the exporter.",
        counter: false,
        read: |s| Some(secs(s.timestamp_ns)),
    },
];

/// The metrics `ListPodSandboxMetrics` reports, each with [`LABEL_KEYS`].
pub(crate) fn descriptors() -> Vec<api::MetricDescriptor> {
    METRICS
        .iter()
        .map(|m| api::MetricDescriptor {
            name: m.name.to_string(),
            help: m.help.to_string(),
            label_keys: LABEL_KEYS.iter().map(|k| (*k).to_string()).collect(),
        })
        .collect()
}

/// Every pod's metrics: its own (container label empty) and its running containers'.
pub(crate) async fn pod_metrics(
    rt: &Arc<Runtime>,
) -> Result<Vec<api::PodSandboxMetrics>, CriError> {
    let rt = rt.clone();
    let pods = blocking(move || pod_list(&rt, None)).await?;
    Ok(pods.iter().map(pod_sandbox_metrics).collect())
}

fn pod_sandbox_metrics(p: &PodStats) -> api::PodSandboxMetrics {
    let pod = Sample {
        labels: ["", &p.id, "", &p.name, &p.namespace, &p.name],
        timestamp_ns: p.timestamp_ns,
        cpu_usage_ns: p.cpu_usage_ns,
        working_set: p.memory_working_set_bytes,
        rss: p.memory_rss_bytes,
        memory_limit: 0,
        fs_usage: None,
        processes: p.processes,
        oom_events: p.oom_events,
        start_ns: 0,
    };
    api::PodSandboxMetrics {
        pod_sandbox_id: p.id.clone(),
        metrics: metrics(&pod),
        container_metrics: p
            .containers
            .iter()
            .map(|c| api::ContainerMetrics {
                container_id: c.id.clone(),
                metrics: metrics(&Sample {
                    labels: [&c.name, &c.id, &c.image, &c.name, &p.namespace, &p.name],
                    timestamp_ns: c.timestamp_ns,
                    cpu_usage_ns: c.cpu_usage_ns,
                    working_set: c.memory_working_set_bytes,
                    rss: c.memory_rss_bytes,
                    memory_limit: c.memory_limit_bytes.unwrap_or(0),
                    fs_usage: c.writable_layer.as_ref().map(|l| l.bytes),
                    processes: c.processes,
                    oom_events: c.oom_events,
                    start_ns: c.started_at_ns,
                }),
            })
            .collect(),
    }
}

fn metrics(s: &Sample<'_>) -> Vec<api::Metric> {
    METRICS
        .iter()
        .filter_map(|m| {
            let v = (m.read)(s)?;
            Some(api::Metric {
                name: m.name.to_string(),
                timestamp: s.timestamp_ns,
                metric_type: if m.counter {
                    api::MetricType::Counter.into()
                } else {
                    api::MetricType::Gauge.into()
                },
                label_values: s.labels.iter().map(|l| (*l).to_string()).collect(),
                value: value(v),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_one_value_per_label_key() {
        let s = Sample {
            labels: ["c", "id", "img", "c", "ns", "pod"],
            timestamp_ns: 5_000_000_000,
            cpu_usage_ns: 3_500_000_000,
            working_set: 10,
            rss: 5,
            memory_limit: 0,
            fs_usage: Some(4096),
            processes: 1,
            oom_events: 0,
            start_ns: 1_000_000_000,
        };
        let list = metrics(&s);
        assert_eq!(list.len(), descriptors().len());
        for m in &list {
            assert_eq!(m.label_values.len(), LABEL_KEYS.len(), "{}", m.name);
        }
        let cpu = list
            .iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(cpu.value.as_ref().unwrap().value, 3);
        assert_eq!(cpu.metric_type, api::MetricType::Counter as i32);
    }
}

//! `container_stats`, `list_container_stats`, `pod_stats` and `list_pod_stats`: each
//! container's cgroup figures from its pod's monitor, plus what only criusd knows — the CPU
//! rate (the difference to the sample it kept) and the writable layer's size (walked at
//! most once per [`LAYER_TTL`] per container, so listing many containers stays cheap).
//!
//! A container that is not running has no cgroup to read: its figures are zeros, not an
//! error, as kubelet expects for containers that exited but are not removed yet.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crius_monitor::protocol::ContainerStats as MonitorStats;
use crius_monitor::MonitorClient;

use super::status::{ContainerFilter, ContainerState, ContainerStatus};
use crate::error::Result;
use crate::pod::remove::MONITOR_TIMEOUT;
use crate::pod::{PodFilter, PodStatus};
use crate::runtime::{now_ns, Runtime};

/// How long a writable layer's measured size is reused before it is walked again.
pub const LAYER_TTL: Duration = Duration::from_secs(10);

/// CPU samples closer together than this keep the previous rate: a rate over a few
/// milliseconds is noise.
const MIN_RATE_WINDOW_NS: i64 = 1_000_000_000;

/// Cache entries of containers not sampled for this long are dropped.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Space used by a container's writable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerUsage {
    /// The filesystem holding the layer (the snapshotter's root).
    pub mountpoint: PathBuf,
    pub bytes: u64,
    pub inodes: u64,
    /// When it was measured, ns since the epoch.
    pub timestamp_ns: i64,
}

/// One container's resource usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStats {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub running: bool,
    pub started_at_ns: i64,
    /// When the cgroup figures were read, ns since the epoch.
    pub timestamp_ns: i64,
    /// Total CPU time, ns.
    pub cpu_usage_ns: u64,
    /// CPU rate in nano-cores since the previous sample; `None` until there is one.
    pub cpu_nano_cores: Option<u64>,
    pub memory_working_set_bytes: u64,
    pub memory_rss_bytes: u64,
    pub page_faults: u64,
    /// Not reported by the cgroup layer yet: always 0.
    pub major_page_faults: u64,
    /// The memory limit of the container's spec, if any.
    pub memory_limit_bytes: Option<u64>,
    /// Limit minus working set, when a limit is known.
    pub memory_available_bytes: Option<u64>,
    pub processes: u64,
    pub oom_events: u64,
    /// `None` when the layer cannot be measured (its snapshot is gone).
    pub writable_layer: Option<LayerUsage>,
}

/// One pod's resource usage: the sum of its containers that have not exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStats {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub timestamp_ns: i64,
    pub cpu_usage_ns: u64,
    /// `None` until every container has a rate.
    pub cpu_nano_cores: Option<u64>,
    pub memory_working_set_bytes: u64,
    pub memory_rss_bytes: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub processes: u64,
    pub oom_events: u64,
    pub containers: Vec<ContainerStats>,
}

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    usage_ns: u64,
    timestamp_ns: i64,
    nano_cores: Option<u64>,
    seen: Instant,
}

/// What stats keep between calls: the last CPU sample and measured layer per container.
#[derive(Debug, Default)]
pub(crate) struct StatsCache {
    cpu: Mutex<HashMap<String, CpuSample>>,
    layers: Mutex<HashMap<String, (Instant, LayerUsage)>>,
}

impl StatsCache {
    /// The CPU rate of `id` given its new total, updating the kept sample.
    fn cpu_rate(&self, id: &str, usage_ns: u64, timestamp_ns: i64) -> Option<u64> {
        let mut samples = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
        samples.retain(|_, s| s.seen.elapsed() < FORGET_AFTER);
        let now = Instant::now();
        let Some(prev) = samples.get(id).copied() else {
            samples.insert(id.to_string(), sample(usage_ns, timestamp_ns, None, now));
            return None;
        };
        let window = timestamp_ns.saturating_sub(prev.timestamp_ns);
        if window < MIN_RATE_WINDOW_NS || usage_ns < prev.usage_ns {
            if usage_ns < prev.usage_ns {
                // A new cgroup under the same id (restart): start over.
                samples.insert(id.to_string(), sample(usage_ns, timestamp_ns, None, now));
                return None;
            }
            return prev.nano_cores;
        }
        let delta = u128::from(usage_ns - prev.usage_ns);
        let rate = delta * 1_000_000_000 / u128::from(window.unsigned_abs());
        let rate = u64::try_from(rate).unwrap_or(u64::MAX);
        samples.insert(
            id.to_string(),
            sample(usage_ns, timestamp_ns, Some(rate), now),
        );
        Some(rate)
    }

    /// The cached layer usage of `id`, or `measure()` when absent or older than the TTL.
    fn layer(&self, id: &str, measure: impl FnOnce() -> Option<LayerUsage>) -> Option<LayerUsage> {
        {
            let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, usage)) = layers.get(id) {
                if at.elapsed() < LAYER_TTL {
                    return Some(usage.clone());
                }
            }
        }
        // Measured without the lock: a walk must not hold up other containers' stats.
        let usage = measure()?;
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        layers.retain(|_, (at, _)| at.elapsed() < FORGET_AFTER);
        layers.insert(id.to_string(), (Instant::now(), usage.clone()));
        Some(usage)
    }
}

/// The sum of `containers` (the running containers of `pod`) as the pod's usage.
fn pod_sample(pod: PodStatus, containers: Vec<ContainerStats>) -> PodStats {
    let sum = |f: fn(&ContainerStats) -> u64| containers.iter().map(f).sum::<u64>();
    let nano_cores = containers
        .iter()
        .map(|c| c.cpu_nano_cores)
        .sum::<Option<u64>>();
    PodStats {
        timestamp_ns: now_ns(),
        cpu_usage_ns: sum(|c| c.cpu_usage_ns),
        cpu_nano_cores: nano_cores,
        memory_working_set_bytes: sum(|c| c.memory_working_set_bytes),
        memory_rss_bytes: sum(|c| c.memory_rss_bytes),
        page_faults: sum(|c| c.page_faults),
        major_page_faults: sum(|c| c.major_page_faults),
        processes: sum(|c| c.processes),
        oom_events: sum(|c| c.oom_events),
        id: pod.id,
        name: pod.name,
        uid: pod.uid,
        namespace: pod.namespace,
        attempt: pod.attempt,
        labels: pod.labels,
        annotations: pod.annotations,
        containers,
    }
}

fn sample(usage_ns: u64, timestamp_ns: i64, nano_cores: Option<u64>, seen: Instant) -> CpuSample {
    CpuSample {
        usage_ns,
        timestamp_ns,
        nano_cores,
        seen,
    }
}

impl Runtime {
    /// The usage of container `id` (full id or unique prefix).
    pub fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let record = self.refresh_container(self.find_container(id)?)?;
        let status = super::status::status(&record);
        let mut list = self.stats_of(vec![status]);
        list.pop()
            .ok_or_else(|| crate::Error::NotFound(format!("container {id:?} not found")))
    }

    /// The usage of the containers matching `filter` (its state is ignored).
    pub fn list_container_stats(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStats>> {
        let filter = ContainerFilter {
            state: None,
            ..filter.clone()
        };
        Ok(self.stats_of(self.stats_targets(&filter)?))
    }

    /// The usage of pod `id` (full id or unique prefix).
    pub fn pod_stats(&self, id: &str) -> Result<PodStats> {
        let pod = self.pod_status(id)?;
        let filter = ContainerFilter {
            pod_id: Some(pod.id.clone()),
            state: Some(ContainerState::Running),
            ..ContainerFilter::default()
        };
        let containers = self.stats_of(self.stats_targets(&filter)?);
        Ok(pod_sample(pod, containers))
    }

    /// The usage of the pods matching `filter` (its state is ignored). The containers are
    /// read from the store once for all pods, not once per pod.
    pub fn list_pod_stats(&self, filter: &PodFilter) -> Result<Vec<PodStats>> {
        let filter = PodFilter {
            state: None,
            ..filter.clone()
        };
        let pods = self.list_pods(&filter)?;
        let running = ContainerFilter {
            state: Some(ContainerState::Running),
            ..ContainerFilter::default()
        };
        let mut targets = self.stats_targets(&running)?;
        targets.retain(|c| pods.iter().any(|p| p.id == c.pod_id));
        let mut by_pod: HashMap<String, Vec<ContainerStats>> = HashMap::new();
        for stats in self.stats_of(targets) {
            by_pod.entry(stats.pod_id.clone()).or_default().push(stats);
        }
        Ok(pods
            .into_iter()
            .map(|pod| {
                let containers = by_pod.remove(&pod.id).unwrap_or_default();
                pod_sample(pod, containers)
            })
            .collect())
    }

    /// The containers matching `filter`, oldest first, with the spec summary stats read
    /// (the memory limit).
    fn stats_targets(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>> {
        let mut list: Vec<ContainerStatus> = self
            .matching_containers(filter)?
            .iter()
            .map(super::status::status)
            .collect();
        list.sort_by_key(|c| c.created_at_ns);
        Ok(list)
    }

    /// Stats of `containers`, asking each pod's monitor once over one connection.
    fn stats_of(&self, containers: Vec<ContainerStatus>) -> Vec<ContainerStats> {
        let mut monitors: HashMap<String, Option<MonitorClient>> = HashMap::new();
        containers
            .into_iter()
            .map(|c| {
                let raw = if c.state == ContainerState::Running {
                    let monitor = monitors.entry(c.pod_id.clone()).or_insert_with(|| {
                        let socket = self.pod_dir(&c.pod_id).join("monitor.sock");
                        MonitorClient::connect(&socket, MONITOR_TIMEOUT).ok()
                    });
                    monitor.as_mut().and_then(|m| match m.stats(&c.id) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            tracing::debug!(container_id = %c.id, error = %e, "no cgroup stats");
                            None
                        }
                    })
                } else {
                    None
                };
                self.container_sample(c, raw)
            })
            .collect()
    }

    fn container_sample(&self, c: ContainerStatus, raw: Option<MonitorStats>) -> ContainerStats {
        let raw = raw.unwrap_or(MonitorStats {
            cpu_usage_ns: 0,
            memory_working_set_bytes: 0,
            memory_rss_bytes: 0,
            page_faults: 0,
            pids: 0,
            oom_events: 0,
            timestamp_ns: now_ns(),
        });
        let running = c.state == ContainerState::Running;
        let cpu_nano_cores = if running {
            self.stats_cache()
                .cpu_rate(&c.id, raw.cpu_usage_ns, raw.timestamp_ns)
        } else {
            None
        };
        let memory_limit_bytes = c
            .spec_summary
            .resources
            .pointer("/memory/limit")
            .and_then(serde_json::Value::as_i64)
            .and_then(|l| u64::try_from(l).ok())
            .filter(|l| *l > 0);
        let writable_layer = self
            .stats_cache()
            .layer(&c.id, || self.measure_layer(&c.id));
        ContainerStats {
            running,
            started_at_ns: c.started_at_ns,
            timestamp_ns: raw.timestamp_ns,
            cpu_usage_ns: raw.cpu_usage_ns,
            cpu_nano_cores,
            memory_working_set_bytes: raw.memory_working_set_bytes,
            memory_rss_bytes: raw.memory_rss_bytes,
            page_faults: raw.page_faults,
            major_page_faults: 0,
            memory_limit_bytes,
            memory_available_bytes: memory_limit_bytes
                .map(|l| l.saturating_sub(raw.memory_working_set_bytes)),
            processes: raw.pids,
            oom_events: raw.oom_events,
            writable_layer,
            id: c.id,
            pod_id: c.pod_id,
            name: c.name,
            attempt: c.attempt,
            image: c.image,
            labels: c.labels,
            annotations: c.annotations,
        }
    }

    /// Walks the writable (upper) directory of container `id`'s rootfs snapshot.
    fn measure_layer(&self, id: &str) -> Option<LayerUsage> {
        let upper = self.images().rootfs_mounts(id).ok()?.upper_path()?;
        match crius_image::snapshot::disk_usage(&upper) {
            Ok(u) => Some(LayerUsage {
                mountpoint: self.images().snapshotter().root().to_path_buf(),
                bytes: u.bytes,
                inodes: u.inodes,
                timestamp_ns: now_ns(),
            }),
            Err(e) => {
                tracing::debug!(container_id = id, error = %e, "cannot measure writable layer");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rate_needs_a_previous_sample_a_second_apart() {
        let cache = StatsCache::default();
        let s: i64 = 1_000_000_000;
        let cpu_s: u64 = 1_000_000_000;
        assert_eq!(cache.cpu_rate("c", 0, 10 * s), None);
        // Too close to the first sample: still no rate.
        assert_eq!(cache.cpu_rate("c", 1_000, 10 * s + 1_000), None);
        // Half a core over two seconds.
        assert_eq!(cache.cpu_rate("c", cpu_s, 12 * s), Some(500_000_000));
        // A quick second call reuses the rate.
        assert_eq!(
            cache.cpu_rate("c", cpu_s + 5, 12 * s + 10),
            Some(500_000_000)
        );
        // A smaller total is a new cgroup: start over.
        assert_eq!(cache.cpu_rate("c", 10, 20 * s), None);
    }

    #[test]
    fn a_layer_is_measured_once_per_ttl() {
        let cache = StatsCache::default();
        let mut walks = 0;
        let usage = || LayerUsage {
            mountpoint: PathBuf::from("/x"),
            bytes: 4096,
            inodes: 1,
            timestamp_ns: 1,
        };
        for _ in 0..3 {
            let got = cache.layer("c", || {
                walks += 1;
                Some(usage())
            });
            assert_eq!(got, Some(usage()));
        }
        assert_eq!(walks, 1);
    }
}

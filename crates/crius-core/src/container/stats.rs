//! `container_stats`, `list_container_stats`, `pod_stats` and `list_pod_stats`: each
//! container's cgroup figures, read from cgroupfs with the monitor's own reader (no round
//! trip per container), plus what only criusd keeps — the CPU rate (the difference to the
//! sample it kept) and the writable layer's size (walked once when first asked, then
//! re-walked in the background at most once per [`LAYER_TTL`], so a list never waits for
//! a walk of a layer it has seen).
//!
//! A container that is not running has no cgroup to read: its figures are zeros, not an
//! error, as kubelet expects for containers that exited but are not removed yet.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crius_monitor::protocol::ContainerStats as MonitorStats;

use super::status::{ContainerFilter, ContainerState, ContainerStatus};
use crate::error::Result;
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
    layers: Arc<LayerCache>,
}

/// A deferred walk of one writable layer (owns what it needs, so it can run on the
/// background walker).
type LayerWalk = Box<dyn FnOnce() -> Option<LayerUsage> + Send>;

/// Measured layers, and the stale ones queued for the background walker: a stats call
/// never waits for a walk except a container's very first.
#[derive(Default)]
struct LayerCache {
    entries: Mutex<HashMap<String, (Instant, LayerUsage)>>,
    queue: Mutex<BTreeMap<String, LayerWalk>>,
    walking: AtomicBool,
}

impl std::fmt::Debug for LayerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerCache")
            .field("walking", &self.walking.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl LayerCache {
    fn store(&self, id: String, usage: Option<LayerUsage>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < FORGET_AFTER);
        match usage {
            Some(u) => {
                entries.insert(id, (Instant::now(), u));
            }
            // Its snapshot is gone: forget it rather than report a stale size forever.
            None => {
                entries.remove(&id);
            }
        }
    }

    /// Queues `walk` for `id` and makes sure one walker thread drains the queue.
    fn enqueue(self: &Arc<Self>, id: &str, walk: LayerWalk) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_insert(walk);
        if self.walking.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("layer-usage".into())
            .spawn(move || me.drain());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the layer usage walker");
            self.walking.store(false, Ordering::Release);
        }
    }

    /// Walks queued layers one at a time until the queue is empty.
    fn drain(&self) {
        loop {
            let next = self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_first();
            match next {
                Some((id, walk)) => self.store(id, walk()),
                None => {
                    self.walking.store(false, Ordering::Release);
                    // Something queued between the pop and the store: take it on, unless
                    // a new walker already did.
                    let empty = self
                        .queue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_empty();
                    if empty || self.walking.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
            }
        }
    }
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

    /// The layer usage of `id`: measured now the first time; afterwards the cached
    /// figure, re-measured in the background once older than [`LAYER_TTL`]. `prepare`
    /// says how to walk the layer (`None`: it has no layer).
    fn layer(&self, id: &str, prepare: impl FnOnce() -> Option<LayerWalk>) -> Option<LayerUsage> {
        let cached = self
            .layers
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        match cached {
            Some((at, usage)) if at.elapsed() < LAYER_TTL => Some(usage),
            Some((_, usage)) => {
                if let Some(walk) = prepare() {
                    self.layers.enqueue(id, walk);
                }
                Some(usage)
            }
            None => {
                // Walked without the lock: it must not hold up other containers' stats.
                let usage = prepare()?();
                self.layers.store(id.to_string(), usage.clone());
                usage
            }
        }
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
        let mut list = self.matching_containers(filter, super::status::status)?;
        list.sort_by_key(|c| c.created_at_ns);
        Ok(list)
    }

    /// Stats of `containers`, read straight from their cgroups with the monitor's own
    /// reader: a list costs file reads, not one monitor round trip per container.
    fn stats_of(&self, containers: Vec<ContainerStatus>) -> Vec<ContainerStats> {
        containers
            .into_iter()
            .map(|c| {
                let raw = if c.state == ContainerState::Running {
                    cgroup_usage(&c)
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
        let writable_layer = self.stats_cache().layer(&c.id, || self.layer_walk(&c.id));
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

    /// How to walk the writable (upper) directory of container `id`'s rootfs snapshot.
    fn layer_walk(&self, id: &str) -> Option<LayerWalk> {
        let upper = self.images().rootfs_mounts(id).ok()?.upper_path()?;
        let mountpoint = self.images().snapshotter().root().to_path_buf();
        let id = id.to_string();
        Some(Box::new(move || {
            match crius_image::snapshot::disk_usage(&upper) {
                Ok(u) => Some(LayerUsage {
                    mountpoint,
                    bytes: u.bytes,
                    inodes: u.inodes,
                    timestamp_ns: now_ns(),
                }),
                Err(e) => {
                    tracing::debug!(container_id = %id, error = %e, "cannot measure writable layer");
                    None
                }
            }
        }))
    }
}

/// The cgroup figures of running container `c`; `None` when it has no cgroup (yet).
fn cgroup_usage(c: &ContainerStatus) -> Option<MonitorStats> {
    let path = crate::cgroup::cgroup_dir(&c.spec_summary.cgroups_path)?;
    match crius_monitor::cgroup_stats::read_path(Path::new(&path)) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(container_id = %c.id, error = %e, "no cgroup stats");
            None
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

    fn usage(bytes: u64) -> LayerUsage {
        LayerUsage {
            mountpoint: PathBuf::from("/x"),
            bytes,
            inodes: 1,
            timestamp_ns: 1,
        }
    }

    #[test]
    fn a_layer_is_walked_once_then_served_from_the_cache() {
        let cache = StatsCache::default();
        let walks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..3 {
            let counter = walks.clone();
            let got = cache.layer("c", || {
                Some(Box::new(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Some(usage(4096))
                }))
            });
            assert_eq!(got, Some(usage(4096)));
        }
        assert_eq!(walks.load(Ordering::SeqCst), 1);
        assert_eq!(cache.layer("gone", || None), None);
    }

    #[test]
    fn stale_layers_are_refreshed_in_the_background_and_vanished_ones_forgotten() {
        let cache = StatsCache::default();
        cache.layers.store("a".into(), Some(usage(1)));
        cache.layers.store("b".into(), Some(usage(1)));
        cache.layers.enqueue("a", Box::new(|| Some(usage(2))));
        cache.layers.enqueue("b", Box::new(|| None));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let entries = cache.layers.entries.lock().unwrap().clone();
            let a = entries.get("a").map(|(_, u)| u.bytes);
            if a == Some(2) && !entries.contains_key("b") {
                break;
            }
            assert!(Instant::now() < deadline, "walker did not run: {entries:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

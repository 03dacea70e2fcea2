//! The scenarios. Each runs its sides alternately (A's batch, B's batch, A's batch, …) so
//! that drift of the machine (thermal, page cache, other load) hits both sides alike. A
//! side whose RPC fails stops there, with the failure in the report; the other goes on.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crius::api;
use tokio::task::JoinSet;

use crate::cri::{timed, PodNetwork, RpcError, StartTimes, StopTimes, Workload};
use crate::procs::{Memory, ProcNames, ProcSet};
use crate::report::{Report, SideInfo};

/// One runtime under test.
#[derive(Debug)]
pub struct Side {
    pub info: SideInfo,
    pub socket: PathBuf,
    pub proc_names: ProcNames,
    /// `None` when the side could not even be reached.
    pub work: Option<Workload>,
    /// Processes whose CPU time is charged to this side while its batches run.
    pub procs: Option<ProcSet>,
    pub cpu_seconds: f64,
}

impl Side {
    pub fn alive(&self) -> bool {
        self.info.failure.is_none() && self.work.is_some()
    }

    /// Stops this side with `why`, keeping the first reason.
    pub fn fail(&mut self, why: impl ToString) {
        self.info.failure.get_or_insert_with(|| why.to_string());
    }
}

/// Batch sizes: `iterations` split into rounds of at most `concurrency`.
pub fn rounds(iterations: usize, concurrency: usize) -> Vec<usize> {
    let c = concurrency.max(1);
    let mut left = iterations;
    let mut out = Vec::new();
    while left > 0 {
        out.push(left.min(c));
        left -= left.min(c);
    }
    out
}

/// Runs `op` `n` times concurrently; waits for all, then returns the first error if any
/// (so every created pod is known to the tracker before cleanup).
async fn batch<T, Fut>(n: usize, mut op: impl FnMut() -> Fut) -> Result<Vec<T>, RpcError>
where
    Fut: Future<Output = Result<T, RpcError>> + Send + 'static,
    T: Send + 'static,
{
    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(op());
    }
    let mut out = Vec::with_capacity(n);
    let mut error = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                error.get_or_insert(e);
            }
            Err(e) => {
                error.get_or_insert(RpcError::other("task", e.to_string()));
            }
        }
    }
    error.map_or(Ok(out), Err)
}

/// Runs `iterations` of `op` on every live side, alternating batches of `concurrency`.
/// Charges the CPU time of each side's [`ProcSet`] measured around its own batches.
pub async fn alternate<T, Fut>(
    sides: &mut [Side],
    iterations: usize,
    concurrency: usize,
    op: impl Fn(&Workload) -> Fut,
) -> Vec<Vec<T>>
where
    Fut: Future<Output = Result<T, RpcError>> + Send + 'static,
    T: Send + 'static,
{
    let mut out: Vec<Vec<T>> = sides.iter().map(|_| Vec::new()).collect();
    for n in rounds(iterations, concurrency) {
        for (i, side) in sides.iter_mut().enumerate() {
            let Some(work) = side.work.clone().filter(|_| side.alive()) else {
                continue;
            };
            let before = side.procs.as_ref().map(ProcSet::cpu_seconds);
            let result = batch(n, || op(&work)).await;
            if let (Some(before), Some(p)) = (before, &side.procs) {
                side.cpu_seconds += p.cpu_seconds() - before;
            }
            match result {
                Ok(v) => out[i].extend(v),
                Err(e) => side.fail(e),
            }
        }
    }
    out
}

/// Makes sure every live side has the bench image.
pub async fn ensure_images(sides: &mut [Side]) {
    for side in sides.iter_mut() {
        let Some(work) = side.work.clone().filter(|_| side.alive()) else {
            continue;
        };
        match work.ensure_image().await {
            Ok(Some(note)) => side.info.notes.push(note),
            Ok(None) => {}
            // Go on: the pod RPCs then say for themselves whether they work.
            Err(e) if e.code == tonic::Code::Unimplemented => {
                let note = format!("{e}; assuming {} is present", work.image);
                side.info.notes.push(note);
            }
            Err(e) => side.fail(e),
        }
    }
}

fn column<T>(per_side: &[Vec<T>], f: impl Fn(&T) -> Duration) -> Vec<Vec<Duration>> {
    per_side
        .iter()
        .map(|v| v.iter().map(&f).collect())
        .collect()
}

/// `Version` latency: works against any CRI runtime today.
pub async fn version(sides: &mut [Side], iterations: usize, concurrency: usize, r: &mut Report) {
    let samples = alternate(sides, iterations, concurrency, |w| {
        let mut client = w.client.clone();
        async move {
            let request = api::VersionRequest::default();
            Ok(timed("Version", client.runtime.version(request)).await?.1)
        }
    })
    .await;
    r.latency("Version", &samples);
}

/// Start and remove a one-container pod, timing the whole and each RPC.
pub async fn pod_start(sides: &mut [Side], iterations: usize, concurrency: usize, r: &mut Report) {
    ensure_images(sides).await;
    let cycles = alternate(sides, iterations, concurrency, |w| {
        let w = w.clone();
        async move {
            let (pod, start) = w.start_pod(1).await?;
            let stop = w.remove_pod(&pod.id).await?;
            Ok::<(StartTimes, StopTimes), RpcError>((start, stop))
        }
    })
    .await;
    r.latency(
        "pod start (run+create+start)",
        &column(&cycles, |c| c.0.total),
    );
    r.latency("  RunPodSandbox", &column(&cycles, |c| c.0.run_pod));
    let first = |v: &Vec<Duration>| v.first().copied().unwrap_or_default();
    r.latency(
        "  CreateContainer",
        &column(&cycles, |c| first(&c.0.create)),
    );
    r.latency("  StartContainer", &column(&cycles, |c| first(&c.0.start)));
    r.latency("  StopPodSandbox", &column(&cycles, |c| c.1.stop_pod));
    r.latency("  RemovePodSandbox", &column(&cycles, |c| c.1.remove_pod));
    r.latency(
        "whole cycle (start+stop+rm)",
        &column(&cycles, |c| c.0.total + c.1.stop_pod + c.1.remove_pod),
    );
}

/// RunPodSandbox of a pod with no container, the pod network on, then stop and remove it.
/// A pod without an IP fails the side: the comparison is only about pods with a network.
pub async fn pod_network(
    sides: &mut [Side],
    iterations: usize,
    concurrency: usize,
    r: &mut Report,
) {
    let cycles = alternate(sides, iterations, concurrency, |w| {
        let w = w.clone();
        async move {
            let (pod, start) = w.start_pod(0).await?;
            let network = w.network_of(&pod.id).await;
            let stop = w.remove_pod(&pod.id).await?;
            let network = network?;
            if network.ip.is_empty() {
                let msg = "the pod got no IP: is the runtime's pod network off?";
                return Err(RpcError::other("PodSandboxStatus", msg));
            }
            Ok::<(Duration, PodNetwork, StopTimes), RpcError>((start.run_pod, network, stop))
        }
    })
    .await;
    for (side, samples) in sides.iter_mut().zip(&cycles) {
        side.info.network = samples.iter().find_map(|c| c.1.network.clone());
    }
    r.latency("RunPodSandbox (network on)", &column(&cycles, |c| c.0));
    let setup: Vec<Vec<Duration>> = cycles
        .iter()
        .map(|v| v.iter().filter_map(|c| c.1.setup).collect())
        .collect();
    let rest: Vec<Vec<Duration>> = cycles
        .iter()
        .map(|v| {
            v.iter()
                .filter_map(|c| Some(c.0.saturating_sub(c.1.setup?)))
                .collect()
        })
        .collect();
    r.latency("  network setup (daemon)", &setup);
    r.latency("  the rest of RunPodSandbox", &rest);
    r.latency(
        "StopPodSandbox (network DEL)",
        &column(&cycles, |c| c.2.stop_pod),
    );
    r.latency("RemovePodSandbox", &column(&cycles, |c| c.2.remove_pod));
}

/// ExecSync `/bin/true` in one running container; latency and runtime CPU per 1000 execs.
pub async fn exec_sync(sides: &mut [Side], iterations: usize, concurrency: usize, r: &mut Report) {
    ensure_images(sides).await;
    for side in sides.iter_mut() {
        let Some(work) = side.work.as_mut().filter(|_| side.info.failure.is_none()) else {
            continue;
        };
        match work.start_pod(1).await {
            Ok((pod, _)) => work.exec_container = pod.containers.first().cloned(),
            Err(e) => {
                side.fail(e);
                continue;
            }
        }
        let procs = ProcSet::discover(&side.socket, &side.proc_names);
        side.info.processes = procs.runtime_names();
        side.procs = Some(procs);
    }
    let samples = alternate(sides, iterations, concurrency, |w| {
        let mut client = w.client.clone();
        let id = w.exec_container.clone().unwrap_or_default();
        async move {
            let request = api::ExecSyncRequest {
                container_id: id,
                cmd: vec!["/bin/true".into()],
                timeout: 30,
            };
            let (resp, took) = timed("ExecSync", client.runtime.exec_sync(request)).await?;
            if resp.exit_code != 0 {
                let msg = format!("/bin/true exited {}", resp.exit_code);
                return Err(RpcError::other("ExecSync", msg));
            }
            Ok(took)
        }
    })
    .await;
    r.latency("ExecSync /bin/true", &samples);
    let per_1000: Vec<Option<f64>> = sides
        .iter()
        .zip(&samples)
        .map(|(s, v)| {
            (s.procs.is_some() && !v.is_empty()).then(|| s.cpu_seconds / v.len() as f64 * 1000.0)
        })
        .collect();
    r.figure("runtime CPU per 1000 execs", "s", per_1000);
}

/// List RPCs with `sizes` containers present (in pods of `per_pod` containers).
pub async fn list(
    sides: &mut [Side],
    iterations: usize,
    concurrency: usize,
    sizes: &[usize],
    per_pod: usize,
    r: &mut Report,
) {
    ensure_images(sides).await;
    let mut present = vec![0usize; sides.len()];
    for &size in sizes {
        for (i, side) in sides.iter_mut().enumerate() {
            grow(side, &mut present[i], size, per_pod, concurrency).await;
        }
        for rpc in ListRpc::ALL {
            let (samples, errors) = alternate_row(sides, iterations, move |w| {
                let client = w.client.clone();
                rpc.call(client)
            })
            .await;
            r.latency_with_errors(format!("{} @{size}", rpc.name()), &samples, errors);
        }
    }
}

/// Like [`alternate`], but a side that fails here stays alive for the next rows: the
/// failure is returned for this row only (a runtime may lack one list RPC and not another).
async fn alternate_row<T, Fut>(
    sides: &mut [Side],
    iterations: usize,
    op: impl Fn(&Workload) -> Fut,
) -> (Vec<Vec<T>>, Vec<Option<String>>)
where
    Fut: Future<Output = Result<T, RpcError>> + Send + 'static,
    T: Send + 'static,
{
    let before: Vec<bool> = sides.iter().map(|s| s.info.failure.is_some()).collect();
    let samples = alternate(sides, iterations, 1, op).await;
    let errors = sides
        .iter_mut()
        .zip(before)
        .map(|(s, failed)| if failed { None } else { s.info.failure.take() })
        .collect();
    (samples, errors)
}

/// The list RPCs the `list` scenario times.
#[derive(Debug, Clone, Copy)]
enum ListRpc {
    Containers,
    PodSandbox,
    ContainerStats,
}

impl ListRpc {
    const ALL: [ListRpc; 3] = [
        ListRpc::Containers,
        ListRpc::PodSandbox,
        ListRpc::ContainerStats,
    ];

    fn name(self) -> &'static str {
        match self {
            ListRpc::Containers => "ListContainers",
            ListRpc::PodSandbox => "ListPodSandbox",
            ListRpc::ContainerStats => "ListContainerStats",
        }
    }

    async fn call(self, mut client: crius::client::CriClient) -> Result<Duration, RpcError> {
        let rt = &mut client.runtime;
        let took = match self {
            ListRpc::Containers => {
                let request = api::ListContainersRequest::default();
                timed(self.name(), rt.list_containers(request)).await?.1
            }
            ListRpc::PodSandbox => {
                let request = api::ListPodSandboxRequest::default();
                timed(self.name(), rt.list_pod_sandbox(request)).await?.1
            }
            ListRpc::ContainerStats => {
                let request = api::ListContainerStatsRequest::default();
                timed(self.name(), rt.list_container_stats(request))
                    .await?
                    .1
            }
        };
        Ok(took)
    }
}

/// Starts pods of up to `per_pod` running containers until `present` reaches `target`.
async fn grow(side: &mut Side, present: &mut usize, target: usize, per_pod: usize, c: usize) {
    while *present < target && side.alive() {
        let Some(work) = side.work.clone() else {
            return;
        };
        let pods_left = (target - *present).div_ceil(per_pod);
        let n = pods_left.min(c.max(1));
        let counts: Vec<usize> = (0..n)
            .map(|k| (target - *present - k * per_pod).min(per_pod))
            .collect();
        let mut set = JoinSet::new();
        for count in counts {
            let w = work.clone();
            set.spawn(async move { w.start_pod(count).await.map(|(p, _)| p.containers.len()) });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(added)) => *present += added,
                Ok(Err(e)) => side.fail(e),
                Err(e) => side.fail(e),
            }
        }
    }
}

/// RemoveImage then PullImage of the bench image; latency and MB/s.
pub async fn pull(sides: &mut [Side], iterations: usize, r: &mut Report) {
    let pulls = alternate(sides, iterations, 1, |w| {
        let mut client = w.client.clone();
        let spec = api::ImageSpec {
            image: w.image.clone(),
            ..Default::default()
        };
        async move {
            let remove = api::RemoveImageRequest {
                image: Some(spec.clone()),
            };
            match timed("RemoveImage", client.image.remove_image(remove)).await {
                Err(e) if e.code != tonic::Code::NotFound => return Err(e),
                _ => {}
            }
            let request = api::PullImageRequest {
                image: Some(spec.clone()),
                ..Default::default()
            };
            let (_, took) = timed("PullImage", client.image.pull_image(request)).await?;
            let status = api::ImageStatusRequest {
                image: Some(spec),
                verbose: false,
            };
            let (s, _) = timed("ImageStatus", client.image.image_status(status)).await?;
            Ok((took, s.image.map(|i| i.size).unwrap_or(0)))
        }
    })
    .await;
    let latencies = column(&pulls, |p| p.0);
    r.latency("PullImage", &latencies);
    let size = |v: &Vec<(Duration, u64)>| v.iter().map(|p| p.1).max().filter(|s| *s > 0);
    let mib: Vec<Option<f64>> = pulls
        .iter()
        .map(|v| size(v).map(|s| s as f64 / 1048576.0))
        .collect();
    r.figure("image size (ImageStatus)", "MiB", mib.clone());
    let rates = r
        .latencies
        .last()
        .map(|row| {
            row.sides
                .iter()
                .zip(&mib)
                .map(|(s, m)| Some(m.as_ref()? * 1.048576 / (s.as_ref()?.p50_ms / 1e3)))
                .collect()
        })
        .unwrap_or_default();
    r.figure("throughput at p50 (size / p50)", "MB/s", rates);
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Memory of one runtime at one moment.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    runtime: Memory,
    workload: Memory,
    daemon: Option<Memory>,
    processes: usize,
}

/// `None` when no process of the runtime is visible (unreachable or remote socket).
fn snapshot(side: &mut Side) -> Option<Snapshot> {
    let set = ProcSet::discover(&side.socket, &side.proc_names);
    if set.runtime.is_empty() {
        return None;
    }
    side.info.processes = set.runtime_names();
    let (runtime, workload) = set.memory();
    Some(Snapshot {
        runtime,
        workload,
        daemon: set.daemon.and_then(crate::procs::memory_of),
        processes: set.runtime.len(),
    })
}

/// Memory of the runtime (and of its workload) before any pod and with `pods` pods, and
/// the pod-start latency of the first tenth against the last tenth.
pub async fn density(sides: &mut [Side], pods: usize, concurrency: usize, r: &mut Report) {
    ensure_images(sides).await;
    let idle: Vec<Option<Snapshot>> = sides.iter_mut().map(snapshot).collect();
    let starts = alternate(sides, pods, concurrency, |w| {
        let w = w.clone();
        async move { Ok(w.start_pod(1).await?.1.total) }
    })
    .await;
    let window = (pods / 10).max(1);
    let head: Vec<Vec<Duration>> = starts.iter().map(|v| first_n(v, window)).collect();
    let tail: Vec<Vec<Duration>> = starts.iter().map(|v| last_n(v, window)).collect();
    r.latency(format!("pod start, pods 1..{window}"), &head);
    r.latency(format!("pod start, last {window} up to {pods}"), &tail);
    let full: Vec<Option<Snapshot>> = sides.iter_mut().map(snapshot).collect();
    let started: Vec<usize> = starts.iter().map(Vec::len).collect();
    memory_figures(r, &idle, &full, &started);
}

fn first_n(v: &[Duration], n: usize) -> Vec<Duration> {
    v.iter().take(n).copied().collect()
}

fn last_n(v: &[Duration], n: usize) -> Vec<Duration> {
    v.iter().skip(v.len().saturating_sub(n)).copied().collect()
}

fn memory_figures(
    r: &mut Report,
    idle: &[Option<Snapshot>],
    full: &[Option<Snapshot>],
    started: &[usize],
) {
    let each = |f: &dyn Fn(usize) -> Option<f64>| (0..idle.len()).map(f).collect::<Vec<_>>();
    let at = |v: &[Option<Snapshot>], i: usize| v.get(i).copied().flatten();
    let per_pod = |i: usize, kib: fn(&Snapshot) -> u64| {
        let (before, now, n) = (at(idle, i)?, at(full, i)?, *started.get(i)?);
        (n > 0).then(|| mib(kib(&now).saturating_sub(kib(&before))) / n as f64)
    };
    let daemon_idle = each(&|i| Some(mib(at(idle, i)?.daemon?.rss_kib)));
    r.figure("daemon RSS, idle", "MiB", daemon_idle);
    let rss_idle = each(&|i| Some(mib(at(idle, i)?.runtime.rss_kib)));
    r.figure("runtime RSS, idle", "MiB", rss_idle);
    // Figures taken with the pods only compare when every side started as many.
    let paired = started.windows(2).all(|w| w[0] == w[1]);
    let mut add = |metric: &str, unit: &str, values: Vec<Option<f64>>| {
        if paired {
            r.figure(metric, unit, values);
        } else {
            r.figure_unpaired(metric, unit, values);
        }
    };
    add(
        "runtime RSS, with the pods",
        "MiB",
        each(&|i| Some(mib(at(full, i)?.runtime.rss_kib))),
    );
    add(
        "runtime PSS, with the pods",
        "MiB",
        each(&|i| Some(mib(at(full, i)?.runtime.pss_kib))),
    );
    add(
        "runtime RSS per pod",
        "MiB",
        each(&|i| per_pod(i, |s| s.runtime.rss_kib)),
    );
    add(
        "runtime PSS per pod",
        "MiB",
        each(&|i| per_pod(i, |s| s.runtime.pss_kib)),
    );
    let workload = each(&|i| per_pod(i, |s| s.workload.pss_kib));
    add("workload PSS per pod (pause, sleep)", "MiB", workload);
    let count = each(&|i| Some(at(full, i)?.processes as f64));
    add("runtime processes with the pods", "count", count);
    let pods = each(&|i| started.get(i).map(|n| *n as f64));
    r.figure("pods started", "count", pods);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_split_iterations_into_batches_of_concurrency() {
        assert_eq!(rounds(10, 3), vec![3, 3, 3, 1]);
        assert_eq!(rounds(4, 4), vec![4]);
        assert_eq!(rounds(2, 8), vec![2]);
        assert_eq!(rounds(3, 0), vec![1, 1, 1]);
        assert!(rounds(0, 1).is_empty());
    }

    #[test]
    fn density_windows_take_the_first_and_last_samples() {
        let v: Vec<Duration> = (1..=5).map(Duration::from_millis).collect();
        assert_eq!(first_n(&v, 2), v[..2].to_vec());
        assert_eq!(last_n(&v, 2), v[3..].to_vec());
        assert_eq!(last_n(&v, 9), v);
        assert!(first_n(&[], 3).is_empty());
    }

    #[tokio::test]
    async fn batch_returns_every_result_or_the_first_error() {
        let ok = batch(3, || async { Ok::<u8, RpcError>(1) })
            .await
            .expect("all ok");
        assert_eq!(ok, vec![1, 1, 1]);
        let mut k = 0;
        let failed = batch(3, || {
            k += 1;
            let fail = k == 2;
            async move {
                if fail {
                    Err(RpcError::other("Version", "boom"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(failed.expect_err("one failed").rpc, "Version");
    }
}

//! The bench's CRI workload: timed calls, pods with sleep containers, and cleanup.
//!
//! Every pod the bench creates carries the label `crius-bench.run=<run id>` and is
//! recorded in a [`Tracker`], so [`Workload::cleanup`] can remove it even when a scenario
//! fails half-way or is interrupted.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crius::api;
use crius::client::CriClient;

/// The label every bench pod carries; its value is the run id.
pub const RUN_LABEL: &str = "crius-bench.run";

/// A failed RPC, named so the report can say "crius: RunPodSandbox unimplemented".
#[derive(Debug, Clone)]
pub struct RpcError {
    pub rpc: &'static str,
    pub code: tonic::Code,
    pub message: String,
}

impl RpcError {
    fn new(rpc: &'static str, status: &tonic::Status) -> RpcError {
        RpcError {
            rpc,
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// A failure that is not an RPC status (bad response, timeout).
    pub fn other(rpc: &'static str, message: impl Into<String>) -> RpcError {
        RpcError {
            rpc,
            code: tonic::Code::Unknown,
            message: message.into(),
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            tonic::Code::Unimplemented => write!(f, "{} unimplemented", self.rpc),
            code => write!(f, "{} failed: {:?}: {}", self.rpc, code, self.message),
        }
    }
}

/// How long one RPC may take before the bench gives up on it.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(120);

/// Awaits one RPC, timing it.
pub async fn timed<T, F>(rpc: &'static str, call: F) -> Result<(T, Duration), RpcError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let start = Instant::now();
    match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok((response.into_inner(), start.elapsed())),
        Ok(Err(status)) => Err(RpcError::new(rpc, &status)),
        Err(_) => Err(RpcError::other(
            rpc,
            format!("no answer in {RPC_TIMEOUT:?}"),
        )),
    }
}

/// Pod ids created and not yet removed.
#[derive(Debug, Clone, Default)]
pub struct Tracker(Arc<Mutex<BTreeSet<String>>>);

impl Tracker {
    fn add(&self, id: &str) {
        if let Ok(mut ids) = self.0.lock() {
            ids.insert(id.to_string());
        }
    }
    fn remove(&self, id: &str) {
        if let Ok(mut ids) = self.0.lock() {
            ids.remove(id);
        }
    }
    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut ids| std::mem::take(&mut *ids).into_iter().collect())
            .unwrap_or_default()
    }
}

/// Latencies of the steps of starting one pod.
#[derive(Debug, Clone, Default)]
pub struct StartTimes {
    pub run_pod: Duration,
    pub create: Vec<Duration>,
    pub start: Vec<Duration>,
    pub total: Duration,
}

/// Latencies of the steps of removing one pod.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopTimes {
    pub stop_pod: Duration,
    pub remove_pod: Duration,
}

/// A started pod.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub containers: Vec<String>,
}

/// A pod's network as its runtime reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodNetwork {
    /// The primary IP; empty when the pod got none (the runtime's pod network is off).
    pub ip: String,
    /// `cni:<name>` or `builtin:<bridge>` (crius only).
    pub network: Option<String>,
    /// Time the runtime spent attaching the network (crius only).
    pub setup: Option<Duration>,
}

impl PodNetwork {
    fn from_status(ip: String, info: &serde_json::Value) -> PodNetwork {
        let net = &info["network"];
        PodNetwork {
            ip,
            network: net["network"].as_str().map(str::to_string),
            setup: net["setupMicros"].as_u64().map(Duration::from_micros),
        }
    }
}

/// Everything needed to create bench pods on one side; cheap to clone into tasks.
#[derive(Debug, Clone)]
pub struct Workload {
    pub client: CriClient,
    pub image: String,
    pub run_id: String,
    pub cgroup_parent: String,
    pub log_root: PathBuf,
    pub tracker: Tracker,
    /// The running container `exec-sync` execs into.
    pub exec_container: Option<String>,
    counter: Arc<AtomicUsize>,
}

impl Workload {
    pub fn new(client: CriClient, image: &str, run_id: &str, cgroup_parent: &str) -> Workload {
        Workload {
            client,
            image: image.to_string(),
            run_id: run_id.to_string(),
            cgroup_parent: cgroup_parent.to_string(),
            log_root: PathBuf::from("/var/log/crius-bench").join(run_id),
            tracker: Tracker::default(),
            exec_container: None,
            counter: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn pod_config(&self) -> api::PodSandboxConfig {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("bench-{n}");
        let uid = format!("{}-{n}", self.run_id);
        let namespaces = Some(api::NamespaceOption {
            network: api::NamespaceMode::Pod as i32,
            pid: api::NamespaceMode::Container as i32,
            ipc: api::NamespaceMode::Pod as i32,
            ..Default::default()
        });
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: "crius-bench".into(),
                attempt: 0,
            }),
            hostname: name.clone(),
            log_directory: self
                .log_root
                .join(format!("crius-bench_{name}_{uid}"))
                .to_string_lossy()
                .into_owned(),
            labels: HashMap::from([(RUN_LABEL.to_string(), self.run_id.clone())]),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: namespaces,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container_config(&self, index: usize) -> api::ContainerConfig {
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: format!("sleep-{index}"),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["/bin/sleep".into()],
            args: vec!["86400".into()],
            log_path: format!("sleep-{index}.log"),
            labels: HashMap::from([(RUN_LABEL.to_string(), self.run_id.clone())]),
            linux: Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        network: api::NamespaceMode::Pod as i32,
                        pid: api::NamespaceMode::Container as i32,
                        ipc: api::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox, then CreateContainer + StartContainer for each of `containers`
    /// sleep containers. On failure the pod is removed before the error is returned.
    pub async fn start_pod(&self, containers: usize) -> Result<(Pod, StartTimes), RpcError> {
        let config = self.pod_config();
        if !config.log_directory.is_empty() {
            // kubelet creates the pod log directory before RunPodSandbox; so does the bench.
            std::fs::create_dir_all(&config.log_directory)
                .map_err(|e| RpcError::other("RunPodSandbox", format!("log dir: {e}")))?;
        }
        let mut client = self.client.clone();
        let request = api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let (r, run_pod) = timed("RunPodSandbox", client.runtime.run_pod_sandbox(request)).await?;
        self.tracker.add(&r.pod_sandbox_id);
        let mut pod = Pod {
            id: r.pod_sandbox_id,
            containers: Vec::new(),
        };
        let mut times = StartTimes {
            run_pod,
            ..StartTimes::default()
        };
        for index in 0..containers {
            if let Err(e) = self
                .add_container(&config, &mut pod, &mut times, index)
                .await
            {
                let _ = self.remove_pod(&pod.id).await;
                return Err(e);
            }
        }
        times.total = times.run_pod + times.create.iter().sum() + times.start.iter().sum();
        Ok((pod, times))
    }

    async fn add_container(
        &self,
        sandbox: &api::PodSandboxConfig,
        pod: &mut Pod,
        times: &mut StartTimes,
        index: usize,
    ) -> Result<(), RpcError> {
        let mut client = self.client.clone();
        let request = api::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(self.container_config(index)),
            sandbox_config: Some(sandbox.clone()),
        };
        let (c, create) =
            timed("CreateContainer", client.runtime.create_container(request)).await?;
        pod.containers.push(c.container_id.clone());
        times.create.push(create);
        let request = api::StartContainerRequest {
            container_id: c.container_id,
        };
        let (_, start) = timed("StartContainer", client.runtime.start_container(request)).await?;
        times.start.push(start);
        Ok(())
    }

    /// StopPodSandbox + RemovePodSandbox (which removes the pod's containers too).
    pub async fn remove_pod(&self, id: &str) -> Result<StopTimes, RpcError> {
        let mut client = self.client.clone();
        let stop = api::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        let (_, stop_pod) = timed("StopPodSandbox", client.runtime.stop_pod_sandbox(stop)).await?;
        let remove = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        let (_, remove_pod) = timed(
            "RemovePodSandbox",
            client.runtime.remove_pod_sandbox(remove),
        )
        .await?;
        self.tracker.remove(id);
        Ok(StopTimes {
            stop_pod,
            remove_pod,
        })
    }

    /// What the runtime says about pod `id`'s network: its IP, and from verbose info (crius
    /// puts it under `network`) the network that attached it and how long that took.
    pub async fn network_of(&self, id: &str) -> Result<PodNetwork, RpcError> {
        let mut client = self.client.clone();
        let request = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        let (status, _) = timed(
            "PodSandboxStatus",
            client.runtime.pod_sandbox_status(request),
        )
        .await?;
        let ip = status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        let info: serde_json::Value = status
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or_default();
        Ok(PodNetwork::from_status(ip, &info))
    }

    /// Makes sure the bench image is present, pulling it (untimed) when it is not.
    /// Returns a note when it had to pull.
    pub async fn ensure_image(&self) -> Result<Option<String>, RpcError> {
        let mut client = self.client.clone();
        let spec = api::ImageSpec {
            image: self.image.clone(),
            ..Default::default()
        };
        let status = api::ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        };
        let (s, _) = timed("ImageStatus", client.image.image_status(status)).await?;
        if s.image.is_some() {
            return Ok(None);
        }
        let pull = api::PullImageRequest {
            image: Some(spec),
            ..Default::default()
        };
        let (_, took) = timed("PullImage", client.image.pull_image(pull)).await?;
        Ok(Some(format!("pulled {} first ({took:.1?})", self.image)))
    }

    /// Removes every pod this run created: the tracked ones, then any pod carrying this
    /// run's label (one whose RunPodSandbox answer was lost to an interrupt). Returns
    /// the number removed and the first error met.
    pub async fn cleanup(&self) -> (usize, Option<RpcError>) {
        let mut ids: BTreeSet<String> = self.tracker.take().into_iter().collect();
        let mut client = self.client.clone();
        let filter = api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                label_selector: HashMap::from([(RUN_LABEL.to_string(), self.run_id.clone())]),
                ..Default::default()
            }),
        };
        let mut first_error = None;
        match timed("ListPodSandbox", client.runtime.list_pod_sandbox(filter)).await {
            Ok((list, _)) => ids.extend(list.items.into_iter().map(|p| p.id)),
            Err(e) if ids.is_empty() || e.code == tonic::Code::Unimplemented => {}
            Err(e) => first_error = Some(e),
        }
        let mut removed = 0;
        for id in ids {
            match self.remove_pod(&id).await {
                Ok(_) => removed += 1,
                Err(e) if e.code == tonic::Code::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.log_root);
        (removed, first_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unimplemented_reads_as_the_rpc_name_and_unimplemented() {
        let e = RpcError::new(
            "RunPodSandbox",
            &tonic::Status::unimplemented("RunPodSandbox is not implemented yet"),
        );
        assert_eq!(e.to_string(), "RunPodSandbox unimplemented");
    }

    #[test]
    fn crius_verbose_info_gives_the_network_and_its_setup_time() {
        let info = serde_json::json!({"network": {"network": "cni:bench", "setupMicros": 1500}});
        let n = PodNetwork::from_status("10.0.0.2".into(), &info);
        assert_eq!(n.network.as_deref(), Some("cni:bench"));
        assert_eq!(n.setup, Some(Duration::from_micros(1500)));
        let other = PodNetwork::from_status("10.0.0.3".into(), &serde_json::Value::Null);
        assert_eq!((other.network, other.setup), (None, None));
    }

    #[test]
    fn other_errors_carry_code_and_message() {
        let e = RpcError::new("PullImage", &tonic::Status::not_found("no such image"));
        assert_eq!(e.to_string(), "PullImage failed: NotFound: no such image");
    }
}

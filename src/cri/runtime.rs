//! `runtime.v1.RuntimeService`: one line per RPC; conversions at the bottom.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crius_core::Runtime;
use tonic::{Request, Response, Status};

use super::{handle, unimplemented, Ids, ResponseStream};
use crate::api;
use crate::api::runtime_service_server::RuntimeService as Service;

/// The RuntimeService over the domain runtime.
#[derive(Debug, Clone)]
pub struct RuntimeService {
    runtime: Arc<Runtime>,
    /// The effective daemon configuration, reported by verbose `Status`.
    config_json: Arc<String>,
}

impl RuntimeService {
    pub fn new(runtime: Arc<Runtime>, config_json: String) -> Self {
        Self {
            runtime,
            config_json: Arc::new(config_json),
        }
    }
}

/// The future type `#[async_trait]` methods return.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// RPCs whose issues have not landed: each answers `Unimplemented` naming itself.
macro_rules! not_yet {
    ($($rpc:ident: $method:ident($req:ident) -> $resp:ident;)*) => {$(
        // Written in the shape `#[async_trait]` produces: the attribute runs before this
        // macro expands, so it cannot rewrite an `async fn` written here.
        fn $method<'life0, 'async_trait>(
            &'life0 self,
            _: Request<api::$req>,
        ) -> BoxFuture<'async_trait, Result<Response<api::$resp>, Status>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(unimplemented(stringify!($rpc)))
        }
    )*};
}

/// Streaming RPCs whose issues have not landed.
macro_rules! not_yet_streaming {
    ($($rpc:ident: $method:ident($req:ident) -> $stream:ident<$item:ident>;)*) => {$(
        type $stream = ResponseStream<api::$item>;
        fn $method<'life0, 'async_trait>(
            &'life0 self,
            _: Request<api::$req>,
        ) -> BoxFuture<'async_trait, Result<Response<Self::$stream>, Status>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(unimplemented(stringify!($rpc)))
        }
    )*};
}

#[tonic::async_trait]
impl Service for RuntimeService {
    async fn version(
        &self,
        _: Request<api::VersionRequest>,
    ) -> Result<Response<api::VersionResponse>, Status> {
        handle("Version", Ids::default(), async {
            Ok(version(&self.runtime))
        })
        .await
    }

    async fn status(
        &self,
        r: Request<api::StatusRequest>,
    ) -> Result<Response<api::StatusResponse>, Status> {
        handle("Status", Ids::default(), async {
            Ok(self.status_response(r.into_inner().verbose))
        })
        .await
    }

    async fn runtime_config(
        &self,
        _: Request<api::RuntimeConfigRequest>,
    ) -> Result<Response<api::RuntimeConfigResponse>, Status> {
        handle("RuntimeConfig", Ids::default(), async {
            Ok(runtime_config(&self.runtime))
        })
        .await
    }

    async fn update_runtime_config(
        &self,
        r: Request<api::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<api::UpdateRuntimeConfigResponse>, Status> {
        let cidr = r
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr);
        handle("UpdateRuntimeConfig", Ids::default(), async {
            self.runtime
                .update_pod_cidr(cidr.as_deref().unwrap_or_default())?;
            Ok(api::UpdateRuntimeConfigResponse {})
        })
        .await
    }

    not_yet! {
        RunPodSandbox: run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        StopPodSandbox: stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        RemovePodSandbox: remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        PodSandboxStatus: pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        ListPodSandbox: list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        CreateContainer: create_container(CreateContainerRequest) -> CreateContainerResponse;
        StartContainer: start_container(StartContainerRequest) -> StartContainerResponse;
        StopContainer: stop_container(StopContainerRequest) -> StopContainerResponse;
        RemoveContainer: remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        ListContainers: list_containers(ListContainersRequest) -> ListContainersResponse;
        ContainerStatus: container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        UpdateContainerResources: update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        ReopenContainerLog: reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        ExecSync: exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        Exec: exec(ExecRequest) -> ExecResponse;
        Attach: attach(AttachRequest) -> AttachResponse;
        PortForward: port_forward(PortForwardRequest) -> PortForwardResponse;
        ContainerStats: container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        ListContainerStats: list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        PodSandboxStats: pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        ListPodSandboxStats: list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        CheckpointContainer: checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        ListMetricDescriptors: list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        ListPodSandboxMetrics: list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        UpdatePodSandboxResources: update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse;
    }

    not_yet_streaming! {
        GetContainerEvents: get_container_events(GetEventsRequest) -> GetContainerEventsStream<ContainerEventResponse>;
        StreamPodSandboxes: stream_pod_sandboxes(StreamPodSandboxesRequest) -> StreamPodSandboxesStream<StreamPodSandboxesResponse>;
        StreamContainers: stream_containers(StreamContainersRequest) -> StreamContainersStream<StreamContainersResponse>;
        StreamContainerStats: stream_container_stats(StreamContainerStatsRequest) -> StreamContainerStatsStream<StreamContainerStatsResponse>;
        StreamPodSandboxStats: stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> StreamPodSandboxStatsStream<StreamPodSandboxStatsResponse>;
        StreamPodSandboxMetrics: stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) -> StreamPodSandboxMetricsStream<StreamPodSandboxMetricsResponse>;
    }
}

impl RuntimeService {
    fn status_response(&self, verbose: bool) -> api::StatusResponse {
        let status = self.runtime.status();
        let mut info = std::collections::HashMap::new();
        if verbose {
            info.extend(status.info);
            info.insert("config".to_string(), self.config_json.to_string());
        }
        api::StatusResponse {
            status: Some(api::RuntimeStatus {
                conditions: status.conditions.into_iter().map(condition).collect(),
            }),
            info,
            runtime_handlers: status.handlers.into_iter().map(handler).collect(),
            features: Some(api::RuntimeFeatures {
                supplemental_groups_policy: false,
                user_namespaces_host_network: false,
            }),
        }
    }
}

fn version(runtime: &Runtime) -> api::VersionResponse {
    let v = runtime.version();
    api::VersionResponse {
        // The CRI's own version field; kubelet and crictl print it as "Version".
        version: "0.1.0".to_string(),
        runtime_name: v.runtime_name.to_string(),
        runtime_version: v.runtime_version.to_string(),
        runtime_api_version: v.runtime_api_version.to_string(),
    }
}

fn runtime_config(runtime: &Runtime) -> api::RuntimeConfigResponse {
    let driver = match runtime.cgroup_driver() {
        crius_core::CgroupDriver::Systemd => api::CgroupDriver::Systemd,
        crius_core::CgroupDriver::Cgroupfs => api::CgroupDriver::Cgroupfs,
    };
    api::RuntimeConfigResponse {
        linux: Some(api::LinuxRuntimeConfiguration {
            cgroup_driver: driver.into(),
        }),
    }
}

fn condition(c: crius_core::Condition) -> api::RuntimeCondition {
    api::RuntimeCondition {
        r#type: c.kind.to_string(),
        status: c.status,
        reason: c.reason,
        message: c.message,
    }
}

fn handler(h: crius_core::RuntimeHandler) -> api::RuntimeHandler {
    api::RuntimeHandler {
        name: h.name,
        features: Some(api::RuntimeHandlerFeatures {
            recursive_read_only_mounts: h.recursive_read_only_mounts,
            user_namespaces: h.user_namespaces,
        }),
    }
}

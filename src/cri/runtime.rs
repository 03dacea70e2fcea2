//! `runtime.v1.RuntimeService`: one line per RPC; conversions at the bottom.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crius_core::Runtime;
use crius_stream::StreamServer;
use tonic::{Request, Response, Status};

use super::{container, events, handle, pod, stats, stream, unimplemented, Ids, ResponseStream};
use crate::api;
use crate::api::runtime_service_server::RuntimeService as Service;

/// The RuntimeService over the domain runtime.
#[derive(Debug, Clone)]
pub struct RuntimeService {
    runtime: Arc<Runtime>,
    /// Issues the URLs `Exec`, `Attach` and `PortForward` return.
    streams: Arc<StreamServer>,
    /// The effective daemon configuration, reported by verbose `Status`.
    config_json: Arc<String>,
}

impl RuntimeService {
    pub fn new(runtime: Arc<Runtime>, streams: Arc<StreamServer>, config_json: String) -> Self {
        Self {
            runtime,
            streams,
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

    async fn run_pod_sandbox(
        &self,
        r: Request<api::RunPodSandboxRequest>,
    ) -> Result<Response<api::RunPodSandboxResponse>, Status> {
        let r = r.into_inner();
        let name = r
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        handle(
            "RunPodSandbox",
            Ids {
                pod: &name,
                ..Ids::default()
            },
            pod::run(&self.runtime, r),
        )
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<api::StopPodSandboxRequest>,
    ) -> Result<Response<api::StopPodSandboxResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        handle(
            "StopPodSandbox",
            Ids {
                pod: &id.clone(),
                ..Ids::default()
            },
            pod::stop(&self.runtime, id),
        )
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<api::RemovePodSandboxRequest>,
    ) -> Result<Response<api::RemovePodSandboxResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        handle(
            "RemovePodSandbox",
            Ids {
                pod: &id.clone(),
                ..Ids::default()
            },
            pod::remove(&self.runtime, id),
        )
        .await
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<api::PodSandboxStatusRequest>,
    ) -> Result<Response<api::PodSandboxStatusResponse>, Status> {
        let r = r.into_inner();
        handle(
            "PodSandboxStatus",
            Ids {
                pod: &r.pod_sandbox_id.clone(),
                ..Ids::default()
            },
            pod::status(&self.runtime, r),
        )
        .await
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<api::ListPodSandboxRequest>,
    ) -> Result<Response<api::ListPodSandboxResponse>, Status> {
        let filter = r.into_inner().filter;
        handle("ListPodSandbox", Ids::default(), async {
            Ok(api::ListPodSandboxResponse {
                items: pod::list(&self.runtime, filter).await?,
            })
        })
        .await
    }

    type StreamPodSandboxesStream = ResponseStream<api::StreamPodSandboxesResponse>;
    async fn stream_pod_sandboxes(
        &self,
        r: Request<api::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let filter = r.into_inner().filter;
        handle("StreamPodSandboxes", Ids::default(), async {
            let items = pod::list(&self.runtime, filter).await?;
            Ok(batches(items, |items| api::StreamPodSandboxesResponse {
                pod_sandboxes: items,
            }))
        })
        .await
    }

    async fn create_container(
        &self,
        r: Request<api::CreateContainerRequest>,
    ) -> Result<Response<api::CreateContainerResponse>, Status> {
        let r = r.into_inner();
        handle(
            "CreateContainer",
            Ids {
                pod: &r.pod_sandbox_id.clone(),
                ..Ids::default()
            },
            container::create(&self.runtime, r),
        )
        .await
    }

    async fn start_container(
        &self,
        r: Request<api::StartContainerRequest>,
    ) -> Result<Response<api::StartContainerResponse>, Status> {
        let id = r.into_inner().container_id;
        handle(
            "StartContainer",
            Ids {
                container: &id.clone(),
                ..Ids::default()
            },
            container::start(&self.runtime, id),
        )
        .await
    }

    async fn stop_container(
        &self,
        r: Request<api::StopContainerRequest>,
    ) -> Result<Response<api::StopContainerResponse>, Status> {
        let r = r.into_inner();
        handle(
            "StopContainer",
            Ids {
                container: &r.container_id.clone(),
                ..Ids::default()
            },
            container::stop(&self.runtime, r),
        )
        .await
    }

    async fn remove_container(
        &self,
        r: Request<api::RemoveContainerRequest>,
    ) -> Result<Response<api::RemoveContainerResponse>, Status> {
        let id = r.into_inner().container_id;
        handle(
            "RemoveContainer",
            Ids {
                container: &id.clone(),
                ..Ids::default()
            },
            container::remove(&self.runtime, id),
        )
        .await
    }

    async fn container_status(
        &self,
        r: Request<api::ContainerStatusRequest>,
    ) -> Result<Response<api::ContainerStatusResponse>, Status> {
        let r = r.into_inner();
        handle(
            "ContainerStatus",
            Ids {
                container: &r.container_id.clone(),
                ..Ids::default()
            },
            container::status(&self.runtime, r),
        )
        .await
    }

    async fn list_containers(
        &self,
        r: Request<api::ListContainersRequest>,
    ) -> Result<Response<api::ListContainersResponse>, Status> {
        let filter = r.into_inner().filter;
        handle("ListContainers", Ids::default(), async {
            Ok(api::ListContainersResponse {
                containers: container::list(&self.runtime, filter).await?,
            })
        })
        .await
    }

    type StreamContainersStream = ResponseStream<api::StreamContainersResponse>;
    async fn stream_containers(
        &self,
        r: Request<api::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let filter = r.into_inner().filter;
        handle("StreamContainers", Ids::default(), async {
            let items = container::list(&self.runtime, filter).await?;
            Ok(batches(items, |items| api::StreamContainersResponse {
                containers: items,
            }))
        })
        .await
    }

    async fn exec_sync(
        &self,
        r: Request<api::ExecSyncRequest>,
    ) -> Result<Response<api::ExecSyncResponse>, Status> {
        let r = r.into_inner();
        handle(
            "ExecSync",
            Ids {
                container: &r.container_id.clone(),
                ..Ids::default()
            },
            container::exec_sync(&self.runtime, r),
        )
        .await
    }

    async fn update_container_resources(
        &self,
        r: Request<api::UpdateContainerResourcesRequest>,
    ) -> Result<Response<api::UpdateContainerResourcesResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        handle(
            "UpdateContainerResources",
            Ids {
                container: &id,
                ..Ids::default()
            },
            container::update_resources(&self.runtime, r),
        )
        .await
    }

    async fn reopen_container_log(
        &self,
        r: Request<api::ReopenContainerLogRequest>,
    ) -> Result<Response<api::ReopenContainerLogResponse>, Status> {
        let id = r.into_inner().container_id;
        handle(
            "ReopenContainerLog",
            Ids {
                container: &id.clone(),
                ..Ids::default()
            },
            container::reopen_log(&self.runtime, id),
        )
        .await
    }

    async fn update_pod_sandbox_resources(
        &self,
        r: Request<api::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<api::UpdatePodSandboxResourcesResponse>, Status> {
        let r = r.into_inner();
        let id = r.pod_sandbox_id.clone();
        handle(
            "UpdatePodSandboxResources",
            Ids {
                pod: &id,
                ..Ids::default()
            },
            pod::update_resources(&self.runtime, r),
        )
        .await
    }

    async fn container_stats(
        &self,
        r: Request<api::ContainerStatsRequest>,
    ) -> Result<Response<api::ContainerStatsResponse>, Status> {
        let id = r.into_inner().container_id;
        handle(
            "ContainerStats",
            Ids {
                container: &id.clone(),
                ..Ids::default()
            },
            stats::container(&self.runtime, id),
        )
        .await
    }

    async fn list_container_stats(
        &self,
        r: Request<api::ListContainerStatsRequest>,
    ) -> Result<Response<api::ListContainerStatsResponse>, Status> {
        let filter = r.into_inner().filter;
        handle("ListContainerStats", Ids::default(), async {
            Ok(api::ListContainerStatsResponse {
                stats: stats::list_containers(&self.runtime, filter).await?,
            })
        })
        .await
    }

    type StreamContainerStatsStream = ResponseStream<api::StreamContainerStatsResponse>;
    async fn stream_container_stats(
        &self,
        r: Request<api::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let filter = r.into_inner().filter;
        handle("StreamContainerStats", Ids::default(), async {
            let items = stats::list_containers(&self.runtime, filter).await?;
            Ok(batches(items, |items| api::StreamContainerStatsResponse {
                container_stats: items,
            }))
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<api::PodSandboxStatsRequest>,
    ) -> Result<Response<api::PodSandboxStatsResponse>, Status> {
        let id = r.into_inner().pod_sandbox_id;
        handle(
            "PodSandboxStats",
            Ids {
                pod: &id.clone(),
                ..Ids::default()
            },
            stats::pod(&self.runtime, id),
        )
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<api::ListPodSandboxStatsRequest>,
    ) -> Result<Response<api::ListPodSandboxStatsResponse>, Status> {
        let filter = r.into_inner().filter;
        handle("ListPodSandboxStats", Ids::default(), async {
            Ok(api::ListPodSandboxStatsResponse {
                stats: stats::list_pods(&self.runtime, filter).await?,
            })
        })
        .await
    }

    type StreamPodSandboxStatsStream = ResponseStream<api::StreamPodSandboxStatsResponse>;
    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<api::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let filter = r.into_inner().filter;
        handle("StreamPodSandboxStats", Ids::default(), async {
            let items = stats::list_pods(&self.runtime, filter).await?;
            Ok(batches(items, |items| api::StreamPodSandboxStatsResponse {
                pod_sandbox_stats: items,
            }))
        })
        .await
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<api::ListMetricDescriptorsRequest>,
    ) -> Result<Response<api::ListMetricDescriptorsResponse>, Status> {
        handle("ListMetricDescriptors", Ids::default(), async {
            Ok(api::ListMetricDescriptorsResponse {
                descriptors: stats::descriptors(),
            })
        })
        .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<api::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<api::ListPodSandboxMetricsResponse>, Status> {
        handle("ListPodSandboxMetrics", Ids::default(), async {
            Ok(api::ListPodSandboxMetricsResponse {
                pod_metrics: stats::pod_metrics(&self.runtime).await?,
            })
        })
        .await
    }

    type StreamPodSandboxMetricsStream = ResponseStream<api::StreamPodSandboxMetricsResponse>;
    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<api::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        handle("StreamPodSandboxMetrics", Ids::default(), async {
            let items = stats::pod_metrics(&self.runtime).await?;
            Ok(batches(items, |items| {
                api::StreamPodSandboxMetricsResponse {
                    pod_sandbox_metrics: items,
                }
            }))
        })
        .await
    }

    type GetContainerEventsStream = ResponseStream<api::ContainerEventResponse>;
    async fn get_container_events(
        &self,
        _: Request<api::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        handle("GetContainerEvents", Ids::default(), async {
            Ok(events::subscribe(&self.runtime))
        })
        .await
    }

    async fn exec(
        &self,
        r: Request<api::ExecRequest>,
    ) -> Result<Response<api::ExecResponse>, Status> {
        let r = r.into_inner();
        handle(
            "Exec",
            Ids {
                container: &r.container_id.clone(),
                ..Ids::default()
            },
            stream::exec(&self.runtime, &self.streams, r),
        )
        .await
    }

    async fn attach(
        &self,
        r: Request<api::AttachRequest>,
    ) -> Result<Response<api::AttachResponse>, Status> {
        let r = r.into_inner();
        handle(
            "Attach",
            Ids {
                container: &r.container_id.clone(),
                ..Ids::default()
            },
            stream::attach(&self.runtime, &self.streams, r),
        )
        .await
    }

    async fn port_forward(
        &self,
        r: Request<api::PortForwardRequest>,
    ) -> Result<Response<api::PortForwardResponse>, Status> {
        let r = r.into_inner();
        handle(
            "PortForward",
            Ids {
                pod: &r.pod_sandbox_id.clone(),
                ..Ids::default()
            },
            stream::port_forward(&self.runtime, &self.streams, r),
        )
        .await
    }

    not_yet! {
        CheckpointContainer: checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
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

/// Items per message of the `Stream*` list RPCs: 10,000 containers never come near the
/// 16 MiB gRPC message limit.
const STREAM_BATCH: usize = 500;

/// `items` as a stream of responses of at most [`STREAM_BATCH`] items each.
fn batches<T: Clone + Send + 'static, R: Send + 'static>(
    items: Vec<T>,
    wrap: impl Fn(Vec<T>) -> R,
) -> ResponseStream<R> {
    let responses: Vec<Result<R, Status>> = items
        .chunks(STREAM_BATCH)
        .map(|c| Ok(wrap(c.to_vec())))
        .collect();
    Box::pin(tokio_stream::iter(responses))
}

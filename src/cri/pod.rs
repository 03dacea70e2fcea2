//! Pod RPCs of the RuntimeService: request → domain call → response.

use crius_core::pod::{PodFilter, PodState, PodStatus};
use crius_core::Runtime;
use std::sync::Arc;

use super::{blocking, convert, CriError};
use crate::api;

pub(crate) async fn run(
    rt: &Arc<Runtime>,
    r: api::RunPodSandboxRequest,
) -> Result<api::RunPodSandboxResponse, CriError> {
    let config = convert::pod_config(r.config.unwrap_or_default(), r.runtime_handler)?;
    let rt = rt.clone();
    let id = blocking(move || rt.run_pod(config).map_err(CriError::from)).await?;
    Ok(api::RunPodSandboxResponse { pod_sandbox_id: id })
}

pub(crate) async fn stop(
    rt: &Arc<Runtime>,
    id: String,
) -> Result<api::StopPodSandboxResponse, CriError> {
    let rt = rt.clone();
    blocking(move || rt.stop_pod(&id).map_err(CriError::from)).await?;
    Ok(api::StopPodSandboxResponse {})
}

pub(crate) async fn remove(
    rt: &Arc<Runtime>,
    id: String,
) -> Result<api::RemovePodSandboxResponse, CriError> {
    let rt = rt.clone();
    blocking(move || rt.remove_pod(&id).map_err(CriError::from)).await?;
    Ok(api::RemovePodSandboxResponse {})
}

pub(crate) async fn status(
    rt: &Arc<Runtime>,
    r: api::PodSandboxStatusRequest,
) -> Result<api::PodSandboxStatusResponse, CriError> {
    let rt = rt.clone();
    let id = r.pod_sandbox_id;
    let pod = blocking(move || rt.pod_status(&id).map_err(CriError::from)).await?;
    let info = if r.verbose {
        std::collections::HashMap::from([("info".to_string(), pod.info.to_string())])
    } else {
        Default::default()
    };
    Ok(api::PodSandboxStatusResponse {
        status: Some(pod_status(&pod)),
        info,
        containers_statuses: Vec::new(),
        timestamp: crius_core::now_ns(),
    })
}

pub(crate) async fn list(
    rt: &Arc<Runtime>,
    filter: Option<api::PodSandboxFilter>,
) -> Result<Vec<api::PodSandbox>, CriError> {
    let filter = filter.map(pod_filter).transpose()?.unwrap_or_default();
    let rt = rt.clone();
    let pods = blocking(move || rt.list_pods(&filter).map_err(CriError::from)).await?;
    Ok(pods.iter().map(pod_sandbox).collect())
}

fn pod_filter(f: api::PodSandboxFilter) -> Result<PodFilter, CriError> {
    let state = match f.state {
        None => None,
        Some(s) => Some(match api::PodSandboxState::try_from(s.state) {
            Ok(api::PodSandboxState::SandboxReady) => PodState::Ready,
            Ok(api::PodSandboxState::SandboxNotready) => PodState::NotReady,
            Err(_) => {
                return Err(CriError::InvalidArgument(format!(
                    "filter.state: unknown state {}",
                    s.state
                )))
            }
        }),
    };
    Ok(PodFilter {
        id: Some(f.id).filter(|id| !id.is_empty()),
        state,
        labels: f.label_selector.into_iter().collect(),
    })
}

fn metadata(p: &PodStatus) -> api::PodSandboxMetadata {
    api::PodSandboxMetadata {
        name: p.name.clone(),
        uid: p.uid.clone(),
        namespace: p.namespace.clone(),
        attempt: p.attempt,
    }
}

fn state(p: &PodStatus) -> i32 {
    match p.state {
        PodState::Ready => api::PodSandboxState::SandboxReady.into(),
        PodState::NotReady => api::PodSandboxState::SandboxNotready.into(),
    }
}

fn pod_sandbox(p: &PodStatus) -> api::PodSandbox {
    api::PodSandbox {
        id: p.id.clone(),
        metadata: Some(metadata(p)),
        state: state(p),
        created_at: p.created_at_ns,
        labels: p.labels.clone().into_iter().collect(),
        annotations: p.annotations.clone().into_iter().collect(),
        runtime_handler: p.runtime_handler.clone(),
    }
}

pub(crate) fn pod_status(p: &PodStatus) -> api::PodSandboxStatus {
    let mode = |host: bool, pod: bool| -> i32 {
        if host {
            api::NamespaceMode::Node.into()
        } else if pod {
            api::NamespaceMode::Pod.into()
        } else {
            api::NamespaceMode::Container.into()
        }
    };
    let mut ips = p.ips.iter();
    api::PodSandboxStatus {
        id: p.id.clone(),
        metadata: Some(metadata(p)),
        state: state(p),
        created_at: p.created_at_ns,
        network: Some(api::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| api::PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(api::LinuxPodSandboxStatus {
            namespaces: Some(api::Namespace {
                options: Some(api::NamespaceOption {
                    network: mode(p.host_network, true),
                    pid: mode(p.host_pid, p.share_pid),
                    ipc: mode(p.host_ipc, true),
                    target_id: String::new(),
                    userns_options: Some(api::UserNamespace {
                        mode: if p.user_namespace {
                            api::NamespaceMode::Pod.into()
                        } else {
                            api::NamespaceMode::Node.into()
                        },
                        uids: Vec::new(),
                        gids: Vec::new(),
                    }),
                }),
            }),
        }),
        labels: p.labels.clone().into_iter().collect(),
        annotations: p.annotations.clone().into_iter().collect(),
        runtime_handler: p.runtime_handler.clone(),
    }
}

pub(crate) async fn update_resources(
    rt: &Arc<Runtime>,
    r: api::UpdatePodSandboxResourcesRequest,
) -> Result<api::UpdatePodSandboxResourcesResponse, CriError> {
    let overhead = r.overhead.map(convert::resources);
    let resources = r.resources.map(convert::resources);
    let rt = rt.clone();
    blocking(move || {
        rt.update_pod_resources(&r.pod_sandbox_id, overhead.as_ref(), resources.as_ref())
            .map_err(CriError::from)
    })
    .await?;
    Ok(api::UpdatePodSandboxResourcesResponse {})
}

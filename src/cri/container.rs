//! Container RPCs of the RuntimeService: request → domain call → response.

use std::sync::Arc;
use std::time::Duration;

use crius_core::container::{ContainerFilter, ContainerState, ContainerStatus};
use crius_core::Runtime;

use super::{blocking, convert, CriError};
use crate::api;

/// The most output `ExecSync` keeps per stream, so a flood cannot exhaust criusd.
pub(crate) const EXEC_OUTPUT_CAP: u64 = 16 * 1024 * 1024;

pub(crate) async fn create(
    rt: &Arc<Runtime>,
    r: api::CreateContainerRequest,
) -> Result<api::CreateContainerResponse, CriError> {
    let config = convert::container_config(r.config.unwrap_or_default())?;
    let pod_id = r.pod_sandbox_id;
    if pod_id.is_empty() {
        return Err(CriError::InvalidArgument(
            "pod_sandbox_id is required".into(),
        ));
    }
    let rt = rt.clone();
    let id = blocking(move || rt.create_container(&pod_id, config).map_err(CriError::from)).await?;
    Ok(api::CreateContainerResponse { container_id: id })
}

pub(crate) async fn start(
    rt: &Arc<Runtime>,
    id: String,
) -> Result<api::StartContainerResponse, CriError> {
    let rt = rt.clone();
    blocking(move || rt.start_container(&id).map_err(CriError::from)).await?;
    Ok(api::StartContainerResponse {})
}

pub(crate) async fn stop(
    rt: &Arc<Runtime>,
    r: api::StopContainerRequest,
) -> Result<api::StopContainerResponse, CriError> {
    let rt = rt.clone();
    let timeout = Duration::from_secs(u64::try_from(r.timeout).unwrap_or(0));
    blocking(move || {
        rt.stop_container(&r.container_id, timeout)
            .map_err(CriError::from)
    })
    .await?;
    Ok(api::StopContainerResponse {})
}

pub(crate) async fn remove(
    rt: &Arc<Runtime>,
    id: String,
) -> Result<api::RemoveContainerResponse, CriError> {
    let rt = rt.clone();
    blocking(move || rt.remove_container(&id).map_err(CriError::from)).await?;
    Ok(api::RemoveContainerResponse {})
}

pub(crate) async fn exec_sync(
    rt: &Arc<Runtime>,
    r: api::ExecSyncRequest,
) -> Result<api::ExecSyncResponse, CriError> {
    let rt = rt.clone();
    let timeout = Duration::from_secs(u64::try_from(r.timeout).unwrap_or(0));
    let out = blocking(move || {
        rt.exec_sync(&r.container_id, r.cmd, timeout, EXEC_OUTPUT_CAP)
            .map_err(CriError::from)
    })
    .await?;
    Ok(api::ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}

pub(crate) async fn status(
    rt: &Arc<Runtime>,
    r: api::ContainerStatusRequest,
) -> Result<api::ContainerStatusResponse, CriError> {
    let rt = rt.clone();
    let id = r.container_id;
    let verbose = r.verbose;
    let (c, spec) = blocking(move || {
        let c = rt.container_status(&id)?;
        // The OCI spec is read only for verbose callers: it is large (seccomp profile).
        let spec = if verbose {
            rt.container_spec(&c.id)?
        } else {
            serde_json::Value::Null
        };
        Ok::<_, CriError>((c, spec))
    })
    .await?;
    let info = if verbose {
        let info = serde_json::json!({ "pid": c.pid, "runtimeSpec": spec });
        std::collections::HashMap::from([("info".to_string(), info.to_string())])
    } else {
        Default::default()
    };
    Ok(api::ContainerStatusResponse {
        status: Some(container_status(&c)),
        info,
    })
}

pub(crate) async fn list(
    rt: &Arc<Runtime>,
    filter: Option<api::ContainerFilter>,
) -> Result<Vec<api::Container>, CriError> {
    let filter = filter
        .map(container_filter)
        .transpose()?
        .unwrap_or_default();
    let rt = rt.clone();
    let list = blocking(move || rt.list_containers(&filter).map_err(CriError::from)).await?;
    Ok(list.into_iter().map(container).collect())
}

fn container_filter(f: api::ContainerFilter) -> Result<ContainerFilter, CriError> {
    let state = match f.state {
        None => None,
        Some(s) => Some(match api::ContainerState::try_from(s.state) {
            Ok(api::ContainerState::ContainerCreated) => ContainerState::Created,
            Ok(api::ContainerState::ContainerRunning) => ContainerState::Running,
            Ok(api::ContainerState::ContainerExited) => ContainerState::Exited,
            Ok(api::ContainerState::ContainerUnknown) => ContainerState::Unknown,
            Err(_) => {
                return Err(CriError::InvalidArgument(format!(
                    "filter.state: unknown state {}",
                    s.state
                )))
            }
        }),
    };
    Ok(ContainerFilter {
        id: Some(f.id).filter(|id| !id.is_empty()),
        pod_id: Some(f.pod_sandbox_id).filter(|id| !id.is_empty()),
        state,
        labels: f.label_selector.into_iter().collect(),
    })
}

fn state(c: &ContainerStatus) -> i32 {
    match c.state {
        ContainerState::Created => api::ContainerState::ContainerCreated.into(),
        ContainerState::Running => api::ContainerState::ContainerRunning.into(),
        ContainerState::Exited => api::ContainerState::ContainerExited.into(),
        ContainerState::Unknown => api::ContainerState::ContainerUnknown.into(),
    }
}

fn image_spec(c: &ContainerStatus) -> api::ImageSpec {
    api::ImageSpec {
        image: c.image.clone(),
        user_specified_image: c.image.clone(),
        ..Default::default()
    }
}

fn container(c: ContainerStatus) -> api::Container {
    let image = image_spec(&c);
    let state = state(&c);
    api::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.pod_id.clone(),
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt: c.attempt,
        }),
        image: Some(image),
        image_id: c.image_ref.clone(),
        image_ref: c.image_ref,
        state,
        created_at: c.created_at_ns,
        labels: c.labels.into_iter().collect(),
        annotations: c.annotations.into_iter().collect(),
    }
}

pub(crate) fn container_status(c: &ContainerStatus) -> api::ContainerStatus {
    let user = c.user().unwrap_or_default();
    api::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt: c.attempt,
        }),
        state: state(c),
        created_at: c.created_at_ns,
        started_at: c.started_at_ns,
        finished_at: c.finished_at_ns,
        exit_code: c.exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_ref.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: c.labels.clone().into_iter().collect(),
        annotations: c.annotations.clone().into_iter().collect(),
        mounts: c.mounts().into_iter().map(mount).collect(),
        log_path: c.log_path.clone(),
        resources: c.resources().map(|r| api::ContainerResources {
            linux: Some(linux_resources(&r)),
            windows: None,
        }),
        image_id: c.image_ref.clone(),
        user: Some(api::ContainerUser {
            linux: Some(api::LinuxContainerUser {
                uid: user.uid,
                gid: user.gid,
                supplemental_groups: user.supplemental_groups,
            }),
        }),
        stop_signal: 0,
    }
}

pub(crate) async fn update_resources(
    rt: &Arc<Runtime>,
    r: api::UpdateContainerResourcesRequest,
) -> Result<api::UpdateContainerResourcesResponse, CriError> {
    let resources = convert::resources(r.linux.unwrap_or_default());
    let rt = rt.clone();
    blocking(move || {
        rt.update_container_resources(&r.container_id, &resources)
            .map_err(CriError::from)
    })
    .await?;
    Ok(api::UpdateContainerResourcesResponse {})
}

pub(crate) async fn reopen_log(
    rt: &Arc<Runtime>,
    id: String,
) -> Result<api::ReopenContainerLogResponse, CriError> {
    let rt = rt.clone();
    blocking(move || rt.reopen_container_log(&id).map_err(CriError::from)).await?;
    Ok(api::ReopenContainerLogResponse {})
}

fn mount(m: crius_core::container::config::Mount) -> api::Mount {
    use crius_core::container::config::Propagation;
    let propagation = match m.propagation {
        Propagation::Private => api::MountPropagation::PropagationPrivate,
        Propagation::HostToContainer => api::MountPropagation::PropagationHostToContainer,
        Propagation::Bidirectional => api::MountPropagation::PropagationBidirectional,
    };
    let (image, image_sub_path) = match m.image {
        Some(v) => (
            Some(api::ImageSpec {
                image: v.image,
                ..Default::default()
            }),
            v.sub_path.display().to_string(),
        ),
        None => (None, String::new()),
    };
    api::Mount {
        container_path: m.container_path.display().to_string(),
        host_path: m.host_path.display().to_string(),
        readonly: m.readonly,
        recursive_read_only: m.recursive_read_only,
        propagation: propagation.into(),
        image,
        image_sub_path,
        uid_mappings: m.uid_mappings.iter().map(id_mapping).collect(),
        gid_mappings: m.gid_mappings.iter().map(id_mapping).collect(),
        ..Default::default()
    }
}

fn id_mapping(m: &crius_core::pod::config::IdMapping) -> api::IdMapping {
    api::IdMapping {
        host_id: m.host_id,
        container_id: m.container_id,
        length: m.length,
    }
}

fn linux_resources(r: &crius_core::container::config::Resources) -> api::LinuxContainerResources {
    api::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(page_size, limit)| api::HugepageLimit {
                page_size: page_size.clone(),
                limit: *limit,
            })
            .collect(),
        unified: r.unified.clone().into_iter().collect(),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
    }
}

//! `GetContainerEvents`: the domain's container events as a server stream, each carrying
//! the pod's status and the statuses of all its containers, which is what kubelet's
//! evented PLEG rebuilds the pod from.
//!
//! A subscriber that falls behind by more than the domain's event queue gets an `Aborted`
//! status and its stream ends: kubelet then relists, which is the only way to be sure
//! nothing was missed.

use std::sync::Arc;

use crius_core::container::ContainerFilter;
use crius_core::events::{ContainerEvent, ContainerEventKind};
use crius_core::Runtime;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tonic::Status;

use super::{blocking, container, pod, CriError, ResponseStream};
use crate::api;

/// Responses built ahead of a slow reader.
const AHEAD: usize = 16;

/// The stream of container events from now on.
pub(crate) fn subscribe(rt: &Arc<Runtime>) -> ResponseStream<api::ContainerEventResponse> {
    let mut events = rt.events().subscribe();
    let (tx, rx) = mpsc::channel(AHEAD);
    let rt = rt.clone();
    tokio::spawn(async move {
        loop {
            let reply = match events.recv().await {
                Ok(event) => response(&rt, event).await.map_err(Status::from),
                Err(RecvError::Lagged(missed)) => Err(Status::aborted(format!(
                    "container event stream fell {missed} events behind; subscribe again and relist"
                ))),
                Err(RecvError::Closed) => return,
            };
            let last = reply.is_err();
            if tx.send(reply).await.is_err() || last {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn response(
    rt: &Arc<Runtime>,
    event: ContainerEvent,
) -> Result<api::ContainerEventResponse, CriError> {
    let rt = rt.clone();
    let pod_id = event.pod_id.clone();
    let (sandbox, containers) = blocking(move || {
        // The pod may be gone already (events of a removed pod's containers).
        let sandbox = rt.pod_status(&pod_id).ok();
        let filter = ContainerFilter {
            pod_id: Some(pod_id),
            ..ContainerFilter::default()
        };
        Ok((sandbox, rt.list_containers(&filter)?))
    })
    .await?;
    let kind = match event.kind {
        ContainerEventKind::Created => api::ContainerEventType::ContainerCreatedEvent,
        ContainerEventKind::Started => api::ContainerEventType::ContainerStartedEvent,
        ContainerEventKind::Stopped => api::ContainerEventType::ContainerStoppedEvent,
        ContainerEventKind::Deleted => api::ContainerEventType::ContainerDeletedEvent,
    };
    Ok(api::ContainerEventResponse {
        container_id: event.container_id,
        container_event_type: kind.into(),
        created_at: event.created_at_ns,
        pod_sandbox_status: sandbox.as_ref().map(pod::pod_status),
        containers_statuses: containers
            .iter()
            .filter(|c| c.pod_id == event.pod_id)
            .map(container::container_status)
            .collect(),
    })
}

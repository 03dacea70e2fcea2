//! Container lifecycle events for kubelet's evented PLEG: created, started, stopped and
//! deleted, published by whoever records the change (create, the pod watchers, status
//! refreshes, remove) and fanned out to every subscriber.
//!
//! Publishing never blocks: each subscriber has a bounded queue ([`EVENT_QUEUE`]), and a
//! subscriber that falls that far behind learns it lagged on its next receive (its stream
//! should then end so the caller relists) instead of slowing the runtime down.

use crius_store::{ContainerRecord, ContainerState as StoredState};
use tokio::sync::broadcast;

/// Events a subscriber may fall behind by before it is told it lagged.
pub const EVENT_QUEUE: usize = 1024;

/// What happened to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// One container lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub container_id: String,
    pub pod_id: String,
    pub kind: ContainerEventKind,
    /// When the event was published, ns since the epoch.
    pub created_at_ns: i64,
}

/// A subscription: `recv().await` the next event; `Lagged` means events were lost.
pub type EventReceiver = broadcast::Receiver<ContainerEvent>;

/// The fan-out of container events to subscribers; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<ContainerEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(EVENT_QUEUE).0,
        }
    }
}

impl EventBus {
    /// A new subscription, receiving the events published from now on.
    pub fn subscribe(&self) -> EventReceiver {
        self.sender.subscribe()
    }

    /// Sends `kind` for container `record` to every subscriber, without blocking.
    pub(crate) fn publish(&self, record: &ContainerRecord, kind: ContainerEventKind) {
        let event = ContainerEvent {
            container_id: record.id.clone(),
            pod_id: record.pod_id.clone(),
            kind,
            created_at_ns: crate::runtime::now_ns(),
        };
        tracing::debug!(container_id = %record.id, ?kind, "container event");
        // An error only means nobody listens.
        let _ = self.sender.send(event);
    }

    /// Publishes what the state change from `before` to `after` means: STARTED when the
    /// container began running, STOPPED when it exited (preceded by STARTED when it ran
    /// and exited between two observations).
    pub(crate) fn publish_transition(&self, before: StoredState, after: &ContainerRecord) {
        for kind in transition(before, after) {
            self.publish(after, kind);
        }
    }
}

/// The events a change of state from `before` to `after` amounts to.
fn transition(before: StoredState, after: &ContainerRecord) -> Vec<ContainerEventKind> {
    use ContainerEventKind::{Started, Stopped};
    match (before, after.state) {
        (StoredState::Running, StoredState::Exited) => vec![Stopped],
        (StoredState::Exited, _) | (StoredState::Running, StoredState::Running) => Vec::new(),
        (_, StoredState::Running) => vec![Started],
        (_, StoredState::Exited) if after.started_at_ns > 0 => vec![Started, Stopped],
        (_, StoredState::Exited) => vec![Stopped],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerEventKind::{Started, Stopped};

    fn record(state: StoredState, started_at_ns: i64) -> ContainerRecord {
        ContainerRecord {
            id: "c1".into(),
            pod_id: "p1".into(),
            state,
            started_at_ns,
            ..ContainerRecord::default()
        }
    }

    #[test]
    fn transitions_become_started_and_stopped_once() {
        let running = record(StoredState::Running, 5);
        let exited = record(StoredState::Exited, 5);
        assert_eq!(transition(StoredState::Created, &running), vec![Started]);
        assert_eq!(transition(StoredState::Running, &running), vec![]);
        assert_eq!(transition(StoredState::Running, &exited), vec![Stopped]);
        assert_eq!(transition(StoredState::Exited, &exited), vec![]);
        assert_eq!(
            transition(StoredState::Created, &exited),
            vec![Started, Stopped]
        );
        let never_started = record(StoredState::Exited, 0);
        assert_eq!(
            transition(StoredState::Created, &never_started),
            vec![Stopped]
        );
    }

    #[test]
    fn a_slow_subscriber_lags_instead_of_blocking_the_publisher() {
        let bus = EventBus::default();
        let mut slow = bus.subscribe();
        let r = record(StoredState::Created, 0);
        for _ in 0..EVENT_QUEUE + 10 {
            bus.publish(&r, ContainerEventKind::Created);
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
        assert_eq!(slow.try_recv().unwrap().container_id, "c1");
    }

    #[test]
    fn every_subscriber_gets_every_event_in_order() {
        let bus = EventBus::default();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        let r = record(StoredState::Created, 0);
        bus.publish(&r, ContainerEventKind::Created);
        bus.publish(&r, ContainerEventKind::Deleted);
        for rx in [&mut a, &mut b] {
            assert_eq!(rx.try_recv().unwrap().kind, ContainerEventKind::Created);
            assert_eq!(rx.try_recv().unwrap().kind, ContainerEventKind::Deleted);
        }
    }
}

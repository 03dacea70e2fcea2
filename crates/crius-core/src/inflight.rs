//! Deduplication of retried calls: while a call for a key is in flight, a second call for
//! the same key waits for the first one's result instead of failing with "name is
//! reserved" (kubelet retries RunPodSandbox and CreateContainer after its own timeout).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::error::{Error, ErrorKind, Result};

type Outcome = std::result::Result<String, (ErrorKind, String)>;

#[derive(Debug, Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
}

/// In-flight calls by key; each yields an id or an error.
#[derive(Debug)]
pub(crate) struct Inflight<K> {
    slots: Mutex<HashMap<K, Arc<Slot>>>,
}

impl<K> Default for Inflight<K> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> Inflight<K> {
    /// Runs `work` for `key`, or, when another call for `key` is running, waits for it and
    /// returns its result (an error comes back as [`Error::Retried`] of the same kind).
    pub(crate) fn run(&self, key: K, work: impl FnOnce() -> Result<String>) -> Result<String> {
        let (slot, leader) = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match slots.get(&key) {
                Some(slot) => (slot.clone(), false),
                None => {
                    let slot = Arc::new(Slot::default());
                    slots.insert(key.clone(), slot.clone());
                    (slot, true)
                }
            }
        };
        if !leader {
            let mut outcome = slot.outcome.lock().unwrap_or_else(PoisonError::into_inner);
            while outcome.is_none() {
                outcome = slot
                    .done
                    .wait(outcome)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            return match outcome.clone() {
                Some(Ok(id)) => Ok(id),
                Some(Err((kind, message))) => Err(Error::Retried { kind, message }),
                None => unreachable_outcome(),
            };
        }
        let result = work();
        let shared = match &result {
            Ok(id) => Ok(id.clone()),
            Err(e) => Err((e.kind(), e.to_string())),
        };
        *slot.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(shared);
        slot.done.notify_all();
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        result
    }
}

fn unreachable_outcome() -> Result<String> {
    Err(Error::Retried {
        kind: ErrorKind::Internal,
        message: "in-flight call ended without a result".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_retry_waits_for_and_returns_the_first_result() {
        let inflight = Arc::new(Inflight::<String>::default());
        let first = {
            let inflight = inflight.clone();
            std::thread::spawn(move || {
                inflight.run("pod".into(), || {
                    std::thread::sleep(Duration::from_millis(200));
                    Ok("id-1".into())
                })
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let second = inflight.run("pod".into(), || Ok("id-2".into())).unwrap();
        assert_eq!(second, "id-1");
        assert_eq!(first.join().unwrap().unwrap(), "id-1");
        // Once finished, the key is free again.
        assert_eq!(
            inflight.run("pod".into(), || Ok("id-3".into())).unwrap(),
            "id-3"
        );
    }
}

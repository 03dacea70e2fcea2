//! A stack of undo steps for multi-step operations: each acquired resource pushes its
//! release; on success the stack is disarmed, on any early return it unwinds in reverse.

/// One undo step: releases what a step acquired; the error is only logged.
type Undo = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Undo steps run in reverse order on drop unless [`Rollback::disarm`] was called.
#[derive(Default)]
pub(crate) struct Rollback {
    steps: Vec<(&'static str, Undo)>,
}

impl std::fmt::Debug for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Rollback {
    /// Registers the undo of a step just taken.
    pub(crate) fn push(
        &mut self,
        what: &'static str,
        undo: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) {
        self.steps.push((what, Box::new(undo)));
    }

    /// The operation succeeded: keep everything.
    pub(crate) fn disarm(mut self) {
        self.steps.clear();
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        while let Some((what, undo)) = self.steps.pop() {
            if let Err(error) = undo() {
                // The failure being rolled back is returned to the caller; a failed undo
                // can only be logged, and a later remove retries the cleanup.
                tracing::warn!(step = what, error, "rollback step failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn unwinds_in_reverse_unless_disarmed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut rb = Rollback::default();
            for n in 1..=3 {
                let log = log.clone();
                rb.push("step", move || {
                    log.lock().unwrap().push(n);
                    Ok(())
                });
            }
        }
        assert_eq!(*log.lock().unwrap(), [3, 2, 1]);
        let mut rb = Rollback::default();
        let l = log.clone();
        rb.push("step", move || {
            l.lock().unwrap().push(9);
            Ok(())
        });
        rb.disarm();
        assert_eq!(log.lock().unwrap().len(), 3);
    }
}

//! Records of one kind as decoded at a store generation: lists are frequent (kubelet
//! relists every second) and records change only on a write, so a list between writes
//! costs no decoding.

use std::sync::{Arc, Mutex, PoisonError};

use crius_store::Store;

use crate::error::Result;

/// The last decoded list of one record kind and the store generation it was read at.
#[derive(Debug)]
pub(crate) struct Decoded<R>(Mutex<Option<(u64, Arc<Vec<R>>)>>);

impl<R> Default for Decoded<R> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<R> Decoded<R> {
    /// The records, from `load` (a read of `store`) unless a list decoded at the
    /// store's current generation is kept.
    pub(crate) fn get(
        &self,
        store: &Store,
        load: impl FnOnce() -> Result<Vec<R>>,
    ) -> Result<Arc<Vec<R>>> {
        // Read before `load` opens its transaction: every commit the number counts is
        // visible to that transaction, so what is kept is never older than the
        // generation it is kept under (at worst newer, and the next call decodes again).
        let generation = store.generation();
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, records)) = kept.as_ref() {
            if *at == generation {
                return Ok(records.clone());
            }
        }
        let records = Arc::new(load()?);
        *kept = Some((generation, records.clone()));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_list_is_decoded_again_only_after_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("meta.redb")).unwrap();
        let decoded = Decoded::<u32>::default();
        let loads = Cell::new(0);
        let load = || {
            loads.set(loads.get() + 1);
            Ok(vec![loads.get()])
        };
        assert_eq!(*decoded.get(&store, load).unwrap(), [1]);
        assert_eq!(*decoded.get(&store, load).unwrap(), [1], "decoded twice");
        store.write().unwrap().abort().unwrap();
        assert_eq!(*decoded.get(&store, load).unwrap(), [1], "an abort counted");
        let txn = store.write().unwrap();
        txn.commit().unwrap();
        assert_eq!(
            *decoded.get(&store, load).unwrap(),
            [2],
            "a commit went unseen"
        );
        assert_eq!(loads.get(), 2);
    }
}

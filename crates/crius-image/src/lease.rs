//! Leases and keyed locks: what keeps in-flight work safe from GC and from itself.
//!
//! A [`Lease`] names the blobs and snapshots an operation (a pull, an import) is
//! creating before any image record references them; garbage collection treats every
//! resource of a live lease as a root. Leases live in memory: after a crash the
//! operation is gone, and what it left is garbage that the start-up GC may take.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

/// The set of live leases.
#[derive(Debug, Default)]
pub struct Leases {
    inner: Mutex<(u64, HashMap<u64, HashSet<String>>)>,
}

impl Leases {
    /// Starts a lease; it ends when the returned guard drops.
    pub fn acquire(self: &Arc<Self>) -> Lease {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let id = g.0;
        g.1.insert(id, HashSet::new());
        Lease {
            leases: Arc::clone(self),
            id,
        }
    }

    /// Every resource held by a live lease.
    pub fn resources(&self) -> HashSet<String> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.values().flatten().cloned().collect()
    }
}

/// One live lease; see the module docs.
#[derive(Debug)]
pub struct Lease {
    leases: Arc<Leases>,
    id: u64,
}

impl Lease {
    /// Protects `resource` (a digest or snapshot key) until the lease ends.
    pub fn add(&self, resource: impl Into<String>) {
        let mut g = self.leases.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = g.1.get_mut(&self.id) {
            set.insert(resource.into());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut g = self.leases.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.remove(&self.id);
    }
}

/// Async mutexes by key: one pull per reference, one unpack per chain id.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for and takes the lock for `key`.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_string(), Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_vanish_when_the_lease_drops() {
        let leases = Arc::new(Leases::default());
        let l = leases.acquire();
        l.add("sha256:x");
        assert!(leases.resources().contains("sha256:x"));
        drop(l);
        assert!(leases.resources().is_empty());
    }
}

//! `remove`: forget an image with all its tags and digests, then collect garbage.

use crate::error::Result;
use crate::manager::{find, ImageManager};

impl ImageManager {
    /// Removes the image `reference` names (by id, tag or digest) with every tag and
    /// digest it has, as the CRI and containerd do, then runs GC. Removing an unknown
    /// image succeeds (`Ok(false)`): CRI `RemoveImage` is idempotent. Snapshots used by
    /// containers stay until those containers' rootfs is removed.
    pub fn remove(&self, reference: &str) -> Result<bool> {
        let removed = {
            let _g = self.records_lock.lock().unwrap_or_else(|p| p.into_inner());
            match find(&self.records.list()?, reference)? {
                None => false,
                Some(image) => {
                    self.records.apply(&[], std::slice::from_ref(&image.id))?;
                    tracing::info!(image = %image.id, "image removed");
                    true
                }
            }
        };
        if removed {
            self.gc()?;
        }
        Ok(removed)
    }
}

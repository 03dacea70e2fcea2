//! Container root filesystems: an active snapshot (`container-<id>`) on top of the
//! image's top chain id. While it exists, GC keeps every layer below it, even after
//! the image itself was removed.

use std::path::Path;

use crate::error::{Error, Result};
use crate::manager::ImageManager;
use crate::snapshot::{mount_overlay, unmount, Mounts};

fn key(container_id: &str) -> Result<String> {
    if container_id.is_empty()
        || !container_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::InvalidConfig(format!(
            "container id {container_id:?} must be [A-Za-z0-9_.-]+"
        )));
    }
    Ok(format!("container-{container_id}"))
}

impl ImageManager {
    /// Creates the writable rootfs of `container_id` from `image` (id, tag or digest).
    /// `AlreadyExists` when the container has one.
    pub fn prepare_rootfs(&self, container_id: &str, image: &str) -> Result<Mounts> {
        let img = self
            .status(image)?
            .ok_or_else(|| Error::ImageNotFound(image.to_string()))?;
        let parent = img.chain_ids.last().map(ToString::to_string);
        self.snapshotter()
            .prepare(&key(container_id)?, parent.as_deref())
    }

    /// The mounts of `container_id`'s rootfs.
    pub fn rootfs_mounts(&self, container_id: &str) -> Result<Mounts> {
        self.snapshotter().mounts(&key(container_id)?)
    }

    /// Mounts `container_id`'s rootfs at `target`.
    pub fn mount_rootfs(&self, container_id: &str, target: &Path) -> Result<()> {
        mount_overlay(&self.rootfs_mounts(container_id)?, target)
    }

    /// Unmounts `target`; `Ok(false)` when it was not mounted.
    pub fn unmount_rootfs(&self, target: &Path) -> Result<bool> {
        unmount(target)
    }

    /// Removes `container_id`'s rootfs (idempotent) and collects what only it kept.
    pub fn remove_rootfs(&self, container_id: &str) -> Result<bool> {
        let removed = self.snapshotter().remove(&key(container_id)?)?;
        if removed {
            self.gc()?;
        }
        Ok(removed)
    }
}

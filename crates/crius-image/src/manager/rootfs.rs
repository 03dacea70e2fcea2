//! Container root filesystems: an active snapshot (`container-<id>`) on top of the
//! image's top chain id. While it exists, GC keeps every layer below it, even after
//! the image itself was removed.
//!
//! Image volumes (a CRI mount whose source is an image): one active snapshot per volume
//! (`volume-<container id>-<n>`) that only holds the image's layers for GC; what gets
//! mounted is the read-only stack of those layers, never the snapshot's writable dir.

use std::path::Path;

use crate::error::{Error, Result};
use crate::manager::ImageManager;
use crate::snapshot::{mount_overlay, unmount, Mounts};

/// `container_id` when it can be part of a snapshot key.
fn checked(container_id: &str) -> Result<&str> {
    if container_id.is_empty()
        || !container_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::InvalidConfig(format!(
            "container id {container_id:?} must be [A-Za-z0-9_.-]+"
        )));
    }
    Ok(container_id)
}

fn key(container_id: &str) -> Result<String> {
    Ok(format!("container-{}", checked(container_id)?))
}

/// The prefix of every image volume key of `container_id`; the volume's index follows.
fn volume_prefix(container_id: &str) -> Result<String> {
    Ok(format!("volume-{}-", checked(container_id)?))
}

impl ImageManager {
    /// Creates the writable rootfs of `container_id` from `image` (id, tag or digest).
    /// `AlreadyExists` when the container has one.
    pub fn prepare_rootfs(&self, container_id: &str, image: &str) -> Result<Mounts> {
        let parent = self.top_layer(image)?;
        self.snapshotter()
            .prepare(&key(container_id)?, parent.as_deref())
    }

    /// The chain id of `image`'s top layer (`None` for an image without layers);
    /// `ImageNotFound` when the image is not present.
    fn top_layer(&self, image: &str) -> Result<Option<String>> {
        let img = self
            .status(image)?
            .ok_or_else(|| Error::ImageNotFound(image.to_string()))?;
        Ok(img.chain_ids.last().map(ToString::to_string))
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

    /// Creates image volume `index` of `container_id` from `image` (id, tag or digest).
    /// `ImageNotFound` when the image is not present; `AlreadyExists` when the volume is.
    pub fn prepare_image_volume(
        &self,
        container_id: &str,
        index: usize,
        image: &str,
    ) -> Result<()> {
        let parent = self.top_layer(image)?.ok_or_else(|| {
            Error::InvalidConfig(format!(
                "image {image} has no layers: there is nothing to mount"
            ))
        })?;
        self.snapshotter()
            .prepare(
                &format!("{}{index}", volume_prefix(container_id)?),
                Some(&parent),
            )
            .map(|_| ())
    }

    /// The read-only layers of image volume `index` of `container_id` (no writable dir).
    pub fn image_volume_mounts(&self, container_id: &str, index: usize) -> Result<Mounts> {
        let mut mounts = self
            .snapshotter()
            .mounts(&format!("{}{index}", volume_prefix(container_id)?))?;
        mounts.upper = None;
        mounts.work = None;
        Ok(mounts)
    }

    /// Mounts image volume `index` of `container_id` read-only at `target`: a read-only
    /// bind of a single layer, a lower-only overlay of several.
    pub fn mount_image_volume(
        &self,
        container_id: &str,
        index: usize,
        target: &Path,
    ) -> Result<()> {
        mount_overlay(&self.image_volume_mounts(container_id, index)?, target)
    }

    /// Removes every image volume snapshot of `container_id` (idempotent) and collects
    /// what only they kept; returns how many there were.
    pub fn remove_image_volumes(&self, container_id: &str) -> Result<usize> {
        let prefix = volume_prefix(container_id)?;
        let mut removed = 0;
        for info in self.snapshotter().list()? {
            let is_volume = info
                .key
                .strip_prefix(&prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if is_volume && self.snapshotter().remove(&info.key)? {
                removed += 1;
            }
        }
        if removed > 0 {
            self.gc()?;
        }
        Ok(removed)
    }
}

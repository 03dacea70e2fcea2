//! [`ImageManager`]: the image service's domain API, protobuf-free. The gRPC layer
//! converts CRI requests and calls these methods; one file per operation.
//!
//! On disk under the image root:
//! ```text
//! content/blobs/<alg>/<hex>   verified blobs        content/ingest/   writes in progress
//! snapshots/<n>/fs            one dir per chain id (committed) or container (active)
//! ```
//! Container rootfs snapshots live in `snapshots/<n>/{fs,work}` too (keyed
//! `container-<id>`), so the overlay options stay relative to one base directory.

mod archive;
mod gc;
mod image_pull;
mod image_remove;
mod rootfs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use gc::GcReport;
pub use image_pull::PullResult;

use crate::config::ImageConfig;
use crate::content::{BadBlob, ContentManager, LocalContentStore};
use crate::digest::Digest;
use crate::error::Result;
use crate::lease::{KeyedLocks, Leases};
use crate::pull::Unpacker;
use crate::records::{Image, ImageRecords};
use crate::reference::ImageRef;
use crate::snapshot::{disk_usage, OverlaySnapshotter, SnapshotKind, Snapshotter, Usage};
use crate::unpack::UnpackOptions;

/// Images: pull, list, status, remove, GC, import/export and container rootfs.
#[derive(Debug)]
pub struct ImageManager {
    root: PathBuf,
    unpacker: Unpacker,
    records: Arc<dyn ImageRecords>,
    leases: Arc<Leases>,
    pulls: KeyedLocks,
    /// Serialises read-modify-write of image records (tags move between images).
    records_lock: Mutex<()>,
}

/// Filesystem usage of the image store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsUsage {
    /// The directory measured.
    pub mountpoint: PathBuf,
    /// Bytes and inodes used.
    pub used: Usage,
}

impl ImageManager {
    /// Opens the image store under `root` (`content/`, `snapshots/`) with image records
    /// in `records`. Drops ingests and extraction snapshots left by a crash (an
    /// interrupted pull restarts from scratch), then collects garbage.
    ///
    /// One manager per root: two processes sharing a root would collect each other's
    /// in-flight content.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use crius_image::{ImageConfig, ImageManager, StoreImageRecords};
    ///
    /// let store = Arc::new(crius_store::Store::open("/var/lib/crius/meta.redb")?);
    /// let records = Arc::new(StoreImageRecords::new(store));
    /// let images = ImageManager::open("/var/lib/crius".as_ref(), ImageConfig::default(), records)?;
    /// for image in images.list(None)? {
    ///     println!("{} {:?}", image.id, image.repo_tags);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(root: &Path, config: ImageConfig, records: Arc<dyn ImageRecords>) -> Result<Self> {
        config.validate()?;
        let content = LocalContentStore::open(&root.join("content"))?;
        let snapshots = Arc::new(OverlaySnapshotter::open(&root.join("snapshots"))?);
        for info in snapshots.list()? {
            if info.kind == SnapshotKind::Active && info.key.starts_with("extract-") {
                snapshots.remove(&info.key)?;
            }
        }
        let manager = Self {
            root: root.to_path_buf(),
            unpacker: Unpacker {
                content,
                snapshots,
                config,
                locks: KeyedLocks::default(),
                opts: UnpackOptions::for_current_process(),
            },
            records,
            leases: Arc::new(Leases::default()),
            pulls: KeyedLocks::default(),
            records_lock: Mutex::new(()),
        };
        let report = manager.gc()?;
        tracing::debug!(?report, "start-up garbage collection");
        Ok(manager)
    }

    /// The content store.
    pub fn content(&self) -> &LocalContentStore {
        &self.unpacker.content
    }

    /// The snapshotter.
    pub fn snapshotter(&self) -> &Arc<dyn Snapshotter> {
        &self.unpacker.snapshots
    }

    /// Every image, or those matching `filter` (an id, tag or digest reference).
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<Image>> {
        let all = self.records.list()?;
        match filter.filter(|f| !f.is_empty()) {
            None => Ok(all),
            Some(f) => Ok(find(&all, f)?.into_iter().collect()),
        }
    }

    /// The image `reference` names (id, id prefix, tag or digest); `None` when absent,
    /// as CRI `ImageStatus` wants.
    pub fn status(&self, reference: &str) -> Result<Option<Image>> {
        find(&self.records.list()?, reference)
    }

    /// Usage of the image filesystem (content and snapshots; containers' writable
    /// layers included, as they live in the same directory).
    pub fn fs_usage(&self) -> Result<FsUsage> {
        Ok(FsUsage {
            mountpoint: self.root.clone(),
            used: disk_usage(&self.root)?,
        })
    }

    /// Usage of the containers' writable layers alone (CRI `container_filesystems`).
    pub fn container_fs_usage(&self) -> Result<FsUsage> {
        let mut used = Usage::default();
        for s in self.snapshotter().list()? {
            if s.kind == SnapshotKind::Active && s.key.starts_with("container-") {
                let u = disk_usage(&self.snapshotter().root().join(s.id.to_string()))?;
                used.bytes += u.bytes;
                used.inodes += u.inodes;
            }
        }
        Ok(FsUsage {
            mountpoint: self.snapshotter().root().to_path_buf(),
            used,
        })
    }

    /// Re-hashes every blob; returns the ones that no longer match their digest.
    pub fn fsck(&self) -> Result<Vec<BadBlob>> {
        self.unpacker.content.fsck()
    }
}

/// Finds the image `reference` names among `images`.
fn find(images: &[Image], reference: &str) -> Result<Option<Image>> {
    let r = reference.trim();
    if let Ok(d) = r.parse::<Digest>() {
        return Ok(images.iter().find(|i| i.id == d).cloned());
    }
    if r.len() >= 6
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        let hits: Vec<_> = images
            .iter()
            .filter(|i| i.id.hex().starts_with(r))
            .collect();
        if hits.len() == 1 {
            return Ok(hits.first().map(|i| (*i).clone()));
        }
    }
    let parsed = ImageRef::parse(r)?;
    if let Some(d) = &parsed.digest {
        let want = parsed.repo_digest(d);
        return Ok(images
            .iter()
            .find(|i| i.repo_digests.contains(&want))
            .cloned());
    }
    let tag = parsed.repo_tag().unwrap_or_default();
    Ok(images.iter().find(|i| i.repo_tags.contains(&tag)).cloned())
}

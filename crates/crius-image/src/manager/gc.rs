//! Garbage collection: blobs and committed snapshots that no image, container rootfs
//! or live lease references are deleted. Roots: every image's config, manifest, repo
//! digests, layer blobs and chain ids; every active snapshot and its ancestors; every
//! resource of a live lease (an in-flight pull or import).

use std::collections::HashSet;

use crate::content::{ContentManager, ContentReader};
use crate::digest::Digest;
use crate::error::Result;
use crate::manager::ImageManager;
use crate::manifest::{self, Document};
use crate::snapshot::SnapshotKind;

/// What a GC run deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Snapshots deleted.
    pub snapshots_removed: usize,
}

impl ImageManager {
    /// Collects unreferenced blobs and snapshots; see the module docs.
    pub fn gc(&self) -> Result<GcReport> {
        let _g = self.records_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut keep: HashSet<String> = self.leases.resources();
        for image in self.records.list()? {
            keep.insert(image.id.to_string());
            keep.insert(image.manifest_digest.to_string());
            keep.extend(image.chain_ids.iter().map(Digest::to_string));
            keep.extend(
                image
                    .repo_digests
                    .iter()
                    .filter_map(|r| r.rsplit_once('@').map(|(_, d)| d.to_string())),
            );
            if let Ok(bytes) = self.content().read_all(&image.manifest_digest) {
                if let Ok(Document::Manifest(m)) = manifest::parse_document(&bytes, "") {
                    keep.extend(m.layers.iter().map(|l| l.digest.to_string()));
                    keep.insert(m.config.digest.to_string());
                }
            }
        }
        let snaps = self.snapshotter().list()?;
        for s in snaps.iter().filter(|s| s.kind == SnapshotKind::Active) {
            let mut parent = s.parent.clone();
            while let Some(p) = parent {
                parent = snaps
                    .iter()
                    .find(|x| x.key == p)
                    .and_then(|x| x.parent.clone());
                keep.insert(p);
            }
        }
        let mut report = GcReport::default();
        // Children first: a chain's parent is only removable once its child is gone.
        loop {
            let before = report.snapshots_removed;
            for s in self.snapshotter().list()? {
                if s.kind == SnapshotKind::Committed && !keep.contains(&s.key) {
                    match self.snapshotter().remove(&s.key) {
                        Ok(true) => report.snapshots_removed += 1,
                        Ok(false) | Err(crate::Error::SnapshotInUse(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if report.snapshots_removed == before {
                break;
            }
        }
        for blob in self.content().list()? {
            if !keep.contains(&blob.digest.to_string()) && self.content().delete(&blob.digest)? {
                report.blobs_removed += 1;
            }
        }
        tracing::debug!(
            blobs = report.blobs_removed,
            snapshots = report.snapshots_removed,
            "garbage collected"
        );
        Ok(report)
    }
}

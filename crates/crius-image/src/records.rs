//! Image records: the durable list of images, behind the [`ImageRecords`] seam so the
//! manager does not care where they live. [`StoreImageRecords`] keeps them in
//! `crius-store` (redb), one transaction per change.

use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// One image as crius knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The config digest; equals CRI `Image.id` and `ContainerStatus.image_id`.
    pub id: Digest,
    /// `registry/repo:tag` references; each belongs to at most one image.
    pub repo_tags: Vec<String>,
    /// `registry/repo@digest` references.
    pub repo_digests: Vec<String>,
    /// Unpacked size of all layers, in bytes.
    pub size: u64,
    /// The platform manifest's digest.
    pub manifest_digest: Digest,
    /// Layer chain ids, bottom first.
    pub chain_ids: Vec<Digest>,
    /// The image config JSON.
    pub config: serde_json::Value,
    /// The config's `User`.
    pub username: String,
    /// Pinned images are never collected.
    pub pinned: bool,
}

/// Where image records live. Every call is atomic.
pub trait ImageRecords: Send + Sync + std::fmt::Debug {
    /// All images.
    fn list(&self) -> Result<Vec<Image>>;
    /// Writes `puts` (insert or replace, in order) and removes `deletes`, all in one
    /// transaction. Deletes run first, so a tag can move from a deleted image.
    fn apply(&self, puts: &[Image], deletes: &[Digest]) -> Result<()>;
}

/// Image records in a `crius-store` database.
#[derive(Debug, Clone)]
pub struct StoreImageRecords {
    store: Arc<crius_store::Store>,
}

impl StoreImageRecords {
    /// Uses `store`'s images table.
    pub fn new(store: Arc<crius_store::Store>) -> Self {
        Self { store }
    }
}

fn to_record(i: &Image) -> crius_store::ImageRecord {
    crius_store::ImageRecord {
        id: i.id.to_string(),
        repo_tags: i.repo_tags.clone(),
        repo_digests: i.repo_digests.clone(),
        size: i.size,
        manifest_digest: i.manifest_digest.to_string(),
        chain_ids: i.chain_ids.iter().map(Digest::to_string).collect(),
        config: i.config.clone(),
        username: i.username.clone(),
        pinned: i.pinned,
    }
}

fn from_record(r: crius_store::ImageRecord) -> Result<Image> {
    Ok(Image {
        id: r.id.parse()?,
        repo_tags: r.repo_tags,
        repo_digests: r.repo_digests,
        size: r.size,
        manifest_digest: r.manifest_digest.parse()?,
        chain_ids: r
            .chain_ids
            .iter()
            .map(|c| c.parse())
            .collect::<Result<_>>()?,
        config: r.config,
        username: r.username,
        pinned: r.pinned,
    })
}

impl ImageRecords for StoreImageRecords {
    fn list(&self) -> Result<Vec<Image>> {
        let txn = self.store.read()?;
        txn.images().list()?.into_iter().map(from_record).collect()
    }

    fn apply(&self, puts: &[Image], deletes: &[Digest]) -> Result<()> {
        self.store.update(|txn| {
            let images = txn.images();
            for d in deletes {
                images.remove(&d.to_string())?;
            }
            for p in puts {
                let rec = to_record(p);
                if images.get(&rec.id)?.is_some() {
                    images.update(&rec)?;
                } else {
                    images.insert(&rec)?;
                }
            }
            Ok::<(), Error>(())
        })
    }
}

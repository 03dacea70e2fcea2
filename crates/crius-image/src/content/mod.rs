//! The content store: immutable blobs addressed by digest, split into the reader,
//! ingester and manager roles (the split containerd uses) so code that only reads can
//! be given only a reader.
//!
//! Contract of every implementation:
//! - a blob is visible under its digest only after its bytes were hashed and matched
//!   the digest (and the size when one was expected); a mismatch is an error and the
//!   bytes are thrown away;
//! - an ingest that is dropped, fails or dies with the process leaves nothing visible;
//! - committing a blob that exists already succeeds and leaves the existing one;
//! - deleting a missing blob returns `Ok(false)`.

mod local;

use std::fs::File;

pub use local::{IngestWriter, LocalContentStore};

use crate::digest::Digest;
use crate::error::Result;

/// A blob present in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// A blob that failed re-verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBlob {
    /// The digest the blob is stored under.
    pub digest: Digest,
    /// The digest of the bytes on disk, when they could be read.
    pub actual: Option<Digest>,
    /// What went wrong.
    pub reason: String,
}

/// Read access to committed blobs.
pub trait ContentReader: Send + Sync {
    /// Size of a blob; `NotFound` when absent.
    fn info(&self, digest: &Digest) -> Result<BlobInfo>;
    /// Opens a blob for reading; `NotFound` when absent.
    fn open(&self, digest: &Digest) -> Result<File>;
    /// Reads a whole blob into memory; for manifests and configs only.
    fn read_all(&self, digest: &Digest) -> Result<Vec<u8>>;
    /// Whether a blob is present.
    fn contains(&self, digest: &Digest) -> bool {
        self.info(digest).is_ok()
    }
}

/// Writes new blobs through a verifying ingest.
pub trait ContentIngester: Send + Sync {
    /// Starts an ingest. With `expected`, the commit verifies digest and size;
    /// without it, the blob is stored under the sha256 of what was written.
    fn ingest(&self, expected: Option<(&Digest, Option<u64>)>) -> Result<IngestWriter>;
    /// Stores `data`, verifying it against `expected` when given. Returns its digest.
    fn write_blob(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        use std::io::Write as _;
        let mut w = self.ingest(expected.map(|d| (d, Some(data.len() as u64))))?;
        w.write_all(data)
            .map_err(|e| crate::Error::io("write ingest", w.path(), e))?;
        w.commit()
    }
}

/// Listing, deletion and verification of blobs.
pub trait ContentManager: Send + Sync {
    /// Every committed blob.
    fn list(&self) -> Result<Vec<BlobInfo>>;
    /// Removes a blob; `Ok(false)` when it was not there.
    fn delete(&self, digest: &Digest) -> Result<bool>;
    /// Re-hashes every blob and returns those whose content no longer matches.
    fn fsck(&self) -> Result<Vec<BadBlob>>;
}

/// All three roles of a content store.
pub trait ContentStore: ContentReader + ContentIngester + ContentManager {}

impl<T: ContentReader + ContentIngester + ContentManager> ContentStore for T {}

#[cfg(test)]
pub(crate) mod testsuite;

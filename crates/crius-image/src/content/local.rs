//! The local content store under `<root>/content`: `blobs/<alg>/<hex>` for committed
//! blobs and `ingest/` for writes in progress.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::content::{BadBlob, BlobInfo, ContentIngester, ContentManager, ContentReader};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};

static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// Blobs on the local filesystem.
#[derive(Debug, Clone)]
pub struct LocalContentStore {
    root: PathBuf,
}

impl LocalContentStore {
    /// Opens (creating) the store under `root` (`<root>/blobs`, `<root>/ingest`) and
    /// removes ingests left by a previous process: they were never committed, so the
    /// next pull restarts them from the beginning.
    pub fn open(root: &Path) -> Result<Self> {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = root.join("blobs").join(alg.as_str());
            fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        }
        let ingest = root.join("ingest");
        if ingest.exists() {
            fs::remove_dir_all(&ingest).map_err(|e| Error::io("clean", &ingest, e))?;
        }
        fs::create_dir_all(&ingest).map_err(|e| Error::io("create", &ingest, e))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Where a blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }
}

impl ContentReader for LocalContentStore {
    fn info(&self, digest: &Digest) -> Result<BlobInfo> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(BlobInfo {
                digest: digest.clone(),
                size: m.len(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound(digest.to_string()))
            }
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    fn open(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound(digest.to_string()),
            _ => Error::io("open", path, e),
        })
    }

    fn read_all(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open(digest)?
            .read_to_end(&mut out)
            .map_err(|e| Error::io("read", self.blob_path(digest), e))?;
        Ok(out)
    }
}

impl ContentIngester for LocalContentStore {
    fn ingest(&self, expected: Option<(&Digest, Option<u64>)>) -> Result<IngestWriter> {
        let seq = INGEST_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = self
            .ingest_dir()
            .join(format!("{}-{seq}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create ingest", &path, e))?;
        let algorithm = expected.map_or(Algorithm::Sha256, |(d, _)| d.algorithm());
        Ok(IngestWriter {
            store: self.clone(),
            file: Some(file),
            path,
            hasher: Some(Hasher::new(algorithm)),
            written: 0,
            expected: expected.map(|(d, s)| (d.clone(), s)),
        })
    }
}

impl ContentManager for LocalContentStore {
    fn list(&self) -> Result<Vec<BlobInfo>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(alg.as_str());
            for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
                let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(digest) = format!("{}:{name}", alg.as_str()).parse::<Digest>() else {
                    continue;
                };
                let size = entry
                    .metadata()
                    .map_err(|e| Error::io("stat", entry.path(), e))?
                    .len();
                out.push(BlobInfo { digest, size });
            }
        }
        Ok(out)
    }

    fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    fn fsck(&self) -> Result<Vec<BadBlob>> {
        let mut bad = Vec::new();
        for info in self.list()? {
            let mut hasher = Hasher::new(info.digest.algorithm());
            let read = self.open(&info.digest).and_then(|mut f| {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f
                        .read(&mut buf)
                        .map_err(|e| Error::io("read", self.blob_path(&info.digest), e))?;
                    if n == 0 {
                        return Ok(());
                    }
                    hasher.update(&buf[..n]);
                }
            });
            match read {
                Err(e) => bad.push(BadBlob {
                    digest: info.digest,
                    actual: None,
                    reason: e.to_string(),
                }),
                Ok(()) => {
                    let actual = hasher.finish();
                    if actual != info.digest {
                        bad.push(BadBlob {
                            reason: format!("content hashes to {actual}"),
                            digest: info.digest,
                            actual: Some(actual),
                        });
                    }
                }
            }
        }
        Ok(bad)
    }
}

/// A blob being written. Hashes as it goes; [`IngestWriter::commit`] verifies, fsyncs
/// and renames it into place. Dropping it uncommitted deletes the temporary file.
#[derive(Debug)]
pub struct IngestWriter {
    store: LocalContentStore,
    file: Option<File>,
    path: PathBuf,
    hasher: Option<Hasher>,
    written: u64,
    expected: Option<(Digest, Option<u64>)>,
}

impl IngestWriter {
    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks size and digest of what was written so far against the expectation,
    /// without committing. Returns the digest.
    pub fn verify(&self) -> Result<Digest> {
        let hasher = self.hasher.clone();
        let actual = hasher
            .ok_or_else(|| Error::Task("ingest already committed".into()))?
            .finish();
        self.check(&actual)?;
        Ok(actual)
    }

    fn check(&self, actual: &Digest) -> Result<()> {
        if let Some((expected, size)) = &self.expected {
            if let Some(size) = size {
                if *size != self.written {
                    return Err(Error::SizeMismatch {
                        digest: expected.to_string(),
                        expected: *size,
                        actual: self.written,
                    });
                }
            }
            if expected != actual {
                return Err(Error::DigestMismatch {
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Verifies size and digest, fsyncs and makes the blob visible. Returns its digest.
    pub fn commit(mut self) -> Result<Digest> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Task("ingest committed twice".into()))?;
        let actual = self
            .hasher
            .take()
            .ok_or_else(|| Error::Task("ingest committed twice".into()))?
            .finish();
        self.check(&actual)?;
        file.sync_all()
            .map_err(|e| Error::io("fsync", &self.path, e))?;
        drop(file);
        let target = self.store.blob_path(&actual);
        if target.exists() {
            return Ok(actual); // Drop removes the temporary file.
        }
        fs::rename(&self.path, &target).map_err(|e| Error::io("commit blob", &target, e))?;
        if let Some(dir) = target.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("fsync", dir, e))?;
        }
        Ok(actual)
    }
}

impl Write for IngestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("ingest already committed"))?;
        // A source sending more than the descriptor promised is cut off here, so an
        // endless stream cannot fill the disk before the final check.
        if let Some((digest, Some(size))) = &self.expected {
            if self.written + buf.len() as u64 > *size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{digest}: more than the expected {size} bytes"),
                ));
            }
        }
        let n = file.write(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl Drop for IngestWriter {
    fn drop(&mut self) {
        // After a successful rename the path is gone and this is a no-op.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalContentStore::open(dir.path()).unwrap();
        (dir, s)
    }

    fn ingest_is_empty(s: &LocalContentStore) -> bool {
        fs::read_dir(s.ingest_dir()).unwrap().next().is_none()
    }

    #[test]
    fn local_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::cell::Cell::new(0);
        crate::content::testsuite::conformance_suite(
            || {
                n.set(n.get() + 1);
                LocalContentStore::open(&dir.path().join(n.get().to_string())).unwrap()
            },
            |s, d| fs::write(s.blob_path(d), b"tampered").unwrap(),
        );
    }

    #[test]
    fn committed_blob_is_readable_under_its_digest() {
        let (_d, s) = store();
        let digest = s.write_blob(b"hello", None).unwrap();
        assert_eq!(digest, Digest::sha256_of(b"hello"));
        assert_eq!(s.read_all(&digest).unwrap(), b"hello");
        assert_eq!(s.info(&digest).unwrap().size, 5);
        assert!(ingest_is_empty(&s));
    }

    #[test]
    fn digest_mismatch_is_rejected_and_never_visible() {
        let (_d, s) = store();
        let wrong = Digest::sha256_of(b"other");
        let err = s.write_blob(b"hello", Some(&wrong)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!s.contains(&wrong));
        assert!(!s.contains(&Digest::sha256_of(b"hello")));
        assert!(ingest_is_empty(&s));
    }

    #[test]
    fn size_mismatch_is_rejected() {
        let (_d, s) = store();
        let digest = Digest::sha256_of(b"hello");
        let mut w = s.ingest(Some((&digest, Some(6)))).unwrap();
        w.write_all(b"hello").unwrap();
        assert!(matches!(
            w.commit().unwrap_err(),
            Error::SizeMismatch { .. }
        ));
        assert!(!s.contains(&digest));
    }

    #[test]
    fn writing_past_the_expected_size_fails_early() {
        let (_d, s) = store();
        let digest = Digest::sha256_of(b"hello");
        let mut w = s.ingest(Some((&digest, Some(5)))).unwrap();
        w.write_all(b"hello").unwrap();
        assert!(w.write_all(b"!").is_err());
        assert_eq!(w.commit().unwrap(), digest);
    }

    #[test]
    fn sha512_blobs_are_supported() {
        let (_d, s) = store();
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"data");
        let digest = h.finish();
        s.write_blob(b"data", Some(&digest)).unwrap();
        assert!(s
            .blob_path(&digest)
            .to_string_lossy()
            .contains("blobs/sha512/"));
        assert!(s.fsck().unwrap().is_empty());
    }

    #[test]
    fn interrupted_ingest_leaves_nothing_and_is_cleaned_on_reopen() {
        let (dir, s) = store();
        let mut w = s.ingest(None).unwrap();
        w.write_all(b"partial").unwrap();
        std::mem::forget(w); // like a process killed mid-pull
        assert!(s.list().unwrap().is_empty());
        let s = LocalContentStore::open(dir.path()).unwrap();
        assert!(ingest_is_empty(&s));
    }

    #[test]
    fn fsck_reports_corrupted_blob_and_delete_is_idempotent() {
        let (_d, s) = store();
        let good = s.write_blob(b"good", None).unwrap();
        let bad = s.write_blob(b"bad", None).unwrap();
        fs::write(s.blob_path(&bad), b"tampered").unwrap();
        let report = s.fsck().unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].digest, bad);
        assert!(s.delete(&good).unwrap());
        assert!(!s.delete(&good).unwrap());
    }
}

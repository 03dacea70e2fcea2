//! Pulling an image from a registry (or its mirrors) into the content store and
//! snapshotter: resolve the manifest (choosing the host platform from an index),
//! fetch the config, then download up to `max_concurrent_downloads` layers at once,
//! each streamed through *ingest + digest* and *decompress + diff id + unpack* in one
//! pass. Layers are unpacked into parentless snapshots and committed bottom-up under
//! their chain ids; a chain id already committed is never fetched again.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{stream, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::config::{Endpoint, ImageConfig, PullAuth};
use crate::content::{ContentIngester, ContentReader, IngestWriter, LocalContentStore};
use crate::digest::{chain_ids, Digest};
use crate::error::{Error, Result};
use crate::lease::{KeyedLocks, Lease};
use crate::manifest::{self, Descriptor, Document, Manifest};
use crate::reference::ImageRef;
use crate::snapshot::{SnapshotKind, Snapshotter};
use crate::token::exchange_identity_token;
use crate::unpack::{unpack_layer, Compression, UnpackOptions};

static EXTRACT_SEQ: AtomicU64 = AtomicU64::new(0);

/// What a pull (or an import) produced.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The config digest: the image id.
    pub config_digest: Digest,
    /// The platform manifest's digest.
    pub manifest_digest: Digest,
    /// The digest the reference resolved to (the index for multi-arch images).
    pub top_digest: Digest,
    /// Raw config JSON.
    pub config: Vec<u8>,
    /// Chain ids, bottom first.
    pub chain_ids: Vec<Digest>,
    /// Layers fetched from the network by this call.
    pub layers_downloaded: usize,
    /// Compressed bytes fetched from the network by this call.
    pub bytes_downloaded: u64,
    /// Unpacked size of all layers.
    pub size: u64,
}

/// Where blobs come from: the registry endpoint a manifest was resolved on.
pub(crate) struct Fetcher {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
}

/// The shared machinery of pulls and imports.
#[derive(Debug)]
pub(crate) struct Unpacker {
    pub content: LocalContentStore,
    pub snapshots: Arc<dyn Snapshotter>,
    pub config: ImageConfig,
    pub locks: KeyedLocks,
    pub opts: UnpackOptions,
}

fn classify(reference: &str, host: &str, e: OciDistributionError) -> Error {
    use oci_client::errors::OciErrorCode as Code;
    let unauthorized = |e: &OciDistributionError| Error::Unauthorized {
        registry: host.to_string(),
        reason: e.to_string(),
    };
    let not_found = |e: &OciDistributionError| Error::RemoteNotFound {
        reference: reference.to_string(),
        reason: e.to_string(),
    };
    match &e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => unauthorized(&e),
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(&e),
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => unauthorized(&e),
        OciDistributionError::ServerError { code: 404, .. } => not_found(&e),
        OciDistributionError::RegistryError { envelope, .. } => {
            let has = |codes: &[Code]| envelope.errors.iter().any(|x| codes.contains(&x.code));
            if has(&[Code::Unauthorized, Code::Denied]) {
                unauthorized(&e)
            } else if has(&[
                Code::ManifestUnknown,
                Code::NameUnknown,
                Code::BlobUnknown,
                Code::NotFound,
            ]) {
                not_found(&e)
            } else {
                Error::Registry {
                    reference: reference.to_string(),
                    reason: e.to_string(),
                }
            }
        }
        _ => Error::Registry {
            reference: reference.to_string(),
            reason: e.to_string(),
        },
    }
}

fn client_for(endpoints: &[Endpoint]) -> Client {
    let http: Vec<String> = endpoints
        .iter()
        .filter(|e| e.http)
        .map(|e| e.host.clone())
        .collect();
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(http),
        platform_resolver: None,
        ..Default::default()
    })
}

impl Unpacker {
    /// Pulls `image` with `auth`, trying mirrors then the registry.
    pub async fn pull(&self, image: &ImageRef, auth: &PullAuth, lease: &Lease) -> Result<Unpacked> {
        let endpoints = self.config.endpoints(&image.registry)?;
        let client = client_for(&endpoints);
        let mut last = None;
        for ep in &endpoints {
            let reference = match &image.digest {
                Some(d) => {
                    Reference::with_digest(ep.host.clone(), image.repository.clone(), d.to_string())
                }
                None => Reference::with_tag(
                    ep.host.clone(),
                    image.repository.clone(),
                    image.tag.clone().unwrap_or_default(),
                ),
            };
            // Credentials are for the registry; a mirror never sees them.
            let auth = if ep.host != image.registry {
                RegistryAuth::Anonymous
            } else if let Some(identity) = auth.identity_only() {
                match exchange_identity_token(ep, &image.repository, identity).await {
                    Ok(token) => RegistryAuth::Bearer(token),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            } else {
                auth.to_registry_auth()?
            };
            let fetcher = Fetcher {
                client: client.clone(),
                reference,
                auth,
            };
            match self.resolve(&fetcher, image, lease).await {
                Ok((manifest, manifest_digest, top)) => {
                    return self
                        .unpack_image(Some(&fetcher), &manifest, manifest_digest, top, lease)
                        .await;
                }
                Err(e) => {
                    tracing::debug!(endpoint = ep.host.as_str(), error = %e, "endpoint failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Registry {
            reference: image.to_string(),
            reason: "no endpoint".into(),
        }))
    }

    async fn fetch_manifest(
        &self,
        f: &Fetcher,
        reference: &Reference,
        want: Option<&Digest>,
        lease: &Lease,
    ) -> Result<(Document, Digest)> {
        let shown = reference.whole();
        let (bytes, _) = f
            .client
            .pull_manifest_raw(reference, &f.auth, manifest::ACCEPTED)
            .await
            .map_err(|e| classify(&shown, reference.registry(), e))?;
        let digest = Digest::sha256_of(&bytes);
        if let Some(want) = want {
            if want.algorithm() != digest.algorithm() || *want != digest {
                let mut h = crate::digest::Hasher::new(want.algorithm());
                h.update(&bytes);
                let actual = h.finish();
                if actual != *want {
                    return Err(Error::DigestMismatch {
                        expected: want.to_string(),
                        actual: actual.to_string(),
                    });
                }
            }
        }
        let digest = want.cloned().unwrap_or(digest);
        lease.add(digest.to_string());
        self.content.write_blob(&bytes, Some(&digest))?;
        Ok((manifest::parse_document(&bytes, "")?, digest))
    }

    /// Resolves the reference to a platform manifest. Returns (manifest, its digest,
    /// the digest the reference pointed at).
    async fn resolve(
        &self,
        f: &Fetcher,
        image: &ImageRef,
        lease: &Lease,
    ) -> Result<(Manifest, Digest, Digest)> {
        let (doc, top) = self
            .fetch_manifest(f, &f.reference, image.digest.as_ref(), lease)
            .await?;
        match doc {
            Document::Manifest(m) => Ok((m, top.clone(), top)),
            Document::Index(entries) => {
                let entry = manifest::select_platform(&image.to_string(), &entries)?;
                let by_digest = Reference::with_digest(
                    f.reference.registry().to_string(),
                    f.reference.repository().to_string(),
                    entry.digest.to_string(),
                );
                match self
                    .fetch_manifest(f, &by_digest, Some(&entry.digest), lease)
                    .await?
                {
                    (Document::Manifest(m), d) => Ok((m, d, top)),
                    (Document::Index(_), _) => Err(Error::InvalidManifest {
                        what: "index",
                        reason: "nested indexes are not supported".into(),
                    }),
                }
            }
        }
    }

    /// Fetches (or reads) the config and unpacks every layer missing from the
    /// snapshotter. `fetcher` is `None` for imports: every blob must be local.
    pub async fn unpack_image(
        &self,
        fetcher: Option<&Fetcher>,
        m: &Manifest,
        manifest_digest: Digest,
        top: Digest,
        lease: &Lease,
    ) -> Result<Unpacked> {
        lease.add(m.config.digest.to_string());
        let config = self.small_blob(fetcher, &m.config).await?;
        let (doc, _) = manifest::parse_config(&config)?;
        if doc.rootfs.diff_ids.len() != m.layers.len() {
            return Err(Error::InvalidManifest {
                what: "image config",
                reason: format!(
                    "{} diff ids for {} layers",
                    doc.rootfs.diff_ids.len(),
                    m.layers.len()
                ),
            });
        }
        for l in &m.layers {
            Compression::from_media_type(&l.media_type)?;
            lease.add(l.digest.to_string());
        }
        let chains = chain_ids(&doc.rootfs.diff_ids);
        for c in &chains {
            lease.add(c.to_string());
        }
        let tasks = (0..m.layers.len())
            .map(|i| self.layer(fetcher, &m.layers[i], &doc.rootfs.diff_ids[i], &chains[i]));
        let mut results = stream::iter(tasks).buffered(self.config.max_concurrent_downloads.max(1));
        let mut out = Unpacked {
            config_digest: m.config.digest.clone(),
            manifest_digest,
            top_digest: top,
            config,
            chain_ids: chains.clone(),
            layers_downloaded: 0,
            bytes_downloaded: 0,
            size: 0,
        };
        let mut i = 0;
        while let Some(r) = results.next().await {
            let layer = r?;
            out.size += layer.size;
            if let Some(active) = layer.active {
                let parent = if i == 0 {
                    None
                } else {
                    Some(chains[i - 1].to_string())
                };
                self.commit_layer(active, &chains[i], parent.as_deref())?;
            }
            if layer.downloaded > 0 {
                out.layers_downloaded += 1;
                out.bytes_downloaded += layer.downloaded;
            }
            i += 1;
        }
        Ok(out)
    }

    fn commit_layer(
        &self,
        mut active: ActiveSnapshot,
        chain: &Digest,
        parent: Option<&str>,
    ) -> Result<()> {
        match self
            .snapshots
            .commit(&chain.to_string(), &active.key, parent)
        {
            Ok(()) => {
                active.armed = false;
                Ok(())
            }
            Err(Error::SnapshotExists(_)) => Ok(()), // another unpack won; ours is dropped
            Err(e) => Err(e),
        }
    }

    async fn small_blob(&self, fetcher: Option<&Fetcher>, d: &Descriptor) -> Result<Vec<u8>> {
        if self.content.contains(&d.digest) {
            return self.content.read_all(&d.digest);
        }
        let f = fetcher.ok_or_else(|| Error::BlobNotFound(d.digest.to_string()))?;
        if d.size > 16 << 20 {
            return Err(Error::InvalidManifest {
                what: "manifest",
                reason: format!("config of {} bytes is too big", d.size),
            });
        }
        let mut buf = Vec::new();
        let mut s = f
            .client
            .pull_blob_stream(&f.reference, d.digest.to_string().as_str())
            .await
            .map_err(|e| classify(&f.reference.whole(), f.reference.registry(), e))?;
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(|e| Error::Registry {
                reference: f.reference.whole(),
                reason: e.to_string(),
            })?;
            if buf.len() as u64 + chunk.len() as u64 > d.size {
                break;
            }
            buf.extend_from_slice(&chunk);
        }
        self.content.write_blob(&buf, Some(&d.digest))?;
        Ok(buf)
    }

    async fn layer(
        &self,
        fetcher: Option<&Fetcher>,
        d: &Descriptor,
        diff_id: &Digest,
        chain: &Digest,
    ) -> Result<LayerDone> {
        let guard = self.locks.lock(&format!("chain:{chain}")).await;
        if let Ok(info) = self.snapshots.stat(&chain.to_string()) {
            if info.kind == SnapshotKind::Committed {
                return Ok(LayerDone {
                    active: None,
                    size: info.size,
                    downloaded: 0,
                });
            }
        }
        let seq = EXTRACT_SEQ.fetch_add(1, Ordering::Relaxed);
        let key = format!(
            "extract-{}-{seq}-{}",
            std::process::id(),
            &chain.hex()[..12]
        );
        let mounts = self.snapshots.prepare(&key, None)?;
        let active = ActiveSnapshot {
            snapshots: Arc::clone(&self.snapshots),
            key,
            armed: true,
            _lock: Some(guard),
        };
        let dest = mounts
            .upper_path()
            .ok_or_else(|| Error::Task("prepared snapshot has no upper dir".into()))?;
        let compression = Compression::from_media_type(&d.media_type)?;
        let opts = self.opts;
        let (size, downloaded) = if self.content.contains(&d.digest) {
            let file = self.content.open(&d.digest)?;
            let want = diff_id.clone();
            let r = tokio::task::spawn_blocking(move || {
                let got = unpack_layer(file, compression, &dest, opts)?;
                check_diff(&want, &got.diff_id)?;
                Ok::<_, Error>(got.size)
            })
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
            (r, 0)
        } else {
            let f = fetcher.ok_or_else(|| Error::BlobNotFound(d.digest.to_string()))?;
            self.download_and_unpack(f, d, diff_id, compression, dest)
                .await?
        };
        Ok(LayerDone {
            active: Some(active),
            size,
            downloaded,
        })
    }

    async fn download_and_unpack(
        &self,
        f: &Fetcher,
        d: &Descriptor,
        diff_id: &Digest,
        compression: Compression,
        dest: std::path::PathBuf,
    ) -> Result<(u64, u64)> {
        let shown = f.reference.whole();
        let mut s = f
            .client
            .pull_blob_stream(&f.reference, d.digest.to_string().as_str())
            .await
            .map_err(|e| classify(&shown, f.reference.registry(), e))?;
        let ingest = self.content.ingest(Some((&d.digest, Some(d.size))))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(16);
        let (want, opts) = (diff_id.clone(), self.opts);
        let worker = tokio::task::spawn_blocking(move || {
            let mut tee = Tee {
                inner: ChannelReader {
                    rx,
                    buf: bytes::Bytes::new(),
                },
                ingest,
            };
            let got = unpack_layer(&mut tee, compression, &dest, opts);
            // The blob digest first: a registry sending other bytes is the root cause.
            tee.ingest.verify()?;
            let got = got?;
            check_diff(&want, &got.diff_id)?;
            tee.ingest.commit()?;
            Ok::<_, Error>(got.size)
        });
        let (mut done, total, mut next_log) = (0u64, d.size, d.size / 4);
        let loud = d.size >= self.config.progress_min_bytes;
        let mut stream_err = None;
        while let Some(chunk) = s.next().await {
            // oci-client's own digest check fails the last chunk; ours (in the ingest)
            // reports it with both digests, so stop feeding and let the worker decide.
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    stream_err = Some(e.to_string());
                    break;
                }
            };
            done += chunk.len() as u64;
            if tx.send(Ok(chunk)).await.is_err() {
                break; // the worker stopped early; its error is reported below
            }
            if loud && done >= next_log {
                tracing::info!(image = shown.as_str(), layer = %d.digest, done, total, "pulling layer");
                next_log = next_log.saturating_add((total / 4).max(1));
            }
        }
        drop(tx);
        let result = worker.await.map_err(|e| Error::Task(e.to_string()))?;
        match (result, stream_err) {
            (Ok(size), None) => Ok((size, done)),
            (
                Err(
                    e @ (Error::DigestMismatch { .. }
                    | Error::SizeMismatch { .. }
                    | Error::HostileLayer { .. }),
                ),
                _,
            ) => Err(e),
            (Err(e), None) => Err(e),
            (_, Some(reason)) => Err(Error::Registry {
                reference: shown,
                reason,
            }),
        }
    }
}

fn check_diff(want: &Digest, got: &Digest) -> Result<()> {
    if want == got {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            expected: format!("diff id {want}"),
            actual: got.to_string(),
        })
    }
}

struct LayerDone {
    active: Option<ActiveSnapshot>,
    size: u64,
    downloaded: u64,
}

/// An extraction snapshot removed on drop unless committed; it also holds the chain
/// id lock until then, so a concurrent pull of the same layer waits and reuses it.
struct ActiveSnapshot {
    snapshots: Arc<dyn Snapshotter>,
    key: String,
    armed: bool,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for ActiveSnapshot {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.snapshots.remove(&self.key) {
                tracing::warn!(key = self.key.as_str(), error = %e, "could not remove failed extraction");
            }
        }
    }
}

/// Reads the chunks the async side sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    buf: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.buf = chunk?,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        bytes::Buf::advance(&mut self.buf, n);
        Ok(n)
    }
}

/// Copies everything read into the ingest, which hashes it.
struct Tee<R> {
    inner: R,
    ingest: IngestWriter,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        io::Write::write_all(&mut self.ingest, &out[..n])?;
        Ok(n)
    }
}

//! Import and export of image archives: `docker save` tarballs (`manifest.json`, with
//! or without an OCI layout beside it) and OCI image-layout archives (`oci-layout`,
//! `index.json`, `blobs/<alg>/<hex>`).
//!
//! Threat model: the archive is untrusted. Its file names are never used as paths:
//! every file is streamed into the content store (verified against its digest when its
//! name is `blobs/<alg>/<hex>`), names only key an in-memory map, and layers then go
//! through the same verified, safe unpack as pulled ones. JSON documents are capped
//! at 16 MiB.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use serde::Deserialize;

use crate::content::{ContentIngester, ContentReader};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::manager::ImageManager;
use crate::manifest::{self, Descriptor, Document, Manifest};
use crate::records::Image;
use crate::reference::ImageRef;

const MAX_JSON: u64 = 16 << 20;

/// What the archive held, read in one pass.
#[derive(Debug, Default)]
struct Scanned {
    files: HashMap<String, Digest>,
    links: HashMap<String, String>,
    docker_manifest: Option<Vec<u8>>,
    index: Option<Vec<u8>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::InvalidManifest {
        what: "image archive",
        reason: reason.into(),
    }
}

fn clean_name(name: &str) -> String {
    name.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

impl ImageManager {
    /// Loads every image of a `docker save` or OCI-layout archive read from `reader`
    /// (a file or stdin) and records them under their names. Returns the images.
    pub async fn import<R: Read + Send + 'static>(&self, reader: R) -> Result<Vec<Image>> {
        let lease = self.leases.acquire();
        let content = self.content().clone();
        let (scanned, lease) =
            tokio::task::spawn_blocking(move || scan(reader, &content, &lease).map(|s| (s, lease)))
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
        let images = match (&scanned.index, &scanned.docker_manifest) {
            (Some(index), _) => self.oci_images(index, &lease)?,
            (None, Some(m)) => self.docker_images(m, &scanned, &lease)?,
            (None, None) => return Err(bad("neither index.json nor manifest.json found")),
        };
        let mut out = Vec::new();
        for (names, m, digest, with_digest) in images {
            let unpacked = self
                .unpacker
                .unpack_image(None, &m, digest.clone(), digest, &lease)
                .await?;
            if names.is_empty() {
                out.push(self.record(None, false, &unpacked)?);
            }
            for name in &names {
                out.push(self.record(Some(name), with_digest, &unpacked)?);
            }
        }
        tracing::info!(images = out.len(), "archive imported");
        Ok(out)
    }

    /// Images of an OCI layout: names from `io.containerd.image.name` or a full
    /// reference in `org.opencontainers.image.ref.name`.
    #[allow(clippy::type_complexity)]
    fn oci_images(
        &self,
        index: &[u8],
        lease: &Lease,
    ) -> Result<Vec<(Vec<ImageRef>, Manifest, Digest, bool)>> {
        let Document::Index(entries) = manifest::parse_document(index, manifest::OCI_INDEX)? else {
            return Err(bad("index.json is not an index"));
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry
                .annotations
                .get("io.containerd.image.name")
                .or_else(|| entry.annotations.get("org.opencontainers.image.ref.name"))
                .and_then(|n| {
                    ImageRef::parse(n)
                        .ok()
                        .filter(|_| n.contains('/') || n.contains('.'))
                });
            let (m, digest) = self.local_manifest(&entry, lease)?;
            out.push((name.into_iter().collect(), m, digest, true));
        }
        Ok(out)
    }

    fn local_manifest(&self, entry: &Descriptor, lease: &Lease) -> Result<(Manifest, Digest)> {
        lease.add(entry.digest.to_string());
        let bytes = self.content().read_all(&entry.digest)?;
        match manifest::parse_document(&bytes, &entry.media_type)? {
            Document::Manifest(m) => Ok((m, entry.digest.clone())),
            Document::Index(entries) => {
                let chosen = manifest::select_platform(&entry.digest.to_string(), &entries)?;
                self.local_manifest(&chosen, lease)
            }
        }
    }

    /// Images of a docker-save `manifest.json`: a manifest is written for each.
    #[allow(clippy::type_complexity)]
    fn docker_images(
        &self,
        bytes: &[u8],
        s: &Scanned,
        lease: &Lease,
    ) -> Result<Vec<(Vec<ImageRef>, Manifest, Digest, bool)>> {
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("manifest.json: {e}")))?;
        let mut out = Vec::new();
        for e in entries {
            let config = self.descriptor(s, &e.config, manifest::DOCKER_CONFIG)?;
            let layers = e
                .layers
                .iter()
                .map(|l| self.layer_descriptor(s, l))
                .collect::<Result<Vec<_>>>()?;
            let m = Manifest {
                media_type: manifest::DOCKER_MANIFEST.to_string(),
                config,
                layers,
            };
            let raw = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": m.media_type, "config": m.config, "layers": m.layers,
            }))
            .map_err(|e| bad(e.to_string()))?;
            let digest = self.content().write_blob(&raw, None)?;
            lease.add(digest.to_string());
            let names = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| ImageRef::parse(t))
                .collect::<Result<Vec<_>>>()?;
            out.push((names, m, digest, false));
        }
        Ok(out)
    }

    fn descriptor(&self, s: &Scanned, name: &str, media_type: &str) -> Result<Descriptor> {
        let mut name = clean_name(name);
        for _ in 0..8 {
            match s.links.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        let digest = s
            .files
            .get(&name)
            .ok_or_else(|| bad(format!("{name} is not in the archive")))?;
        let size = self.content().info(digest)?.size;
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest: digest.clone(),
            size,
            platform: None,
            annotations: Default::default(),
        })
    }

    fn layer_descriptor(&self, s: &Scanned, name: &str) -> Result<Descriptor> {
        let mut d = self.descriptor(s, name, "")?;
        let mut magic = [0u8; 4];
        let n = self
            .content()
            .open(&d.digest)?
            .read(&mut magic)
            .map_err(|e| Error::io("read", name, e))?;
        d.media_type = match &magic[..n] {
            [0x1f, 0x8b, ..] => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.docker.image.rootfs.diff.tar",
        }
        .to_string();
        Ok(d)
    }

    /// Writes the image `reference` names as an OCI image-layout tar (with a docker
    /// `manifest.json` beside it so `docker load` takes it too).
    pub fn export<W: Write>(&self, reference: &str, out: W) -> Result<()> {
        let image = self
            .status(reference)?
            .ok_or_else(|| Error::ImageNotFound(reference.to_string()))?;
        let raw = self.content().read_all(&image.manifest_digest)?;
        let Document::Manifest(m) = manifest::parse_document(&raw, "")? else {
            return Err(bad("recorded manifest is an index"));
        };
        let mut tar = tar::Builder::new(out);
        let blob_name = |d: &Digest| format!("blobs/{}/{}", d.algorithm().as_str(), d.hex());
        let manifest_desc = |tag: Option<&String>| {
            let mut v = serde_json::json!({"mediaType": m.media_type, "digest": image.manifest_digest, "size": raw.len()});
            if let Some(t) = tag {
                let short = t.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
                v["annotations"] = serde_json::json!({"io.containerd.image.name": t, "org.opencontainers.image.ref.name": short});
            }
            v
        };
        let mut entries: Vec<_> = image
            .repo_tags
            .iter()
            .map(|t| manifest_desc(Some(t)))
            .collect();
        if entries.is_empty() {
            entries.push(manifest_desc(None));
        }
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": entries});
        let docker = serde_json::json!([{
            "Config": blob_name(&m.config.digest),
            "RepoTags": image.repo_tags,
            "Layers": m.layers.iter().map(|l| blob_name(&l.digest)).collect::<Vec<_>>(),
        }]);
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append(&mut tar, "index.json", index.to_string().as_bytes())?;
        append(&mut tar, "manifest.json", docker.to_string().as_bytes())?;
        append(&mut tar, &blob_name(&image.manifest_digest), &raw)?;
        for d in std::iter::once(&m.config.digest).chain(m.layers.iter().map(|l| &l.digest)) {
            let size = self.content().info(d)?.size;
            let mut h = header(size);
            tar.append_data(&mut h, blob_name(d), self.content().open(d)?)
                .map_err(|e| Error::io("write archive", blob_name(d), e))?;
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| Error::io("write archive", "", e))
    }
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = header(data.len() as u64);
    tar.append_data(&mut h, name, data)
        .map_err(|e| Error::io("write archive", name, e))
}

/// Streams every file of the archive into the content store.
fn scan<R: Read>(
    reader: R,
    content: &crate::content::LocalContentStore,
    lease: &Lease,
) -> Result<Scanned> {
    let mut s = Scanned::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive
        .entries()
        .map_err(|e| Error::io("read archive", "", e))?
    {
        let mut entry = entry.map_err(|e| Error::io("read archive", "", e))?;
        let name = clean_name(
            &entry
                .path()
                .map_err(|e| Error::io("read archive", "", e))?
                .to_string_lossy(),
        );
        match entry.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Ok(Some(target)) = entry.link_name() {
                    let target = target.to_string_lossy().into_owned();
                    let resolved = if entry.header().entry_type() == tar::EntryType::Link {
                        clean_name(&target)
                    } else {
                        resolve_relative(&name, &target)
                    };
                    s.links.insert(name, resolved);
                }
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            _ => continue,
        }
        if name == "oci-layout" || name == "repositories" {
            continue;
        }
        if name == "manifest.json" || name == "index.json" {
            if entry.size() > MAX_JSON {
                return Err(bad(format!("{name} is larger than 16 MiB")));
            }
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .map_err(|e| Error::io("read archive", &name, e))?;
            if name == "manifest.json" {
                s.docker_manifest = Some(buf)
            } else {
                s.index = Some(buf)
            }
            continue;
        }
        let expected = blob_digest(&name);
        let mut w = content.ingest(expected.as_ref().map(|d| (d, Some(entry.size()))))?;
        io::copy(&mut entry, &mut w).map_err(|e| Error::io("import blob", &name, e))?;
        let digest = w.commit()?;
        lease.add(digest.to_string());
        s.files.insert(name, digest);
    }
    Ok(s)
}

/// `blobs/<alg>/<hex>` names promise their digest.
fn blob_digest(name: &str) -> Option<Digest> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

/// Resolves a symlink target relative to the link's directory, inside the archive.
fn resolve_relative(link: &str, target: &str) -> String {
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

//! The manifest, index and config documents, parsed from their raw (digest-verified)
//! bytes. Only the fields crius uses; unknown fields are ignored as the specs require.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// What a pull accepts.
pub const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform, in index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An index entry's platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`, ...
    pub os: String,
    /// `v8`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A parsed manifest or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// A single-platform image manifest.
    Manifest(Manifest),
    /// A multi-platform index (or Docker manifest list).
    Index(Vec<Descriptor>),
}

/// A single-platform image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Media type (may be absent in OCI manifests).
    #[serde(default)]
    pub media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// Parses a manifest or index; `content_type` is the registry's header (may be empty).
pub fn parse_document(bytes: &[u8], content_type: &str) -> Result<Document> {
    let bad = |reason: String| Error::InvalidManifest {
        what: "manifest",
        reason,
    };
    let p: Probe = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if p.schema_version != 2 {
        return Err(bad(format!(
            "schemaVersion {} is not supported (only 2)",
            p.schema_version
        )));
    }
    let media_type = if p.media_type.is_empty() {
        content_type.to_string()
    } else {
        p.media_type
    };
    match (p.manifests, p.config, p.layers) {
        (Some(m), None, _)
            if media_type.is_empty() || media_type == OCI_INDEX || media_type == DOCKER_LIST =>
        {
            Ok(Document::Index(m))
        }
        (None, Some(config), Some(layers))
            if media_type.is_empty()
                || media_type == OCI_MANIFEST
                || media_type == DOCKER_MANIFEST =>
        {
            let media_type = if media_type.is_empty() {
                OCI_MANIFEST.to_string()
            } else {
                media_type
            };
            Ok(Document::Manifest(Manifest {
                media_type,
                config,
                layers,
            }))
        }
        _ => Err(Error::UnsupportedMediaType(if media_type.is_empty() {
            "unknown manifest".into()
        } else {
            media_type
        })),
    }
}

/// The host platform in OCI terms (`linux`, `amd64`).
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

/// Picks the host platform's manifest from an index.
pub fn select_platform(reference: &str, entries: &[Descriptor]) -> Result<Descriptor> {
    let (os, arch) = host_platform();
    entries
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        })
        .cloned()
        .ok_or_else(|| Error::PlatformNotFound {
            reference: reference.to_string(),
            platform: format!("{os}/{arch}"),
            available: entries
                .iter()
                .filter_map(|d| {
                    d.platform
                        .as_ref()
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The parts of an image config crius needs; the whole JSON is kept as well.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageConfigDoc {
    /// `rootfs.diff_ids`.
    pub rootfs: RootFs,
    /// `config.User` and the rest of the runtime config.
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RootFs {
    /// Diff ids, bottom first.
    pub diff_ids: Vec<Digest>,
}

/// The runtime part of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RuntimeConfig {
    /// `User`.
    #[serde(rename = "User", default)]
    pub user: String,
}

/// Parses an image config.
pub fn parse_config(bytes: &[u8]) -> Result<(ImageConfigDoc, serde_json::Value)> {
    let bad = |e: serde_json::Error| Error::InvalidManifest {
        what: "image config",
        reason: e.to_string(),
    };
    Ok((
        serde_json::from_slice(bytes).map_err(bad)?,
        serde_json::from_slice(bytes).map_err(bad)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_without_host_platform_names_what_it_has() {
        let d = format!("sha256:{}", "1".repeat(64));
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1,"platform":{{"os":"linux","architecture":"s390x"}}}}]}}"#
        );
        let Document::Index(entries) = parse_document(idx.as_bytes(), "").unwrap() else {
            panic!("not an index")
        };
        let err = select_platform("x", &entries).unwrap_err().to_string();
        assert!(
            err.contains("linux/amd64") && err.contains("linux/s390x"),
            "{err}"
        );
    }

    #[test]
    fn schema1_and_garbage_are_refused() {
        assert!(parse_document(br#"{"schemaVersion":1}"#, "").is_err());
        assert!(parse_document(b"not json", "").is_err());
    }
}

#[cfg(test)]
mod robustness {
    use super::*;

    #[test]
    fn truncated_and_mutated_documents_never_panic() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"sha256:{}","size":2}},"layers":[]}}"#,
            "a".repeat(64)
        );
        assert!(parse_document(doc.as_bytes(), "").is_ok());
        for cut in 0..doc.len() {
            let _ = parse_document(&doc.as_bytes()[..cut], "");
            let mut m = doc.clone().into_bytes();
            m[cut] = b'"';
            let _ = parse_document(&m, "");
            let _ = parse_config(&m);
        }
    }
}

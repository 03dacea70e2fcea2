//! `crius-image`: everything about images below the CRI edge, as a protobuf-free API
//! the gRPC `ImageService` translates to.
//!
//! Owns:
//! - the [content store](content): blobs by digest (sha256, sha512) under
//!   `<root>/content/blobs/<alg>/<hex>`, written through `content/ingest/`, verified for
//!   size and digest, fsynced and renamed; reader, ingester and manager roles;
//! - [pulls](ImageManager::pull) with `oci-client`: OCI and Docker schema 2 manifests,
//!   indexes (host platform), basic/bearer/anonymous auth, plain-HTTP registries and
//!   mirrors ([`ImageConfig`]), parallel layer downloads unpacked while they stream,
//!   concurrent pulls of one image sharing its download;
//! - [safe unpacking](unpack) of tar, tar+gzip and tar+zstd layers;
//! - the [overlay snapshotter](snapshot): one directory per chain id, container rootfs
//!   as overlay mounts with short relative options (100+ layers fit in a page);
//! - [image records](records) (persisted in `crius-store`), GC under leases,
//!   docker-save / OCI-layout import, OCI-layout export, fsck.
//!
//! Refuses: schema 1 manifests, nested indexes, foreign layer URLs, sparse tar
//! entries, `trusted.*` xattrs from layers, device nodes unless real root. Does not
//! own: CRI types, the CLI, container processes.
//!
//! Threat model: registries, mirrors, archives and layers are untrusted. Every byte
//! is checked against a digest before it is visible (blobs, manifests, configs, and
//! layer diff ids against the config); a failed check discards the bytes and any
//! partial snapshot. Layer entries cannot create, change or link anything outside
//! their snapshot directory (see [`unpack`]). Metadata (tags, records) is only
//! written after the content it names is complete. Bugs here could let an image
//! write to the host, so the hostile cases have their own tests.
#![forbid(unsafe_code)]

pub mod config;
pub mod content;
pub mod digest;
pub mod error;
pub mod lease;
pub mod manager;
pub mod manifest;
mod pull;
pub mod records;
pub mod reference;
pub mod snapshot;
mod token;
pub mod unpack;

pub use config::{ImageConfig, PullAuth, RegistryConfig};
pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
pub use manager::{FsUsage, GcReport, ImageManager, PullResult};
pub use records::{Image, ImageRecords, StoreImageRecords};

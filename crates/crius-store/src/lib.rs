//! Durable metadata for criusd: pods, containers, images, content leases and a few
//! settings, in one [redb](https://docs.rs/redb) file (`/var/lib/crius/meta.redb`).
//!
//! # Tables
//!
//! Every table maps a `&str` key to JSON bytes (`serde_json`; records read tolerantly,
//! see [`records`]).
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `schema_version` | [`SCHEMA_VERSION`] of the file |
//! | `pods`, `containers`, `images`, `leases` | record id | the record |
//! | `pod_names` | `[namespace, name, uid, attempt]` | pod id (unique) |
//! | `container_names` | `[pod_id, name, attempt]` | container id (unique) |
//! | `pod_containers` | `<pod_id>\0<container_id>` | container id |
//! | `image_tags`, `image_digests` | repo tag / repo digest | image id (unique) |
//! | `settings` | key | any JSON value (e.g. the pod CIDR) |
//! | `container_specs` | container id | the container's OCI spec |
//!
//! A container's OCI spec is tens of KiB (its seccomp profile alone), read only by exec,
//! resource updates and verbose status. It is kept out of the container record so that
//! listing containers, status and every state change decode only the record; the record
//! carries a [`SpecSummary`] of the few spec facts those paths need. The spec row is
//! written with the record ([`WriteTxn::insert_container`]) and removed with it.
//!
//! The index tables are written in the same transaction as their records. A second
//! record with a taken key is refused with [`Error::Reserved`] (kind AlreadyExists)
//! naming the holder; a container must name an existing pod, and a pod with containers
//! cannot be removed, so no container is ever orphaned.
//!
//! # Durability contract
//!
//! Every [`WriteTxn::commit`] uses redb's default `Durability::Immediate`: when it
//! returns `Ok`, the whole transaction is on disk (fsynced) and survives a crash or
//! `kill -9`; a transaction not committed, or interrupted mid-commit, leaves no trace.
//! A transaction is therefore the unit of every state transition: after a crash the
//! store holds exactly the committed transactions (tested by killing a writer with
//! SIGKILL at random points and checking the invariants on reopen).
//!
//! The file is opened exclusively: a second criusd on the same file gets
//! [`Error::Locked`]. A file written by a newer schema is refused
//! ([`Error::SchemaTooNew`]); older schemas are migrated on open in one transaction.
//!
//! # What this crate does not own
//!
//! The state machines (which transitions are legal) live in `crius-core`; blobs and
//! snapshots live in `crius-image`. This crate stores what it is given and guards only
//! ids, unique keys and pod/container references. Its input comes from criusd, which
//! validated it; the one untrusted edge is the file itself, whose corrupt entries
//! surface as [`Error::Decode`] rather than panics.

#![forbid(unsafe_code)]

mod collection;
mod error;
pub mod records;
mod store;

pub use collection::{Collection, CollectionMut, Record};
pub use error::{Error, ErrorKind, Result};
pub use records::{
    ContainerMetadata, ContainerRecord, ContainerState, ImageRecord, ImageVolumeSummary,
    LeaseRecord, NamespaceOptions, PodMetadata, PodRecord, PodState, SpecSummary,
    IMAGE_VOLUMES_ANNOTATION, STOP_SIGNAL_ANNOTATION,
};
pub use store::{ReadTxn, Store, WriteTxn, SCHEMA_VERSION};

//! Typed collections over redb tables, with their unique-key indexes.
//!
//! Every table maps a `&str` key to JSON bytes. A record table is keyed by id; an
//! index table maps a unique key (e.g. a pod's CRI metadata) to the owning id. The
//! indexes are written in the same transaction as the record, so they can never
//! disagree with it after a commit.

use std::marker::PhantomData;
use std::path::Path;

use redb::{ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::records::{ContainerRecord, ImageRecord, LeaseRecord, PodRecord};

pub(crate) type Def = TableDefinition<'static, &'static str, &'static [u8]>;

pub(crate) const fn def(name: &'static str) -> Def {
    TableDefinition::new(name)
}

pub(crate) const POD_NAMES: &str = "pod_names";
pub(crate) const CONTAINER_NAMES: &str = "container_names";
pub(crate) const POD_CONTAINERS: &str = "pod_containers";
pub(crate) const IMAGE_TAGS: &str = "image_tags";
pub(crate) const IMAGE_DIGESTS: &str = "image_digests";
pub(crate) const SETTINGS: &str = "settings";
/// Container id → the container's OCI spec (JSON), apart from the record so that reading
/// a record never decodes it.
pub(crate) const CONTAINER_SPECS: &str = "container_specs";

/// A record type with its own table. Implemented for the four record types of this
/// crate only.
pub trait Record: Serialize + DeserializeOwned + sealed::Schema {
    /// The record table's name.
    const TABLE: &'static str;
    /// The kind named in error messages (`pod`, `container`, `image`, `lease`).
    const KIND: &'static str;
    /// The record's id, its key in [`Self::TABLE`].
    fn id(&self) -> &str;
}

pub(crate) mod sealed {
    use super::Txn;
    use crate::error::Result;

    /// Index maintenance and referential checks; private to the crate.
    pub trait Schema {
        /// `(index table, key)` pairs this record owns.
        fn index_keys(&self) -> Vec<(&'static str, String)> {
            Vec::new()
        }
        /// Checks the records this one refers to exist.
        fn check_refs(&self, _txn: &Txn<'_>) -> Result<()> {
            Ok(())
        }
        /// Checks nothing refers to the record with this id.
        fn check_unreferenced(_id: &str, _txn: &Txn<'_>) -> Result<()> {
            Ok(())
        }
        /// Tables holding a row under the record's id that is removed with the record.
        fn owned_tables() -> &'static [&'static str] {
            &[]
        }
    }
}

/// Either kind of redb transaction, with the store path for error context.
#[derive(Clone, Copy)]
pub enum Txn<'t> {
    Read(&'t redb::ReadTransaction, &'t Path),
    Write(&'t redb::WriteTransaction, &'t Path),
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Txn::Read(_, path) => write!(f, "Txn::Read({})", path.display()),
            Txn::Write(_, path) => write!(f, "Txn::Write({})", path.display()),
        }
    }
}

pub(crate) fn db_err<E: Into<redb::Error>>(path: &Path, op: String) -> impl FnOnce(E) -> Error {
    let path = path.to_path_buf();
    move |e| Error::Db {
        path,
        op,
        error: Box::new(e.into()),
    }
}

fn get_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, redb::StorageError> {
    Ok(table.get(key)?.map(|v| v.value().to_vec()))
}

/// Calls `f` on every entry of `table` whose key starts with `prefix`, in key order,
/// with the bytes as stored (no copy per row).
fn visit_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    path: &Path,
    name: &'static str,
    f: &mut dyn FnMut(&str, &[u8]) -> Result<()>,
) -> Result<()> {
    let scan_err = |e: redb::StorageError| db_err(path, format!("scan table {name}"))(e);
    for entry in table.range(prefix..).map_err(scan_err)? {
        let (k, v) = entry.map_err(scan_err)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        f(k.value(), v.value())?;
    }
    Ok(())
}

impl<'t> Txn<'t> {
    pub(crate) fn path(&self) -> &'t Path {
        match self {
            Txn::Read(_, p) | Txn::Write(_, p) => p,
        }
    }

    /// Reads one raw value.
    pub(crate) fn get(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>> {
        // The error contexts are built only on error: this runs for every record read.
        let path = self.path();
        let open = |e: redb::TableError| db_err(path, format!("open table {table}"))(e);
        let read =
            |e: redb::StorageError| db_err(path, format!("read {key:?} from table {table}"))(e);
        match self {
            Txn::Read(t, _) => get_in(&t.open_table(def(table)).map_err(open)?, key).map_err(read),
            Txn::Write(t, _) => get_in(&t.open_table(def(table)).map_err(open)?, key).map_err(read),
        }
    }

    /// Calls `f` on every entry whose key starts with `prefix`, in key order.
    pub(crate) fn visit(
        &self,
        table: &'static str,
        prefix: &str,
        f: &mut dyn FnMut(&str, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let path = self.path();
        let open = |e: redb::TableError| db_err(path, format!("open table {table}"))(e);
        match self {
            Txn::Read(t, _) => visit_in(
                &t.open_table(def(table)).map_err(open)?,
                prefix,
                path,
                table,
                f,
            ),
            Txn::Write(t, _) => visit_in(
                &t.open_table(def(table)).map_err(open)?,
                prefix,
                path,
                table,
                f,
            ),
        }
    }

    /// Reads every entry whose key starts with `prefix`, in key order.
    pub(crate) fn scan(&self, table: &'static str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        self.visit(table, prefix, &mut |k, v| {
            out.push((k.to_owned(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Reads and decodes one value.
    pub(crate) fn get_json<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
    ) -> Result<Option<T>> {
        self.get(table, key)?
            .map(|bytes| decode(self.path(), table, key, &bytes))
            .transpose()
    }

    /// Reads the index entry `key` and returns the owning id.
    pub(crate) fn index_get(&self, table: &'static str, key: &str) -> Result<Option<String>> {
        self.get_json(table, key)
    }
}

pub(crate) fn decode<T: DeserializeOwned>(
    path: &Path,
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| Error::Decode {
        path: path.to_path_buf(),
        table,
        key: key.to_owned(),
        error,
    })
}

/// Writes `value` (already encoded) under `key`.
pub(crate) fn put(
    txn: &redb::WriteTransaction,
    path: &Path,
    table: &'static str,
    key: &str,
    value: &[u8],
) -> Result<()> {
    let mut t = txn
        .open_table(def(table))
        .map_err(db_err(path, format!("open table {table}")))?;
    t.insert(key, value)
        .map_err(db_err(path, format!("write {key:?} to table {table}")))?;
    Ok(())
}

/// Deletes `key`; returns whether it was there.
pub(crate) fn delete(
    txn: &redb::WriteTransaction,
    path: &Path,
    table: &'static str,
    key: &str,
) -> Result<bool> {
    let mut t = txn
        .open_table(def(table))
        .map_err(db_err(path, format!("open table {table}")))?;
    let removed = t
        .remove(key)
        .map_err(db_err(path, format!("delete {key:?} from table {table}")))?;
    Ok(removed.is_some())
}

fn encode_json<T: Serialize + ?Sized>(kind: &'static str, id: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|error| Error::Encode {
        kind,
        id: id.to_owned(),
        error,
    })
}

pub(crate) fn encode_setting<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>> {
    encode_json("setting", key, value)
}

fn check_id(kind: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.contains('\0') {
        return Err(Error::InvalidId {
            kind,
            id: id.to_owned(),
        });
    }
    Ok(())
}

/// Read access to the records of one type.
pub struct Collection<'t, R> {
    pub(crate) txn: Txn<'t>,
    pub(crate) _record: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Collection<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Collection({:?})", self.txn)
    }
}

impl<R: Record> Collection<'_, R> {
    /// The record with this id, if any.
    pub fn get(&self, id: &str) -> Result<Option<R>> {
        self.txn.get_json(R::TABLE, id)
    }

    /// The record with this id, or [`Error::NotFound`].
    pub fn require(&self, id: &str) -> Result<R> {
        self.get(id)?.ok_or_else(|| Error::NotFound {
            kind: R::KIND,
            id: id.to_owned(),
        })
    }

    /// Every record, in id order.
    pub fn list(&self) -> Result<Vec<R>> {
        let path = self.txn.path();
        let mut out = Vec::new();
        // Decoded straight from the stored bytes: no copy of each row first.
        self.txn.visit(R::TABLE, "", &mut |key, bytes| {
            out.push(decode(path, R::TABLE, key, bytes)?);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Read and write access to the records of one type, inside a write transaction.
///
/// Each method checks everything before it writes anything, so a failed call leaves
/// the transaction as it was.
pub struct CollectionMut<'t, R> {
    pub(crate) read: Collection<'t, R>,
    pub(crate) txn: &'t redb::WriteTransaction,
}

impl<R> std::fmt::Debug for CollectionMut<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CollectionMut({:?})", self.read.txn)
    }
}

impl<'t, R> std::ops::Deref for CollectionMut<'t, R> {
    type Target = Collection<'t, R>;
    fn deref(&self) -> &Self::Target {
        &self.read
    }
}

impl<R: Record> CollectionMut<'_, R> {
    /// Adds a new record. [`Error::AlreadyExists`] if the id is taken, [`Error::Reserved`]
    /// if one of its unique keys belongs to another record, [`Error::MissingParent`] if a
    /// container's pod does not exist.
    pub fn insert(&self, record: &R) -> Result<()> {
        let id = record.id();
        check_id(R::KIND, id)?;
        if self.txn().get(R::TABLE, id)?.is_some() {
            return Err(Error::AlreadyExists {
                kind: R::KIND,
                id: id.to_owned(),
            });
        }
        self.write(record, &[])
    }

    /// Replaces an existing record, moving its index entries. [`Error::NotFound`] if absent;
    /// otherwise the same errors as [`Self::insert`].
    pub fn update(&self, record: &R) -> Result<()> {
        let id = record.id();
        let old = self.require(id)?;
        self.write(record, &old.index_keys())
    }

    /// Removes the record, with the rows it owns in other tables (a container's OCI spec);
    /// `false` if it was not there. [`Error::HasChildren`] for a pod that still has
    /// containers.
    pub fn remove(&self, id: &str) -> Result<bool> {
        let Some(old) = self.get(id)? else {
            return Ok(false);
        };
        R::check_unreferenced(id, &self.txn())?;
        let path = self.txn().path();
        for (table, key) in old.index_keys() {
            delete(self.txn, path, table, &key)?;
        }
        for table in R::owned_tables() {
            delete(self.txn, path, table, id)?;
        }
        delete(self.txn, path, R::TABLE, id)
    }

    fn txn(&self) -> Txn<'_> {
        self.read.txn
    }

    /// Validates `record`, then writes it and its index keys, dropping `old_keys` it no
    /// longer owns.
    fn write(&self, record: &R, old_keys: &[(&'static str, String)]) -> Result<()> {
        let id = record.id();
        let txn = self.txn();
        record.check_refs(&txn)?;
        let bytes = encode_json(R::KIND, id, record)?;
        let new_keys = record.index_keys();
        for (table, key) in &new_keys {
            match txn.index_get(table, key)? {
                Some(existing_id) if existing_id != id => {
                    return Err(Error::Reserved {
                        kind: R::KIND,
                        key: key.clone(),
                        existing_id,
                    })
                }
                Some(_) | None => {}
            }
        }
        let path = txn.path();
        for (table, key) in old_keys.iter().filter(|k| !new_keys.contains(k)) {
            delete(self.txn, path, table, key)?;
        }
        let id_json = encode_json(R::KIND, id, id)?;
        for (table, key) in &new_keys {
            put(self.txn, path, table, key, &id_json)?;
        }
        put(self.txn, path, R::TABLE, id, &bytes)
    }
}

/// The unique key of a pod in [`POD_NAMES`].
pub(crate) fn pod_key(m: &crate::PodMetadata) -> String {
    serde_json::json!([m.namespace, m.name, m.uid, m.attempt]).to_string()
}

/// The unique key of a container in [`CONTAINER_NAMES`].
pub(crate) fn container_key(pod_id: &str, m: &crate::ContainerMetadata) -> String {
    serde_json::json!([pod_id, m.name, m.attempt]).to_string()
}

/// The prefix of a pod's entries in [`POD_CONTAINERS`]; ids hold no NUL, so it is exact.
pub(crate) fn pod_containers_prefix(pod_id: &str) -> String {
    format!("{pod_id}\0")
}

impl Record for PodRecord {
    const TABLE: &'static str = "pods";
    const KIND: &'static str = "pod";
    fn id(&self) -> &str {
        &self.id
    }
}

impl sealed::Schema for PodRecord {
    fn index_keys(&self) -> Vec<(&'static str, String)> {
        vec![(POD_NAMES, pod_key(&self.metadata))]
    }
    fn check_unreferenced(id: &str, txn: &Txn<'_>) -> Result<()> {
        let count = txn.scan(POD_CONTAINERS, &pod_containers_prefix(id))?.len();
        if count > 0 {
            return Err(Error::HasChildren {
                kind: Self::KIND,
                id: id.to_owned(),
                child_kind: ContainerRecord::KIND,
                count,
            });
        }
        Ok(())
    }
}

impl Record for ContainerRecord {
    const TABLE: &'static str = "containers";
    const KIND: &'static str = "container";
    fn id(&self) -> &str {
        &self.id
    }
}

impl sealed::Schema for ContainerRecord {
    fn index_keys(&self) -> Vec<(&'static str, String)> {
        vec![
            (CONTAINER_NAMES, container_key(&self.pod_id, &self.metadata)),
            (
                POD_CONTAINERS,
                format!("{}{}", pod_containers_prefix(&self.pod_id), self.id),
            ),
        ]
    }
    fn owned_tables() -> &'static [&'static str] {
        &[CONTAINER_SPECS]
    }
    fn check_refs(&self, txn: &Txn<'_>) -> Result<()> {
        if self.pod_id.contains('\0') || txn.get(PodRecord::TABLE, &self.pod_id)?.is_none() {
            return Err(Error::MissingParent {
                kind: Self::KIND,
                id: self.id.clone(),
                parent_kind: PodRecord::KIND,
                parent_id: self.pod_id.clone(),
            });
        }
        Ok(())
    }
}

impl Record for ImageRecord {
    const TABLE: &'static str = "images";
    const KIND: &'static str = "image";
    fn id(&self) -> &str {
        &self.id
    }
}

impl sealed::Schema for ImageRecord {
    fn index_keys(&self) -> Vec<(&'static str, String)> {
        let tags = self.repo_tags.iter().map(|t| (IMAGE_TAGS, t.clone()));
        let digests = self.repo_digests.iter().map(|d| (IMAGE_DIGESTS, d.clone()));
        let mut keys: Vec<_> = tags.chain(digests).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

impl Record for LeaseRecord {
    const TABLE: &'static str = "leases";
    const KIND: &'static str = "lease";
    fn id(&self) -> &str {
        &self.id
    }
}

impl sealed::Schema for LeaseRecord {}

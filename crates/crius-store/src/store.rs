//! Opening the store, schema versioning, and transactions.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind as IoErrorKind;
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, ReadableDatabase};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::collection::{
    self, db_err, def, Collection, CollectionMut, Record, Txn, CONTAINER_NAMES, CONTAINER_SPECS,
    IMAGE_DIGESTS, IMAGE_TAGS, POD_CONTAINERS, POD_NAMES, SETTINGS,
};
use crate::error::{Error, Result};
use crate::records::{
    ContainerMetadata, ContainerRecord, ImageRecord, LeaseRecord, PodMetadata, PodRecord,
    SpecSummary,
};

/// The schema version this build writes.
///
/// 1. The first.
/// 2. A container's OCI spec moves out of its record into `container_specs`; the record
///    keeps a [`SpecSummary`].
pub const SCHEMA_VERSION: u64 = 2;

const META: &str = "meta";
const SCHEMA_KEY: &str = "schema_version";

/// Every table, created on open so read transactions always find them.
const TABLES: &[&str] = &[
    META,
    PodRecord::TABLE,
    ContainerRecord::TABLE,
    ImageRecord::TABLE,
    LeaseRecord::TABLE,
    POD_NAMES,
    CONTAINER_NAMES,
    POD_CONTAINERS,
    IMAGE_TAGS,
    IMAGE_DIGESTS,
    SETTINGS,
    CONTAINER_SPECS,
];

/// The metadata store: one redb file. Cheap to clone; clones share the database.
///
/// All calls block on disk I/O: call them from `spawn_blocking` in async code.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: Arc<Path>,
    /// Bumped after every committed write transaction (see [`Store::generation`]).
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating it (and its parent directory, mode 0700; the
    /// file mode 0600) if absent, and brings its schema to [`SCHEMA_VERSION`].
    ///
    /// A file from a newer crius is refused with [`Error::SchemaTooNew`]; a file already
    /// open elsewhere with [`Error::Locked`].
    ///
    /// ```no_run
    /// let store = crius_store::Store::open("/var/lib/crius/meta.redb")?;
    /// let pods = store.read()?.pods().list()?;
    /// # Ok::<(), crius_store::Error>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref();
        if !path.exists() {
            create_atomically(path)?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked {
                path: path.to_path_buf(),
            },
            other => db_err(path, "open".to_owned())(other),
        })?;
        let store = Store::on(db, path);
        store.init_schema()?;
        Ok(store)
    }

    /// A handle on the open database `db` whose file is `path`.
    fn on(db: Database, path: &Path) -> Store {
        Store {
            db: Arc::new(db),
            path: Arc::from(path),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many write transactions this handle (or a clone) committed since the store
    /// was opened. A reader may keep what it decoded while the generation it read
    /// *before* opening its read transaction is still current: every commit counted in
    /// it is visible to that transaction, and any later one changes the number.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Starts a read transaction: a consistent snapshot of the last commit.
    pub fn read(&self) -> Result<ReadTxn> {
        let txn = self
            .db
            .begin_read()
            .map_err(db_err(&self.path, "begin read transaction".to_owned()))?;
        Ok(ReadTxn {
            txn,
            path: self.path.clone(),
        })
    }

    /// Starts a write transaction; blocks while another one is open. Dropping it without
    /// [`WriteTxn::commit`] discards its changes.
    pub fn write(&self) -> Result<WriteTxn> {
        let txn = self
            .db
            .begin_write()
            .map_err(db_err(&self.path, "begin write transaction".to_owned()))?;
        Ok(WriteTxn {
            txn,
            path: self.path.clone(),
            generation: self.generation.clone(),
        })
    }

    /// Runs `f` in a write transaction and commits if it returns `Ok`; on `Err` nothing
    /// it wrote is kept.
    pub fn update<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&WriteTxn) -> Result<T, E>,
    ) -> Result<T, E> {
        let txn = self.write()?;
        let value = f(&txn)?;
        txn.commit()?;
        Ok(value)
    }

    /// Checks that every index entry points at a record owning it, that every record's
    /// unique keys are indexed, and that every container's pod exists. Returns one line
    /// per problem; empty means consistent. For `crius fsck` and the crash tests.
    pub fn check_consistency(&self) -> Result<Vec<String>> {
        let txn = self.read()?;
        let t = txn.raw();
        let mut problems = Vec::new();
        check_indexes::<PodRecord>(t, &[POD_NAMES], &mut problems)?;
        check_indexes::<ContainerRecord>(t, &[CONTAINER_NAMES, POD_CONTAINERS], &mut problems)?;
        check_indexes::<ImageRecord>(t, &[IMAGE_TAGS, IMAGE_DIGESTS], &mut problems)?;
        for c in txn.containers().list()? {
            if txn.pods().get(&c.pod_id)?.is_none() {
                problems.push(format!(
                    "container {} refers to missing pod {}",
                    c.id, c.pod_id
                ));
            }
        }
        for (id, _) in t.scan(CONTAINER_SPECS, "")? {
            if t.get(ContainerRecord::TABLE, &id)?.is_none() {
                problems.push(format!(
                    "table {CONTAINER_SPECS} entry {id:?} has no container"
                ));
            }
        }
        Ok(problems)
    }

    fn init_schema(&self) -> Result<()> {
        let txn = self.write()?;
        for table in TABLES {
            txn.txn
                .open_table(def(table))
                .map_err(db_err(&self.path, format!("create table {table}")))?;
        }
        let found: Option<u64> = txn.raw().get_json(META, SCHEMA_KEY)?;
        match found {
            None => {}
            Some(v) if v > SCHEMA_VERSION => {
                return Err(Error::SchemaTooNew {
                    path: self.path.to_path_buf(),
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(mut v) => {
                while v < SCHEMA_VERSION {
                    v = migrate(&txn, v)?;
                }
            }
        }
        let version = collection::encode_setting(SCHEMA_KEY, &SCHEMA_VERSION)?;
        collection::put(&txn.txn, &self.path, META, SCHEMA_KEY, &version)?;
        txn.commit()
    }
}

/// Migrates the schema from `from` to the next version inside `txn`, returning the new
/// version. One arm per schema change.
///
/// Every migration runs in the one transaction of [`Store::init_schema`], together with
/// the new version number: a crash or `kill -9` at any point leaves the file at the old
/// version, untouched, and the next open migrates it again from the start.
fn migrate(txn: &WriteTxn, from: u64) -> Result<u64> {
    match from {
        1 => {
            move_container_specs(txn)?;
            Ok(2)
        }
        _ => Err(Error::SchemaUnknown {
            path: txn.path.to_path_buf(),
            found: from,
        }),
    }
}

/// Version 1 → 2: each container record's `spec` moves to [`CONTAINER_SPECS`] and the
/// record gets its [`SpecSummary`]. Records are rewritten as JSON maps, so fields this
/// build does not know are kept; a record that is not a JSON object is left as it was (it
/// reads as a decode error either way, and `crius fsck` reports it).
fn move_container_specs(txn: &WriteTxn) -> Result<()> {
    let path = &txn.path;
    let table = ContainerRecord::TABLE;
    for (id, bytes) in txn.raw().scan(table, "")? {
        let Ok(serde_json::Value::Object(mut record)) = serde_json::from_slice(&bytes) else {
            continue;
        };
        let spec = record.remove("spec").unwrap_or(serde_json::Value::Null);
        if !spec.is_null() {
            collection::put(
                &txn.txn,
                path,
                CONTAINER_SPECS,
                &id,
                &encode_spec(&id, &spec)?,
            )?;
        }
        let summary =
            serde_json::to_value(SpecSummary::of(&spec)).map_err(|error| Error::Encode {
                kind: ContainerRecord::KIND,
                id: id.clone(),
                error,
            })?;
        record.insert("spec_summary".to_owned(), summary);
        let bytes = serde_json::to_vec(&record).map_err(|error| Error::Encode {
            kind: ContainerRecord::KIND,
            id: id.clone(),
            error,
        })?;
        collection::put(&txn.txn, path, table, &id, &bytes)?;
    }
    Ok(())
}

fn encode_spec(id: &str, spec: &serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec(spec).map_err(|error| Error::Encode {
        kind: "container spec",
        id: id.to_owned(),
        error,
    })
}

/// Creates the parent directory (0700) and an empty file (0600) if they are missing;
/// redb then initialises the empty file.
/// Creates the database file so that no crash can leave a half-initialised one behind:
/// redb writes its header and our tables into `<file>.new-<pid>`, which is then hard-linked
/// to `path` (atomic, and never replacing a file another process created meanwhile).
/// Leftovers of creators that died are removed first.
fn create_atomically(path: &Path) -> Result<()> {
    let create_err = |p: &Path| {
        let p = p.to_path_buf();
        move |error| Error::Create { path: p, error }
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(create_err(parent))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_dead_creations(parent, &name);
    let tmp = parent.join(format!("{name}.new-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(create_err(&tmp))?;
    let result = (|| {
        let db = Database::create(&tmp).map_err(db_err(&tmp, "create".to_owned()))?;
        Store::on(db, &tmp).init_schema()?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(create_err(&tmp))?;
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != IoErrorKind::AlreadyExists => Err(create_err(path)(e)),
            _ => std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(create_err(parent)),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Removes `<name>.new-<pid>` files whose creator no longer runs.
fn remove_dead_creations(dir: &Path, name: &str) {
    let prefix = format!("{name}.new-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn check_indexes<R: Record>(
    txn: Txn<'_>,
    tables: &[&'static str],
    problems: &mut Vec<String>,
) -> Result<()> {
    let records = Collection::<R> {
        txn,
        _record: PhantomData,
    }
    .list()?;
    let mut owned = Vec::new();
    for r in &records {
        for (table, key) in r.index_keys() {
            match txn.index_get(table, &key)? {
                Some(id) if id == r.id() => {}
                other => problems.push(format!(
                    "{} {}: index {table} entry {key:?} is {other:?}",
                    R::KIND,
                    r.id()
                )),
            }
            owned.push((table, key));
        }
    }
    for table in tables {
        for (key, _) in txn.scan(table, "")? {
            if !owned.iter().any(|(t, k)| t == table && *k == key) {
                problems.push(format!("index {table} entry {key:?} has no {}", R::KIND));
            }
        }
    }
    Ok(())
}

/// A read-only snapshot.
pub struct ReadTxn {
    txn: redb::ReadTransaction,
    path: Arc<Path>,
}

/// A write transaction. Dropping it without [`WriteTxn::commit`] discards its changes.
pub struct WriteTxn {
    txn: redb::WriteTransaction,
    path: Arc<Path>,
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTxn").field("path", &self.path).finish()
    }
}

impl std::fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn")
            .field("path", &self.path)
            .finish()
    }
}

impl ReadTxn {
    fn raw(&self) -> Txn<'_> {
        Txn::Read(&self.txn, &self.path)
    }

    /// The records of type `R`.
    pub fn collection<R: Record>(&self) -> Collection<'_, R> {
        Collection {
            txn: self.raw(),
            _record: PhantomData,
        }
    }
}

impl WriteTxn {
    fn raw(&self) -> Txn<'_> {
        Txn::Write(&self.txn, &self.path)
    }

    /// The records of type `R`, writable.
    pub fn collection<R: Record>(&self) -> CollectionMut<'_, R> {
        CollectionMut {
            read: Collection {
                txn: self.raw(),
                _record: PhantomData,
            },
            txn: &self.txn,
        }
    }

    /// Sets a setting to `value`, encoded as JSON.
    pub fn set_setting<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = collection::encode_setting(key, value)?;
        collection::put(&self.txn, &self.path, SETTINGS, key, &bytes)
    }

    /// Adds container `record` with its OCI `spec`, both in this transaction. The record
    /// should carry `SpecSummary::of(spec)`; the spec is read back only through
    /// [`Self::container_spec`], never by listing or reading records. The same errors as
    /// [`CollectionMut::insert`], checked before anything is written.
    pub fn insert_container(
        &self,
        record: &ContainerRecord,
        spec: &serde_json::Value,
    ) -> Result<()> {
        let bytes = encode_spec(&record.id, spec)?;
        self.containers().insert(record)?;
        collection::put(&self.txn, &self.path, CONTAINER_SPECS, &record.id, &bytes)
    }

    /// Replaces the OCI spec of container `id`, which must exist ([`Error::NotFound`]).
    /// The caller updates the record's [`SpecSummary`] in the same transaction.
    pub fn set_container_spec(&self, id: &str, spec: &serde_json::Value) -> Result<()> {
        self.containers().require(id)?;
        let bytes = encode_spec(id, spec)?;
        collection::put(&self.txn, &self.path, CONTAINER_SPECS, id, &bytes)
    }

    /// Removes a setting; `false` if it was not set.
    pub fn remove_setting(&self, key: &str) -> Result<bool> {
        collection::delete(&self.txn, &self.path, SETTINGS, key)
    }

    /// Makes every change durable (fsync) and visible, all at once.
    pub fn commit(self) -> Result<()> {
        self.txn
            .commit()
            .map_err(db_err(&self.path, "commit".to_owned()))?;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Discards every change; the same as dropping the transaction.
    pub fn abort(self) -> Result<()> {
        self.txn
            .abort()
            .map_err(db_err(&self.path, "abort".to_owned()))
    }
}

/// Accessors shared by both transaction types.
macro_rules! read_accessors {
    ($txn:ty, $coll:ident) => {
        impl $txn {
            /// Pods.
            pub fn pods(&self) -> $coll<'_, PodRecord> {
                self.collection()
            }
            /// Containers.
            pub fn containers(&self) -> $coll<'_, ContainerRecord> {
                self.collection()
            }
            /// Images.
            pub fn images(&self) -> $coll<'_, ImageRecord> {
                self.collection()
            }
            /// Content leases.
            pub fn leases(&self) -> $coll<'_, LeaseRecord> {
                self.collection()
            }
            /// The pod holding this CRI metadata (name, namespace, uid, attempt).
            pub fn pod_by_key(&self, metadata: &PodMetadata) -> Result<Option<PodRecord>> {
                self.by_index(POD_NAMES, &collection::pod_key(metadata))
            }
            /// The container of `pod_id` holding this CRI metadata (name, attempt).
            pub fn container_by_key(
                &self,
                pod_id: &str,
                metadata: &ContainerMetadata,
            ) -> Result<Option<ContainerRecord>> {
                self.by_index(
                    CONTAINER_NAMES,
                    &collection::container_key(pod_id, metadata),
                )
            }
            /// The containers of a pod, in id order.
            pub fn containers_of_pod(&self, pod_id: &str) -> Result<Vec<ContainerRecord>> {
                let prefix = collection::pod_containers_prefix(pod_id);
                let mut out = Vec::new();
                for (key, _) in self.raw().scan(POD_CONTAINERS, &prefix)? {
                    let id = &key[prefix.len()..];
                    out.push(self.containers().require(id)?);
                }
                Ok(out)
            }
            /// The image holding this repo tag (`docker.io/library/busybox:latest`).
            pub fn image_by_tag(&self, repo_tag: &str) -> Result<Option<ImageRecord>> {
                self.by_index(IMAGE_TAGS, repo_tag)
            }
            /// The image holding this repo digest (`docker.io/library/busybox@sha256:...`).
            pub fn image_by_digest(&self, repo_digest: &str) -> Result<Option<ImageRecord>> {
                self.by_index(IMAGE_DIGESTS, repo_digest)
            }
            /// The OCI spec of container `id`; `None` when the container (or its spec) is
            /// absent. The only read of the spec table: lists and records never touch it.
            pub fn container_spec(&self, id: &str) -> Result<Option<serde_json::Value>> {
                self.raw().get_json(CONTAINER_SPECS, id)
            }
            /// A setting, decoded from JSON.
            pub fn setting<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
                self.raw().get_json(SETTINGS, key)
            }
            fn by_index<R: Record>(&self, index: &'static str, key: &str) -> Result<Option<R>> {
                match self.raw().index_get(index, key)? {
                    Some(id) => self.collection::<R>().require(&id).map(Some),
                    None => Ok(None),
                }
            }
        }
    };
}

read_accessors!(ReadTxn, Collection);
read_accessors!(WriteTxn, CollectionMut);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContainerState, ErrorKind, PodState};

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("state/meta.redb")).unwrap();
        (dir, store)
    }

    #[test]
    fn the_generation_counts_commits_only() {
        let (_dir, store) = temp_store();
        let clone = store.clone();
        let start = store.generation();
        let txn = store.write().unwrap();
        txn.pods().insert(&pod("p1", "one")).unwrap();
        drop(txn);
        store.write().unwrap().abort().unwrap();
        assert_eq!(store.generation(), start, "a discarded transaction counted");
        let txn = clone.write().unwrap();
        txn.pods().insert(&pod("p1", "one")).unwrap();
        txn.commit().unwrap();
        assert_eq!(
            store.generation(),
            start + 1,
            "a clone's commit is not seen"
        );
    }

    fn pod(id: &str, name: &str) -> PodRecord {
        PodRecord {
            id: id.into(),
            metadata: PodMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            },
            state: PodState::Ready,
            ips: vec!["10.88.0.2".into()],
            spec: serde_json::json!({"hostname": name}),
            ..Default::default()
        }
    }

    fn container(id: &str, pod_id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            pod_id: pod_id.into(),
            metadata: ContainerMetadata {
                name: name.into(),
                attempt: 0,
            },
            state: ContainerState::Created,
            ..Default::default()
        }
    }

    fn image(id: &str, tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn open_creates_private_directory_and_file() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = temp_store();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        assert_eq!(mode(store.path()), 0o600);
    }

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let (dir, store) = temp_store();
        let p = pod("p1", "web");
        store
            .update(|t| {
                t.pods().insert(&p)?;
                t.containers().insert(&container("c1", "p1", "app"))?;
                t.images()
                    .insert(&image("sha256:a", &["busybox:latest"], &[]))?;
                t.leases().insert(&LeaseRecord {
                    id: "l1".into(),
                    resources: vec!["sha256:a".into()],
                    ..Default::default()
                })?;
                t.set_setting("pod_cidr", "10.88.0.0/16")
            })
            .unwrap();
        drop(store);
        let store = Store::open(dir.path().join("state/meta.redb")).unwrap();
        let r = store.read().unwrap();
        assert_eq!(r.pods().get("p1").unwrap(), Some(p));
        assert_eq!(r.containers().list().unwrap().len(), 1);
        assert_eq!(
            r.images().require("sha256:a").unwrap().repo_tags,
            ["busybox:latest"]
        );
        assert_eq!(r.leases().list().unwrap()[0].resources, ["sha256:a"]);
        let cidr: Option<String> = r.setting("pod_cidr").unwrap();
        assert_eq!(cidr.as_deref(), Some("10.88.0.0/16"));
        assert_eq!(r.setting::<String>("absent").unwrap(), None);
    }

    #[test]
    fn insert_refuses_an_existing_id() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        t.pods().insert(&pod("p1", "a")).unwrap();
        let err = t.pods().insert(&pod("p1", "b")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    }

    #[test]
    fn pod_name_is_reserved_and_error_names_the_holder() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        t.pods().insert(&pod("p1", "web")).unwrap();
        let err = t.pods().insert(&pod("p2", "web")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("p1"), "{err}");
        let mut next = pod("p2", "web");
        next.metadata.attempt = 1;
        t.pods().insert(&next).unwrap();
        assert_eq!(t.pod_by_key(&next.metadata).unwrap().unwrap().id, "p2");
        assert_eq!(
            t.pod_by_key(&pod("x", "web").metadata).unwrap().unwrap().id,
            "p1"
        );
    }

    #[test]
    fn container_name_is_reserved_per_pod() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        t.pods().insert(&pod("p1", "a")).unwrap();
        t.pods().insert(&pod("p2", "b")).unwrap();
        t.containers()
            .insert(&container("c1", "p1", "app"))
            .unwrap();
        let err = t
            .containers()
            .insert(&container("c2", "p1", "app"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("c1"), "{err}");
        t.containers()
            .insert(&container("c2", "p2", "app"))
            .unwrap();
        let meta = ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        };
        assert_eq!(t.container_by_key("p2", &meta).unwrap().unwrap().id, "c2");
        assert_eq!(t.container_by_key("p3", &meta).unwrap(), None);
    }

    #[test]
    fn failed_insert_leaves_the_transaction_unchanged() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        t.pods().insert(&pod("p1", "web")).unwrap();
        t.pods().insert(&pod("p2", "web")).unwrap_err();
        assert_eq!(t.pods().get("p2").unwrap(), None);
        t.commit().unwrap();
        assert!(store.check_consistency().unwrap().is_empty());
    }

    #[test]
    fn container_needs_an_existing_pod() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        let err = t
            .containers()
            .insert(&container("c1", "nope", "app"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn pod_with_containers_cannot_be_removed() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        t.pods().insert(&pod("p1", "a")).unwrap();
        t.containers()
            .insert(&container("c1", "p1", "app"))
            .unwrap();
        t.containers()
            .insert(&container("c2", "p1", "sidecar"))
            .unwrap();
        let err = t.pods().remove("p1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        let ids: Vec<_> = t
            .containers_of_pod("p1")
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert!(t.containers().remove("c1").unwrap());
        assert!(t.containers().remove("c2").unwrap());
        assert!(t.pods().remove("p1").unwrap());
    }

    #[test]
    fn remove_is_idempotent_and_frees_the_name() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        t.pods().insert(&pod("p1", "web")).unwrap();
        assert!(t.pods().remove("p1").unwrap());
        assert!(!t.pods().remove("p1").unwrap());
        assert!(!t.leases().remove("never").unwrap());
        assert_eq!(t.pod_by_key(&pod("x", "web").metadata).unwrap(), None);
        t.pods().insert(&pod("p2", "web")).unwrap();
    }

    #[test]
    fn update_requires_an_existing_record_and_moves_index_keys() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        let err = t.images().update(&image("sha256:a", &[], &[])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        t.images()
            .insert(&image("sha256:a", &["app:v1"], &["app@sha256:m1"]))
            .unwrap();
        t.images()
            .update(&image("sha256:a", &["app:v2"], &["app@sha256:m1"]))
            .unwrap();
        assert_eq!(t.image_by_tag("app:v1").unwrap(), None);
        assert_eq!(t.image_by_tag("app:v2").unwrap().unwrap().id, "sha256:a");
        assert_eq!(
            t.image_by_digest("app@sha256:m1").unwrap().unwrap().id,
            "sha256:a"
        );
        let mut c_pod = pod("p1", "a");
        t.pods().insert(&c_pod).unwrap();
        c_pod.state = PodState::NotReady;
        t.pods().update(&c_pod).unwrap();
        assert_eq!(t.pods().require("p1").unwrap().state, PodState::NotReady);
    }

    #[test]
    fn image_tag_held_by_another_image_is_refused() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        t.images()
            .insert(&image("sha256:a", &["app:latest"], &[]))
            .unwrap();
        let err = t
            .images()
            .insert(&image("sha256:b", &["app:latest"], &[]))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("sha256:a"), "{err}");
        t.images().update(&image("sha256:a", &[], &[])).unwrap();
        t.images()
            .insert(&image("sha256:b", &["app:latest"], &[]))
            .unwrap();
        assert_eq!(
            t.image_by_tag("app:latest").unwrap().unwrap().id,
            "sha256:b"
        );
    }

    #[test]
    fn invalid_ids_are_refused() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        for id in ["", "a\0b"] {
            let err = t.pods().insert(&pod(id, "web")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn dropped_write_transaction_is_discarded() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        t.pods().insert(&pod("p1", "a")).unwrap();
        drop(t);
        let failed: Result<()> = store.update(|t| {
            t.pods().insert(&pod("p2", "b"))?;
            Err(Error::NotFound {
                kind: "test",
                id: "x".into(),
            })
        });
        assert!(failed.is_err());
        assert!(store.read().unwrap().pods().list().unwrap().is_empty());
    }

    #[test]
    fn read_transaction_sees_a_snapshot() {
        let (_dir, store) = temp_store();
        let before = store.read().unwrap();
        store.update(|t| t.pods().insert(&pod("p1", "a"))).unwrap();
        assert!(before.pods().list().unwrap().is_empty());
        assert_eq!(store.read().unwrap().pods().list().unwrap().len(), 1);
    }

    #[test]
    fn second_open_of_the_same_file_is_locked() {
        let (_dir, store) = temp_store();
        let err = Store::open(store.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }

    fn write_schema_version(path: &Path, version: u64) {
        let db = Database::create(path).unwrap();
        let t = db.begin_write().unwrap();
        let bytes = serde_json::to_vec(&version).unwrap();
        t.open_table(def(META))
            .unwrap()
            .insert(SCHEMA_KEY, bytes.as_slice())
            .unwrap();
        t.commit().unwrap();
    }

    #[test]
    fn newer_schema_version_is_refused() {
        let (_dir, store) = temp_store();
        let path = store.path().to_path_buf();
        store.update(|t| t.pods().insert(&pod("p1", "a"))).unwrap();
        drop(store);
        write_schema_version(&path, SCHEMA_VERSION + 1);
        let err = Store::open(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        let found = format!("schema version {}", SCHEMA_VERSION + 1);
        assert!(err.to_string().contains(&found), "{err}");
        // Refusal must not have touched the file.
        write_schema_version(&path, SCHEMA_VERSION);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.read().unwrap().pods().list().unwrap().len(), 1);
    }

    #[test]
    fn schema_version_without_migration_is_refused() {
        let (_dir, store) = temp_store();
        let path = store.path().to_path_buf();
        drop(store);
        write_schema_version(&path, 0);
        let err = Store::open(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    }

    #[test]
    fn corrupt_record_is_a_decode_error_not_a_panic() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        collection::put(&t.txn, &t.path, "pods", "bad", b"{not json").unwrap();
        let err = t.pods().get("bad").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.to_string().contains("pods"), "{err}");
    }

    fn spec() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.2.0",
            "process": {"args": ["sleep", "1"], "user": {"uid": 7, "gid": 8}},
            "linux": {"cgroupsPath": "/crius/c1",
                      "seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                                  "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}},
            "annotations": {"io.crius.stop-signal": "SIGUSR1"},
        })
    }

    fn container_with_spec(id: &str, pod_id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            spec_summary: SpecSummary::of(&spec()),
            ..container(id, pod_id, name)
        }
    }

    #[test]
    fn container_spec_is_stored_apart_and_read_back_equal() {
        let (dir, store) = temp_store();
        store
            .update(|t| {
                t.pods().insert(&pod("p1", "a"))?;
                t.insert_container(&container_with_spec("c1", "p1", "app"), &spec())
            })
            .unwrap();
        drop(store);
        let store = Store::open(dir.path().join("state/meta.redb")).unwrap();
        let r = store.read().unwrap();
        assert_eq!(r.container_spec("c1").unwrap(), Some(spec()));
        assert_eq!(r.container_spec("c2").unwrap(), None);
        let c = r.containers().require("c1").unwrap();
        assert_eq!(c.spec_summary.cgroups_path, "/crius/c1");
        assert_eq!(c.spec_summary.stop_signal, "SIGUSR1");
        let raw = r.raw().get(ContainerRecord::TABLE, "c1").unwrap().unwrap();
        let raw = String::from_utf8(raw).unwrap();
        assert!(!raw.contains("seccomp"), "the record holds the spec: {raw}");
        assert!(store.check_consistency().unwrap().is_empty());
    }

    #[test]
    fn lists_and_record_reads_never_decode_the_spec() {
        let (_dir, store) = temp_store();
        store
            .update(|t| {
                t.pods().insert(&pod("p1", "a"))?;
                t.insert_container(&container_with_spec("c1", "p1", "app"), &spec())?;
                // Bytes no JSON decoder accepts: any read of the spec fails on them.
                collection::put(&t.txn, &t.path, CONTAINER_SPECS, "c1", b"{not json")
            })
            .unwrap();
        let r = store.read().unwrap();
        assert_eq!(r.containers().list().unwrap().len(), 1);
        assert_eq!(r.containers().require("c1").unwrap().id, "c1");
        assert_eq!(r.containers_of_pod("p1").unwrap().len(), 1);
        let err = r.container_spec("c1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.to_string().contains(CONTAINER_SPECS), "{err}");
    }

    #[test]
    fn container_spec_is_created_and_removed_with_its_record() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        t.pods().insert(&pod("p1", "a")).unwrap();
        // A refused insert writes no spec either.
        let err = t
            .insert_container(&container_with_spec("c1", "nope", "app"), &spec())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(t.container_spec("c1").unwrap(), None);
        t.insert_container(&container_with_spec("c1", "p1", "app"), &spec())
            .unwrap();
        t.commit().unwrap();

        // A removal not committed keeps both; a committed one drops both at once.
        let t = store.write().unwrap();
        assert!(t.containers().remove("c1").unwrap());
        assert_eq!(t.container_spec("c1").unwrap(), None);
        drop(t);
        assert_eq!(
            store.read().unwrap().container_spec("c1").unwrap(),
            Some(spec())
        );
        store.update(|t| t.containers().remove("c1")).unwrap();
        let r = store.read().unwrap();
        assert_eq!(r.containers().get("c1").unwrap(), None);
        assert_eq!(r.container_spec("c1").unwrap(), None);
        assert!(store.check_consistency().unwrap().is_empty());
    }

    #[test]
    fn set_container_spec_needs_the_container() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        let err = t.set_container_spec("c1", &spec()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        t.pods().insert(&pod("p1", "a")).unwrap();
        t.insert_container(&container_with_spec("c1", "p1", "app"), &spec())
            .unwrap();
        let mut changed = spec();
        changed["linux"]["resources"] = serde_json::json!({"memory": {"limit": 4096}});
        t.set_container_spec("c1", &changed).unwrap();
        assert_eq!(t.container_spec("c1").unwrap(), Some(changed));
    }

    #[test]
    fn consistency_check_reports_a_spec_without_container() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        collection::put(&t.txn, &t.path, CONTAINER_SPECS, "ghost", b"{}").unwrap();
        t.commit().unwrap();
        let problems = store.check_consistency().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("ghost"), "{problems:?}");
    }

    /// A container record as schema version 1 stored it: the whole OCI spec inside.
    #[derive(serde::Serialize)]
    struct ContainerRecordV1 {
        id: String,
        pod_id: String,
        metadata: ContainerMetadata,
        state: ContainerState,
        pid: Option<u32>,
        log_path: String,
        snapshot_key: String,
        spec: serde_json::Value,
        /// A field of a newer crius than the migration knows: it must survive.
        future_field: u32,
    }

    /// Writes a schema-1 store at `path` holding pod p1 with container c1 (spec [`spec`])
    /// and container c2 (no spec), as crius 0.1 before the spec table wrote it.
    fn write_v1_store(path: &Path) {
        let store = Store::open(path).unwrap();
        store
            .update(|t| {
                t.pods().insert(&pod("p1", "a"))?;
                for (id, name, spec) in [("c1", "app", spec()), ("c2", "side", Value::Null)] {
                    t.containers().insert(&container(id, "p1", name))?;
                    let old = ContainerRecordV1 {
                        id: id.into(),
                        pod_id: "p1".into(),
                        metadata: ContainerMetadata {
                            name: name.into(),
                            attempt: 0,
                        },
                        state: ContainerState::Running,
                        pid: Some(42),
                        log_path: "app/0.log".into(),
                        snapshot_key: format!("container-{id}"),
                        spec,
                        future_field: 7,
                    };
                    let bytes = serde_json::to_vec(&old).unwrap();
                    collection::put(&t.txn, &t.path, ContainerRecord::TABLE, id, &bytes)?;
                }
                t.txn.delete_table(def(CONTAINER_SPECS)).unwrap();
                let v1 = collection::encode_setting(SCHEMA_KEY, &1u64)?;
                collection::put(&t.txn, &t.path, META, SCHEMA_KEY, &v1)
            })
            .unwrap();
    }

    use serde_json::Value;

    fn schema_version_of(path: &Path) -> u64 {
        let db = Database::create(path).unwrap();
        let t = db.begin_read().unwrap();
        let table = t.open_table(def(META)).unwrap();
        let bytes = table.get(SCHEMA_KEY).unwrap().unwrap();
        serde_json::from_slice(bytes.value()).unwrap()
    }

    #[test]
    fn version_1_store_is_migrated_on_open_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        write_v1_store(&path);
        assert_eq!(schema_version_of(&path), 1);

        let store = Store::open(&path).unwrap();
        let r = store.read().unwrap();
        assert_eq!(r.container_spec("c1").unwrap(), Some(spec()));
        assert_eq!(r.container_spec("c2").unwrap(), None);
        let c1 = r.containers().require("c1").unwrap();
        assert_eq!(c1.spec_summary, SpecSummary::of(&spec()));
        assert_eq!((c1.state, c1.pid), (ContainerState::Running, Some(42)));
        assert_eq!(c1.log_path, "app/0.log");
        assert_eq!(
            r.containers().require("c2").unwrap().spec_summary,
            SpecSummary::default()
        );
        let raw = r.raw().get(ContainerRecord::TABLE, "c1").unwrap().unwrap();
        let raw: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(raw.get("spec"), None, "spec left in the record: {raw}");
        assert_eq!(raw["future_field"], 7);
        let ids: Vec<_> = r
            .containers_of_pod("p1")
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert!(store.check_consistency().unwrap().is_empty());
        drop(r);
        drop(store);
        assert_eq!(schema_version_of(&path), SCHEMA_VERSION);
        // A second open finds nothing to migrate and changes nothing.
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.read().unwrap().container_spec("c1").unwrap(),
            Some(spec())
        );
    }

    /// Kill safety: the migration, the new table and the version number are one
    /// transaction, so a crius killed during the migration leaves the file exactly at
    /// version 1 (redb keeps nothing of an uncommitted transaction; the crash test shows
    /// it holds for SIGKILL too), and the next open migrates it from the start.
    #[test]
    fn interrupted_migration_leaves_the_version_1_store_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        write_v1_store(&path);
        {
            let db = Database::create(&path).unwrap();
            let store = Store::on(db, &path);
            let txn = store.write().unwrap();
            txn.txn.open_table(def(CONTAINER_SPECS)).unwrap();
            assert_eq!(migrate(&txn, 1).unwrap(), 2);
            assert_eq!(txn.container_spec("c1").unwrap(), Some(spec()));
            // Dropped before commit, as a kill would leave it.
        }
        assert_eq!(schema_version_of(&path), 1);
        {
            let db = Database::create(&path).unwrap();
            let t = db.begin_read().unwrap();
            let raw = t.open_table(def(ContainerRecord::TABLE)).unwrap();
            let raw: Value =
                serde_json::from_slice(raw.get("c1").unwrap().unwrap().value()).unwrap();
            assert_eq!(raw["spec"], spec());
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.read().unwrap().container_spec("c1").unwrap(),
            Some(spec())
        );
        assert!(store.check_consistency().unwrap().is_empty());
    }

    #[test]
    fn consistency_check_reports_dangling_index_entries() {
        let (_dir, store) = temp_store();
        let t = store.write().unwrap();
        collection::put(&t.txn, &t.path, IMAGE_TAGS, "ghost:1", b"\"sha256:x\"").unwrap();
        t.commit().unwrap();
        let problems = store.check_consistency().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("ghost:1"));
    }
}

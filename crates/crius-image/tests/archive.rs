//! Import of docker-save and OCI-layout archives, export, and fsck.

use std::sync::Arc;

use crius_image::content::{ContentManager, ContentReader};
use crius_image::snapshot::SnapshotKind;
use crius_image::{ImageConfig, ImageManager, StoreImageRecords};
use crius_testkit::images::{sha256, Compression, LayerBuilder};

fn manager(dir: &std::path::Path) -> ImageManager {
    let store = Arc::new(crius_store::Store::open(dir.join("meta.redb")).expect("store"));
    ImageManager::open(
        &dir.join("images"),
        ImageConfig::default(),
        Arc::new(StoreImageRecords::new(store)),
    )
    .expect("manager")
}

fn add(tar: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, data).expect("tar");
}

/// A `docker save` style archive: `<id>/layer.tar` files (one of them a symlink to
/// the other, as docker writes for repeated layers), `<hex>.json` config.
fn docker_save_archive() -> (Vec<u8>, String) {
    let l1 = LayerBuilder::new().busybox().build(Compression::None).blob;
    let l2 = LayerBuilder::new()
        .file("etc/hostname", b"legacy\n", 0o644)
        .build(Compression::None)
        .blob;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"User": "1000"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&l1), sha256(&l2), sha256(&l1)]},
    }))
    .expect("json");
    let config_hex = sha256(&config)[7..].to_string();
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["legacy:1"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
    }]);
    let mut tar = tar::Builder::new(Vec::new());
    add(&mut tar, &format!("{config_hex}.json"), &config);
    add(&mut tar, "aaa/layer.tar", &l1);
    add(&mut tar, "bbb/layer.tar", &l2);
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_mtime(0);
    tar.append_link(&mut h, "ccc/layer.tar", "../aaa/layer.tar")
        .expect("link");
    add(&mut tar, "manifest.json", manifest.to_string().as_bytes());
    (tar.into_inner().expect("tar"), sha256(&config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_save_archive_imports_and_round_trips_through_oci_export() {
    if !crius_testkit::require_root(
        "docker_save_archive_imports_and_round_trips_through_oci_export",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&dir.path().join("a"));
    let (archive, id) = docker_save_archive();
    let images = m.import(std::io::Cursor::new(archive)).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id.to_string(), id);
    assert_eq!(images[0].repo_tags, ["docker.io/library/legacy:1"]);
    assert_eq!(images[0].username, "1000");
    assert_eq!(images[0].chain_ids.len(), 3);

    let mut exported = Vec::new();
    m.export("legacy:1", &mut exported).unwrap();
    let m2 = manager(&dir.path().join("b"));
    let again = m2.import(std::io::Cursor::new(exported)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id.to_string(), id);
    assert_eq!(again[0].repo_tags, ["docker.io/library/legacy:1"]);
    assert_eq!(again[0].chain_ids, images[0].chain_ids);
    let committed = m2
        .snapshotter()
        .list()
        .unwrap()
        .iter()
        .filter(|s| s.kind == SnapshotKind::Committed)
        .count();
    assert_eq!(committed, 3);
    assert!(m2.status(&id).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_archive_with_a_lying_blob_name_is_refused() {
    if !crius_testkit::require_root("oci_archive_with_a_lying_blob_name_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let mut tar = tar::Builder::new(Vec::new());
    add(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let claimed = sha256(b"the real content");
    add(
        &mut tar,
        &format!("blobs/sha256/{}", &claimed[7..]),
        b"tampered content",
    );
    let err = m
        .import(std::io::Cursor::new(tar.into_inner().unwrap()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            crius_image::Error::SizeMismatch { .. } | crius_image::Error::DigestMismatch { .. }
        ),
        "{err}"
    );
    assert!(!m.content().contains(&claimed.parse().unwrap()));
    assert!(m.content().list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_finds_a_blob_corrupted_on_disk() {
    if !crius_testkit::require_root("fsck_finds_a_blob_corrupted_on_disk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let (archive, id) = docker_save_archive();
    m.import(std::io::Cursor::new(archive)).await.unwrap();
    assert!(m.fsck().unwrap().is_empty());
    let digest: crius_image::Digest = id.parse().unwrap();
    std::fs::write(m.content().blob_path(&digest), b"{}").unwrap();
    let bad = m.fsck().unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].digest, digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_a_crash_mid_pull_drops_partial_state_and_garbage() {
    if !crius_testkit::require_root("reopen_after_a_crash_mid_pull_drops_partial_state_and_garbage")
    {
        return;
    }
    use crius_image::content::ContentIngester;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    {
        let m = manager(dir.path());
        // What a killed daemon leaves: a half-written ingest, a half-unpacked layer,
        // and a verified blob no image references yet.
        let mut w = m.content().ingest(None).unwrap();
        w.write_all(b"partial").unwrap();
        std::mem::forget(w);
        let mounts = m.snapshotter().prepare("extract-1-2-abc", None).unwrap();
        std::fs::write(mounts.upper_path().unwrap().join("half"), b"x").unwrap();
        m.content().write_blob(b"orphan", None).unwrap();
    }
    let m = manager(dir.path());
    assert!(m.snapshotter().list().unwrap().is_empty());
    assert!(m.content().list().unwrap().is_empty());
    let ingest = dir.path().join("images/content/ingest");
    assert_eq!(std::fs::read_dir(ingest).unwrap().count(), 0);
    let (archive, _) = docker_save_archive();
    m.import(std::io::Cursor::new(archive)).await.unwrap();
    assert!(m.container_fs_usage().unwrap().used.inodes == 0);
    m.prepare_rootfs("c", "legacy:1").unwrap();
    assert!(m.container_fs_usage().unwrap().used.inodes > 0);
    assert!(m.fs_usage().unwrap().used.bytes > 1_000_000);
}

//! The `crius` image commands end to end: archives built here (a `docker save` tarball
//! and an OCI image layout), loaded through a running criusd and, with the daemon down,
//! straight into its store; `image ls` and `fsck` against both.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Daemon, Layout};
use crius::api;
use crius_testkit::images::{Compression, LayerBuilder, TestImage};

/// A small two-layer image; `seed` makes its digests unique.
fn image(seed: &str, compression: Compression) -> TestImage {
    let base = LayerBuilder::new()
        .dir("etc")
        .file("etc/hostname", seed.as_bytes(), 0o644)
        .build(compression);
    let top = LayerBuilder::new()
        .dir("data")
        .file("data/hello", format!("hello {seed}\n").as_bytes(), 0o755)
        .build(Compression::None);
    TestImage::oci(vec![base, top], "amd64")
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

fn file(tar: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, data).unwrap();
}

/// What `docker save` writes: `<config hex>.json`, `<n>/layer.tar`, `manifest.json`.
fn docker_save(img: &TestImage, tag: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let config = format!("{}.json", hex(&img.config_digest));
    file(&mut tar, &config, &img.config);
    let mut layers = Vec::new();
    for (n, layer) in img.layers.iter().enumerate() {
        let name = format!("{n}/layer.tar");
        file(&mut tar, &name, &layer.blob);
        layers.push(name);
    }
    let manifest = serde_json::json!([{"Config": config, "RepoTags": [tag], "Layers": layers}]);
    file(&mut tar, "manifest.json", manifest.to_string().as_bytes());
    tar.into_inner().unwrap()
}

/// An OCI image layout: `oci-layout`, `index.json` naming `name`, `blobs/sha256/<hex>`.
fn oci_layout(img: &TestImage, name: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": img.manifest_media_type,
            "digest": img.manifest_digest,
            "size": img.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }],
    });
    file(&mut tar, "index.json", index.to_string().as_bytes());
    let blob = |d: &str| format!("blobs/sha256/{}", hex(d));
    file(&mut tar, &blob(&img.manifest_digest), &img.manifest);
    file(&mut tar, &blob(&img.config_digest), &img.config);
    for layer in &img.layers {
        file(&mut tar, &blob(&layer.digest), &layer.blob);
    }
    tar.into_inner().unwrap()
}

/// `crius <args>` pointed at `layout`'s daemon config, root, state and socket.
fn crius(layout: &Layout, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crius"))
        .arg("--config")
        .arg(layout.config())
        .arg("--root")
        .arg(&layout.root)
        .arg("--state")
        .arg(&layout.state)
        .arg("--endpoint")
        .arg(format!("unix://{}", layout.socket.display()))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crius");
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    child.wait_with_output().expect("crius output")
}

fn ok(layout: &Layout, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = crius(layout, args, stdin);
    assert!(
        out.status.success(),
        "crius {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let path = dir.join(name);
    fs::write(&path, data).unwrap();
    path.display().to_string()
}

async fn listed(daemon: &Daemon) -> Vec<api::Image> {
    daemon
        .client()
        .await
        .image
        .list_images(api::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

#[tokio::test]
async fn import_loads_docker_save_and_oci_layout_archives_into_a_running_daemon() {
    if !crius_testkit::require_root("cli_import_online") {
        return;
    }
    let layout = Layout::new("cli-import");
    let daemon = Daemon::start(&layout, &[]);
    let docker = image("docker", Compression::None);
    let oci = image("oci", Compression::Gzip);
    let path = write(
        layout.scratch.path(),
        "saved.tar",
        &docker_save(&docker, "busybox:cli"),
    );

    let out = ok(&layout, &["image", "import", &path], None);
    assert!(out.contains(&docker.config_digest), "{out}");
    // From standard input.
    let archive = oci_layout(&oci, "example.com/cli/oci:v1");
    ok(&layout, &["image", "import", "-"], Some(&archive));

    let images = listed(&daemon).await;
    let by_id = |id: &str| images.iter().find(|i| i.id == id).cloned();
    let d = by_id(&docker.config_digest).expect("docker-save image listed");
    assert_eq!(d.repo_tags, ["docker.io/library/busybox:cli"]);
    let o = by_id(&oci.config_digest).expect("OCI layout image listed");
    assert_eq!(o.repo_tags, ["example.com/cli/oci:v1"]);

    let table = ok(&layout, &["image", "ls"], None);
    let header = table.lines().next().unwrap();
    for column in ["IMAGE", "TAG", "IMAGE ID", "SIZE"] {
        assert!(header.contains(column), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("docker.io/library/busybox "))
        .unwrap_or_else(|| panic!("no busybox row:\n{table}"));
    assert!(row.contains(" cli "), "{table}");
    assert!(row.contains(&hex(&docker.config_digest)[..12]), "{table}");
    assert!(!row.contains(&hex(&docker.config_digest)[..13]), "{table}");

    // Not an archive: a clear error, nothing recorded.
    let junk = write(layout.scratch.path(), "junk.tar", &[0u8; 4096]);
    let out = crius(&layout, &["image", "import", &junk], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest.json"), "{err}");
    assert_eq!(listed(&daemon).await.len(), 2);
}

#[tokio::test]
async fn an_exported_image_imports_into_a_stopped_daemons_store_with_the_same_id() {
    if !crius_testkit::require_root("cli_export_offline") {
        return;
    }
    let online = Layout::new("cli-export");
    let daemon = Daemon::start(&online, &[]);
    let img = image("export", Compression::Zstd);
    let archive = oci_layout(&img, "example.com/cli/export:v2");
    ok(&online, &["image", "import", "-"], Some(&archive));

    let exported = online.scratch.path().join("exported.tar");
    let path = exported.display().to_string();
    ok(
        &online,
        &["image", "export", "example.com/cli/export:v2", &path],
        None,
    );
    // To standard output, by id: the same archive.
    let streamed = crius(&online, &["image", "export", &img.config_digest, "-"], None);
    assert!(streamed.status.success(), "{streamed:?}");
    assert!(streamed.stdout == fs::read(&exported).unwrap());
    let out = crius(
        &online,
        &["image", "export", "example.com/none:v1", &path],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(exported.exists(), "a failed export replaced the archive");
    drop(daemon);

    // No daemon on this layout: the CLI opens the store itself.
    let offline = Layout::new("cli-offline");
    let out = crius(&offline, &["image", "import", &path], None);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("directly"),
        "{out:?}"
    );
    let table = ok(&offline, &["image", "ls"], None);
    assert!(table.contains(&hex(&img.config_digest)[..12]), "{table}");
    assert!(table.contains("example.com/cli/export"), "{table}");

    // A daemon started afterwards sees it: same id, same tag.
    let daemon = Daemon::start(&offline, &[]);
    let images = listed(&daemon).await;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].id, img.config_digest);
    assert_eq!(images[0].repo_tags, ["example.com/cli/export:v2"]);
}

#[tokio::test]
async fn fsck_names_each_corrupted_blob_and_exits_1() {
    if !crius_testkit::require_root("cli_fsck") {
        return;
    }
    let layout = Layout::new("cli-fsck");
    let daemon = Daemon::start(&layout, &[]);
    let img = image("fsck", Compression::Gzip);
    ok(
        &layout,
        &["image", "import", "-"],
        Some(&oci_layout(&img, "example.com/cli/fsck:v1")),
    );
    let out = crius(&layout, &["fsck"], None);
    assert!(out.status.success(), "{out:?}");

    let layer = &img.layers[0].digest;
    let blob = layout.root.join("content/blobs/sha256").join(hex(layer));
    fs::write(&blob, b"not the layer any more").unwrap();
    let out = crius(&layout, &["fsck"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(layer.as_str()), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    // The same answer from the store itself, with the daemon stopped.
    assert!(daemon.stop().success());
    let out = crius(&layout, &["fsck"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(layer.as_str()),
        "{out:?}"
    );
}

//! Pulls from a real local registry (Debian's docker-registry) on the real kernel.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use crius_image::config::RegistryConfig;
use crius_image::snapshot::SnapshotKind;
use crius_image::{ErrorKind, ImageConfig, ImageManager, PullAuth, StoreImageRecords};
use crius_testkit::images::{
    busybox_image, five_layer_image, push_index, Compression, LayerBuilder, TestImage,
};
use crius_testkit::registry::Registry;

struct Env {
    dir: tempfile::TempDir,
    manager: ImageManager,
}

fn env_with(config: ImageConfig) -> Env {
    let dir = tempfile::tempdir().expect("test setup");
    let store =
        Arc::new(crius_store::Store::open(dir.path().join("meta.redb")).expect("test setup"));
    let manager = ImageManager::open(
        &dir.path().join("images"),
        config,
        Arc::new(StoreImageRecords::new(store)),
    )
    .expect("test setup");
    Env { dir, manager }
}

fn env(registry: &Registry) -> Env {
    let mut config = ImageConfig::default();
    config.registries.insert(
        registry.host().to_string(),
        RegistryConfig {
            insecure: true,
            mirrors: vec![],
            ..Default::default()
        },
    );
    env_with(config)
}

fn committed(m: &ImageManager) -> usize {
    m.snapshotter()
        .list()
        .expect("test setup")
        .iter()
        .filter(|s| s.kind == SnapshotKind::Committed)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_unpacks_layers_honours_whiteouts_and_records_the_image() {
    if !crius_testkit::require_root("pull_unpacks_layers_honours_whiteouts_and_records_the_image") {
        return;
    }
    let registry = Registry::start().unwrap();
    let image = busybox_image("amd64");
    image
        .push(registry.host(), "busybox", "latest", None)
        .await
        .unwrap();
    let e = env(&registry);
    let reference = format!("{}/busybox", registry.host());
    let pulled = e
        .manager
        .pull(&reference, &PullAuth::default())
        .await
        .unwrap();
    let img = &pulled.image;
    assert_eq!(img.id.to_string(), image.config_digest);
    assert_eq!(
        img.repo_tags,
        [format!("{}/busybox:latest", registry.host())]
    );
    assert_eq!(
        img.repo_digests,
        [format!(
            "{}/busybox@{}",
            registry.host(),
            image.manifest_digest
        )]
    );
    assert_eq!(img.chain_ids.len(), 3);
    assert!(
        img.size > 500_000,
        "unpacked size includes busybox: {}",
        img.size
    );
    assert_eq!(pulled.layers_downloaded, 3);
    for r in [
        img.id.to_string(),
        reference.clone(),
        img.repo_digests[0].clone(),
        img.id.hex()[..12].to_string(),
    ] {
        assert_eq!(
            e.manager.status(&r).unwrap().map(|i| i.id),
            Some(img.id.clone()),
            "status by {r}"
        );
    }
    assert_eq!(e.manager.list(None).unwrap().len(), 1);

    let target = e.dir.path().join("rootfs");
    fs::create_dir(&target).unwrap();
    e.manager.prepare_rootfs("c1", &reference).unwrap();
    e.manager.mount_rootfs("c1", &target).unwrap();
    let check = || -> Result<(), String> {
        let exists = |p: &str| target.join(p).symlink_metadata().is_ok();
        for (path, want) in [
            ("bin/busybox", true),
            ("bin/sh", true),
            ("etc/passwd", true),
            ("etc/removed", false),
            ("var/cache/old", false),
            ("var/cache/new", true),
        ] {
            if exists(path) != want {
                return Err(format!("{path}: exists={} want={want}", exists(path)));
            }
        }
        let mode = fs::metadata(target.join("data/hello"))
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        if mode & 0o7777 != 0o4755 {
            return Err(format!("setuid lost: {mode:o}"));
        }
        Ok(())
    };
    let result = check();
    e.manager.unmount_rootfs(&target).unwrap();
    result.unwrap();
    assert!(e.manager.remove_rootfs("c1").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_picks_the_host_platform_or_says_what_exists() {
    if !crius_testkit::require_root("multi_arch_index_picks_the_host_platform_or_says_what_exists")
    {
        return;
    }
    let registry = Registry::start().unwrap();
    let arm = TestImage::oci(
        vec![LayerBuilder::new()
            .file("arch", b"arm64", 0o644)
            .build(Compression::Gzip)],
        "arm64",
    );
    let amd = TestImage::oci(
        vec![LayerBuilder::new()
            .file("arch", b"amd64", 0o644)
            .build(Compression::Zstd)],
        "amd64",
    );
    let index = push_index(
        registry.host(),
        "multi",
        "v1",
        &[arm.clone(), amd.clone()],
        None,
    )
    .await
    .unwrap();
    push_index(registry.host(), "armonly", "v1", &[arm], None)
        .await
        .unwrap();
    let e = env(&registry);
    let pulled = e
        .manager
        .pull(
            &format!("{}/multi:v1", registry.host()),
            &PullAuth::default(),
        )
        .await
        .unwrap();
    assert_eq!(pulled.image.id.to_string(), amd.config_digest);
    assert_eq!(
        pulled.image.manifest_digest.to_string(),
        amd.manifest_digest
    );
    assert_eq!(
        pulled.image.repo_digests,
        [format!("{}/multi@{index}", registry.host())]
    );
    let err = e
        .manager
        .pull(
            &format!("{}/armonly:v1", registry.host()),
            &PullAuth::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("linux/arm64"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_images_pull_and_mirrors_are_tried_first() {
    if !crius_testkit::require_root("docker_schema2_images_pull_and_mirrors_are_tried_first") {
        return;
    }
    let registry = Registry::start().unwrap();
    let image = TestImage::docker(
        vec![LayerBuilder::new()
            .file("hello", b"docker", 0o644)
            .build(Compression::Gzip)],
        "amd64",
    );
    image
        .push(registry.host(), "library/dockerimg", "1", None)
        .await
        .unwrap();
    // registry.k8s.io is never contacted: its mirror has the image.
    let mut config = ImageConfig::default();
    config.registries.insert(
        "registry.k8s.io".into(),
        RegistryConfig {
            insecure: false,
            mirrors: vec![format!("http://{}", registry.host())],
            ..Default::default()
        },
    );
    let e = env_with(config);
    let pulled = e
        .manager
        .pull("registry.k8s.io/library/dockerimg:1", &PullAuth::default())
        .await
        .unwrap();
    assert_eq!(pulled.image.id.to_string(), image.config_digest);
    assert_eq!(
        pulled.image.repo_tags,
        ["registry.k8s.io/library/dockerimg:1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_registry_refuses_anonymous_and_accepts_credentials() {
    if !crius_testkit::require_root("basic_auth_registry_refuses_anonymous_and_accepts_credentials")
    {
        return;
    }
    let registry = Registry::start_with_basic_auth("crius", "s3cret").unwrap();
    let image = TestImage::oci(
        vec![LayerBuilder::new()
            .file("secret", b"x", 0o600)
            .build(Compression::Gzip)],
        "amd64",
    );
    image
        .push(registry.host(), "private", "latest", registry.credentials())
        .await
        .unwrap();
    let e = env(&registry);
    let reference = format!("{}/private", registry.host());
    let err = e
        .manager
        .pull(&reference, &PullAuth::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(
        matches!(err, crius_image::Error::Unauthorized { .. }),
        "{err}"
    );
    let wrong = PullAuth {
        username: "crius".into(),
        password: "nope".into(),
        ..Default::default()
    };
    assert!(e.manager.pull(&reference, &wrong).await.is_err());
    let ok = PullAuth {
        username: "crius".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(
        e.manager
            .pull(&reference, &ok)
            .await
            .unwrap()
            .image
            .id
            .to_string(),
        image.config_digest
    );
    // The base64 `auth` form works too (fresh manager: no cached token).
    let e2 = env(&registry);
    let b64 = PullAuth {
        auth: "Y3JpdXM6czNjcmV0".into(),
        ..Default::default()
    };
    e2.manager.pull(&reference, &b64).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_five_layer_image_twice_downloads_once_even_concurrently() {
    if !crius_testkit::require_root("same_five_layer_image_twice_downloads_once_even_concurrently")
    {
        return;
    }
    let registry = Registry::start().unwrap();
    five_layer_image("five")
        .push(registry.host(), "five", "latest", None)
        .await
        .unwrap();
    let e = env(&registry);
    let reference = format!("{}/five", registry.host());
    let auth = PullAuth::default();
    let (a, b) = tokio::join!(
        e.manager.pull(&reference, &auth),
        e.manager.pull(&reference, &auth)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.layers_downloaded + b.layers_downloaded, 5);
    assert_eq!(
        e.manager
            .pull(&reference, &auth)
            .await
            .unwrap()
            .layers_downloaded,
        0
    );
    assert_eq!(committed(&e.manager), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_images_sharing_a_base_layer_store_it_once_and_gc_after_remove() {
    if !crius_testkit::require_root(
        "two_images_sharing_a_base_layer_store_it_once_and_gc_after_remove",
    ) {
        return;
    }
    let registry = Registry::start().unwrap();
    let (a, b) = (five_layer_image("a"), five_layer_image("b"));
    a.push(registry.host(), "a", "latest", None).await.unwrap();
    b.push(registry.host(), "b", "latest", None).await.unwrap();
    let e = env(&registry);
    let auth = PullAuth::default();
    let ra = format!("{}/a", registry.host());
    let rb = format!("{}/b", registry.host());
    assert_eq!(
        e.manager.pull(&ra, &auth).await.unwrap().layers_downloaded,
        5
    );
    assert_eq!(
        e.manager.pull(&rb, &auth).await.unwrap().layers_downloaded,
        4
    );
    assert_eq!(committed(&e.manager), 9);
    let base = b.layers[0].digest.parse().unwrap();
    assert!(crius_image::content::ContentReader::contains(
        e.manager.content(),
        &base
    ));

    // A container from image a keeps a's snapshots after a is removed.
    e.manager.prepare_rootfs("ctr", &ra).unwrap();
    assert!(e.manager.remove(&ra).unwrap());
    assert!(!e.manager.remove(&ra).unwrap(), "remove is idempotent");
    assert!(e.manager.status(&ra).unwrap().is_none());
    assert_eq!(committed(&e.manager), 9);
    assert!(e.manager.remove_rootfs("ctr").unwrap());
    assert_eq!(committed(&e.manager), 5, "only b's chain is left");
    assert!(e.manager.remove(&rb).unwrap());
    assert_eq!(committed(&e.manager), 0);
    assert!(
        crius_image::content::ContentManager::list(e.manager.content())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        e.manager.fs_usage().unwrap().mountpoint,
        e.dir.path().join("images")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_inconsistent_images_fail_cleanly_and_leave_no_snapshot() {
    if !crius_testkit::require_root(
        "hostile_or_inconsistent_images_fail_cleanly_and_leave_no_snapshot",
    ) {
        return;
    }
    let registry = Registry::start().unwrap();
    let e = env(&registry);
    let outside = e.dir.path().join("escape");
    // A layer with a `..` entry (tar::Builder refuses to write one; patch the name).
    let mut layer = LayerBuilder::new()
        .file("xxescape", b"pwned", 0o644)
        .build(Compression::None);
    let pos = layer
        .blob
        .windows(8)
        .position(|w| w == b"xxescape")
        .unwrap();
    layer.blob[pos..pos + 8].copy_from_slice(b"../../..");
    let mut h = tar::Header::from_byte_slice(&layer.blob[..512]).clone();
    h.set_cksum();
    layer.blob[..512].copy_from_slice(h.as_bytes());
    let layer = crius_testkit::images::Layer::from_tar(&layer.blob, Compression::Gzip);
    TestImage::oci(vec![layer], "amd64")
        .push(registry.host(), "hostile", "latest", None)
        .await
        .unwrap();
    let err = e
        .manager
        .pull(
            &format!("{}/hostile", registry.host()),
            &PullAuth::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, crius_image::Error::HostileLayer { .. }),
        "{err}"
    );
    assert!(!outside.exists() && !Path::new("/escape").exists());

    // A config whose diff id does not match the layer.
    let good = LayerBuilder::new()
        .file("f", b"1", 0o644)
        .build(Compression::Gzip);
    let mut lying = good.clone();
    lying.diff_id = crius_testkit::images::sha256(b"something else");
    TestImage::oci(vec![lying], "amd64")
        .push(registry.host(), "lying", "latest", None)
        .await
        .unwrap();
    let err = e
        .manager
        .pull(&format!("{}/lying", registry.host()), &PullAuth::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, crius_image::Error::DigestMismatch { .. }),
        "{err}"
    );
    assert_eq!(
        e.manager.snapshotter().list().unwrap().len(),
        0,
        "no snapshot survives a failed pull"
    );
    assert!(!crius_image::content::ContentReader::contains(
        e.manager.content(),
        &good.digest.parse().unwrap()
    ));
}

/// A hand-written registry: serves `routes` (path suffix, content type, body), and
/// with `bearer = Some((access, refresh))` demands `Authorization: Bearer <access>`,
/// handing the access token out at `/token` for `refresh_token=<refresh>`. Real
/// registries verify uploads, so a lying one has to be written by hand.
fn fake_registry(
    routes: Vec<(String, &'static str, Vec<u8>)>,
    bearer: Option<(String, String)>,
) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let realm = format!("http://{host}/token");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let (mut authz, mut length, mut line) = (String::new(), 0usize, String::new());
            while reader.read_line(&mut line).is_ok() && line != "\r\n" && !line.is_empty() {
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("authorization:") {
                    authz = line[14..].trim().to_string();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut extra = String::new();
            let (status, ctype, out) = match &bearer {
                Some((access, refresh)) if path == "/token" => {
                    if String::from_utf8_lossy(&body).contains(&format!("refresh_token={refresh}"))
                    {
                        (
                            "200 OK",
                            "application/json",
                            format!(r#"{{"access_token":"{access}"}}"#).into_bytes(),
                        )
                    } else {
                        ("401 Unauthorized", "application/json", b"{}".to_vec())
                    }
                }
                Some((access, _)) if authz != format!("Bearer {access}") => {
                    extra =
                        format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\n");
                    (
                        "401 Unauthorized",
                        "application/json",
                        br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_vec(),
                    )
                }
                _ => match routes
                    .iter()
                    .find(|(suffix, _, _)| path.ends_with(suffix.as_str()))
                {
                    Some((_, ctype, body)) => ("200 OK", *ctype, body.clone()),
                    None => ("200 OK", "application/json", b"{}".to_vec()),
                },
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                out.len()
            );
            let _ = stream.write_all(head.as_bytes());
            if !request.starts_with("HEAD") {
                let _ = stream.write_all(&out);
            }
        }
    });
    host
}

fn routes_for(image: &TestImage, layer_bodies: &[Vec<u8>]) -> Vec<(String, &'static str, Vec<u8>)> {
    let mut routes = vec![
        (
            "/manifests/latest".to_string(),
            "application/vnd.oci.image.manifest.v1+json",
            image.manifest.clone(),
        ),
        (
            image.config_digest.clone(),
            "application/octet-stream",
            image.config.clone(),
        ),
    ];
    for (layer, body) in image.layers.iter().zip(layer_bodies) {
        routes.push((
            layer.digest.clone(),
            "application/octet-stream",
            body.clone(),
        ));
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_with_the_wrong_digest_is_rejected_and_never_visible() {
    if !crius_testkit::require_root("blob_with_the_wrong_digest_is_rejected_and_never_visible") {
        return;
    }
    let honest = LayerBuilder::new()
        .file("f", b"honest", 0o644)
        .build(Compression::Gzip);
    let evil = LayerBuilder::new()
        .file("f", b"evil!!", 0o644)
        .build(Compression::Gzip);
    let image = TestImage::oci(vec![honest.clone()], "amd64");
    let host = fake_registry(routes_for(&image, std::slice::from_ref(&evil.blob)), None);
    let mut config = ImageConfig::default();
    config.registries.insert(
        host.clone(),
        RegistryConfig {
            insecure: true,
            mirrors: vec![],
            ..Default::default()
        },
    );
    let e = env_with(config);
    let err = e
        .manager
        .pull(&format!("{host}/lie"), &PullAuth::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            crius_image::Error::DigestMismatch { .. } | crius_image::Error::SizeMismatch { .. }
        ),
        "{err}"
    );
    let content = e.manager.content();
    assert!(!crius_image::content::ContentReader::contains(
        content,
        &honest.digest.parse().unwrap()
    ));
    assert!(!crius_image::content::ContentReader::contains(
        content,
        &evil.digest.parse().unwrap()
    ));
    assert!(e.manager.snapshotter().list().unwrap().is_empty());
    let ingest = e.dir.path().join("images/content/ingest");
    assert_eq!(
        fs::read_dir(ingest).unwrap().count(),
        0,
        "no partial blob left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moves_to_the_newly_pulled_image_and_the_old_one_keeps_its_digest() {
    if !crius_testkit::require_root(
        "a_tag_moves_to_the_newly_pulled_image_and_the_old_one_keeps_its_digest",
    ) {
        return;
    }
    let registry = Registry::start().unwrap();
    let e = env(&registry);
    let reference = format!("{}/app:latest", registry.host());
    let v1 = TestImage::oci(
        vec![LayerBuilder::new()
            .file("v", b"1", 0o644)
            .build(Compression::Gzip)],
        "amd64",
    );
    let v2 = TestImage::oci(
        vec![LayerBuilder::new()
            .file("v", b"2", 0o644)
            .build(Compression::Gzip)],
        "amd64",
    );
    v1.push(registry.host(), "app", "latest", None)
        .await
        .unwrap();
    let first = e
        .manager
        .pull(&reference, &PullAuth::default())
        .await
        .unwrap()
        .image;
    v2.push(registry.host(), "app", "latest", None)
        .await
        .unwrap();
    let second = e
        .manager
        .pull(&reference, &PullAuth::default())
        .await
        .unwrap()
        .image;
    assert_ne!(first.id, second.id);
    assert_eq!(e.manager.status(&reference).unwrap().unwrap().id, second.id);
    let old = e.manager.status(&first.id.to_string()).unwrap().unwrap();
    assert!(old.repo_tags.is_empty());
    assert_eq!(old.repo_digests, first.repo_digests);
    assert_eq!(e.manager.list(None).unwrap().len(), 2);
    assert_eq!(e.manager.list(Some(&reference)).unwrap().len(), 1);
    // Pull by digest names the old image again, without a tag.
    let by_digest = first.repo_digests[0].clone();
    assert_eq!(
        e.manager
            .pull(&by_digest, &PullAuth::default())
            .await
            .unwrap()
            .image
            .id,
        first.id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_mirror_falls_back_to_the_registry_itself() {
    if !crius_testkit::require_root("a_dead_mirror_falls_back_to_the_registry_itself") {
        return;
    }
    let registry = Registry::start().unwrap();
    let image = TestImage::oci(
        vec![LayerBuilder::new()
            .file("m", b"m", 0o644)
            .build(Compression::Zstd)],
        "amd64",
    );
    image
        .push(registry.host(), "fallback", "latest", None)
        .await
        .unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = ImageConfig::default();
    let mirrors = vec![format!("http://{dead}")];
    config.registries.insert(
        registry.host().to_string(),
        RegistryConfig {
            insecure: true,
            mirrors,
            ..Default::default()
        },
    );
    let e = env_with(config);
    let pulled = e
        .manager
        .pull(
            &format!("{}/fallback", registry.host()),
            &PullAuth::default(),
        )
        .await
        .unwrap();
    assert_eq!(pulled.image.id.to_string(), image.config_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_config_are_used_when_the_request_has_none() {
    if !crius_testkit::require_root(
        "credentials_from_the_config_are_used_when_the_request_has_none",
    ) {
        return;
    }
    let registry = Registry::start_with_basic_auth("cfg", "pw").unwrap();
    let image = TestImage::oci(
        vec![LayerBuilder::new()
            .file("c", b"c", 0o644)
            .build(Compression::Gzip)],
        "amd64",
    );
    image
        .push(registry.host(), "cfg", "latest", registry.credentials())
        .await
        .unwrap();
    let mut config = ImageConfig::default();
    let auth = PullAuth {
        username: "cfg".into(),
        password: "pw".into(),
        ..Default::default()
    };
    config.registries.insert(
        registry.host().to_string(),
        RegistryConfig {
            insecure: true,
            mirrors: vec![],
            auth: Some(auth),
        },
    );
    let e = env_with(config);
    let pulled = e
        .manager
        .pull(&format!("{}/cfg", registry.host()), &PullAuth::default())
        .await
        .unwrap();
    assert_eq!(pulled.image.id.to_string(), image.config_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_token_is_traded_for_a_bearer_token_and_registry_token_is_used_as_is() {
    if !crius_testkit::require_root(
        "identity_token_is_traded_for_a_bearer_token_and_registry_token_is_used_as_is",
    ) {
        return;
    }
    let layer = LayerBuilder::new()
        .file("t", b"token", 0o644)
        .build(Compression::Gzip);
    let image = TestImage::oci(vec![layer.clone()], "amd64");
    let bearer = Some(("access-123".to_string(), "refresh-456".to_string()));
    let host = fake_registry(
        routes_for(&image, std::slice::from_ref(&layer.blob)),
        bearer,
    );
    let mut config = ImageConfig::default();
    config.registries.insert(
        host.clone(),
        RegistryConfig {
            insecure: true,
            ..Default::default()
        },
    );
    let reference = format!("{host}/tok");
    let e = env_with(config.clone());
    let err = e
        .manager
        .pull(&reference, &PullAuth::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, crius_image::Error::Unauthorized { .. }),
        "{err}"
    );
    let wrong = PullAuth {
        identity_token: "stolen".into(),
        ..Default::default()
    };
    assert!(e.manager.pull(&reference, &wrong).await.is_err());
    let identity = PullAuth {
        identity_token: "refresh-456".into(),
        ..Default::default()
    };
    assert_eq!(
        e.manager
            .pull(&reference, &identity)
            .await
            .unwrap()
            .image
            .id
            .to_string(),
        image.config_digest
    );
    let e2 = env_with(config);
    let token = PullAuth {
        registry_token: "access-123".into(),
        ..Default::default()
    };
    assert_eq!(
        e2.manager
            .pull(&reference, &token)
            .await
            .unwrap()
            .image
            .id
            .to_string(),
        image.config_digest
    );
}

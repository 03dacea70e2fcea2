//! OCI test images built from Debian's static busybox and pushed to a [`Registry`]
//! with oci-client over plain HTTP: several layers, a whiteout and an opaque dir, a
//! gzip, a zstd and an uncompressed layer, Docker schema 2 and OCI manifests, and
//! multi-arch indexes.
//!
//! [`Registry`]: crate::registry::Registry

use std::io::{self, Write};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

use crate::rootfs::BUSYBOX;

/// The sha256 digest string of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// tar+gzip.
    Gzip,
    /// tar+zstd.
    Zstd,
}

/// Builds one layer tar with fixed mtimes, so equal content gives equal digests.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl std::fmt::Debug for LayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerBuilder").finish_non_exhaustive()
    }
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// Adds a directory.
    pub fn dir(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.tar
            .append_data(&mut h, path, io::empty())
            .expect("tar dir");
        self
    }

    /// Adds a regular file.
    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar.append_data(&mut h, path, data).expect("tar file");
        self
    }

    /// Adds a symlink.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }

    /// Adds an overlay-style whiteout for `path` (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"", 0o644)
    }

    /// Marks `dir` opaque (`dir/.wh..wh..opq`).
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    /// Adds `/bin/busybox` and symlinks for the applets the tests run.
    pub fn busybox(self) -> Self {
        let data = std::fs::read(BUSYBOX).expect("busybox-static must be installed");
        let mut b = self.dir("bin").file("bin/busybox", &data, 0o755);
        for applet in [
            "sh", "ls", "cat", "echo", "true", "false", "sleep", "readlink", "hostname", "id",
            "ps", "env", "mount", "touch", "mkdir", "rm", "nc", "httpd", "wget", "head", "yes",
            "dd", "kill", "ip", "grep", "stat",
        ] {
            b = b.symlink(&format!("bin/{applet}"), "busybox");
        }
        b
    }

    /// Finishes the tar and compresses it.
    pub fn build(self, compression: Compression) -> Layer {
        let tar = self.tar.into_inner().expect("tar finish");
        Layer::from_tar(&tar, compression)
    }
}

/// A layer blob with its digests.
#[derive(Debug, Clone)]
pub struct Layer {
    /// OCI media type.
    pub media_type: String,
    /// The (compressed) bytes pushed.
    pub blob: Vec<u8>,
    /// Digest of `blob`.
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
}

impl Layer {
    /// Compresses a tar into a layer.
    pub fn from_tar(tar: &[u8], compression: Compression) -> Self {
        let (suffix, blob) = match compression {
            Compression::None => ("", tar.to_vec()),
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(tar).expect("gzip");
                ("+gzip", gz.finish().expect("gzip"))
            }
            Compression::Zstd => ("+zstd", zstd::encode_all(tar, 3).expect("zstd")),
        };
        Self {
            media_type: format!("application/vnd.oci.image.layer.v1.tar{suffix}"),
            digest: sha256(&blob),
            diff_id: sha256(tar),
            blob,
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.blob.len()})
    }
}

/// A single-platform image: config, layers and manifest bytes.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// Config JSON bytes.
    pub config: Vec<u8>,
    /// Digest of the config: the image id.
    pub config_digest: String,
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// Digest of the manifest.
    pub manifest_digest: String,
    /// Manifest media type (OCI or Docker schema 2).
    pub manifest_media_type: String,
    /// The platform architecture.
    pub arch: String,
}

impl TestImage {
    /// An OCI image for `linux/<arch>`.
    pub fn oci(layers: Vec<Layer>, arch: &str) -> Self {
        Self::build(layers, arch, false)
    }

    /// A Docker schema 2 image for `linux/<arch>` (layers get Docker media types).
    pub fn docker(layers: Vec<Layer>, arch: &str) -> Self {
        Self::build(layers, arch, true)
    }

    fn build(mut layers: Vec<Layer>, arch: &str, docker: bool) -> Self {
        if docker {
            for l in &mut layers {
                l.media_type = match l.media_type.as_str() {
                    "application/vnd.oci.image.layer.v1.tar+gzip" => {
                        "application/vnd.docker.image.rootfs.diff.tar.gzip"
                    }
                    "application/vnd.oci.image.layer.v1.tar" => {
                        "application/vnd.docker.image.rootfs.diff.tar"
                    }
                    other => other,
                }
                .to_string();
            }
        }
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "User": "0", "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        });
        let config = serde_json::to_vec(&config).expect("config json");
        let (manifest_type, config_type) = if docker {
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
            )
        } else {
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
            )
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": sha256(&config), "size": config.len()},
            "layers": layers.iter().map(Layer::descriptor).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest json");
        Self {
            config_digest: sha256(&config),
            manifest_digest: sha256(&manifest),
            manifest_media_type: manifest_type.to_string(),
            layers,
            config,
            manifest,
            arch: arch.to_string(),
        }
    }

    /// Pushes blobs and manifest as `<host>/<repo>:<tag>` over plain HTTP.
    pub async fn push(
        &self,
        host: &str,
        repo: &str,
        tag: &str,
        creds: Option<(&str, &str)>,
    ) -> io::Result<()> {
        let (client, reference, auth) = client_for(host, repo, tag, creds);
        self.push_blobs(&client, &reference, &auth).await?;
        push_manifest(
            &client,
            &reference,
            &self.manifest,
            &self.manifest_media_type,
        )
        .await
    }

    async fn push_blobs(
        &self,
        client: &Client,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> io::Result<()> {
        client
            .store_auth_if_needed(reference.resolve_registry(), auth)
            .await;
        for layer in &self.layers {
            client
                .push_blob(reference, layer.blob.clone(), &layer.digest)
                .await
                .map_err(io::Error::other)?;
        }
        client
            .push_blob(reference, self.config.clone(), &self.config_digest)
            .await
            .map_err(io::Error::other)?;
        Ok(())
    }
}

/// Pushes a multi-arch OCI index of `images` (each pushed by digest) as `<repo>:<tag>`.
/// Returns the index digest.
pub async fn push_index(
    host: &str,
    repo: &str,
    tag: &str,
    images: &[TestImage],
    creds: Option<(&str, &str)>,
) -> io::Result<String> {
    let (client, reference, auth) = client_for(host, repo, tag, creds);
    let mut entries = Vec::new();
    for image in images {
        image.push_blobs(&client, &reference, &auth).await?;
        let by_digest = Reference::with_digest(
            host.to_string(),
            repo.to_string(),
            image.manifest_digest.clone(),
        );
        push_manifest(
            &client,
            &by_digest,
            &image.manifest,
            &image.manifest_media_type,
        )
        .await?;
        entries.push(serde_json::json!({
            "mediaType": image.manifest_media_type,
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "platform": {"os": "linux", "architecture": image.arch},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .expect("index json");
    push_manifest(
        &client,
        &reference,
        &index,
        "application/vnd.oci.image.index.v1+json",
    )
    .await?;
    Ok(sha256(&index))
}

fn client_for(
    host: &str,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &str)>,
) -> (Client, Reference, RegistryAuth) {
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let reference = Reference::with_tag(host.to_string(), repo.to_string(), tag.to_string());
    let auth = match creds {
        Some((u, p)) => RegistryAuth::Basic(u.to_string(), p.to_string()),
        None => RegistryAuth::Anonymous,
    };
    (client, reference, auth)
}

async fn push_manifest(
    client: &Client,
    reference: &Reference,
    body: &[u8],
    media_type: &str,
) -> io::Result<()> {
    let ct = http::HeaderValue::from_str(media_type).map_err(io::Error::other)?;
    client
        .push_manifest_raw(reference, body.to_vec(), ct)
        .await
        .map_err(io::Error::other)?;
    Ok(())
}

/// The shared base layer: busybox and its applet links (gzip).
pub fn busybox_layer() -> Layer {
    LayerBuilder::new().busybox().build(Compression::Gzip)
}

/// Three layers: busybox (gzip); `/etc` files (zstd); a layer (plain tar) that
/// whites out `etc/removed`, makes `var/cache` opaque and adds `data/hello`.
pub fn busybox_layers() -> Vec<Layer> {
    let etc = LayerBuilder::new()
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644)
        .file("etc/removed", b"gone in the next layer\n", 0o644)
        .dir("var")
        .dir("var/cache")
        .file("var/cache/old", b"hidden by the opaque dir\n", 0o644)
        .build(Compression::Zstd);
    let top = LayerBuilder::new()
        .dir("etc")
        .whiteout("etc/removed")
        .dir("var")
        .dir("var/cache")
        .opaque("var/cache")
        .file("var/cache/new", b"fresh\n", 0o644)
        .dir("data")
        .file("data/hello", b"hello from crius\n", 0o4755)
        .build(Compression::None);
    vec![busybox_layer(), etc, top]
}

/// The three-layer busybox image for `linux/<arch>`.
pub fn busybox_image(arch: &str) -> TestImage {
    TestImage::oci(busybox_layers(), arch)
}

/// A five-layer image: the busybox base plus four small layers that depend on `seed`,
/// so two seeds share exactly the base layer.
pub fn five_layer_image(seed: &str) -> TestImage {
    let mut layers = vec![busybox_layer()];
    for i in 1..5 {
        let c = if i % 2 == 0 {
            Compression::Zstd
        } else {
            Compression::Gzip
        };
        layers.push(
            LayerBuilder::new()
                .dir("layers")
                .file(
                    &format!("layers/{i}"),
                    format!("{seed} layer {i}\n").as_bytes(),
                    0o644,
                )
                .build(c),
        );
    }
    TestImage::oci(layers, "amd64")
}

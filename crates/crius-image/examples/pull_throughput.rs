//! Pull throughput of crius-image alone, without a daemon or containerd: the shape of
//! crius-bench's `pull` image (a busybox layer plus four layers of 8 MiB random data,
//! gzip) pushed to a throw-away local docker-registry, then pulled `N` times into a
//! fresh store each time. Prints MB/s per pull and the median.
//!
//! ```sh
//! cargo build --release -p crius-image --example pull_throughput
//! target/release/examples/pull_throughput 5          # as root; store under /var/tmp
//! ```
//!
//! `CRIUS_PULL_DIR` picks the filesystem the store lives on (default `/var/tmp`);
//! `CRIUS_PULL_LAYERS` / `CRIUS_PULL_MIB` change the number and size of the random
//! layers. The layers are generated from a fixed seed, but their gzip bytes depend on the
//! flate2 backend this binary was built with; to compare two builds on the same bytes,
//! `pull_throughput serve` pushes the image, prints the registry and keeps it running
//! until stdin closes, and `CRIUS_PULL_REGISTRY=<host:port>` makes a run pull from there
//! instead of pushing its own.

use std::sync::Arc;
use std::time::Instant;

use crius_image::config::RegistryConfig;
use crius_image::{ImageConfig, ImageManager, PullAuth, StoreImageRecords};
use crius_testkit::images::{busybox_layer, Compression, LayerBuilder, TestImage};
use crius_testkit::registry::Registry;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic incompressible bytes (xorshift64*), like `head -c N /dev/urandom`.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let serve = arg == "serve";
    let pulls = arg.parse().unwrap_or(5usize);
    let (n_layers, mib) = (
        env_usize("CRIUS_PULL_LAYERS", 4),
        env_usize("CRIUS_PULL_MIB", 8),
    );
    let base = std::env::var("CRIUS_PULL_DIR").unwrap_or_else(|_| "/var/tmp".into());

    let mut layers = vec![busybox_layer()];
    for i in 0..n_layers {
        layers.push(
            LayerBuilder::new()
                .dir("data")
                .file(
                    &format!("data/blob{i}"),
                    &random_bytes(i as u64 + 1, mib << 20),
                    0o644,
                )
                .build(Compression::Gzip),
        );
    }
    let image = TestImage::oci(layers, "amd64");
    let (_registry, host) = match std::env::var("CRIUS_PULL_REGISTRY") {
        Ok(host) => (None, host),
        Err(_) => {
            let registry = Registry::start()?;
            image
                .push(registry.host(), "bench/layers", "1", None)
                .await?;
            let host = registry.host().to_string();
            (Some(registry), host)
        }
    };
    if serve {
        println!("CRIUS_PULL_REGISTRY={host}");
        std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
        return Ok(());
    }
    let reference = format!("{host}/bench/layers:1");
    let mut config = ImageConfig::default();
    config.registries.insert(
        host.clone(),
        RegistryConfig {
            insecure: true,
            ..Default::default()
        },
    );

    let mut rates = Vec::new();
    for i in 0..pulls {
        let dir = tempfile::tempdir_in(&base)?;
        let store = Arc::new(crius_store::Store::open(dir.path().join("meta.redb"))?);
        let manager = ImageManager::open(
            &dir.path().join("images"),
            config.clone(),
            Arc::new(StoreImageRecords::new(store)),
        )?;
        let start = Instant::now();
        let pulled = manager.pull(&reference, &PullAuth::default()).await?;
        let took = start.elapsed();
        let size = pulled.image.size as f64;
        let rate = size / took.as_secs_f64() / 1e6;
        println!(
            "pull {i}: {:.1} ms, {:.2} MiB unpacked, {:.2} MiB fetched, {rate:.1} MB/s",
            took.as_secs_f64() * 1e3,
            size / 1048576.0,
            pulled.bytes_downloaded as f64 / 1048576.0,
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    if let Some(median) = rates.get(rates.len() / 2) {
        println!("median {median:.1} MB/s over {pulls} pulls");
    }
    Ok(())
}

//! Pod network setup and teardown time, CNI (Debian's bridge + host-local + portmap) vs the
//! built-in network. Needs root and /usr/lib/cni.
//!
//! `cargo run --release -p crius-net --example setup_time -- [pods]`

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crius_net::{
    BuiltinNetwork, BuiltinOptions, CniNetwork, CniOptions, NetworkPlugin, PodNetworkRequest,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Pins a fresh network namespace at `path` (from a throw-away thread).
fn new_netns(path: &Path) -> Result<(), Box<dyn Error + Send + Sync>> {
    std::fs::write(path, b"")?;
    let target = path.to_owned();
    std::thread::spawn(move || -> Result<(), nix::Error> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    })
    .join()
    .map_err(|_| "netns thread panicked")??;
    Ok(())
}

fn measure(
    net: &dyn NetworkPlugin,
    dir: &Path,
    pods: usize,
) -> Result<(Vec<Duration>, Vec<Duration>), Box<dyn Error + Send + Sync>> {
    let mut reqs = Vec::new();
    for i in 0..pods {
        let ns = dir.join(format!("ns-{i}"));
        new_netns(&ns)?;
        reqs.push(PodNetworkRequest {
            pod_id: format!("bench-{i}"),
            pod_name: format!("bench-{i}"),
            pod_namespace: "bench".into(),
            pod_uid: format!("uid-{i}"),
            netns_path: ns,
            ..Default::default()
        });
    }
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for req in &reqs {
        let t = Instant::now();
        net.setup(req)?;
        up.push(t.elapsed());
    }
    for req in &reqs {
        let t = Instant::now();
        net.teardown(req)?;
        down.push(t.elapsed());
        umount2(&req.netns_path, MntFlags::MNT_DETACH)?;
    }
    Ok((up, down))
}

fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    let pick = |percent: usize| {
        let idx = d.len().saturating_sub(1) * percent / 100;
        d.get(idx).copied().unwrap_or_default()
    };
    format!(
        "p50 {:>8.2?}  p90 {:>8.2?}  max {:>8.2?}",
        pick(50),
        pick(90),
        pick(100)
    )
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let pods: usize = std::env::args().nth(1).map_or(Ok(20), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir_all(&conf_dir)?;
    let conflist = serde_json::json!({
    "cniVersion": "1.0.0", "name": "bench", "plugins": [
        {"type": "bridge", "bridge": "crbench-cni", "isGateway": true, "ipMasq": false,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.231.0.0/24"}]],
                  "dataDir": dir.path().join("ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": true}}
    ]});
    std::fs::write(conf_dir.join("10-bench.conflist"), conflist.to_string())?;
    let cni = CniNetwork::new(CniOptions {
        conf_dir,
        bin_dirs: vec![PathBuf::from("/usr/lib/cni")],
        cache_dir: dir.path().join("cache"),
        ..Default::default()
    });
    let builtin = BuiltinNetwork::new(BuiltinOptions {
        bridge: "crbench-bi".into(),
        pod_cidr: "10.232.0.0/24".parse()?,
        state_dir: dir.path().join("state"),
        ..Default::default()
    })?;
    let (up, down) = measure(&cni, dir.path(), pods)?;
    println!("cni      setup    {}", summary(up));
    println!("cni      teardown {}", summary(down));
    let (up, down) = measure(&builtin, dir.path(), pods)?;
    println!("built-in setup    {}", summary(up));
    println!("built-in teardown {}", summary(down));
    builtin.remove_host_state()?;
    let del = std::process::Command::new("ip")
        .args(["link", "del", "crbench-cni"])
        .status();
    if !del.is_ok_and(|s| s.success()) {
        eprintln!("could not delete bridge crbench-cni");
    }
    Ok(())
}

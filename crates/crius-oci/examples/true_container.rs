//! Benchmark entry: spec → exec of `/bin/true` in a fresh container, repeated.
//!
//! `cargo run --release -p crius-oci --example true_container -- [iterations] [builtin|runc|crun]`
//! (as root). Prints one line per run in microseconds and p50/p99 at the end. The rootfs is
//! a busybox tree built once in a temporary directory; each iteration is a full
//! create + start + wait + delete with the secure default spec.
#![allow(clippy::unwrap_used)] // an example: a failure should stop it loudly

use std::path::Path;
use std::time::Instant;

use crius_oci::{BinaryRuntime, BuiltinRuntime, ExitStatus, OciRuntime, Stdio};

fn main() {
    let mut args = std::env::args().skip(1);
    let iterations: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(20);
    let which = args.next().unwrap_or_else(|| "builtin".into());
    let dir = tempfile::tempdir().unwrap();
    crius_testkit::rootfs::BusyboxRootfs::create(&dir.path().join("rootfs")).unwrap();
    let spec = crius_oci::spec::secure_default(&["/bin/true".into()], Path::new("rootfs")).unwrap();
    let state = dir.path().join("state");
    let mut rt: Box<dyn OciRuntime> = match which.as_str() {
        "builtin" => Box::new(BuiltinRuntime::new()),
        "runc" => Box::new(BinaryRuntime::new("/usr/sbin/runc", &state)),
        "crun" => Box::new(BinaryRuntime::new("/usr/bin/crun", &state)),
        other => panic!("unknown runtime {other}"),
    };
    // runc/crun reparent the container to us only when we are a subreaper.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let mut micros = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let id = format!("bench-{}-{i}", std::process::id());
        let t = Instant::now();
        let p = rt.create(&id, dir.path(), &spec, Stdio::default()).unwrap();
        rt.start(&id).unwrap();
        assert_eq!(p.wait().unwrap(), ExitStatus::Exited(0));
        rt.delete(&id, false).unwrap();
        let us = t.elapsed().as_micros();
        println!("{which} run {i}: {us} us");
        micros.push(us);
    }
    micros.sort_unstable();
    let pct = |p: usize| micros[(micros.len() * p / 100).min(micros.len() - 1)];
    println!(
        "{which}: n={iterations} p50={} us p99={} us",
        pct(50),
        pct(99)
    );
}

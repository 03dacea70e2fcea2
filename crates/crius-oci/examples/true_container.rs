//! Benchmark entry: spec → exec of `/bin/true` in a fresh container, repeated.
//!
//! `cargo run --release -p crius-oci --example true_container -- [iterations] [mode] [warmup]`
//! (as root), mode one of:
//!
//! - `builtin`: crius's own runtime, create + start + wait + delete;
//! - `runc`, `crun`: the CLI through [`BinaryRuntime`], as crius drives a RuntimeClass
//!   handler: `create`, `start`, wait, `delete` (three CLI processes);
//! - `runc-run`, `crun-run`: the CLI's own one-shot `<cli> --root R run --bundle B <id>`,
//!   which creates, starts, waits for and deletes the container in one call (no `--keep`);
//!   the bundle's `config.json` is written once, from the same spec.
//!
//! Every mode uses the secure default spec and the same busybox rootfs, built once in a
//! temporary directory; stdio is /dev/null. `warmup` iterations (default 2) run first and
//! are not counted. Prints one line per counted run in microseconds and p50/p99 at the end.
//!
//! crun 1.8 refuses to run on a hybrid cgroup host whose cgroup2 mount has controllers
//! (the test machines': hugetlb on /sys/fs/cgroup/unified). For the crun modes this process
//! first moves into a private mount namespace where a scratch tmpfs hides that mount
//! ([`crius_testkit::hybrid`]), so crun sees a plain cgroup v1 host; the other modes run
//! on the host's mounts as they are.
#![allow(clippy::unwrap_used)] // an example: a failure should stop it loudly

use std::path::Path;
use std::process::{Command, Stdio as CmdStdio};
use std::time::Instant;

use crius_oci::{BinaryRuntime, BuiltinRuntime, ExitStatus, OciRuntime, Stdio};

const RUNC: &str = "/usr/sbin/runc";
const CRUN: &str = "/usr/bin/crun";

/// How one iteration starts and finishes a container.
enum Mode {
    /// Through the `OciRuntime` trait: create, start, wait, delete.
    Runtime(Box<dyn OciRuntime>),
    /// The CLI's own `run`.
    Run(&'static str),
}

impl Mode {
    fn iteration(&mut self, id: &str, bundle: &Path, state: &Path, spec: &oci_spec::runtime::Spec) {
        match self {
            Mode::Runtime(rt) => {
                let p = rt.create(id, bundle, spec, Stdio::default()).unwrap();
                rt.start(id).unwrap();
                assert_eq!(p.wait().unwrap(), ExitStatus::Exited(0));
                rt.delete(id, false).unwrap();
            }
            Mode::Run(binary) => {
                let binary = *binary;
                let status = Command::new(binary)
                    .arg("--root")
                    .arg(state)
                    .arg("run")
                    .arg("--bundle")
                    .arg(bundle)
                    .arg(id)
                    .stdin(CmdStdio::null())
                    .stdout(CmdStdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "{binary} run {id}: {status}");
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let iterations: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(20);
    let which = args.next().unwrap_or_else(|| "builtin".into());
    let warmup: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(2);
    if which.starts_with("crun") {
        let hidden = crius_testkit::hybrid::hide_unified_cgroup_mount().unwrap();
        eprintln!("{which}: unified cgroup mount hidden for crun: {hidden}");
    }
    let dir = tempfile::tempdir().unwrap();
    crius_testkit::rootfs::BusyboxRootfs::create(&dir.path().join("rootfs")).unwrap();
    let spec = crius_oci::spec::secure_default(&["/bin/true".into()], Path::new("rootfs")).unwrap();
    spec.save(dir.path().join("config.json")).unwrap();
    let state = dir.path().join("state");
    let mut mode = match which.as_str() {
        "builtin" => Mode::Runtime(Box::new(BuiltinRuntime::new())),
        "runc" => Mode::Runtime(Box::new(BinaryRuntime::new(RUNC, &state))),
        "crun" => Mode::Runtime(Box::new(BinaryRuntime::new(CRUN, &state))),
        "runc-run" => Mode::Run(RUNC),
        "crun-run" => Mode::Run(CRUN),
        other => panic!("unknown mode {other}: builtin, runc, crun, runc-run or crun-run"),
    };
    // runc/crun reparent the container to us only when we are a subreaper.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let mut micros = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let id = format!("bench-{}-{i}", std::process::id());
        let t = Instant::now();
        mode.iteration(&id, dir.path(), &state, &spec);
        let us = t.elapsed().as_micros();
        // `run` without --keep removed the container itself; nothing may be left.
        assert!(!state.join(&id).exists(), "{id} was not deleted");
        if i < warmup {
            continue;
        }
        println!("{which} run {}: {us} us", i - warmup);
        micros.push(us);
    }
    if micros.is_empty() {
        return;
    }
    micros.sort_unstable();
    // nearest rank: every reported value is a real sample
    let pct = |p: usize| micros[(micros.len() * p).div_ceil(100).max(1) - 1];
    println!(
        "{which}: n={iterations} p50={} us p99={} us",
        pct(50),
        pct(99)
    );
}

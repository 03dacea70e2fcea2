//! The same conformance suite against the runc-compatible binaries installed here.
#![allow(clippy::unwrap_used)] // the suite driver below the tests: a failure is a test failure

mod common;

use std::path::Path;

use crius_oci::{BinaryRuntime, ErrorKind, OciRuntime};

fn suite_for(binary: &str, name: &str) {
    if !crius_testkit::require_root(name) {
        return;
    }
    if !Path::new(binary).exists() {
        eprintln!("SKIPPED {name}: {binary} is not installed");
        return;
    }
    // The CLI's container processes are reparented to us only as a child subreaper.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut rt = BinaryRuntime::new(binary, root.path());
    let tag = Path::new(binary)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    common::conformance_suite(&mut rt, &tag);
    common::lifecycle_suite(&mut rt, &tag);
    common::terminal_suite(&mut rt, &tag);
    common::recursive_readonly_suite(&mut rt, &tag);
    common::devices_suite(&mut rt, &tag);
    assert_eq!(
        rt.state("no-such-container").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn runc_passes_the_conformance_suite() {
    suite_for("/usr/sbin/runc", "runc_passes_the_conformance_suite");
}

#[test]
fn crun_passes_the_conformance_suite() {
    // crun 1.8 refuses to run anything on a hybrid host whose cgroup2 mount has
    // controllers ("cgroups in hybrid mode not supported, drop all controllers from
    // cgroupv2"), even with `--cgroup-manager=disabled` and no cgroup mount or namespace.
    // That is a property of the host, not of the suite: say so loudly and skip.
    let hybrid = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| !c.trim().is_empty());
    if hybrid {
        eprintln!(
            "SKIPPED crun_passes_the_conformance_suite: crun refuses this hybrid cgroup host"
        );
        return;
    }
    suite_for("/usr/bin/crun", "crun_passes_the_conformance_suite");
}

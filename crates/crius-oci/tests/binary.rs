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
    if !crius_testkit::require_root("crun_passes_the_conformance_suite") {
        return;
    }
    // crun 1.8 refuses every container on a hybrid host whose cgroup2 mount
    // (/sys/fs/cgroup/unified) has controllers, as the test machines' has (hugetlb), even
    // with `--cgroup-manager=disabled`. This test's thread (nextest runs each test in a
    // process of its own) therefore moves into a private mount namespace where a scratch
    // tmpfs hides that mount: crun sees a plain cgroup v1 host and uses the v1
    // controllers like runc does (see crius_testkit::hybrid for why a tmpfs and not just
    // an unmount). The host's mounts are untouched; the namespace ends with the process.
    crius_testkit::hybrid::hide_unified_cgroup_mount().unwrap();
    suite_for("/usr/bin/crun", "crun_passes_the_conformance_suite");
}

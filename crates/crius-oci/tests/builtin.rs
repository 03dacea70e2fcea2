//! The built-in runtime against the real kernel (root only).

mod common;

use common::{id, run, Bundle};
use crius_oci::{BuiltinRuntime, ErrorKind};

#[test]
fn builtin_runtime_passes_the_conformance_suite() {
    if !crius_testkit::require_root("builtin_runtime_passes_the_conformance_suite") {
        return;
    }
    common::conformance_suite(&mut BuiltinRuntime::new(), "builtin");
}

#[test]
fn devices_get_their_own_path_and_rules_apply_in_order() {
    if !crius_testkit::require_root("devices_get_their_own_path_and_rules_apply_in_order") {
        return;
    }
    common::devices_suite(&mut BuiltinRuntime::new(), "builtin");
}

#[test]
fn rro_is_read_only_down_to_submounts_and_ro_is_not() {
    if !crius_testkit::require_root("rro_is_read_only_down_to_submounts_and_ro_is_not") {
        return;
    }
    common::recursive_readonly_suite(&mut BuiltinRuntime::new(), "builtin");
}

#[test]
fn a_missing_binary_fails_at_the_exec_step_with_its_chain() {
    if !crius_testkit::require_root("a_missing_binary_fails_at_the_exec_step_with_its_chain") {
        return;
    }
    let bundle = Bundle::new();
    let spec = bundle.spec(&["no-such-binary"]);
    let err = run(
        &mut BuiltinRuntime::new(),
        &id("nobin"),
        bundle.path(),
        &spec,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("exec: executable no-such-binary not found"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn builtin_runtime_passes_the_lifecycle_suite() {
    if !crius_testkit::require_root("builtin_runtime_passes_the_lifecycle_suite") {
        return;
    }
    common::lifecycle_suite(&mut BuiltinRuntime::new(), "builtin");
}

#[test]
fn the_callers_ignored_and_blocked_signals_do_not_leak_into_the_container() {
    if !crius_testkit::require_root(
        "the_callers_ignored_and_blocked_signals_do_not_leak_into_the_container",
    ) {
        return;
    }
    // Block a signal in this thread (the one that forks); Rust already ignores SIGPIPE.
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGUSR1);
    nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&set), None)
        .unwrap();
    let bundle = Bundle::new();
    let spec = bundle.spec(&["/bin/cat", "/proc/self/status"]);
    let out = run(
        &mut BuiltinRuntime::new(),
        &id("signals"),
        bundle.path(),
        &spec,
    )
    .unwrap();
    assert_eq!(
        common::status_field(&out.stdout, "SigBlk:"),
        "0000000000000000",
        "{out:?}"
    );
    assert_eq!(
        common::status_field(&out.stdout, "SigIgn:"),
        "0000000000000000",
        "{out:?}"
    );
}

#[test]
fn the_container_leads_its_own_session() {
    if !crius_testkit::require_root("the_container_leads_its_own_session") {
        return;
    }
    let bundle = Bundle::new();
    let spec = bundle.spec(&["/bin/cat", "/proc/self/stat"]);
    let out = run(
        &mut BuiltinRuntime::new(),
        &id("session"),
        bundle.path(),
        &spec,
    )
    .unwrap();
    // fields after "(comm)": state ppid pgrp session ...
    let rest = out.stdout.rsplit_once(") ").unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    assert_eq!(
        (fields[2], fields[3]),
        ("1", "1"),
        "pgrp and session of pid 1: {}",
        out.stdout
    );
}

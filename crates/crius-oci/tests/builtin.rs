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

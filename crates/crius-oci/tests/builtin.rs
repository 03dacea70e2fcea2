//! The built-in runtime against the real kernel (root only).

mod common;

use common::{id, run, Bundle};
use crius_oci::{BuiltinRuntime, ErrorKind, ExitStatus, OciRuntime, Status, Stdio};

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
fn lifecycle_states_follow_create_start_exit() {
    if !crius_testkit::require_root("lifecycle_states_follow_create_start_exit") {
        return;
    }
    let bundle = Bundle::new();
    let spec = bundle.spec(&["/bin/sleep", "30"]);
    let mut rt = BuiltinRuntime::new();
    let ctr = id("life");
    let p = rt
        .create(&ctr, bundle.path(), &spec, Stdio::default())
        .unwrap();
    assert_eq!(rt.state(&ctr).unwrap().status, Status::Created);
    assert_eq!(
        rt.create(&ctr, bundle.path(), &spec, Stdio::default())
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    rt.start(&ctr).unwrap();
    assert_eq!(rt.state(&ctr).unwrap().status, Status::Running);
    assert_eq!(
        rt.start(&ctr).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        rt.delete(&ctr, false).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    rt.kill(&ctr, crius_oci::Signal::SIGKILL).unwrap();
    assert_eq!(p.wait().unwrap(), ExitStatus::Signaled(9));
    assert_eq!(rt.state(&ctr).unwrap().status, Status::Stopped);
    rt.delete(&ctr, false).unwrap();
    assert_eq!(rt.state(&ctr).unwrap_err().kind(), ErrorKind::NotFound);
}

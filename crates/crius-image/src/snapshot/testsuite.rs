//! The conformance suite every [`Snapshotter`] implementation runs from its tests.

use std::fs;
use std::path::Path;

use super::*;
use crate::error::ErrorKind;

/// Runs every contract check against a fresh snapshotter made by `make(dir)`.
pub(crate) fn conformance_suite<S: Snapshotter>(make: impl Fn(&Path) -> S) {
    let dir = tempfile::tempdir().unwrap();
    prepare_commit_and_stack(&make(&dir.path().join("a")));
    duplicate_keys_and_unknown_parents(&make(&dir.path().join("b")));
    remove_is_idempotent_and_refuses_parents(&make(&dir.path().join("c")));
    state_survives_reopen(&make, &dir.path().join("d"));
}

fn prepare_commit_and_stack(s: &impl Snapshotter) {
    let m = s.prepare("extract-1", None).unwrap();
    fs::write(m.upper_path().unwrap().join("base"), b"1").unwrap();
    s.commit("layer1", "extract-1", None).unwrap();
    assert_eq!(s.stat("layer1").unwrap().kind, SnapshotKind::Committed);
    assert_eq!(s.stat("extract-1").unwrap_err().kind(), ErrorKind::NotFound);
    let m = s.prepare("extract-2", Some("layer1")).unwrap();
    assert_eq!(m.lowers.len(), 1);
    s.commit("layer2", "extract-2", None).unwrap();
    let c = s.prepare("container", Some("layer2")).unwrap();
    assert_eq!(c.lowers.len(), 2, "topmost first, whole chain");
    assert!(c.upper.is_some() && c.work.is_some());
    assert_eq!(s.mounts("container").unwrap(), c);
    assert_eq!(
        s.stat("container").unwrap().parent.as_deref(),
        Some("layer2")
    );
}

fn duplicate_keys_and_unknown_parents(s: &impl Snapshotter) {
    s.prepare("k", None).unwrap();
    assert_eq!(
        s.prepare("k", None).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        s.prepare("x", Some("nope")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.prepare("y", Some("k")).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        s.commit("n", "missing", None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    s.commit("n", "k", None).unwrap();
    s.prepare("k2", None).unwrap();
    assert_eq!(
        s.commit("n", "k2", None).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
}

fn remove_is_idempotent_and_refuses_parents(s: &impl Snapshotter) {
    s.prepare("a", None).unwrap();
    s.commit("base", "a", None).unwrap();
    s.prepare("child", Some("base")).unwrap();
    assert_eq!(
        s.remove("base").unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    assert!(s.remove("child").unwrap());
    assert!(s.remove("base").unwrap());
    assert!(!s.remove("base").unwrap());
    assert!(s.list().unwrap().is_empty());
}

fn state_survives_reopen<S: Snapshotter>(make: &impl Fn(&Path) -> S, dir: &Path) {
    {
        let s = make(dir);
        s.prepare("a", None).unwrap();
        s.commit("base", "a", None).unwrap();
        s.prepare("c", Some("base")).unwrap();
    }
    let s = make(dir);
    let mut keys: Vec<_> = s.list().unwrap().into_iter().map(|i| i.key).collect();
    keys.sort();
    assert_eq!(keys, ["base", "c"]);
}

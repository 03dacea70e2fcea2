//! The conformance suite every content store runs from its tests.

use std::io::Write;

use super::*;
use crate::error::{Error, ErrorKind};

/// Checks the module's contract on a fresh store from `make`; `corrupt` must change a
/// committed blob's bytes behind the store's back (for fsck).
pub(crate) fn conformance_suite<S: ContentStore>(
    make: impl Fn() -> S,
    corrupt: impl Fn(&S, &Digest),
) {
    let s = make();
    let d = s.write_blob(b"hello", None).unwrap();
    assert_eq!(d, Digest::sha256_of(b"hello"));
    assert_eq!(s.read_all(&d).unwrap(), b"hello");
    assert_eq!(
        s.info(&d).unwrap(),
        BlobInfo {
            digest: d.clone(),
            size: 5
        }
    );
    assert_eq!(
        s.write_blob(b"hello", Some(&d)).unwrap(),
        d,
        "committing an existing blob succeeds"
    );

    let missing = Digest::sha256_of(b"missing");
    assert_eq!(s.info(&missing).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(s.open(&missing).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!s.delete(&missing).unwrap());

    let err = s.write_blob(b"evil", Some(&missing)).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!s.contains(&missing) && !s.contains(&Digest::sha256_of(b"evil")));

    let mut w = s.ingest(Some((&missing, Some(7)))).unwrap();
    w.write_all(b"missing").unwrap();
    drop(w); // abandoned: nothing becomes visible
    assert!(!s.contains(&missing));

    let bad = s.write_blob(b"to be corrupted", None).unwrap();
    corrupt(&s, &bad);
    let report = s.fsck().unwrap();
    assert_eq!(report.iter().map(|b| &b.digest).collect::<Vec<_>>(), [&bad]);
    assert_eq!(s.list().unwrap().len(), 2);
    assert!(s.delete(&bad).unwrap());
    assert!(s.fsck().unwrap().is_empty());
}

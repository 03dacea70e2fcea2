use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use super::*;

/// A tar entry with any name, even ones `tar::Builder` would refuse.
pub(crate) struct RawEntry {
    pub name: String,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Option<String>,
    pub mode: u32,
    pub uid: u64,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.into(),
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
            link: None,
            mode: 0o644,
            uid: 0,
        }
    }
    pub fn dir(name: &str) -> Self {
        Self {
            name: name.into(),
            kind: tar::EntryType::Directory,
            data: vec![],
            link: None,
            mode: 0o755,
            uid: 0,
        }
    }
    pub fn symlink(name: &str, target: &str) -> Self {
        Self {
            name: name.into(),
            kind: tar::EntryType::Symlink,
            data: vec![],
            link: Some(target.into()),
            mode: 0o777,
            uid: 0,
        }
    }
    pub fn hardlink(name: &str, target: &str) -> Self {
        Self {
            name: name.into(),
            kind: tar::EntryType::Link,
            data: vec![],
            link: Some(target.into()),
            mode: 0o644,
            uid: 0,
        }
    }
}

pub(crate) fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let name = &mut h.as_old_mut().name;
            name.fill(0);
            name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        }
        if let Some(link) = &e.link {
            let l = &mut h.as_old_mut().linkname;
            l.fill(0);
            l[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.uid);
        h.set_mtime(1_000_000);
        h.set_cksum();
        b.append(&h, e.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// Everything under `dir` except `skip`: path -> (kind, size, mtime, content).
fn fingerprint(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, (String, u64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                vec![]
            };
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                p,
                (format!("{:?}", m.file_type()), m.len(), m.mtime(), content),
            );
        }
    }
    out
}

struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("snap")).unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::write(tmp.path().join("outside/victim"), b"original").unwrap();
        Self { tmp }
    }
    fn snap(&self) -> PathBuf {
        self.tmp.path().join("snap")
    }
    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }
    /// Unpacks a hostile layer, expects a HostileLayer error and no change outside.
    fn expect_refused(&self, entries: &[RawEntry]) -> String {
        let before = fingerprint(self.tmp.path(), &self.snap());
        let err = unpack_tar(
            raw_tar(entries).as_slice(),
            &self.snap(),
            UnpackOptions { real_root: true },
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::HostileLayer { .. }),
            "unexpected error: {err}"
        );
        assert_eq!(
            before,
            fingerprint(self.tmp.path(), &self.snap()),
            "something outside the snapshot changed"
        );
        err.to_string()
    }
}

#[test]
fn dotdot_entry_is_refused_and_nothing_escapes() {
    if !crius_testkit::require_root("dotdot_entry_is_refused_and_nothing_escapes") {
        return;
    }
    let s = Sandbox::new();
    let msg = s.expect_refused(&[
        RawEntry::file("../outside/victim", b"pwned"),
        RawEntry::file("../escape", b"x"),
    ]);
    assert!(msg.contains(".."), "{msg}");
    let msg = s.expect_refused(&[RawEntry::dir("a"), RawEntry::file("a/../../escape", b"x")]);
    assert!(msg.contains(".."), "{msg}");
}

#[test]
fn absolute_entry_is_refused_and_nothing_escapes() {
    if !crius_testkit::require_root("absolute_entry_is_refused_and_nothing_escapes") {
        return;
    }
    let s = Sandbox::new();
    let victim = s.outside().join("victim");
    let msg = s.expect_refused(&[RawEntry::file(victim.to_str().unwrap(), b"pwned")]);
    assert!(msg.contains("absolute"), "{msg}");
}

#[test]
fn symlink_then_write_through_is_refused() {
    if !crius_testkit::require_root("symlink_then_write_through_is_refused") {
        return;
    }
    let s = Sandbox::new();
    let outside = s.outside();
    // Absolute symlink out, then a file written through it.
    s.expect_refused(&[
        RawEntry::symlink("evil", outside.to_str().unwrap()),
        RawEntry::file("evil/victim", b"pwned"),
    ]);
    // Relative symlink climbing out, then a new file through it.
    s.expect_refused(&[
        RawEntry::symlink("up", "../outside"),
        RawEntry::file("up/new", b"pwned"),
    ]);
    // Directory entry through the symlink.
    s.expect_refused(&[
        RawEntry::symlink("up2", "../outside"),
        RawEntry::dir("up2/newdir"),
    ]);
    // A symlink replaced by a file is replaced, never written through.
    let snap = s.snap();
    unpack_tar(
        raw_tar(&[
            RawEntry::symlink("v", outside.join("victim").to_str().unwrap()),
            RawEntry::file("v", b"mine"),
        ])
        .as_slice(),
        &snap,
        UnpackOptions { real_root: true },
    )
    .unwrap();
    assert_eq!(fs::read(snap.join("v")).unwrap(), b"mine");
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"original");
}

#[test]
fn hardlink_to_host_path_is_refused() {
    if !crius_testkit::require_root("hardlink_to_host_path_is_refused") {
        return;
    }
    let s = Sandbox::new();
    let victim = s.outside().join("victim");
    s.expect_refused(&[RawEntry::hardlink("h", victim.to_str().unwrap())]);
    s.expect_refused(&[RawEntry::hardlink("h", "../outside/victim")]);
    s.expect_refused(&[
        RawEntry::symlink("s", s.outside().to_str().unwrap()),
        RawEntry::hardlink("h", "s/victim"),
    ]);
    s.expect_refused(&[RawEntry::hardlink("h", "etc/passwd")]);
    assert_eq!(fs::metadata(&victim).unwrap().nlink(), 1);
}

#[test]
fn regular_layer_keeps_modes_owners_links_mtimes_and_whiteouts() {
    if !crius_testkit::require_root("regular_layer_keeps_modes_owners_links_mtimes_and_whiteouts") {
        return;
    }
    let s = Sandbox::new();
    let mut suid = RawEntry::file("bin/tool", b"#!/bin/sh\n");
    suid.mode = 0o4755;
    suid.uid = 1234;
    let mut dev = RawEntry::file("dev/null2", b"");
    dev.kind = tar::EntryType::Char;
    let mut fifo = RawEntry::file("run/pipe", b"");
    fifo.kind = tar::EntryType::Fifo;
    let layer = raw_tar(&[
        RawEntry::dir("./"),
        RawEntry::dir("bin"),
        suid,
        RawEntry::symlink("bin/sh", "/bin/busybox"),
        RawEntry::hardlink("bin/tool2", "bin/tool"),
        RawEntry::file("etc/deep/file", b"auto parents"),
        RawEntry::file("etc/.wh.removed", b""),
        RawEntry::dir("opaque"),
        RawEntry::file("opaque/.wh..wh..opq", b""),
        dev,
        fifo,
    ]);
    let (size, entries) = unpack_tar(
        layer.as_slice(),
        &s.snap(),
        UnpackOptions { real_root: true },
    )
    .unwrap();
    assert_eq!(entries, 11);
    assert_eq!(size, 10 + 12);
    let snap = s.snap();
    let tool = fs::metadata(snap.join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(tool.uid(), 1234);
    assert_eq!(tool.mtime(), 1_000_000);
    assert_eq!(tool.nlink(), 2);
    assert_eq!(
        fs::read_link(snap.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(fs::metadata(snap.join("bin")).unwrap().mtime(), 1_000_000);
    assert_eq!(
        fs::read(snap.join("etc/deep/file")).unwrap(),
        b"auto parents"
    );
    let wh = fs::symlink_metadata(snap.join("etc/removed")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        xattr::get(snap.join("opaque"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!snap.join("opaque/.wh..wh..opq").exists());
    assert!(fs::symlink_metadata(snap.join("dev/null2"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(fs::symlink_metadata(snap.join("run/pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn compressed_layers_report_the_uncompressed_diff_id() {
    if !crius_testkit::require_root("compressed_layers_report_the_uncompressed_diff_id") {
        return;
    }
    let tar = raw_tar(&[RawEntry::file("hello", b"world")]);
    let want = Digest::sha256_of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(tar.as_slice(), 1).unwrap();
    for (bytes, c) in [
        (tar.clone(), Compression::None),
        (gz, Compression::Gzip),
        (zst, Compression::Zstd),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let got = unpack_layer(
            bytes.as_slice(),
            c,
            dir.path(),
            UnpackOptions { real_root: true },
        )
        .unwrap();
        assert_eq!(got.diff_id, want);
        assert_eq!(fs::read(dir.path().join("hello")).unwrap(), b"world");
    }
}

#[test]
fn media_types_map_to_compression() {
    assert_eq!(
        Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
        Compression::Gzip
    );
    assert_eq!(
        Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
        Compression::Zstd
    );
    assert_eq!(
        Compression::from_media_type("application/vnd.oci.image.layer.v1.tar").unwrap(),
        Compression::None
    );
    assert!(Compression::from_media_type("application/x-foo").is_err());
}

/// A tiny deterministic generator: no dependency for "random" bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect()
}

#[test]
fn garbage_and_mutated_layers_error_without_panicking_or_escaping() {
    if !crius_testkit::require_root(
        "garbage_and_mutated_layers_error_without_panicking_or_escaping",
    ) {
        return;
    }
    let s = Sandbox::new();
    let before = fingerprint(s.tmp.path(), &s.snap());
    let base = raw_tar(&[
        RawEntry::dir("d"),
        RawEntry::file("d/f", b"data"),
        RawEntry::symlink("l", "../x"),
    ]);
    for seed in 0..300u64 {
        let mut input = base.clone();
        for (i, b) in noise(seed, 8).iter().enumerate() {
            let at = (noise(seed + 1000 + i as u64, 2)[0] as usize * 7 + i * 131) % input.len();
            input[at] = *b;
        }
        let dest = s.snap().join(seed.to_string());
        fs::create_dir(&dest).unwrap();
        let _ = unpack_tar(input.as_slice(), &dest, UnpackOptions { real_root: true });
        let _ = unpack_tar(
            noise(seed, 2048).as_slice(),
            &dest,
            UnpackOptions { real_root: true },
        );
        let _ = unpack_layer(
            noise(seed, 512).as_slice(),
            Compression::Gzip,
            &dest,
            UnpackOptions { real_root: true },
        );
    }
    assert_eq!(before, fingerprint(s.tmp.path(), &s.snap()));
}

/// A PAX record: `<len> <key>=<value>\n`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

#[test]
fn long_names_are_kept_and_trusted_xattrs_dropped_while_user_xattrs_stay() {
    if !crius_testkit::require_root(
        "long_names_are_kept_and_trusted_xattrs_dropped_while_user_xattrs_stay",
    ) {
        return;
    }
    let s = Sandbox::new();
    let long_dir = "d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, &long_file, &b"long"[..]).unwrap();
    let mut pax = pax_record("SCHILY.xattr.user.crius", "kept");
    pax.extend(pax_record("SCHILY.xattr.trusted.overlay.redirect", "/etc"));
    let mut ph = tar::Header::new_ustar();
    ph.set_entry_type(tar::EntryType::XHeader);
    ph.set_size(pax.len() as u64);
    ph.set_path("PaxHeader").unwrap();
    ph.set_cksum();
    b.append(&ph, pax.as_slice()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, "xattrs", &b"x"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    let target = format!("/{}", "t".repeat(200));
    b.append_link(&mut h, "longlink", &target).unwrap();
    let layer = b.into_inner().unwrap();
    unpack_tar(
        layer.as_slice(),
        &s.snap(),
        UnpackOptions { real_root: true },
    )
    .unwrap();
    let snap = s.snap();
    assert_eq!(fs::read(snap.join(&long_file)).unwrap(), b"long");
    assert_eq!(
        fs::read_link(snap.join("longlink")).unwrap(),
        Path::new(&target)
    );
    assert_eq!(
        xattr::get(snap.join("xattrs"), "user.crius")
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        xattr::get(snap.join("xattrs"), "trusted.overlay.redirect").unwrap(),
        None
    );
}

//! Safe layer unpacking: a tar stream (plain, gzip or zstd) becomes the content of one
//! snapshot directory and nothing else.
//!
//! Threat model: the layer is hostile. It may name entries with `..` or absolute paths,
//! plant a symlink and then write "through" it, hardlink to host files, carry device
//! nodes, `trusted.overlay.*` xattrs or enormous headers. Defences:
//! - entry and hardlink names are cleaned component by component; `..`, absolute paths
//!   and empty names are refused with [`Error::HostileLayer`];
//! - every parent directory is opened with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_MAGICLINKS)` relative to the snapshot root, so a symlink that leads out
//!   (absolute or through `..`) fails with `EXDEV` instead of being followed;
//! - the final component is always created with `O_CREAT | O_EXCL | O_NOFOLLOW` or the
//!   `*at` call that never follows it, after removing whatever the layer put there
//!   before (tar's "last entry wins");
//! - hardlinks are `linkat` between two names both resolved beneath the root;
//! - character and block devices are created only when running as real root;
//!   `trusted.*` xattrs from the layer are dropped (they steer overlayfs);
//! - whiteouts (`.wh.<name>`) become 0/0 character devices and opaque markers
//!   (`.wh..wh..opq`) the `trusted.overlay.opaque=y` xattr, the overlayfs on-disk format.
//!
//! A failed unpack leaves a partial snapshot directory that the caller discards; it
//! never becomes a committed snapshot.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::digest::{Algorithm, Digest, HashingReader};
use crate::error::{Error, Result};

/// How a layer's bytes are compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression of a layer media type (OCI and Docker names).
    pub fn from_media_type(media_type: &str) -> Result<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
            other => Err(Error::UnsupportedMediaType(other.to_string())),
        }
    }
}

/// What the unpack must and may do.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Running as real root (uid 0 in the initial user namespace): ownership is kept
    /// and device nodes are created. Otherwise both are skipped.
    pub real_root: bool,
}

impl UnpackOptions {
    /// Options for the current process.
    pub fn for_current_process() -> Self {
        Self {
            real_root: is_real_root(),
        }
    }
}

/// The result of unpacking one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// sha256 of the uncompressed tar: the layer's diff id.
    pub diff_id: Digest,
    /// Bytes of regular file content written.
    pub size: u64,
    /// Tar entries processed.
    pub entries: u64,
}

/// True when the process is uid 0 in the initial user namespace.
pub fn is_real_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
        .unwrap_or(false)
}

/// Decompresses `blob`, unpacks the tar into `dest` and returns the diff id of the
/// uncompressed stream. Reads `blob` to its end (so a caller hashing it sees every
/// byte) and never reads it twice.
pub fn unpack_layer<R: Read>(
    blob: R,
    compression: Compression,
    dest: &Path,
    opts: UnpackOptions,
) -> Result<UnpackedLayer> {
    let read_err = |e: io::Error| Error::io("read layer", dest, e);
    let mut blob = blob;
    let decompressed: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(&mut blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut blob)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(&mut blob).map_err(read_err)?)
        }
    };
    let mut hashing = HashingReader::new(decompressed, Algorithm::Sha256);
    let (size, entries) = unpack_tar(&mut hashing, dest, opts)?;
    io::copy(&mut hashing, &mut io::sink()).map_err(read_err)?;
    let (diff_id, _) = hashing.finish();
    io::copy(&mut blob, &mut io::sink()).map_err(read_err)?;
    Ok(UnpackedLayer {
        diff_id,
        size,
        entries,
    })
}

/// Unpacks an uncompressed tar stream into `dest`. Returns (content bytes, entries).
pub fn unpack_tar<R: Read>(reader: R, dest: &Path, opts: UnpackOptions) -> Result<(u64, u64)> {
    let root: OwnedFd = openat(
        nix::fcntl::AT_FDCWD,
        dest,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open snapshot", dest, e.into()))?;
    let mut ctx = Unpacker {
        root,
        dest: dest.to_path_buf(),
        opts,
        dir_times: Vec::new(),
        size: 0,
        entries: 0,
        copy_buf: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| Error::io("read tar", dest, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read tar", dest, e))?;
        ctx.entry(entry)?;
    }
    ctx.finish()?;
    Ok((ctx.size, ctx.entries))
}

struct Unpacker {
    root: OwnedFd,
    dest: PathBuf,
    opts: UnpackOptions,
    dir_times: Vec<(Vec<OsString>, u64)>,
    size: u64,
    entries: u64,
    /// Reused for every file's content: `io::copy`'s 8 KiB stack buffer costs one
    /// `write` per 8 KiB, a visible share of a pull's system time.
    copy_buf: Vec<u8>,
}

/// File content is copied in pieces of this size.
const COPY_BUF: usize = 256 << 10;

/// A cleaned entry path: components, none of them `.`, `..` or empty.
fn clean(name: &Path, what: &str) -> Result<Vec<OsString>> {
    let shown = name.display().to_string();
    let mut out = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::hostile(shown, format!("{what} contains '..'")))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::hostile(shown, format!("{what} is an absolute path")))
            }
        }
    }
    Ok(out)
}

fn join(parts: &[OsString]) -> PathBuf {
    parts.iter().collect()
}

impl Unpacker {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        self.entries += 1;
        let name = entry
            .path()
            .map_err(|e| Error::io("read tar path", &self.dest, e))?
            .into_owned();
        let shown = name.display().to_string();
        let parts = clean(&name, "entry name")?;
        let kind = entry.header().entry_type();
        let Some((file_name, parents)) = parts.split_last() else {
            return Ok(()); // "./": the snapshot root itself keeps its own metadata.
        };
        if file_name.as_bytes().starts_with(b".wh.") {
            return self.whiteout(&shown, parents, file_name);
        }
        let parent = self.ensure_dir(&shown, parents)?;
        let xattrs =
            pax_xattrs(&mut entry).map_err(|e| Error::io("read tar xattrs", &self.dest, e))?;
        match kind {
            tar::EntryType::Directory => self.make_dir(&shown, &parent, &parts, &entry, &xattrs),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.make_file(&shown, &parent, file_name, &mut entry, &xattrs)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::io("read tar link", &self.dest, e))?
                    .ok_or_else(|| Error::hostile(&shown, "symlink without a target"))?
                    .into_owned();
                self.replace(&shown, &parent, file_name)?;
                symlinkat(&target, &parent, file_name.as_os_str())
                    .map_err(|e| self.errno("symlink", &shown, e))?;
                self.metadata(&shown, &parent, file_name, entry.header(), &xattrs, None)
            }
            tar::EntryType::Link => self.make_hardlink(&shown, &parent, &parts, &entry),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.make_node(&shown, &parent, file_name, &entry, &xattrs)
            }
            tar::EntryType::XGlobalHeader => Ok(()),
            other => Err(Error::hostile(
                shown,
                format!("unsupported tar entry type {other:?}"),
            )),
        }
    }

    fn errno(&self, op: &'static str, entry: &str, e: Errno) -> Error {
        match e {
            Errno::EXDEV | Errno::ELOOP => Error::hostile(
                entry,
                "path resolves outside the snapshot through a symlink",
            ),
            other => Error::io(op, self.dest.join(entry), other.into()),
        }
    }

    /// Opens `parents` beneath the root, creating missing directories (mode 0755).
    fn ensure_dir(&self, entry: &str, parents: &[OsString]) -> Result<OwnedFd> {
        match self.open_beneath(entry, parents) {
            Err(Errno::ENOENT) => {}
            other => return other.map_err(|e| self.errno("open parent", entry, e)),
        }
        for depth in 1..=parents.len() {
            match self.open_beneath(entry, &parents[..depth]) {
                Ok(_) => continue,
                Err(Errno::ENOENT) => {
                    let up = self
                        .open_beneath(entry, &parents[..depth - 1])
                        .map_err(|e| self.errno("open parent", entry, e))?;
                    mkdirat(
                        &up,
                        parents[depth - 1].as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    )
                    .map_err(|e| self.errno("mkdir", entry, e))?;
                }
                Err(e) => return Err(self.errno("open parent", entry, e)),
            }
        }
        self.open_beneath(entry, parents)
            .map_err(|e| self.errno("open parent", entry, e))
    }

    fn open_beneath(
        &self,
        _entry: &str,
        parts: &[OsString],
    ) -> std::result::Result<OwnedFd, Errno> {
        let path = if parts.is_empty() {
            PathBuf::from(".")
        } else {
            join(parts)
        };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.root, &path, how)
    }

    /// Removes whatever the layer already put at `name` (never following it), so the
    /// new entry is created fresh. Directories are kept only for a directory entry.
    fn replace(&self, entry: &str, parent: &OwnedFd, name: &OsStr) -> Result<()> {
        match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(self.errno("stat", entry, e)),
            Ok(st) if st.st_mode & libc_s_ifmt() == libc_s_ifdir() => {
                unlinkat(parent, name, UnlinkatFlags::RemoveDir).map_err(|e| match e {
                    Errno::ENOTEMPTY | Errno::EEXIST => {
                        Error::hostile(entry, "replaces a non-empty directory")
                    }
                    other => self.errno("rmdir", entry, other),
                })
            }
            Ok(_) => unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| self.errno("unlink", entry, e)),
        }
    }

    fn make_dir<R: Read>(
        &mut self,
        shown: &str,
        parent: &OwnedFd,
        parts: &[OsString],
        entry: &tar::Entry<'_, R>,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let name = parts.last().map(|n| n.as_os_str()).unwrap_or_default();
        let is_dir = matches!(fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW), Ok(st) if st.st_mode & libc_s_ifmt() == libc_s_ifdir());
        if !is_dir {
            self.replace(shown, parent, name)?;
            mkdirat(parent, name, Mode::from_bits_truncate(0o700))
                .map_err(|e| self.errno("mkdir", shown, e))?;
        }
        let dir = openat(
            parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.errno("open dir", shown, e))?;
        self.metadata(
            shown,
            parent,
            name,
            entry.header(),
            xattrs,
            Some(dir.as_fd()),
        )?;
        let mtime = entry.header().mtime().unwrap_or(0);
        self.dir_times.push((parts.to_vec(), mtime));
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        shown: &str,
        parent: &OwnedFd,
        name: &OsStr,
        entry: &mut tar::Entry<'_, R>,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        self.replace(shown, parent, name)?;
        let fd = openat(
            parent,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.errno("create", shown, e))?;
        let mut file = File::from(fd);
        let n = self
            .copy_content(entry, &mut file)
            .map_err(|e| Error::io("write", self.dest.join(shown), e))?;
        self.size += n;
        let header = entry.header().clone();
        self.metadata(shown, parent, name, &header, xattrs, Some(file.as_fd()))
    }

    /// Copies an entry's content into `file`, filling the buffer before each write.
    fn copy_content<R: Read>(&mut self, entry: &mut R, file: &mut File) -> io::Result<u64> {
        if self.copy_buf.is_empty() {
            self.copy_buf = vec![0; COPY_BUF];
        }
        let mut total = 0u64;
        loop {
            let mut filled = 0;
            while filled < self.copy_buf.len() {
                match entry.read(&mut self.copy_buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            io::Write::write_all(file, &self.copy_buf[..filled])?;
            total += filled as u64;
        }
    }

    fn make_hardlink<R: Read>(
        &self,
        shown: &str,
        parent: &OwnedFd,
        parts: &[OsString],
        entry: &tar::Entry<'_, R>,
    ) -> Result<()> {
        let name = parts.last().map(|n| n.as_os_str()).unwrap_or_default();
        let target = entry
            .link_name()
            .map_err(|e| Error::io("read tar link", &self.dest, e))?
            .ok_or_else(|| Error::hostile(shown, "hardlink without a target"))?;
        let tparts = clean(&target, "hardlink target")?;
        let Some((tname, tparents)) = tparts.split_last() else {
            return Err(Error::hostile(shown, "hardlink to the snapshot root"));
        };
        let tparent = self.open_beneath(shown, tparents).map_err(|e| match e {
            Errno::ENOENT => Error::hostile(shown, "hardlink target is not in this layer"),
            other => self.errno("open hardlink target", shown, other),
        })?;
        match fstatat(&tparent, tname.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc_s_ifmt() == libc_s_ifdir() => {
                return Err(Error::hostile(shown, "hardlink to a directory"))
            }
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                return Err(Error::hostile(
                    shown,
                    "hardlink target is not in this layer",
                ))
            }
            Err(e) => return Err(self.errno("stat hardlink target", shown, e)),
        }
        if tparts.as_slice() == parts {
            return Ok(());
        }
        self.replace(shown, parent, name)?;
        linkat(&tparent, tname.as_os_str(), parent, name, AtFlags::empty())
            .map_err(|e| self.errno("link", shown, e))
    }

    fn make_node<R: Read>(
        &self,
        shown: &str,
        parent: &OwnedFd,
        name: &OsStr,
        entry: &tar::Entry<'_, R>,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Fifo => SFlag::S_IFIFO,
            tar::EntryType::Char => SFlag::S_IFCHR,
            _ => SFlag::S_IFBLK,
        };
        if kind != SFlag::S_IFIFO && !self.opts.real_root {
            tracing::debug!(
                entry = shown,
                "skipping device node: not running as real root"
            );
            return Ok(());
        }
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        self.replace(shown, parent, name)?;
        mknodat(
            parent,
            name,
            kind,
            Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(major.into(), minor.into()),
        )
        .map_err(|e| self.errno("mknod", shown, e))?;
        self.metadata(shown, parent, name, header, xattrs, None)
    }

    fn whiteout(&mut self, shown: &str, parents: &[OsString], file_name: &OsStr) -> Result<()> {
        let parent = self.ensure_dir(shown, parents)?;
        if file_name == ".wh..wh..opq" {
            let dir = openat(
                &parent,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.errno("open dir", shown, e))?;
            return xattr::FileExt::set_xattr(&File::from(dir), "trusted.overlay.opaque", b"y")
                .map_err(|e| Error::io("mark opaque", self.dest.join(shown), e));
        }
        let hidden = OsStr::from_bytes(&file_name.as_bytes()[4..]);
        if hidden.is_empty()
            || hidden == "."
            || hidden == ".."
            || hidden.as_bytes().starts_with(b".wh.")
        {
            return Err(Error::hostile(shown, "malformed whiteout name"));
        }
        self.replace(shown, &parent, hidden)?;
        mknodat(&parent, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
            .map_err(|e| self.errno("whiteout", shown, e))
    }

    /// Ownership, mode (setuid/setgid kept: chmod after chown), xattrs and mtime.
    fn metadata(
        &self,
        shown: &str,
        parent: &OwnedFd,
        name: &OsStr,
        header: &tar::Header,
        xattrs: &[(String, Vec<u8>)],
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        if self.opts.real_root {
            let uid = header
                .uid()
                .ok()
                .and_then(|u| u32::try_from(u).ok())
                .unwrap_or(0);
            let gid = header
                .gid()
                .ok()
                .and_then(|g| u32::try_from(g).ok())
                .unwrap_or(0);
            fchownat(
                parent,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.errno("chown", shown, e))?;
        }
        let is_symlink = header.entry_type() == tar::EntryType::Symlink;
        if let Some(fd) = fd {
            let mode = Mode::from_bits_truncate(header.mode().unwrap_or(0o644) & 0o7777);
            fchmod(fd, mode).map_err(|e| self.errno("chmod", shown, e))?;
        } else if !is_symlink {
            let mode = Mode::from_bits_truncate(header.mode().unwrap_or(0o644) & 0o7777);
            nix::sys::stat::fchmodat(
                parent,
                name,
                mode,
                nix::sys::stat::FchmodatFlags::NoFollowSymlink,
            )
            .or_else(|e| {
                if e == Errno::EOPNOTSUPP {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| self.errno("chmod", shown, e))?;
        }
        for (key, value) in xattrs {
            if let Err(e) = xattr::set(proc_path(parent, name), key, value) {
                tracing::debug!(entry = shown, xattr = key.as_str(), error = %e, "xattr not kept");
            }
        }
        let mtime = TimeSpec::new(i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0), 0);
        utimensat(
            parent,
            name,
            &mtime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.errno("set mtime", shown, e))
    }

    /// Directory mtimes last, deepest first: creating children changed them.
    fn finish(&mut self) -> Result<()> {
        let mut times = std::mem::take(&mut self.dir_times);
        times.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        for (parts, mtime) in times {
            let Some((name, parents)) = parts.split_last() else {
                continue;
            };
            let shown = join(&parts).display().to_string();
            let parent = self
                .open_beneath(&shown, parents)
                .map_err(|e| self.errno("open parent", &shown, e))?;
            let t = TimeSpec::new(i64::try_from(mtime).unwrap_or(0), 0);
            utimensat(
                &parent,
                name.as_os_str(),
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| self.errno("set mtime", &shown, e))?;
        }
        Ok(())
    }
}

fn libc_s_ifmt() -> u32 {
    SFlag::S_IFMT.bits()
}

fn libc_s_ifdir() -> u32 {
    SFlag::S_IFDIR.bits()
}

/// `/proc/self/fd/<dir>/<name>`: the directory is reached through its fd (already
/// resolved beneath the root) and `name`, the last component, is not followed by the
/// `l*` calls that use this path.
fn proc_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

/// The `SCHILY.xattr.*` PAX records, minus `trusted.*` (which steers overlayfs).
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if name.starts_with("trusted.") {
                    continue;
                }
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;

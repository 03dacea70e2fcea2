//! Who a container runs as: the CRI `run_as_user`/`run_as_group`/`run_as_username` and the
//! image's `User`, resolved against the image's own `/etc/passwd` and `/etc/group`.
//!
//! # Threat model
//!
//! The container root filesystem is untrusted: an image author controls every file in it.
//! `/etc/passwd` may be a symlink to a host file (`/etc/shadow`), a `..` chain, a FIFO that
//! blocks forever, a device node, or gigabytes long. Files are therefore opened with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to the rootfs, so every
//! symlink and `..` resolves *inside* it (a kernel without `openat2` falls back to a
//! component-by-component walk that refuses symlinks). Only regular files are read, through
//! an `O_PATH` descriptor re-opened after the type check, and at most [`MAX_FILE_SIZE`]
//! bytes. Parsing skips malformed lines instead of failing on them, as libc does.
//!
//! The resolution rules follow containerd's CRI plugin:
//! - `run_as_user` wins, then `run_as_username`, then the image's `User`
//!   (`name`, `uid`, `uid:gid`, `name:group`, `uid:group`, `name:gid`); nothing at all is root;
//! - the primary gid is `run_as_group` when given, else the explicit group of the image's
//!   `User`, else the user's `/etc/passwd` entry, else 0;
//! - the additional gids are the primary gid, then `supplemental_groups`, then — unless the
//!   supplemental-groups policy is strict — every `/etc/group` entry listing the user by name.
//!
//! uid and gid are always returned explicitly, never left to whatever the runtime inherits.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

use crate::error::ErrorKind;

/// The largest `/etc/passwd` or `/etc/group` crius reads from an image.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Errors of user resolution.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {name:?} is not in the image's /etc/passwd; use a user the image defines or a numeric uid")]
    UnknownUser { name: String },
    #[error("group {name:?} is not in the image's /etc/group; use a group the image defines or a numeric gid")]
    UnknownGroup { name: String },
    #[error("{what} {value} is not a valid id; use a value from 0 to 4294967294")]
    InvalidId { what: &'static str, value: String },
    #[error("image file {path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("image file {path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("image file {path} resolves through a symlink loop or a symlink this kernel cannot follow safely")]
    SymlinkRefused { path: PathBuf },
    #[error("read image file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl UserError {
    /// The class of this error. Exhaustive on purpose: a new variant must choose its kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            UserError::UnknownUser { .. }
            | UserError::UnknownGroup { .. }
            | UserError::InvalidId { .. }
            | UserError::TooLarge { .. }
            | UserError::NotRegular { .. }
            | UserError::SymlinkRefused { .. } => ErrorKind::InvalidArgument,
            UserError::Read { .. } => ErrorKind::Internal,
        }
    }

    fn read(path: &Path, error: impl Into<std::io::Error>) -> Self {
        UserError::Read {
            path: path.to_path_buf(),
            error: error.into(),
        }
    }
}

/// What the request and the image say about the user, before resolution.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserRequest<'a> {
    /// CRI `run_as_user`.
    pub run_as_user: Option<i64>,
    /// CRI `run_as_group`; overrides every other source of the primary gid.
    pub run_as_group: Option<i64>,
    /// CRI `run_as_username` (empty: not set).
    pub run_as_username: &'a str,
    /// The image config's `User` (empty: not set).
    pub image_user: &'a str,
    /// CRI `supplemental_groups`.
    pub supplemental_groups: &'a [i64],
    /// CRI `supplemental_groups_policy: Strict`: ignore the image's `/etc/group`.
    pub strict_groups: bool,
}

/// The identity a container process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// The primary gid first, then the supplemental groups, without duplicates.
    pub additional_gids: Vec<u32>,
    /// The user's name in the image, when the image's `/etc/passwd` has it.
    pub username: Option<String>,
    /// The user's home directory from the image's `/etc/passwd`.
    pub home: Option<String>,
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Resolves `request` against the image files of `rootfs` (see the module docs for the rules).
pub fn resolve_user(rootfs: &Path, request: &UserRequest<'_>) -> Result<ResolvedUser, UserError> {
    let files = ImageFiles::new(rootfs);
    let (entry, uid, image_group) = primary_user(&files, request)?;
    let gid = match (request.run_as_group, image_group) {
        (Some(g), _) => to_id("run_as_group", g)?,
        (None, Some(group)) => group_id(&files, group)?,
        (None, None) => entry.as_ref().map_or(0, |e| e.gid),
    };
    let additional_gids = additional_gids(&files, request, gid, entry.as_ref())?;
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        username: entry.as_ref().map(|e| e.name.clone()),
        home: entry.map(|e| e.home),
    })
}

/// The passwd entry (when any), the uid, and the group part of the image's `User`.
fn primary_user<'r>(
    files: &ImageFiles<'_>,
    request: &UserRequest<'r>,
) -> Result<(Option<PasswdEntry>, u32, Option<&'r str>), UserError> {
    if let Some(uid) = request.run_as_user {
        let uid = to_id("run_as_user", uid)?;
        return Ok((files.user_by_uid(uid)?, uid, None));
    }
    if !request.run_as_username.is_empty() {
        let entry = files.user_by_name(request.run_as_username)?;
        let uid = entry.uid;
        return Ok((Some(entry), uid, None));
    }
    let (user, group) = match request.image_user.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (request.image_user, None),
    };
    if user.is_empty() {
        return Ok((files.user_by_uid(0)?, 0, group));
    }
    match parse_numeric_id(user) {
        Some(uid) => Ok((files.user_by_uid(uid)?, uid, group)),
        None if user.bytes().all(|b| b.is_ascii_digit()) => Err(UserError::InvalidId {
            what: "image user",
            value: user.to_string(),
        }),
        None => {
            let entry = files.user_by_name(user)?;
            let uid = entry.uid;
            Ok((Some(entry), uid, group))
        }
    }
}

/// A gid given as a number or a group name from the image's `/etc/group`.
fn group_id(files: &ImageFiles<'_>, group: &str) -> Result<u32, UserError> {
    if let Some(gid) = parse_numeric_id(group) {
        return Ok(gid);
    }
    if group.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UserError::InvalidId {
            what: "image group",
            value: group.to_string(),
        });
    }
    files
        .groups()?
        .into_iter()
        .find(|g| g.name == group)
        .map(|g| g.gid)
        .ok_or_else(|| UserError::UnknownGroup {
            name: group.to_string(),
        })
}

fn additional_gids(
    files: &ImageFiles<'_>,
    request: &UserRequest<'_>,
    gid: u32,
    entry: Option<&PasswdEntry>,
) -> Result<Vec<u32>, UserError> {
    let mut gids = vec![gid];
    for &g in request.supplemental_groups {
        push_unique(&mut gids, to_id("supplemental group", g)?);
    }
    if let (false, Some(entry)) = (request.strict_groups, entry) {
        for group in files.groups()? {
            if group.members.contains(&entry.name) {
                push_unique(&mut gids, group.gid);
            }
        }
    }
    Ok(gids)
}

fn push_unique(gids: &mut Vec<u32>, gid: u32) {
    if !gids.contains(&gid) {
        gids.push(gid);
    }
}

/// A CRI id (int64) as a kernel id; `u32::MAX` is `(uid_t)-1`, which means "unchanged".
fn to_id(what: &'static str, value: i64) -> Result<u32, UserError> {
    u32::try_from(value)
        .ok()
        .filter(|&v| v != u32::MAX)
        .ok_or_else(|| UserError::InvalidId {
            what,
            value: value.to_string(),
        })
}

fn parse_numeric_id(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|&v| v != u32::MAX)
}

/// The image's `/etc/passwd` and `/etc/group`, read on demand.
struct ImageFiles<'a> {
    rootfs: &'a Path,
}

impl<'a> ImageFiles<'a> {
    fn new(rootfs: &'a Path) -> Self {
        ImageFiles { rootfs }
    }

    fn passwd(&self) -> Result<Vec<PasswdEntry>, UserError> {
        let data = read_rootfs_file(self.rootfs, Path::new("etc/passwd"), MAX_FILE_SIZE)?;
        Ok(data.map_or_else(Vec::new, |d| parse_passwd(&String::from_utf8_lossy(&d))))
    }

    fn groups(&self) -> Result<Vec<GroupEntry>, UserError> {
        let data = read_rootfs_file(self.rootfs, Path::new("etc/group"), MAX_FILE_SIZE)?;
        Ok(data.map_or_else(Vec::new, |d| parse_group(&String::from_utf8_lossy(&d))))
    }

    fn user_by_uid(&self, uid: u32) -> Result<Option<PasswdEntry>, UserError> {
        Ok(self.passwd()?.into_iter().find(|e| e.uid == uid))
    }

    fn user_by_name(&self, name: &str) -> Result<PasswdEntry, UserError> {
        self.passwd()?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| UserError::UnknownUser {
                name: name.to_string(),
            })
    }
}

/// Parses `/etc/passwd` (`name:password:uid:gid:gecos:home:shell`), skipping comments and
/// malformed lines.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    records(text)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: parse_numeric_id(f.get(2)?)?,
                gid: parse_numeric_id(f.get(3)?)?,
                home: f.get(5).map_or_else(String::new, |h| h.to_string()),
            })
        })
        .collect()
}

/// Parses `/etc/group` (`name:password:gid:member,member`), skipping comments and
/// malformed lines.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    records(text)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: parse_numeric_id(f.get(2)?)?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.first().is_some_and(|n| !n.is_empty()))
}

/// Reads the regular file `path` (relative to `rootfs`, symlinks resolved inside it) up to
/// `limit` bytes. `Ok(None)` when it does not exist.
pub fn read_rootfs_file(
    rootfs: &Path,
    path: &Path,
    limit: u64,
) -> Result<Option<Vec<u8>>, UserError> {
    let shown = rootfs.join(path);
    let Some(fd) = open_in_root(rootfs, path)? else {
        return Ok(None);
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| UserError::read(&shown, e))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(UserError::NotRegular { path: shown });
    }
    if u64::try_from(st.st_size).unwrap_or(u64::MAX) > limit {
        return Err(UserError::TooLarge { path: shown, limit });
    }
    // Re-open the O_PATH descriptor for reading through its /proc magic link: the file
    // is the one just checked, whatever happens to the path meanwhile.
    let file = File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| UserError::read(&shown, e))?;
    let mut data = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| UserError::read(&shown, e))?;
    if data.len() as u64 > limit {
        return Err(UserError::TooLarge { path: shown, limit });
    }
    Ok(Some(data))
}

/// An `O_PATH` descriptor of `path` resolved with `rootfs` as `/`.
fn open_in_root(rootfs: &Path, path: &Path) -> Result<Option<OwnedFd>, UserError> {
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UserError::read(rootfs, e))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match nix::fcntl::openat2(&root, path, how) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
        Err(Errno::ENOSYS) => open_walking(&root, rootfs, path),
        Err(Errno::ELOOP) => Err(UserError::SymlinkRefused {
            path: rootfs.join(path),
        }),
        Err(e) => Err(UserError::read(&rootfs.join(path), e)),
    }
}

/// The fallback for kernels before 5.6: opens `path` one component at a time with
/// `O_NOFOLLOW`, refusing any symlink and any `..`.
fn open_walking(root: &OwnedFd, rootfs: &Path, path: &Path) -> Result<Option<OwnedFd>, UserError> {
    let shown = rootfs.join(path);
    let refused = || UserError::SymlinkRefused {
        path: shown.clone(),
    };
    let mut current = root.try_clone().map_err(|e| UserError::read(rootfs, e))?;
    for component in path.components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir | Component::Prefix(_) => return Err(refused()),
        };
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        current = match nix::fcntl::openat(&current, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
            Err(e) => return Err(UserError::read(&shown, e)),
        };
        let st = nix::sys::stat::fstat(&current).map_err(|e| UserError::read(&shown, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
            return Err(refused());
        }
    }
    Ok(Some(current))
}

/// A directory under the system temp dir, removed on drop; for tests only.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct TestDir(pub PathBuf);

#[cfg(test)]
impl TestDir {
    pub(crate) fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("crius-core-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    /// Writes `data` at `rel`, creating parents.
    pub(crate) fn write(&self, rel: &str, data: &str) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        path
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
        broken line\n\
        app:x:1000:1001:App:/home/app:/bin/sh\n\
        nobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,other\napp:x:1001:\n\
        audio:x:29:other, app\nstaff:x:50:\n";

    fn image_rootfs(name: &str) -> TestDir {
        let dir = TestDir::new(name);
        dir.write("etc/passwd", PASSWD);
        dir.write("etc/group", GROUP);
        dir
    }

    fn resolve(dir: &TestDir, request: UserRequest<'_>) -> Result<ResolvedUser, UserError> {
        resolve_user(&dir.0, &request)
    }

    #[test]
    fn nothing_set_runs_as_root_with_roots_home() {
        let dir = image_rootfs("user-root");
        let u = resolve(&dir, UserRequest::default()).unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.additional_gids, vec![0]);
        assert_eq!(u.home.as_deref(), Some("/root"));
    }

    #[test]
    fn run_as_user_takes_the_primary_gid_and_groups_from_the_image() {
        let dir = image_rootfs("user-uid");
        let req = UserRequest {
            run_as_user: Some(1000),
            image_user: "daemon",
            ..Default::default()
        };
        let u = resolve(&dir, req).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, vec![1001, 10, 29]);
        assert_eq!(u.username.as_deref(), Some("app"));
    }

    #[test]
    fn run_as_user_unknown_to_the_image_gets_gid_zero() {
        let dir = image_rootfs("user-unknown-uid");
        let req = UserRequest {
            run_as_user: Some(4242),
            ..Default::default()
        };
        let u = resolve(&dir, req).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (4242, 0, vec![0]));
        assert_eq!(u.username, None);
    }

    #[test]
    fn run_as_group_and_supplemental_groups_are_applied() {
        let dir = image_rootfs("user-group");
        let req = UserRequest {
            run_as_user: Some(1000),
            run_as_group: Some(50),
            supplemental_groups: &[7, 50, 10],
            ..Default::default()
        };
        let u = resolve(&dir, req).unwrap();
        assert_eq!(u.gid, 50);
        assert_eq!(u.additional_gids, vec![50, 7, 10, 29]);
    }

    #[test]
    fn strict_policy_ignores_the_images_group_file() {
        let dir = image_rootfs("user-strict");
        let req = UserRequest {
            run_as_username: "app",
            supplemental_groups: &[7],
            strict_groups: true,
            ..Default::default()
        };
        let u = resolve(&dir, req).unwrap();
        assert_eq!(u.additional_gids, vec![1001, 7]);
    }

    #[test]
    fn run_as_username_is_looked_up_and_must_exist() {
        let dir = image_rootfs("user-name");
        let req = UserRequest {
            run_as_username: "app",
            ..Default::default()
        };
        assert_eq!(resolve(&dir, req).unwrap().uid, 1000);
        let req = UserRequest {
            run_as_username: "ghost",
            ..Default::default()
        };
        let err = resolve(&dir, req).unwrap_err();
        assert!(matches!(err, UserError::UnknownUser { .. }));
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn image_user_forms_are_all_understood() {
        let dir = image_rootfs("user-image-forms");
        let cases = [
            ("app", (1000, 1001)),
            ("1000", (1000, 1001)),
            ("1000:7", (1000, 7)),
            ("app:staff", (1000, 50)),
            ("1:wheel", (1, 10)),
            ("4000:4001", (4000, 4001)),
            (":staff", (0, 50)),
        ];
        for (user, want) in cases {
            let req = UserRequest {
                image_user: user,
                ..Default::default()
            };
            let u = resolve(&dir, req).unwrap();
            assert_eq!((u.uid, u.gid), want, "image user {user:?}");
        }
    }

    #[test]
    fn unknown_names_and_bad_ids_are_invalid_arguments() {
        let dir = image_rootfs("user-bad");
        for user in ["app:nogroup", "ghost", "99999999999", "4294967295"] {
            let req = UserRequest {
                image_user: user,
                ..Default::default()
            };
            let err = resolve(&dir, req).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{user}: {err}");
        }
        let req = UserRequest {
            run_as_user: Some(-1),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&dir, req),
            Err(UserError::InvalidId { .. })
        ));
    }

    #[test]
    fn an_image_without_passwd_still_resolves_numeric_users() {
        let dir = TestDir::new("user-no-passwd");
        let req = UserRequest {
            image_user: "123:456",
            ..Default::default()
        };
        let u = resolve(&dir, req).unwrap();
        assert_eq!((u.uid, u.gid, u.home), (123, 456, None));
        let req = UserRequest {
            image_user: "app",
            ..Default::default()
        };
        assert!(resolve(&dir, req).is_err());
    }

    #[test]
    fn a_passwd_symlink_to_a_host_file_is_resolved_inside_the_rootfs() {
        let host = TestDir::new("user-host-secret");
        let secret = host.write("shadow", "intruder:x:0:0::/secret:/bin/sh\n");
        let dir = TestDir::new("user-hostile-abs");
        std::fs::create_dir_all(dir.0.join("etc")).unwrap();
        symlink(&secret, dir.0.join("etc/passwd")).unwrap();
        let req = UserRequest {
            run_as_username: "intruder",
            ..Default::default()
        };
        assert!(matches!(
            resolve(&dir, req),
            Err(UserError::UnknownUser { .. })
        ));
        // The same target *inside* the rootfs is what gets read.
        dir.write(secret.strip_prefix("/").unwrap().to_str().unwrap(), PASSWD);
        let u = resolve_user(&dir.0, &UserRequest::default()).unwrap();
        assert_eq!(u.home.as_deref(), Some("/root"));
    }

    #[test]
    fn a_dotdot_symlink_cannot_climb_out_of_the_rootfs() {
        let host = TestDir::new("user-host-dotdot");
        host.write("secret/passwd", "intruder:x:0:0::/secret:/bin/sh\n");
        let rootfs = host.0.join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        symlink("../../secret/passwd", rootfs.join("etc/passwd")).unwrap();
        let data = read_rootfs_file(&rootfs, Path::new("etc/passwd"), MAX_FILE_SIZE).unwrap();
        assert_eq!(data, None);
        // A symlink loop is the image's fault, not ours.
        symlink("loop", rootfs.join("etc/loop")).unwrap();
        let err = read_rootfs_file(&rootfs, Path::new("etc/loop"), MAX_FILE_SIZE).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn a_fifo_or_directory_is_refused_without_blocking() {
        let dir = TestDir::new("user-fifo");
        std::fs::create_dir_all(dir.0.join("etc/group")).unwrap();
        nix::unistd::mkfifo(&dir.0.join("etc/passwd"), Mode::from_bits_truncate(0o644)).unwrap();
        let err = read_rootfs_file(&dir.0, Path::new("etc/passwd"), MAX_FILE_SIZE).unwrap_err();
        assert!(matches!(err, UserError::NotRegular { .. }));
        let err = read_rootfs_file(&dir.0, Path::new("etc/group"), MAX_FILE_SIZE).unwrap_err();
        assert!(matches!(err, UserError::NotRegular { .. }));
    }

    #[test]
    fn an_oversized_passwd_is_refused() {
        let dir = TestDir::new("user-big");
        dir.write("etc/passwd", &"x".repeat(100));
        let err = read_rootfs_file(&dir.0, Path::new("etc/passwd"), 10).unwrap_err();
        assert!(matches!(err, UserError::TooLarge { limit: 10, .. }));
    }

    #[test]
    fn the_fallback_walk_refuses_symlinks_and_dotdot() {
        let dir = image_rootfs("user-walk");
        let root =
            nix::fcntl::open(&dir.0, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        assert!(open_walking(&root, &dir.0, Path::new("etc/passwd"))
            .unwrap()
            .is_some());
        assert!(open_walking(&root, &dir.0, Path::new("etc/missing"))
            .unwrap()
            .is_none());
        symlink("/etc/passwd", dir.0.join("etc/link")).unwrap();
        for bad in ["etc/link", "../etc/passwd"] {
            let err = open_walking(&root, &dir.0, Path::new(bad)).unwrap_err();
            assert!(matches!(err, UserError::SymlinkRefused { .. }), "{bad}");
        }
    }

    #[test]
    fn parsers_never_panic_on_garbage() {
        // A small deterministic generator (xorshift): lines of colons, digits, commas,
        // separators and multi-byte characters in every arrangement.
        let alphabet: Vec<char> = "::::0123456789,,ab#\n \t\u{e9}\u{1F600}-".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let text: String = (0..64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[usize::try_from(state % alphabet.len() as u64).unwrap()]
                })
                .collect();
            assert!(parse_passwd(&text).iter().all(|e| !e.name.is_empty()));
            assert!(parse_group(&text).iter().all(|g| !g.name.is_empty()));
        }
    }

    #[test]
    fn parsers_skip_malformed_lines() {
        let users = parse_passwd(PASSWD);
        assert_eq!(users.len(), 4);
        assert_eq!(users[2].home, "/home/app");
        let groups = parse_group(GROUP);
        assert_eq!(groups[3].members, vec!["other", "app"]);
        assert!(parse_passwd("a:x:notanumber:0::/:/bin/sh\n:x:1:1::/:\n").is_empty());
    }
}

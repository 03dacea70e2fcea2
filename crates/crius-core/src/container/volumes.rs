//! Image `VOLUME`s: created as empty directories in the container's writable layer. The
//! image is untrusted, so every component is opened beneath the previous one without
//! following any symlink (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): a
//! volume whose path leads through a symlink is refused, and nothing outside the rootfs
//! is ever created.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// Creates each of `volumes` (absolute, cleaned paths) inside `rootfs`.
pub(crate) fn create(rootfs: &Path, volumes: &[PathBuf]) -> Result<()> {
    for volume in volumes {
        create_one(rootfs, volume)?;
    }
    Ok(())
}

fn create_one(rootfs: &Path, volume: &Path) -> Result<()> {
    let fail = |what: &str, e: Errno| {
        Error::InvalidArgument(format!("image VOLUME {}: {what}: {e}", volume.display()))
    };
    let mut dir = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open rootfs {}", rootfs.display()), e.into()))?;
    for component in volume.components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(fail("must not climb with ..", Errno::EINVAL));
            }
        };
        dir = match open_beneath(&dir, name) {
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(fail("create", e)),
                }
                open_beneath(&dir, name).map_err(|e| fail("open", e))?
            }
            Err(Errno::ELOOP | Errno::EXDEV) => {
                return Err(fail(
                    "leads through a symlink, which volumes may not",
                    Errno::ELOOP,
                ))
            }
            other => other.map_err(|e| fail("open", e))?,
        };
    }
    Ok(())
}

/// Checks that an image volume's sub path exists in the mounted image at `root`
/// without passing through a symlink: what is bound into the container is then exactly
/// that path of the image, never a place a hostile image's link points to.
pub(crate) fn check_image_sub_path(
    root: &Path,
    volume: &super::config::ImageVolume,
    container_path: &Path,
) -> Result<()> {
    if volume.sub_path.as_os_str().is_empty() {
        return Ok(());
    }
    let dir = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open image volume {}", root.display()), e.into()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let what = || {
        format!(
            "image_sub_path {:?} of image {:?} (mount at {})",
            volume.sub_path.display().to_string(),
            volume.image,
            container_path.display()
        )
    };
    match nix::fcntl::openat2(&dir, volume.sub_path.as_path(), how) {
        Ok(_) => Ok(()),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Err(Error::NotFound(format!(
            "{}: no such path in the image",
            what()
        ))),
        Err(Errno::ELOOP | Errno::EXDEV) => Err(Error::InvalidArgument(format!(
            "{}: leads through a symlink; name the path the link points to",
            what()
        ))),
        Err(e) => Err(Error::io(what(), e.into())),
    }
}

/// `name` as a directory directly under `dir`, never following a symlink.
fn open_beneath(dir: &OwnedFd, name: &std::ffi::OsStr) -> std::result::Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    nix::fcntl::openat2(dir, name, how)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("crius-vol-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn volumes_are_created_inside_the_rootfs() {
        let root = scratch("ok");
        create(
            &root,
            &[PathBuf::from("/data/cache"), PathBuf::from("/var/lib/x")],
        )
        .unwrap();
        assert!(root.join("data/cache").is_dir());
        assert!(root.join("var/lib/x").is_dir());
        // Existing directories are fine.
        create(&root, &[PathBuf::from("/data")]).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_volume_through_a_symlink_never_reaches_outside() {
        let base = scratch("hostile");
        let root = base.join("rootfs");
        let outside = base.join("host-target");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("data")).unwrap();
        std::os::unix::fs::symlink("../../host-target", root.join("rel")).unwrap();
        for volume in ["/data/escape", "/rel/escape"] {
            let err = create(&root, &[PathBuf::from(volume)]).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{volume}");
            assert!(err.to_string().contains("symlink"), "{err}");
        }
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "something was created outside the rootfs"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}

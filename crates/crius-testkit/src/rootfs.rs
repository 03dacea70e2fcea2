//! Root filesystems for container tests, made from the static busybox of Debian's
//! `busybox-static` package (a static binary runs in any rootfs without a libc).
//!
//! Note: busybox-static runs applets inside its own shell, so `sh -c ls` never execs
//! `ls`; tests that need a real exec call `/bin/busybox <applet>` or an applet symlink
//! directly as argv[0].

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's `busybox-static` installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// A busybox root filesystem laid out under a directory the caller owns.
#[derive(Debug, Clone)]
pub struct BusyboxRootfs {
    root: PathBuf,
}

impl BusyboxRootfs {
    /// Lays out `root` with `/bin/busybox`, a symlink per applet in `/bin`, the usual
    /// empty mount points, and `/etc/passwd` + `/etc/group` with root, a `user` (1000)
    /// and `nobody`.
    pub fn create(root: &Path) -> io::Result<Self> {
        for dir in [
            "bin",
            "sbin",
            "etc",
            "proc",
            "sys",
            "dev",
            "tmp",
            "root",
            "home/user",
            "var",
            "run",
        ] {
            fs::create_dir_all(root.join(dir))?;
        }
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
        let busybox = root.join("bin/busybox");
        fs::copy(BUSYBOX, &busybox)?;
        fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755))?;
        for applet in applets()? {
            let link = root.join("bin").join(&applet);
            if applet != "busybox" && !link.exists() {
                symlink("busybox", &link)?;
            }
        }
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )?;
        fs::write(
            root.join("etc/group"),
            "root:x:0:\nuser:x:1000:\nextra:x:2000:user\nnogroup:x:65534:\n",
        )?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The directory holding the root filesystem.
    pub fn path(&self) -> &Path {
        &self.root
    }
}

/// The applet names the host's busybox-static provides.
fn applets() -> io::Result<Vec<String>> {
    let out = Command::new(BUSYBOX).arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other("busybox --list failed"));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .map(String::from)
        .collect())
}

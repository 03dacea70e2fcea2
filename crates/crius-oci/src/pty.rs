//! Terminal allocation for processes whose spec sets `terminal: true`: the slave becomes
//! the process's controlling terminal and stdio; the master goes back to the caller.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::pty::{openpty, Winsize};

use crate::error::{Error, Result};

/// A freshly allocated pty pair.
#[derive(Debug)]
pub struct Pty {
    /// The caller's side.
    pub master: OwnedFd,
    /// The process's side.
    pub slave: OwnedFd,
}

/// Opens a pty pair (both ends close-on-exec; the child dup2s the slave onto 0, 1, 2).
pub fn open(size: Option<&Winsize>) -> Result<Pty> {
    let pty = openpty(size, None).map_err(|e| Error::sys("openpty", e))?;
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(|e| Error::sys("fcntl pty", e))?;
    }
    Ok(Pty {
        master: pty.master,
        slave: pty.slave,
    })
}

/// Sets the window size of the terminal behind `fd` (a pty master or slave) to `width`
/// columns and `height` rows (TIOCSWINSZ, tty_ioctl(4)); the kernel sends SIGWINCH to
/// the terminal's foreground process group.
pub fn resize(fd: BorrowedFd<'_>, width: u16, height: u16) -> Result<()> {
    let size = Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    winsize::set(fd, &size).map_err(|e| Error::sys("TIOCSWINSZ", e))
}

#[allow(unsafe_code)]
mod winsize {
    use super::*;

    nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, Winsize);

    pub(super) fn set(fd: BorrowedFd<'_>, size: &Winsize) -> nix::Result<()> {
        // SAFETY: TIOCSWINSZ reads exactly one `struct winsize` from the pointer, which
        // `size` (a live, initialised Winsize borrowed for the call) provides; `fd` is
        // an open descriptor for the call's duration because it is borrowed. A
        // descriptor that is not a terminal fails with ENOTTY, touching no memory.
        unsafe { tiocswinsz(fd.as_raw_fd(), size) }.map(drop)
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    #[test]
    fn resize_sets_the_size_the_slave_reads() {
        let pty = open(None).unwrap();
        resize(pty.master.as_fd(), 132, 43).unwrap();
        let mut got = Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, Winsize);
        // SAFETY: TIOCGWINSZ writes one winsize into `got`, which lives for the call.
        unsafe { tiocgwinsz(pty.slave.as_raw_fd(), &mut got) }.unwrap();
        assert_eq!((got.ws_col, got.ws_row), (132, 43));
    }

    #[test]
    fn resizing_something_that_is_not_a_terminal_fails() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(resize(file.as_fd(), 80, 24).is_err());
    }
}

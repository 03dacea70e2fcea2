//! Terminal allocation for processes whose spec sets `terminal: true`: the slave becomes
//! the process's controlling terminal and stdio; the master goes back to the caller.

use std::os::fd::{AsFd, OwnedFd};

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

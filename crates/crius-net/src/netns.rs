//! Work inside a pod's network namespace, on a dedicated OS thread.
//!
//! `setns(2)` with `CLONE_NEWNET` changes only the calling thread's namespace. The work runs
//! on a fresh thread that enters the namespace, does its job and exits, so no thread of the
//! caller (least of all a tokio worker) ever switches namespace.

use std::fs::File;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};
use crate::netlink::Netlink;

/// Runs `f` on a new thread inside the network namespace at `path`.
pub(crate) fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = open(path)?;
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
                path: path.to_owned(),
                source: e.into(),
            })?;
            drop(ns);
            f()
        });
        handle.join().unwrap_or_else(|_| {
            Err(Error::Netns {
                path: path.to_owned(),
                source: std::io::Error::other("namespace worker thread panicked"),
            })
        })
    })
}

/// Opens the nsfs file at `path`.
pub(crate) fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| Error::Netns {
        path: path.to_owned(),
        source,
    })
}

/// Brings `lo` up inside the namespace at `path`.
pub(crate) fn loopback_up(path: &Path) -> Result<()> {
    run_in(path, || {
        let nl_err = |op: &str, source| Error::Netlink {
            op: op.to_owned(),
            source,
        };
        let mut nl = Netlink::open().map_err(|e| nl_err("open socket in pod", e))?;
        let index = nl
            .link_index("lo")
            .map_err(|e| nl_err("get link lo", e))?
            .ok_or_else(|| nl_err("get link lo", std::io::Error::other("lo is missing")))?;
        nl.set_up(index, None).map_err(|e| nl_err("set lo up", e))
    })
}

//! crius-monitor: the per-pod monitor's protocol and client (this library), and the
//! monitor itself (the `crius-monitor` binary).
//!
//! **Owns**: the typed, versioned socket protocol between criusd and a pod's monitor
//! ([`protocol`]); the blocking [`MonitorClient`]; [`spawn_monitor`], which starts a
//! detached monitor for a [`PodConfig`]; the on-disk layout of a pod's state dir
//! (see [`spawn`]). The binary pins the pod's namespaces without a pause image, creates
//! containers through crius-oci, owns their stdio and CRI log files, reaps exits and
//! records them on disk before reporting them, and serves exec with output caps and
//! timeouts.
//!
//! Namespace pins: a short-lived child of the monitor unshares the pod's namespaces
//! (user first, with maps written from outside), configures them (hostname, loopback,
//! sysctls) and the monitor bind-mounts its `/proc/<pid>/ns/*` onto
//! `<state_dir>/ns/<name>`; a shared pid namespace gets a tiny reaper as PID 1 that
//! exits with the monitor. Containers join the pins by path (see
//! [`PodConfig::namespaces_to_join`]).
//!
//! Interactive exec and attach pass descriptors over the socket (see [`protocol`]): an
//! exec's stdio (or its pty master) goes straight between criusd and the process; only
//! attach output is fanned out by the monitor, from the same reads that feed the log.
//!
//! **Refuses**: building OCI specs (criusd builds them complete), images, networking
//! beyond bringing loopback up, async (the client is blocking; criusd calls it on a
//! blocking thread), speaking the streaming protocols (SPDY, WebSocket: criusd's part).
//!
//! **Threat model**: the socket is 0600 root, so requests come from criusd, which is
//! trusted; still, every frame is length-checked before allocation (64 MiB cap) and a
//! malformed frame is an error answer, never a panic. Container output is untrusted:
//! it is copied into log files line by line with a 16 KiB split and into exec buffers
//! with a per-stream cap, so it can exhaust neither the monitor nor criusd.
#![deny(unsafe_code)]

pub mod cgroup_stats;
pub mod client;
mod error;
pub mod fdpass;
pub mod protocol;
pub mod spawn;

pub use client::{
    AttachSession, EventStream, ExecFds, ExecOutput, ExecSession, MonitorClient, SessionHandle,
};
pub use error::{Error, ErrorKind, Result};
pub use spawn::{
    cleanup_after_dead_monitor, read_all_statuses, read_status, spawn_monitor, IdMappings,
    MonitorHandle, PodConfig, PodNamespaces,
};

/// crius-oci's secure defaults, for criusd's spec builder (which must not link the
/// forking parts of crius-oci directly; these are plain data).
pub mod oci_defaults {
    pub use crius_oci::default_seccomp;
    pub use crius_oci::spec::{DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS};
}

/// The systemd cgroup driver's naming rules and manager queries, for criusd (which must
/// map systemd-form cgroup paths to directories and check the manager at start-up without
/// linking the forking parts of crius-oci directly).
pub mod systemd_cgroup {
    pub use crius_oci::cgroup::systemd::{
        default_bus, is_systemd_path, slice_path, InvalidSlice, ScopePath, Systemd,
    };
}

/// Mounts criusd prepares for the runtime, so criusd need not link crius-oci.
pub mod mounts {
    use std::path::{Path, PathBuf};

    /// Mounts image layers at `target` id-mapped through the user namespace pinned at
    /// `userns`, under `upper` when given (see `crius_oci::idmap::mount_layers_idmapped`).
    pub fn mount_layers_idmapped(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        target: &Path,
        userns: &Path,
    ) -> crate::Result<()> {
        crius_oci::idmap::mount_layers_idmapped(lowers, upper, target, userns)
            .map_err(crate::Error::from)
    }
}

/// Terminal control for the pty masters criusd holds (exec with a terminal, attach to a
/// tty container), so criusd need not link crius-oci.
pub mod terminal {
    use std::os::fd::BorrowedFd;

    /// Sets the window size of the terminal whose master (or slave) `fd` is to `width`
    /// columns and `height` rows; its foreground process group gets SIGWINCH.
    pub fn resize(fd: BorrowedFd<'_>, width: u16, height: u16) -> crate::Result<()> {
        crius_oci::pty::resize(fd, width, height).map_err(crate::Error::from)
    }
}

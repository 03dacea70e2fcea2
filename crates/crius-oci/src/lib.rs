//! crius-oci: the built-in OCI runtime as a library.
//!
//! **Owns**: turning an OCI runtime spec (`oci-spec`) and a rootfs into a running,
//! isolated process whose stdio are descriptors the caller passes: namespaces (created or
//! joined by path, user namespaces with id maps written by the parent), the root
//! filesystem (spec mounts resolved inside the rootfs, id-mapped bind mounts, recursive
//! mount attributes such as `rro` through mount_setattr(2), `/dev` with the default
//! nodes bound from the host and the spec's devices made with mknod(2) at their
//! container path (bound from the host node of that number in a user namespace),
//! `pivot_root`, masked and read-only paths, read-only root), privileges (capabilities,
//! no_new_privs, seccomp, AppArmor/SELinux, rlimits, umask, oom_score_adj, user and
//! groups, sysctls), cgroups v1 and v2 with device control ([`cgroup::CgroupManager`];
//! v1 `devices.*` files, v2 a BPF device program compiled from v1's exception list for
//! the same rules, so both enforce the same) under the cgroupfs or the systemd driver
//! (transient scope units created over D-Bus by a small client of its own,
//! [`cgroup::systemd`]), exec into a running container, ptys on
//! the container's own devpts; the [`OciRuntime`] trait with the built-in
//! [`BuiltinRuntime`] and [`BinaryRuntime`] for runc-compatible CLIs;
//! [`seccomp::default_seccomp`] and [`spec::secure_default`].
//!
//! **Refuses**: async (no tokio: the caller is the single-threaded per-pod monitor;
//! never call the built-in runtime from a multi-threaded process), persistence of
//! container state (the monitor's job), image handling, networking, OCI hooks, slice
//! units for containers (a systemd-form `slice:prefix:name` cgroupsPath always names a
//! scope), seccomp notify.
//!
//! **Threat model**: the rootfs and the spec's process are untrusted (a hostile image);
//! the spec itself is trusted (crius-core builds it). A rootfs cannot redirect a mount,
//! device or masked path out of itself: every destination is resolved with
//! `openat2(RESOLVE_IN_ROOT)` and mounted through `/proc/self/fd/N`. The container
//! process keeps only fds 0, 1, 2 (and those passed explicitly); it is non-dumpable until
//! exec; nothing of ours is ever re-executed inside it (see `clone`), which closes the
//! `/proc/self/exe` overwrite class. Capabilities, seccomp and no_new_privs are applied
//! exactly as the spec says, last, right before exec.
//!
//! ```no_run
//! use crius_oci::{BuiltinRuntime, OciRuntime, Stdio};
//! # fn main() -> Result<(), crius_oci::Error> {
//! let spec = crius_oci::spec::secure_default(&["/bin/true".into()], "/tmp/rootfs".as_ref())?;
//! let mut rt = BuiltinRuntime::new();
//! let process = rt.create("demo", "/tmp".as_ref(), &spec, Stdio::default())?;
//! rt.start("demo")?;
//! let status = process.wait()?;
//! rt.delete("demo", false)?;
//! # let _ = status; Ok(()) }
//! ```
#![deny(unsafe_code)]

mod binary;
mod builtin;
pub mod cgroup;
mod clone;
mod error;
pub mod idmap;
mod init;
mod message;
mod plan;
pub mod pty;
mod rootfs;
mod runtime;
pub mod seccomp;
pub mod spec;

pub use binary::BinaryRuntime;
pub use builtin::BuiltinRuntime;
pub use error::{Error, ErrorKind, InitError, Result};
pub use nix::sys::signal::Signal;
pub use runtime::{validate_id, ContainerState, ExitStatus, OciRuntime, Process, Status, Stdio};
pub use seccomp::default_seccomp;

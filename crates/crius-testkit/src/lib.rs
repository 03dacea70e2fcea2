//! Helpers shared by crius tests; a dev-dependency only, never linked into a binary.
//!
//! - [`require_root`]: the single gate for tests that need real root. Under `CI=true` a
//!   non-root run fails instead of skipping, so CI can never pass by skipping.
//! - [`rootfs`]: minimal root filesystems built from Debian's `busybox-static`.
//! - [`systemd::SystemdUserManager`]: a real `systemd --user` manager for the systemd
//!   cgroup driver, on hosts whose init is not systemd.
//! - [`tls`]: self-signed certificates for TLS tests.
//! - [`hybrid`]: a private mount namespace without the cgroup2 mount of a hybrid host,
//!   where crun 1.8 runs.
#![forbid(unsafe_code)]

pub mod hybrid;
pub mod rootfs;
pub mod systemd;
pub mod tls;

#[cfg(feature = "registry")]
pub mod images;
#[cfg(feature = "registry")]
pub mod registry;

use std::fs;

/// Returns true when the test may go on as root. Without root it fails under `CI=true`
/// and otherwise prints a loud skip notice and returns false.
pub fn require_root(test: &str) -> bool {
    if effective_uid() == Some(0) {
        return true;
    }
    assert!(
        std::env::var("CI").map(|v| v != "true").unwrap_or(true),
        "{test}: needs root, and CI=true forbids skipping"
    );
    eprintln!("SKIPPED {test}: needs root");
    false
}

/// The effective uid of this process, from `/proc/self/status`.
pub fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

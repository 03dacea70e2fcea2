//! Certificates for TLS tests, made by the openssl CLI (Debian's `openssl`).

use std::io;
use std::path::Path;
use std::process::Command;

/// Writes a self-signed P-256 certificate for `127.0.0.1` (its CN and only IP SAN),
/// valid for a day, to `cert` and its unencrypted key to `key` (both PEM).
pub fn self_signed_localhost(cert: &Path, key: &Path) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // webpki refuses a CA certificate as a server's own, and `req -x509` marks the
        // certificate a CA unless told otherwise.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "openssl req -x509 failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

//! A throw-away OCI registry: Debian's `docker-registry` (distribution v2) on
//! 127.0.0.1 with an ephemeral port, a temporary storage dir and a generated config,
//! optionally behind htpasswd basic auth. Killed and deleted on drop.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `docker-registry` package installs the binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry; see the module docs.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    host: String,
    credentials: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts an anonymous registry and waits until it answers `/v2/`.
    pub fn start() -> io::Result<Self> {
        Self::start_inner(None)
    }

    /// Starts a registry that requires basic auth with these credentials.
    pub fn start_with_basic_auth(user: &str, password: &str) -> io::Result<Self> {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    /// `127.0.0.1:<port>`: the registry part of image references.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The credentials the registry demands, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    fn start_inner(credentials: Option<(String, String)>) -> io::Result<Self> {
        let mut last = io::Error::other("registry did not start");
        for _ in 0..3 {
            match Self::try_start(credentials.clone()) {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start(credentials: Option<(String, String)>) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let host = format!("127.0.0.1:{port}");
        let auth = match &credentials {
            Some((user, password)) => {
                write_htpasswd(&dir.path().join("htpasswd"), user, password)?;
                format!(
                    "auth:\n  htpasswd:\n    realm: crius-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut registry = Self {
            child,
            host,
            credentials,
            _dir: dir,
        };
        registry.wait_ready()?;
        Ok(registry)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "docker-registry exited: {status}"
                )));
            }
            if let Ok(code) = http_status(&self.host, "/v2/") {
                if code == 200 || code == 401 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "docker-registry not ready after 10s",
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_htpasswd(path: &Path, user: &str, password: &str) -> io::Result<()> {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "htpasswd failed (install apache2-utils): {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    std::fs::write(path, out.stdout)
}

/// The HTTP status of a plain GET, enough to see the registry is up.
fn http_status(host: &str, path: &str) -> io::Result<u16> {
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other("bad HTTP answer"))
}

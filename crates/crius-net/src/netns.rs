//! Work inside a pod's network namespace, on a dedicated OS thread.
//!
//! `setns(2)` with `CLONE_NEWNET` changes only the calling thread's namespace. The work runs
//! on a fresh thread that enters the namespace, does its job and exits, so no thread of the
//! caller (least of all a tokio worker) ever switches namespace.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

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

/// Connects to `port` on the loopback of the network namespace at `netns`: 127.0.0.1
/// first, then `[::1]` when IPv4 refuses (a server may listen on one family only), as
/// `kubectl port-forward` expects. The socket is created inside the namespace on a
/// short-lived thread and stays bound to it after the thread ends, so the caller can use
/// the stream from any thread (a tokio worker included).
pub fn connect_in_netns(netns: &Path, port: u16, timeout: Duration) -> Result<TcpStream> {
    run_in(netns, || connect_loopback(port, timeout))
}

/// Connects to `port` on the current namespace's loopback, IPv4 then IPv6.
pub fn connect_loopback(port: u16, timeout: Duration) -> Result<TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let err = |source| Error::Connect { port, source };
    match TcpStream::connect_timeout(&v4, timeout) {
        Ok(stream) => Ok(stream),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match TcpStream::connect_timeout(&v6, timeout) {
                Ok(stream) => Ok(stream),
                // No IPv6 loopback in the pod: report IPv4's refusal, which is the news.
                Err(e6) if e6.kind() == io::ErrorKind::AddrNotAvailable => Err(err(e)),
                Err(e6) => Err(err(e6)),
            }
        }
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;
    use crate::testutil::TestNetns;

    #[test]
    fn connects_to_a_server_listening_only_inside_the_namespace() {
        if !crius_testkit::require_root("connects_to_a_server_listening_only_inside_the_namespace")
        {
            return;
        }
        let ns = TestNetns::new();
        loopback_up(ns.path()).unwrap();
        // Bound inside the namespace: the socket stays there after the thread ends.
        let listener = run_in(ns.path(), || {
            TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).map_err(|e| Error::io("bind", "[::1]", e))
        })
        .unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&buf).unwrap();
        });
        // IPv4 is refused (the server is IPv6 only), so the IPv6 loopback is tried next.
        let mut stream = connect_in_netns(ns.path(), port, Duration::from_secs(5)).unwrap();
        stream.write_all(b"ping").unwrap();
        let mut echo = [0u8; 4];
        stream.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"ping");
        server.join().unwrap();
    }

    #[test]
    fn refused_connection_names_the_port() {
        if !crius_testkit::require_root("refused_connection_names_the_port") {
            return;
        }
        let ns = TestNetns::new();
        loopback_up(ns.path()).unwrap();
        let err = connect_in_netns(ns.path(), 9, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, Error::Connect { port: 9, .. }), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable);
        assert!(err.to_string().contains("port 9"), "{err}");
    }

    #[test]
    fn missing_namespace_is_not_found() {
        let err = connect_in_netns(Path::new("/nonexistent/ns/net"), 80, Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);
    }
}

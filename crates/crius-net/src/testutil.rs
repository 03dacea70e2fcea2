//! Test fixtures: throw-away network namespaces, unique names and subnets, TCP probes.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::types::PodNetworkRequest;

/// A network namespace pinned by a bind mount, removed on drop.
#[derive(Debug)]
pub(crate) struct TestNetns {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestNetns {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net");
        std::fs::write(&path, b"").unwrap();
        let target = path.clone();
        std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).unwrap();
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap();
        })
        .join()
        .unwrap();
        TestNetns { path, _dir: dir }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

/// A stable 32-bit hash of `s` (FNV-1a), to derive names and subnets from a test name.
pub(crate) fn hash(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A /24 in 10.200.0.0/13 derived from `name`, so parallel tests do not collide.
pub(crate) fn subnet_for(name: &str) -> Ipv4Addr {
    let h = hash(name);
    let b = h.to_be_bytes();
    Ipv4Addr::new(10, 200 + (b[0] % 8), b[1], 0)
}

/// A bridge name derived from `name` (at most 15 bytes).
pub(crate) fn bridge_for(name: &str) -> String {
    format!("ct{:08x}", hash(name))
}

/// A host port derived from `name` in 20000..40000.
pub(crate) fn port_for(name: &str) -> u16 {
    20000 + u16::try_from(hash(name) % 20000).unwrap()
}

/// A request for pod `id` in `ns`.
pub(crate) fn request(id: &str, ns: &TestNetns) -> PodNetworkRequest {
    PodNetworkRequest {
        pod_id: id.to_owned(),
        pod_name: format!("name-{id}"),
        pod_namespace: "test".to_owned(),
        pod_uid: format!("uid-{id}"),
        netns_path: ns.path().to_owned(),
        ..Default::default()
    }
}

/// Starts a one-shot TCP echo-once server inside `ns` on `port`; returns the join handle.
/// The server answers `pong` to the first connection.
pub(crate) fn serve_once(ns: &Path, port: u16) -> std::thread::JoinHandle<()> {
    serve_once_on(ns, IpAddr::from([0, 0, 0, 0]), port)
}

/// Like [`serve_once`], bound to `bind`.
pub(crate) fn serve_once_on(ns: &Path, bind: IpAddr, port: u16) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_owned();
    let handle = std::thread::spawn(move || {
        let ns2 = ns.clone();
        crate::netns::run_in(&ns2, move || {
            let listener = TcpListener::bind((bind, port)).unwrap();
            tx.send(()).unwrap();
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
            conn.write_all(b"pong").unwrap();
            Ok(())
        })
        .unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    handle
}

/// Connects to `addr` (from `ns`, or the host when `None`), sends `ping`, expects `pong`.
pub(crate) fn ping(ns: Option<&Path>, addr: SocketAddr) -> std::io::Result<()> {
    let probe = move || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        if &buf != b"pong" {
            return Err(std::io::Error::other("wrong answer"));
        }
        Ok(())
    };
    match ns {
        None => probe(),
        Some(ns) => crate::netns::run_in(ns, || Ok(probe()))
            .map_err(|e| std::io::Error::other(e.to_string()))?,
    }
}

/// Whether `ip` is an IPv4 address in `subnet`/`prefix`.
pub(crate) fn in_subnet(ip: IpAddr, subnet: Ipv4Addr, prefix: u8) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(v4) & mask == u32::from(subnet) & mask
        }
        IpAddr::V6(_) => false,
    }
}

/// Deletes the host link `name` if it exists.
pub(crate) fn delete_link(name: &str) {
    let mut nl = crate::netlink::Netlink::open().unwrap();
    if let Some(i) = nl.link_index(name).unwrap() {
        nl.delete_link(i).unwrap();
    }
}

/// Whether the host has a link called `name`.
pub(crate) fn link_exists(name: &str) -> bool {
    let mut nl = crate::netlink::Netlink::open().unwrap();
    nl.link_index(name).unwrap().is_some()
}

//! The built-in network's state: one record per attached pod (its address, host veth and
//! host ports), in a JSON file under the state dir.
//!
//! Every change takes an exclusive `flock` on `<state_dir>/network.lock`, reads
//! `network.json`, changes it and writes it back with write-temp+fsync+rename, so that
//! concurrent setups (threads or processes) never hand out one address twice and a crash
//! leaves either the old or the new state. Records are written *before* the kernel objects
//! they describe are created, so teardown after a crash always finds what to remove.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::cidr::{Ipv4Cidr, Ipv6Cidr};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::types::PortMapping;

/// Layout version of the state file.
const DB_VERSION: u32 = 1;

/// What the built-in network created for one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PodRecord {
    /// The pod's address.
    pub(crate) ip: Ipv4Addr,
    /// The network it came from.
    pub(crate) cidr: Ipv4Cidr,
    /// The pod's IPv6 address, for dual-stack networks.
    #[serde(default)]
    pub(crate) ip6: Option<Ipv6Addr>,
    /// The IPv6 network it came from.
    #[serde(default)]
    pub(crate) cidr6: Option<Ipv6Cidr>,
    /// The host side of the veth pair.
    pub(crate) host_veth: String,
    /// The host ports mapped to it.
    pub(crate) ports: Vec<PortMapping>,
}

/// The whole state file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Db {
    version: u32,
    /// The last address handed out; allocation continues after it so a released address is
    /// not reused at once (stale ARP entries, late packets).
    last: Option<Ipv4Addr>,
    /// The last IPv6 address handed out.
    #[serde(default)]
    last6: Option<Ipv6Addr>,
    /// Records by pod id.
    pub(crate) pods: BTreeMap<String, PodRecord>,
}

/// The state file and its lock.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    pub(crate) fn new(dir: &Path) -> Self {
        Store {
            dir: dir.to_owned(),
        }
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("network.json")
    }

    /// Runs `f` on the state under the lock; writes it back when `f` returns `(true, _)`.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Db) -> Result<(bool, T)>) -> Result<T> {
        let _lock = self.lock()?;
        let path = self.db_path();
        let mut db = match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice::<Db>(&data).map_err(|e| Error::CorruptState {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Db {
                version: DB_VERSION,
                ..Db::default()
            },
            Err(e) => return Err(Error::io("read network state", &path, e)),
        };
        if db.version != DB_VERSION {
            return Err(Error::CorruptState {
                path,
                reason: format!("version {}, expected {DB_VERSION}", db.version),
            });
        }
        let (changed, out) = f(&mut db)?;
        if changed {
            let data = serde_json::to_vec_pretty(&db).map_err(|e| Error::CorruptState {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            write_atomic(&path, &data)?;
        }
        Ok(out)
    }

    /// Reads the record of `pod_id`.
    pub(crate) fn get(&self, pod_id: &str) -> Result<Option<PodRecord>> {
        self.update(|db| Ok((false, db.pods.get(pod_id).cloned())))
    }

    fn lock(&self) -> Result<Flock<File>> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("create network state dir", &self.dir, e))?;
        let path = self.dir.join("network.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("open lock", &path, e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Error::io("lock", &path, errno.into()))
    }
}

impl Db {
    /// Picks a free address of `cidr` for a new record, or fails with `IpamExhausted`.
    pub(crate) fn allocate(&mut self, cidr: Ipv4Cidr) -> Result<Ipv4Addr> {
        let (first, last) = cidr.pod_range();
        let used: std::collections::HashSet<Ipv4Addr> = self.pods.values().map(|r| r.ip).collect();
        let start = match self.last {
            Some(ip) if cidr.contains(ip) && u32::from(ip) >= first && u32::from(ip) < last => {
                u32::from(ip) + 1
            }
            _ => first,
        };
        let candidates = (start..=last).chain(first..start);
        for n in candidates {
            let ip = Ipv4Addr::from(n);
            if !used.contains(&ip) {
                self.last = Some(ip);
                return Ok(ip);
            }
        }
        Err(Error::IpamExhausted {
            cidr: cidr.to_string(),
        })
    }

    /// Picks a free IPv6 address of `cidr`, or fails with `IpamExhausted`.
    pub(crate) fn allocate6(&mut self, cidr: Ipv6Cidr) -> Result<Ipv6Addr> {
        let (first, last) = cidr.pod_range();
        let used: std::collections::HashSet<Ipv6Addr> =
            self.pods.values().filter_map(|r| r.ip6).collect();
        let start = match self.last6 {
            Some(ip) if cidr.contains(ip) && u128::from(ip) >= first && u128::from(ip) < last => {
                u128::from(ip) + 1
            }
            _ => first,
        };
        // Every recorded pod blocks at most one address: this many candidates always
        // include a free one when the network has one.
        let tries = used.len() + 1;
        let size = last - first + 1;
        for k in 0..tries {
            let Ok(k) = u128::try_from(k) else { break };
            if k >= size {
                break;
            }
            let n = first + (start - first + k) % size;
            let ip = Ipv6Addr::from(n);
            if !used.contains(&ip) {
                self.last6 = Some(ip);
                return Ok(ip);
            }
        }
        Err(Error::IpamExhausted {
            cidr: cidr.to_string(),
        })
    }

    /// The pod (other than `pod_id`) already mapping a host port that `m` would take.
    pub(crate) fn port_owner(&self, pod_id: &str, m: &PortMapping) -> Option<&str> {
        self.pods.iter().find_map(|(id, r)| {
            let clash = r.ports.iter().any(|p| {
                p.protocol == m.protocol
                    && p.host_port == m.host_port
                    && (p.host_ip.is_none() || m.host_ip.is_none() || p.host_ip == m.host_ip)
            });
            (clash && id != pod_id).then_some(id.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ip: Ipv4Addr, cidr: Ipv4Cidr) -> PodRecord {
        PodRecord {
            ip,
            cidr,
            ip6: None,
            cidr6: None,
            host_veth: "v".into(),
            ports: Vec::new(),
        }
    }

    #[test]
    fn allocation_never_repeats_and_exhaustion_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let cidr: Ipv4Cidr = "10.9.9.0/29".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..5 {
            let ip = store
                .update(|db| {
                    let ip = db.allocate(cidr)?;
                    db.pods.insert(format!("p{i}"), record(ip, cidr));
                    Ok((true, ip))
                })
                .unwrap();
            assert!(seen.insert(ip), "{ip} given twice");
            assert_ne!(ip, cidr.gateway());
        }
        let err = store
            .update(|db| db.allocate(cidr).map(|ip| (false, ip)))
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::ResourceExhausted);
        // Released addresses come back, and the state survives a new store (restart).
        Store::new(dir.path())
            .update(|db| Ok((db.pods.remove("p2").is_some(), ())))
            .unwrap();
        let again = Store::new(dir.path())
            .update(|db| db.allocate(cidr).map(|ip| (false, ip)))
            .unwrap();
        assert!(seen.contains(&again));
    }

    #[test]
    fn concurrent_allocations_from_many_threads_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Cidr = "10.9.0.0/24".parse().unwrap();
        let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let store = Store::new(dir.path());
                    s.spawn(move || {
                        store
                            .update(|db| {
                                let ip = db.allocate(cidr)?;
                                db.pods.insert(format!("t{i}"), record(ip, cidr));
                                Ok((true, ip))
                            })
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let unique: std::collections::HashSet<_> = ips.iter().collect();
        assert_eq!(unique.len(), ips.len());
    }

    #[test]
    fn ipv6_allocation_skips_addresses_in_use() {
        let mut db = Db::default();
        let cidr: Ipv6Cidr = "fd00:9::/120".parse().unwrap();
        let v4: Ipv4Cidr = "10.9.8.0/24".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..300 {
            match db.allocate6(cidr) {
                Ok(ip6) => {
                    assert!(seen.insert(ip6));
                    let mut r = record(Ipv4Addr::new(10, 9, 8, 2), v4);
                    r.ip6 = Some(ip6);
                    db.pods.insert(format!("p{i}"), r);
                }
                Err(e) => {
                    assert_eq!(e.kind(), crate::ErrorKind::ResourceExhausted);
                    assert_eq!(seen.len(), 254);
                    return;
                }
            }
        }
        panic!("a /120 never filled up");
    }

    #[test]
    fn corrupt_state_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("network.json"), "{garbage").unwrap();
        let err = Store::new(dir.path()).get("x").unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}

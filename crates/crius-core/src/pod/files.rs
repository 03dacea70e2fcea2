//! The files a pod's containers see: /etc/resolv.conf, /etc/hostname and /etc/hosts,
//! kept in the pod's state directory and bind-mounted into each container.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::config::PodConfig;
use crate::error::{Error, Result};

/// Paths of a pod's shared files.
#[derive(Debug, Clone)]
pub(crate) struct PodFiles {
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
    pub hosts: PathBuf,
}

impl PodFiles {
    pub(crate) fn in_dir(dir: &Path) -> Self {
        Self {
            resolv_conf: dir.join("resolv.conf"),
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
        }
    }

    /// Gives the three files to `uid` and `gid` (a user-namespaced pod's root).
    pub(crate) fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> std::io::Result<()> {
        for file in [&self.resolv_conf, &self.hostname, &self.hosts] {
            std::os::unix::fs::chown(file, uid, gid)?;
        }
        Ok(())
    }

    /// Writes the three files for `config`; `resolv` comes from [`resolv_conf`].
    pub(crate) fn write(&self, resolv: &str, hostname: &str) -> std::io::Result<()> {
        write_file(&self.resolv_conf, resolv.as_bytes())?;
        write_file(&self.hostname, format!("{hostname}\n").as_bytes())?;
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
             ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
        );
        write_file(&self.hosts, hosts.as_bytes())
    }
}

/// The pod's resolv.conf: from its DNS config (validated by crius-net: IP servers, one
/// word per search and option, so nothing can inject resolver lines), else the host's, as
/// kubelet expects for `dnsPolicy: Default`.
pub(crate) fn resolv_conf(config: &PodConfig) -> Result<String> {
    match &config.dns {
        Some(dns)
            if !dns.servers.is_empty() || !dns.searches.is_empty() || !dns.options.is_empty() =>
        {
            crius_net::resolv_conf(&crius_net::DnsConfig {
                servers: dns.servers.clone(),
                searches: dns.searches.clone(),
                options: dns.options.clone(),
            })
            .map_err(|e| Error::InvalidArgument(e.to_string()))
        }
        _ => Ok(fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
    }
}

fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

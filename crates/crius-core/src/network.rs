//! Pod networking as the runtime uses it: which network plugin serves new pods (CNI when a
//! config exists, else the built-in bridge, or none), and the NetworkReady condition.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crius_net::{
    AutoNetwork, BuiltinNetwork, BuiltinOptions, CniNetwork, CniOptions, HostPortMode,
    NetworkPlugin,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which network pods get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// CNI when the conf dir has a config, the built-in bridge otherwise.
    #[default]
    Auto,
    /// CNI only: NetworkReady stays false until a config exists.
    Cni,
    /// The built-in bridge only.
    Builtin,
    /// No pod network: pods get loopback only and NetworkReady is false.
    None,
}

/// Network settings of the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    pub mode: NetworkMode,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_timeout: Duration,
    /// The built-in network's bridge.
    pub bridge: String,
    /// Built-in host ports through iptables DNAT.
    pub host_ports: bool,
    /// Masquerade pod traffic leaving the pod CIDR (off: pods reach the node and each other).
    pub masquerade: bool,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        let cni = CniOptions::default();
        Self {
            mode: NetworkMode::Auto,
            cni_conf_dir: cni.conf_dir,
            cni_bin_dirs: cni.bin_dirs,
            cni_timeout: cni.timeout,
            bridge: BuiltinOptions::default().bridge,
            host_ports: true,
            masquerade: false,
        }
    }
}

/// The default pod CIDR of the built-in network when neither kubelet nor the config gives one.
pub const DEFAULT_POD_CIDR: &str = "10.88.0.0/16";

/// Builds the network plugin for `options`; `None` for [`NetworkMode::None`]. The built-in
/// network uses the IPv4 network of `pod_cidr` and keeps its state under `root/network`.
pub(crate) fn build(
    options: &NetworkOptions,
    root: &std::path::Path,
    pod_cidr: Option<&str>,
) -> Result<Option<Arc<dyn NetworkPlugin>>> {
    let cni = || {
        CniNetwork::new(CniOptions {
            conf_dir: options.cni_conf_dir.clone(),
            bin_dirs: options.cni_bin_dirs.clone(),
            cache_dir: root.join("cni/cache"),
            timeout: options.cni_timeout,
            ifname: "eth0".to_string(),
        })
    };
    let builtin = || -> Result<BuiltinNetwork> {
        let cidr = pod_cidr.unwrap_or(DEFAULT_POD_CIDR);
        let pod_cidr = cidr.parse().map_err(|e: crius_net::Error| {
            Error::InvalidArgument(format!("pod CIDR {cidr:?} for the built-in network: {e}"))
        })?;
        Ok(BuiltinNetwork::new(BuiltinOptions {
            bridge: options.bridge.clone(),
            pod_cidr,
            pod_cidr_v6: None,
            state_dir: root.join("network"),
            host_ports: if options.host_ports {
                HostPortMode::Iptables
            } else {
                HostPortMode::Disabled
            },
            masquerade: options.masquerade,
        })?)
    };
    Ok(match options.mode {
        NetworkMode::None => None,
        NetworkMode::Cni => Some(Arc::new(cni())),
        NetworkMode::Builtin => Some(Arc::new(builtin()?)),
        NetworkMode::Auto => Some(Arc::new(AutoNetwork::new(cni(), builtin()?))),
    })
}

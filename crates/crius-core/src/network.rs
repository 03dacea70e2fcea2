//! Pod networking as the runtime uses it: which network plugin serves new pods (CNI when a
//! config exists, else the built-in bridge, or none), and the NetworkReady condition.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use crius_net::{
    AutoNetwork, Bandwidth, BuiltinNetwork, BuiltinOptions, CniNetwork, CniOptions, HostPortMode,
    IpRange, NetworkPlugin,
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
/// network takes its IPv4 network (and its IPv6 one, for dual-stack pods) from `pod_cidr`,
/// one network per family separated by a comma as kubelet sends it, and keeps its state
/// under `root/network`.
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
        let parts: Vec<&str> = pod_cidr
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let invalid = |cidr: &str, e: crius_net::Error| {
            Error::InvalidArgument(format!("pod CIDR {cidr:?} for the built-in network: {e}"))
        };
        let v4 = parts
            .iter()
            .find(|c| !c.contains(':'))
            .copied()
            .unwrap_or(DEFAULT_POD_CIDR);
        let pod_cidr = v4.parse().map_err(|e| invalid(v4, e))?;
        let pod_cidr_v6 = match parts.iter().find(|c| c.contains(':')) {
            Some(v6) => Some(v6.parse().map_err(|e| invalid(v6, e))?),
            None => None,
        };
        Ok(BuiltinNetwork::new(BuiltinOptions {
            bridge: options.bridge.clone(),
            pod_cidr,
            pod_cidr_v6,
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

/// The pod annotations kubelet copies from the pod's metadata to ask for traffic shaping,
/// in bits per second as a Kubernetes quantity (`10M`, `1Gi`).
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
/// See [`INGRESS_BANDWIDTH`].
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// Burst given with a rate: the annotations carry no burst, and the CNI bandwidth plugin
/// needs one; a large bucket leaves the rate as the only limit.
const BANDWIDTH_BURST_BITS: u64 = i32::MAX as u64;

/// The traffic shaping a pod's annotations ask for (`None` without either annotation);
/// a malformed quantity is `InvalidArgument` naming the annotation.
pub(crate) fn pod_bandwidth(annotations: &BTreeMap<String, String>) -> Result<Option<Bandwidth>> {
    let rate = |key: &str| -> Result<Option<u64>> {
        let Some(value) = annotations.get(key) else {
            return Ok(None);
        };
        parse_quantity(value).map(Some).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "annotation {key}={value:?} is not a bandwidth quantity such as 10M or 1Gi"
            ))
        })
    };
    let (ingress, egress) = (rate(INGRESS_BANDWIDTH)?, rate(EGRESS_BANDWIDTH)?);
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    let burst = |r: Option<u64>| if r.is_some() { BANDWIDTH_BURST_BITS } else { 0 };
    Ok(Some(Bandwidth {
        ingress_rate: ingress.unwrap_or(0),
        ingress_burst: burst(ingress),
        egress_rate: egress.unwrap_or(0),
        egress_burst: burst(egress),
    }))
}

/// A non-negative Kubernetes quantity (`500k`, `10M`, `1.5G`, `2Mi`, `100`) as a whole number.
fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return None,
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(multiplier)?;
    // Each fractional digit is worth a tenth of the one before; what falls below 1 is dropped.
    let mut unit = multiplier;
    for digit in frac.chars() {
        let d = u64::from(digit.to_digit(10)?);
        unit /= 10;
        value = value.checked_add(d.checked_mul(unit)?)?;
    }
    Some(value)
}

/// The pod CIDR setting (comma-separated, one network per family) as CNI `ipRanges`: one
/// range set per network, for IPAM plugins with the `ipRanges` capability.
pub(crate) fn ip_ranges(pod_cidr: Option<&str>) -> Vec<Vec<IpRange>> {
    pod_cidr
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            vec![IpRange {
                subnet: c.to_string(),
                ..Default::default()
            }]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_quantities_parse_in_bits_per_second() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1.5k"), Some(1_500));
        assert_eq!(parse_quantity("2Mi"), Some(2 << 20));
        assert_eq!(parse_quantity("100"), Some(100));
        for bad in ["", "M", "10X", "-1M", "1..5M", "1e6"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn bandwidth_annotations_become_rates_with_a_burst() {
        let mut a = BTreeMap::new();
        assert_eq!(pod_bandwidth(&a).unwrap(), None);
        a.insert(INGRESS_BANDWIDTH.to_string(), "10M".to_string());
        let b = pod_bandwidth(&a).unwrap().unwrap();
        assert_eq!(
            (b.ingress_rate, b.egress_rate, b.egress_burst),
            (10_000_000, 0, 0)
        );
        assert!(b.ingress_burst > 0);
        a.insert(EGRESS_BANDWIDTH.to_string(), "lots".to_string());
        let err = pod_bandwidth(&a).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains(EGRESS_BANDWIDTH), "{err}");
    }

    #[test]
    fn each_pod_cidr_family_is_one_ip_range_set() {
        assert!(ip_ranges(None).is_empty());
        let r = ip_ranges(Some("10.1.0.0/16, fd00:1::/64"));
        assert_eq!(r.len(), 2);
        assert_eq!(r[1][0].subnet, "fd00:1::/64");
    }
}

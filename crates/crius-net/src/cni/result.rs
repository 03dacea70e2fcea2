//! Parsing CNI results (spec 0.3.x, 0.4.0 and 1.0.0 share the shape used here).

use std::net::IpAddr;

use serde_json::Value;

use crate::types::{primary_first, PodNetworkStatus};

/// Extracts the pod's addresses from a result.
///
/// Addresses on an interface inside the sandbox (one with `sandbox` set) count; a result
/// without interface indexes counts all of its addresses. Returns a reason when the result
/// is malformed.
pub(crate) fn pod_status(result: &Value, ifname: &str) -> Result<PodNetworkStatus, String> {
    let obj = result.as_object().ok_or("result is not a json object")?;
    let interfaces = match obj.get("interfaces") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err("interfaces is not an array".into()),
    };
    let ips = match obj.get("ips") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err("ips is not an array".into()),
    };
    let in_sandbox = |idx: usize| -> bool {
        interfaces
            .get(idx)
            .and_then(|i| i.get("sandbox"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let mut addrs = Vec::new();
    let mut gateway = None;
    let mut interface = None;
    for (n, ip) in ips.iter().enumerate() {
        let address = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or(format!("ips[{n}].address is missing"))?;
        let addr: IpAddr = address
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or(format!("ips[{n}].address {address:?} is not an ip/prefix"))?;
        let idx = ip
            .get("interface")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok());
        if let Some(idx) = idx {
            if !in_sandbox(idx) {
                continue;
            }
            if interface.is_none() {
                interface = interfaces
                    .get(idx)
                    .and_then(|i| i.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
        }
        let gw = ip
            .get("gateway")
            .and_then(Value::as_str)
            .and_then(|g| g.parse::<IpAddr>().ok());
        if gateway.is_none() && addr.is_ipv4() {
            gateway = gw;
        }
        addrs.push((addr, gw));
    }
    if gateway.is_none() {
        gateway = addrs.iter().find_map(|(_, gw)| *gw);
    }
    Ok(PodNetworkStatus {
        ips: primary_first(addrs.into_iter().map(|(a, _)| a).collect()),
        interface: interface.unwrap_or_else(|| ifname.to_owned()),
        gateway,
        network: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_1_0_result_gives_sandbox_addresses_only() {
        let v = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:00", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "10.1.0.1/24", "interface": 0},
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 1},
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}
            ]
        });
        let st = pod_status(&v, "eth0").unwrap();
        let want: Vec<IpAddr> = vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(st.ips, want);
        assert_eq!(st.gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(st.interface, "eth0");
    }

    #[test]
    fn spec_0_3_result_with_version_fields_and_no_interfaces_is_read() {
        let v = serde_json::json!({
            "cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "192.168.5.9/16", "gateway": "192.168.0.1"}],
            "dns": {}
        });
        let st = pod_status(&v, "eth0").unwrap();
        assert_eq!(st.ips, vec!["192.168.5.9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn garbage_address_is_an_error() {
        let v = serde_json::json!({"ips": [{"address": "nope"}]});
        assert!(pod_status(&v, "eth0").is_err());
        assert!(pod_status(&serde_json::json!([1]), "eth0").is_err());
    }
}

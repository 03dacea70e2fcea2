//! [`AutoNetwork`]: CNI when the conf dir has a config, the built-in network otherwise.

use crate::builtin::BuiltinNetwork;
use crate::cni::CniNetwork;
use crate::error::Result;
use crate::plugin::NetworkPlugin;
use crate::types::{validate_pod_id, NetworkReadiness, PodNetworkRequest, PodNetworkStatus};

/// Picks the network per pod at setup time: [`CniNetwork`] when its conf dir holds a config
/// file, [`BuiltinNetwork`] otherwise (a fresh install runs pods with no CNI setup).
///
/// A pod is torn down and checked by the network that set it up: a pod with a CNI cache
/// entry belongs to CNI, any other to the built-in network. Adding a CNI config later thus
/// moves new pods to CNI while running pods keep their built-in network until torn down.
#[derive(Debug, Clone)]
pub struct AutoNetwork {
    cni: CniNetwork,
    builtin: BuiltinNetwork,
}

impl AutoNetwork {
    /// Combines the two networks.
    pub fn new(cni: CniNetwork, builtin: BuiltinNetwork) -> Self {
        AutoNetwork { cni, builtin }
    }

    /// The network new pods get now.
    pub fn current(&self) -> &dyn NetworkPlugin {
        if self.cni.config_present() {
            &self.cni
        } else {
            &self.builtin
        }
    }
}

impl NetworkPlugin for AutoNetwork {
    fn setup(&self, req: &PodNetworkRequest) -> Result<PodNetworkStatus> {
        self.current().setup(req)
    }

    fn teardown(&self, req: &PodNetworkRequest) -> Result<()> {
        validate_pod_id(&req.pod_id)?;
        if self.cni.has_cached(&req.pod_id) {
            self.cni.teardown(req)?;
        }
        // Idempotent and cheap when the pod has no built-in record.
        self.builtin.teardown(req)
    }

    fn check(&self, req: &PodNetworkRequest) -> Result<()> {
        validate_pod_id(&req.pod_id)?;
        if self.cni.has_cached(&req.pod_id) {
            self.cni.check(req)
        } else {
            self.builtin.check(req)
        }
    }

    fn status(&self) -> NetworkReadiness {
        self.current().status()
    }

    fn attached(&self) -> Result<Vec<String>> {
        let mut pods = self.cni.attached()?;
        pods.extend(self.builtin.attached()?);
        pods.sort();
        pods.dedup();
        Ok(pods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{conformance_suite, Fixture};
    use crate::testutil::{bridge_for, request, subnet_for, TestNetns};
    use crate::{BuiltinOptions, CniOptions, Ipv4Cidr};

    fn networks(dir: &std::path::Path, name: &str) -> (CniOptions, BuiltinOptions) {
        let cni = CniOptions {
            conf_dir: dir.join("conf"),
            bin_dirs: vec!["/usr/lib/cni".into()],
            cache_dir: dir.join("cache"),
            ..Default::default()
        };
        let builtin = BuiltinOptions {
            bridge: bridge_for(name),
            pod_cidr: Ipv4Cidr::new(subnet_for(name), 24).unwrap(),
            state_dir: dir.join("state"),
            ..Default::default()
        };
        (cni, builtin)
    }

    #[test]
    fn auto_without_cni_config_passes_the_conformance_suite_on_the_builtin_network() {
        let name = "auto_without_cni_config_passes_the_conformance_suite_on_the_builtin_network";
        if !crius_testkit::require_root(name) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (cni, builtin) = networks(dir.path(), name);
        let make = {
            let (cni, builtin) = (cni.clone(), builtin.clone());
            move || {
                Box::new(AutoNetwork::new(
                    CniNetwork::new(cni.clone()),
                    BuiltinNetwork::new(builtin.clone()).unwrap(),
                )) as Box<dyn NetworkPlugin>
            }
        };
        conformance_suite(&Fixture {
            name: "auto-conf",
            make: &make,
            subnet: builtin.pod_cidr.network(),
            prefix: 24,
            check_with_host_ports: true,
        });
        BuiltinNetwork::new(builtin)
            .unwrap()
            .remove_host_state()
            .unwrap();
    }

    #[test]
    fn pods_keep_their_network_when_a_cni_config_appears() {
        let name = "pods_keep_their_network_when_a_cni_config_appears";
        if !crius_testkit::require_root(name) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (cni, builtin) = networks(dir.path(), name);
        let net = AutoNetwork::new(
            CniNetwork::new(cni.clone()),
            BuiltinNetwork::new(builtin.clone()).unwrap(),
        );
        let ns = TestNetns::new();
        let req = request("auto-switch", &ns);
        let st = net.setup(&req).unwrap();
        assert!(builtin.pod_cidr.contains(match st.ips[0] {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(_) => panic!("ipv6"),
        }));
        // A config shows up (its plugin is missing): status follows it, the pod stays built-in.
        std::fs::create_dir_all(&cni.conf_dir).unwrap();
        std::fs::write(
            cni.conf_dir.join("10-x.conf"),
            r#"{"cniVersion":"1.0.0","name":"x","type":"no-such-plugin"}"#,
        )
        .unwrap();
        assert!(!net.status().ready);
        net.check(&req).unwrap();
        net.teardown(&req).unwrap();
        assert_eq!(
            net.check(&req).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        BuiltinNetwork::new(builtin)
            .unwrap()
            .remove_host_state()
            .unwrap();
    }
}

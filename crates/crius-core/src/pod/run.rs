//! `run_pod`: validate, lay out the pod directory, spawn its monitor (which pins the
//! namespaces), record it. Every step taken is undone if a later one fails.

use std::fs;
use std::path::{Path, PathBuf};

use crius_monitor::{spawn_monitor, PodConfig as MonitorPodConfig, PodNamespaces};
use crius_store::{NamespaceOptions, PodMetadata, PodRecord, PodState};

use super::config::PodConfig;
use super::files::{resolv_conf, PodFiles};
use super::sysctl;
use crate::error::{Error, Result};
use crate::rollback::Rollback;
use crate::runtime::{bundle_dir_mode, create_private_dir, new_id, now_ns, Runtime};

impl Runtime {
    /// Runs a pod and returns its id. A retry with the same metadata while the first call
    /// is in flight gets the first call's answer; once it finished, a retry gets the
    /// existing pod's id (the CRI's name key includes the attempt, so this is the same pod).
    pub fn run_pod(&self, config: PodConfig) -> Result<String> {
        validate(&config)?;
        self.handler(&config.runtime_handler)?;
        let key = metadata(&config);
        self.pod_runs.run(key.clone(), || {
            if let Some(existing) = self.store().read()?.pod_by_key(&key)? {
                return match existing.state {
                    PodState::Ready => Ok(existing.id),
                    PodState::NotReady => Err(Error::AlreadyExists(format!(
                        "pod {:?} attempt {} exists as {} and is stopped; remove it or use a new attempt",
                        key.name, key.attempt, existing.id
                    ))),
                };
            }
            self.create_pod(&config, key)
        })
    }

    fn create_pod(&self, config: &PodConfig, key: PodMetadata) -> Result<String> {
        let id = new_id();
        let cgroup_parent = self.pod_cgroup_parent(config, &id)?;
        let mut rollback = Rollback::default();
        let dir = self.pod_dir(&id);
        create_private_dir(&dir, bundle_dir_mode(config.user_namespace.is_some()))?;
        let undo_dir = dir.clone();
        rollback.push("remove pod directory", move || {
            fs::remove_dir_all(&undo_dir).map_err(|e| e.to_string())
        });

        let hostname = pod_hostname(config);
        let files = PodFiles::in_dir(&dir);
        files
            .write(&resolv_conf(config)?, &hostname)
            .map_err(|e| Error::io(format!("write pod files in {}", dir.display()), e))?;
        if let Some(user) = &config.user_namespace {
            // The pod's root may edit its /etc/hosts as any container root can; without
            // this, the host's root would own the files, nobody inside the pod.
            let root = |maps| super::config::IdMapping::host_id_of(maps, 0);
            files
                .chown(root(&user.uids), root(&user.gids))
                .map_err(|e| Error::io(format!("chown pod files in {}", dir.display()), e))?;
        }
        if !config.host_ipc {
            super::shm::mount_pod_shm(&dir)?;
            let shm_dir = dir.clone();
            rollback.push("unmount pod shm", move || {
                super::shm::unmount_pod_shm(&shm_dir).map_err(|e| e.to_string())
            });
        }

        let monitor_config = MonitorPodConfig {
            pod_id: id.clone(),
            state_dir: dir.clone(),
            hostname: hostname.clone(),
            namespaces: PodNamespaces {
                network: !config.host_network,
                ipc: !config.host_ipc,
                uts: !config.host_network,
                pid: config.share_pid && !config.host_pid,
                user: config
                    .user_namespace
                    .as_ref()
                    .map(super::status::monitor_id_mappings),
            },
            sysctls: config.sysctls.clone(),
            cgroup_parent: None,
            systemd_bus: self.systemd_bus().map(Path::to_path_buf),
        };
        let handle = spawn_monitor(&self.monitor_binary(), &monitor_config)?;
        let pod_dir = dir.clone();
        rollback.push("shut down monitor", move || {
            super::remove::shutdown_monitor(&pod_dir, Some(handle.pid)).map_err(|e| e.to_string())
        });

        let (ips, network_info) =
            self.attach_network(&mut rollback, &id, config, &monitor_config.ns_path("net"))?;
        let mut spec = super::status::stored_spec(config);
        if let Some(obj) = spec.as_object_mut() {
            obj.insert("network".into(), network_info);
        }
        let record = PodRecord {
            id: id.clone(),
            metadata: key,
            state: PodState::Ready,
            created_at_ns: now_ns(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            runtime_handler: config.runtime_handler.clone(),
            log_directory: config.log_directory.clone(),
            hostname,
            ips,
            netns_path: if config.host_network {
                PathBuf::new()
            } else {
                monitor_config.ns_path("net")
            },
            namespace_options: NamespaceOptions {
                host_network: config.host_network,
                host_pid: config.host_pid,
                host_ipc: config.host_ipc,
                share_pid: config.share_pid,
            },
            cgroup_parent,
            monitor_socket: monitor_config.socket_path(),
            spec,
        };
        let txn = self.store().write()?;
        txn.pods().insert(&record)?;
        txn.commit()?;
        rollback.disarm();
        self.watch_pod(&id);
        tracing::info!(pod_id = %id, name = %record.metadata.name, "pod running");
        Ok(id)
    }
}

fn metadata(config: &PodConfig) -> PodMetadata {
    PodMetadata {
        name: config.name.clone(),
        uid: config.uid.clone(),
        namespace: config.namespace.clone(),
        attempt: config.attempt,
    }
}

/// The hostname the pod's UTS namespace gets: kubelet's, else the pod name; a host-network
/// pod shares the host's UTS namespace and so its hostname.
fn pod_hostname(config: &PodConfig) -> String {
    if config.host_network {
        return nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    if config.hostname.is_empty() {
        config.name.clone()
    } else {
        config.hostname.clone()
    }
}

fn validate(config: &PodConfig) -> Result<()> {
    let invalid = |m: String| Err(Error::InvalidArgument(m));
    if config.name.is_empty() || config.namespace.is_empty() || config.uid.is_empty() {
        return invalid("pod metadata needs name, namespace and uid".into());
    }
    if !config.log_directory.is_empty() && !config.log_directory.starts_with('/') {
        return invalid(format!(
            "log_directory {:?} must be absolute",
            config.log_directory
        ));
    }
    if config.hostname.len() > 64 || config.hostname.contains(['/', '\0', '\n']) {
        return invalid(format!(
            "hostname {:?} is not a valid hostname",
            config.hostname
        ));
    }
    crate::network::pod_bandwidth(&config.annotations)?;
    sysctl::validate(
        &config.sysctls,
        config.privileged,
        config.host_network,
        config.host_ipc,
    )
    .map_err(Error::InvalidArgument)?;
    if config.user_namespace.is_some()
        && (config.host_network || config.host_pid || config.host_ipc)
    {
        return invalid(
            "a pod with a user namespace cannot share the host's network, pid or ipc namespace"
                .into(),
        );
    }
    Ok(())
}

impl Runtime {
    /// Attaches the pod's network namespace to the pod network (not for host-network pods,
    /// nor when networking is off) and registers the detach with `rollback`. Returns the
    /// pod's addresses (primary first) and what `PodSandboxStatus` verbose info shows of the
    /// attachment: the network, interface, gateway and how long the setup took (the
    /// benchmark reads `setupMicros` to tell network time from the rest of RunPodSandbox).
    fn attach_network(
        &self,
        rollback: &mut Rollback,
        id: &str,
        config: &PodConfig,
        netns: &std::path::Path,
    ) -> Result<(Vec<String>, serde_json::Value)> {
        let Some(network) = self.network().filter(|_| !config.host_network) else {
            return Ok((Vec::new(), serde_json::Value::Null));
        };
        let request = self.network_request(id, config, netns);
        let started = std::time::Instant::now();
        let status = network.setup(&request)?;
        let took = started.elapsed();
        rollback.push("detach pod network", move || {
            network.teardown(&request).map_err(|e| e.to_string())
        });
        tracing::debug!(pod_id = %id, network = %status.network, setup_us = took.as_micros(), "pod network attached");
        let info = serde_json::json!({
            "network": status.network,
            "interface": status.interface,
            "gateway": status.gateway,
            "setupMicros": u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        });
        Ok((status.ips.iter().map(ToString::to_string).collect(), info))
    }
}

impl Runtime {
    /// What the network plugin needs to attach pod `id`: its names, netns, host ports and
    /// DNS, the traffic shaping kubelet's bandwidth annotations ask for, and the pod CIDR
    /// (from kubelet or the config) as `ipRanges` for IPAM plugins that take it.
    pub(crate) fn network_request(
        &self,
        id: &str,
        config: &PodConfig,
        netns: &std::path::Path,
    ) -> crius_net::PodNetworkRequest {
        use super::config::Protocol;
        crius_net::PodNetworkRequest {
            pod_id: id.to_string(),
            pod_name: config.name.clone(),
            pod_namespace: config.namespace.clone(),
            pod_uid: config.uid.clone(),
            netns_path: netns.to_path_buf(),
            port_mappings: config
                .port_mappings
                .iter()
                .map(|p| crius_net::PortMapping {
                    protocol: match p.protocol {
                        Protocol::Tcp => crius_net::Protocol::Tcp,
                        Protocol::Udp => crius_net::Protocol::Udp,
                        Protocol::Sctp => crius_net::Protocol::Sctp,
                    },
                    container_port: p.container_port,
                    host_port: p.host_port,
                    host_ip: p.host_ip,
                })
                .collect(),
            dns: config.dns.as_ref().map(|d| crius_net::DnsConfig {
                servers: d.servers.clone(),
                searches: d.searches.clone(),
                options: d.options.clone(),
            }),
            // Validated in `validate`, so an error here cannot happen; no shaping then.
            bandwidth: crate::network::pod_bandwidth(&config.annotations)
                .ok()
                .flatten(),
            ip_ranges: crate::network::ip_ranges(self.pod_cidr().as_deref()),
        }
    }
}

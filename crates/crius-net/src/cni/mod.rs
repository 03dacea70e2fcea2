//! [`CniNetwork`]: pods attached by CNI plugins, as containerd and CRI-O do.
//!
//! Configuration is re-read on every call (one readdir and one small file read), so adding,
//! fixing or removing a file in the conf dir changes [`NetworkPlugin::status`] and the next
//! `setup` without a restart; a pod keeps the config it was set up with (from the cache)
//! until it is torn down.

mod cache;
mod config;
mod exec;
mod result;
#[cfg(test)]
mod root_tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::plugin::NetworkPlugin;
use crate::types::{validate_pod_id, NetworkReadiness, PodNetworkRequest, PodNetworkStatus};
use cache::CacheEntry;
use config::NetworkConfigList;
use exec::Invocation;

/// Where [`CniNetwork`] finds its configuration, plugins and cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniOptions {
    /// The conf dir; the lexically first `.conf`, `.conflist` or `.json` file is used.
    pub conf_dir: PathBuf,
    /// Plugin directories, searched in order; also `CNI_PATH`.
    pub bin_dirs: Vec<PathBuf>,
    /// Where each pod's ADD config and result are cached (`<cache_dir>/<pod_id>.json`).
    pub cache_dir: PathBuf,
    /// How long one plugin invocation may run before it is killed.
    pub timeout: Duration,
    /// `CNI_IFNAME`, the interface name inside the pod.
    pub ifname: String,
}

impl Default for CniOptions {
    fn default() -> Self {
        CniOptions {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            // Debian's containernetworking-plugins installs to /usr/lib/cni.
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cache_dir: PathBuf::from("/var/lib/crius/cni/cache"),
            timeout: Duration::from_secs(30),
            ifname: "eth0".to_owned(),
        }
    }
}

/// A [`NetworkPlugin`] that runs the CNI plugin chain of the first config in a conf dir.
///
/// ```no_run
/// use crius_net::{CniNetwork, CniOptions, NetworkPlugin, PodNetworkRequest};
///
/// let net = CniNetwork::new(CniOptions::default());
/// let req = PodNetworkRequest {
///     pod_id: "4f1c2a".into(),
///     pod_name: "web".into(),
///     pod_namespace: "default".into(),
///     pod_uid: "0b5e".into(),
///     netns_path: "/run/crius/pods/4f1c2a/ns/net".into(),
///     ..Default::default()
/// };
/// let status = net.setup(&req)?;
/// println!("pod ip {}", status.ips[0]);
/// net.teardown(&req)?;
/// # Ok::<(), crius_net::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CniNetwork {
    opts: CniOptions,
}

/// What one run of the chain needs besides the list.
struct ChainRun<'a> {
    pod_id: &'a str,
    netns: &'a Path,
    args: &'a str,
    runtime_config: &'a Value,
}

impl CniNetwork {
    /// A CNI network with `opts`; nothing is read until the first call.
    pub fn new(opts: CniOptions) -> Self {
        CniNetwork { opts }
    }

    /// The options it was built with.
    pub fn options(&self) -> &CniOptions {
        &self.opts
    }

    /// Whether the conf dir holds a config file (valid or not); the daemon uses the built-in
    /// network when it does not.
    pub fn config_present(&self) -> bool {
        matches!(config::first_config_file(&self.opts.conf_dir), Ok(Some(_)))
    }

    /// Whether a cached ADD exists for `pod_id` (the pod was set up by CNI).
    pub(crate) fn has_cached(&self, pod_id: &str) -> bool {
        cache::path(&self.opts.cache_dir, pod_id).exists()
    }

    fn load(&self) -> Result<NetworkConfigList> {
        let list = config::load_first(&self.opts.conf_dir)?;
        for i in 0..list.plugins.len() {
            exec::find_plugin(list.plugin_type(i), &self.opts.bin_dirs)?;
        }
        Ok(list)
    }

    fn invocation<'a>(&'a self, command: &'static str, run: &ChainRun<'a>) -> Invocation<'a> {
        Invocation {
            command,
            container_id: run.pod_id,
            netns: run.netns,
            ifname: &self.opts.ifname,
            args: run.args,
            bin_dirs: &self.opts.bin_dirs,
            timeout: self.opts.timeout,
        }
    }

    /// ADD through the chain; the final result.
    fn add_chain(&self, list: &NetworkConfigList, run: &ChainRun<'_>) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let ty = list.plugin_type(i);
            let conf = plugin_conf(list, i, prev.as_ref(), run.runtime_config);
            let out = exec::run(ty, &conf, &self.invocation("ADD", run))?;
            let value: Value = serde_json::from_slice(&out).map_err(|e| Error::PluginOutput {
                plugin: ty.to_owned(),
                command: "ADD",
                reason: format!("not json: {e}"),
            })?;
            if !value.is_object() {
                return Err(Error::PluginOutput {
                    plugin: ty.to_owned(),
                    command: "ADD",
                    reason: "not a json object".into(),
                });
            }
            prev = Some(value);
        }
        Ok(prev.unwrap_or_else(|| json!({"cniVersion": list.cni_version})))
    }

    /// DEL through the chain in reverse; every plugin runs, the first error is returned.
    fn del_chain(
        &self,
        list: &NetworkConfigList,
        run: &ChainRun<'_>,
        prev: Option<&Value>,
    ) -> Result<()> {
        let prev = prev.filter(|_| list.has_check());
        let mut first_err = None;
        for i in (0..list.plugins.len()).rev() {
            let conf = plugin_conf(list, i, prev, run.runtime_config);
            if let Err(e) = exec::run(list.plugin_type(i), &conf, &self.invocation("DEL", run)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn setup_inner(
        &self,
        req: &PodNetworkRequest,
        list: &NetworkConfigList,
    ) -> Result<PodNetworkStatus> {
        let args = cni_args(req);
        let runtime_config = runtime_config(req);
        let run = ChainRun {
            pod_id: &req.pod_id,
            netns: &req.netns_path,
            args: &args,
            runtime_config: &runtime_config,
        };
        let mut entry = CacheEntry::new(&req.pod_id, &self.opts.ifname, &req.netns_path, &args);
        entry.source = list.source.clone();
        entry.config = list.to_json();
        entry.runtime_config = runtime_config.clone();
        let attempt = || -> Result<PodNetworkStatus> {
            // Recorded before any plugin runs (with no result yet), so that a daemon that
            // dies during ADD still finds the pod to DEL; without an entry, teardown has
            // nothing to do.
            cache::write(&self.opts.cache_dir, &entry)?;
            crate::netns::loopback_up(&req.netns_path)?;
            let result = self.add_chain(list, &run)?;
            let mut status = result::pod_status(&result, &self.opts.ifname).map_err(|reason| {
                Error::PluginOutput {
                    plugin: list.plugin_type(list.plugins.len() - 1).to_owned(),
                    command: "ADD",
                    reason,
                }
            })?;
            status.network = format!("cni:{}", list.name);
            let done = CacheEntry {
                result,
                ..entry.clone()
            };
            cache::write(&self.opts.cache_dir, &done)?;
            Ok(status)
        };
        attempt().map_err(|source| {
            tracing::debug!(pod_id = %req.pod_id, error = %source, "cni add failed, rolling back");
            let cleanup = self
                .del_chain(list, &run, None)
                .and_then(|()| cache::remove(&self.opts.cache_dir, &req.pod_id))
                .err()
                .map(Box::new);
            Error::SetupFailed {
                pod_id: req.pod_id.clone(),
                source: Box::new(source),
                cleanup,
            }
        })
    }
}

impl NetworkPlugin for CniNetwork {
    fn setup(&self, req: &PodNetworkRequest) -> Result<PodNetworkStatus> {
        req.validate()?;
        let list = self.load()?;
        let status = self.setup_inner(req, &list)?;
        tracing::debug!(pod_id = %req.pod_id, network = %list.name, ips = ?status.ips, "cni add done");
        Ok(status)
    }

    fn teardown(&self, req: &PodNetworkRequest) -> Result<()> {
        validate_pod_id(&req.pod_id)?;
        // No entry: never set up by CNI, rolled back, or already torn down. Running DEL
        // again would cost a plugin run per plugin on every RemovePodSandbox after a stop.
        let Some(entry) = cache::read(&self.opts.cache_dir, &req.pod_id)? else {
            tracing::debug!(pod_id = %req.pod_id, "no cni cache entry, nothing to del");
            return Ok(());
        };
        let list = config::parse(&entry.source, entry.config)?;
        let netns = if req.netns_path.as_os_str().is_empty() {
            entry.netns
        } else {
            req.netns_path.clone()
        };
        let (args, runtime_config) = (entry.cni_args, entry.runtime_config);
        // An ADD that never finished left no result to pass as prevResult.
        let prev = Some(entry.result).filter(|r| !r.is_null());
        let run = ChainRun {
            pod_id: &req.pod_id,
            netns: &netns,
            args: &args,
            runtime_config: &runtime_config,
        };
        self.del_chain(&list, &run, prev.as_ref())?;
        cache::remove(&self.opts.cache_dir, &req.pod_id)?;
        tracing::debug!(pod_id = %req.pod_id, network = %list.name, "cni del done");
        Ok(())
    }

    fn check(&self, req: &PodNetworkRequest) -> Result<()> {
        validate_pod_id(&req.pod_id)?;
        let entry =
            cache::read(&self.opts.cache_dir, &req.pod_id)?.ok_or_else(|| Error::PodNotFound {
                pod_id: req.pod_id.clone(),
                reason: "no cni result cached for it".into(),
            })?;
        if entry.result.is_null() {
            return Err(Error::Inconsistent {
                pod_id: req.pod_id.clone(),
                reason: "its cni ADD never finished; stop the pod to release it".into(),
            });
        }
        let list = config::parse(&entry.source, entry.config)?;
        if !list.has_check() || list.disable_check {
            return Ok(());
        }
        let run = ChainRun {
            pod_id: &req.pod_id,
            netns: &entry.netns,
            args: &entry.cni_args,
            runtime_config: &entry.runtime_config,
        };
        for i in 0..list.plugins.len() {
            let conf = plugin_conf(&list, i, Some(&entry.result), run.runtime_config);
            exec::run(list.plugin_type(i), &conf, &self.invocation("CHECK", &run))?;
        }
        Ok(())
    }

    fn status(&self) -> NetworkReadiness {
        match self.load() {
            Ok(list) => NetworkReadiness::ready(format!(
                "cni network {:?} from {}",
                list.name,
                list.source.display()
            )),
            Err(e) => NetworkReadiness::not_ready("NetworkPluginNotReady", e.to_string()),
        }
    }

    fn attached(&self) -> Result<Vec<String>> {
        cache::pods(&self.opts.cache_dir)
    }
}

/// `CNI_ARGS` with the Kubernetes keys plugins such as portmap and host-local understand.
fn cni_args(req: &PodNetworkRequest) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        req.pod_namespace, req.pod_name, req.pod_id, req.pod_uid
    )
}

/// Every runtimeConfig capability the request can fill.
fn runtime_config(req: &PodNetworkRequest) -> Value {
    let mut rc = Map::new();
    let ports: Vec<Value> = req
        .port_mappings
        .iter()
        .filter(|m| m.host_port != 0)
        .map(|m| {
            json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": m.protocol.as_str(),
                "hostIP": m.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            })
        })
        .collect();
    if !ports.is_empty() {
        rc.insert("portMappings".into(), Value::Array(ports));
    }
    if let Some(b) = &req.bandwidth {
        rc.insert(
            "bandwidth".into(),
            json!({
                "ingressRate": b.ingress_rate,
                "ingressBurst": b.ingress_burst,
                "egressRate": b.egress_rate,
                "egressBurst": b.egress_burst,
            }),
        );
    }
    if let Some(d) = &req.dns {
        rc.insert(
            "dns".into(),
            json!({"servers": d.servers, "searches": d.searches, "options": d.options}),
        );
    }
    if !req.ip_ranges.is_empty() {
        let sets: Vec<Vec<Value>> = req
            .ip_ranges
            .iter()
            .map(|set| set.iter().map(ip_range_json).collect())
            .collect();
        rc.insert("ipRanges".into(), json!(sets));
    }
    Value::Object(rc)
}

fn ip_range_json(r: &crate::types::IpRange) -> Value {
    let mut o = Map::new();
    o.insert("subnet".into(), json!(r.subnet));
    let opt = |ip: Option<std::net::IpAddr>| ip.map(|ip| json!(ip.to_string()));
    for (k, v) in [
        ("rangeStart", opt(r.range_start)),
        ("rangeEnd", opt(r.range_end)),
        ("gateway", opt(r.gateway)),
    ] {
        if let Some(v) = v {
            o.insert(k.into(), v);
        }
    }
    Value::Object(o)
}

/// The stdin config of plugin `i`: its own keys plus the list's name and version, the
/// previous result, and the runtimeConfig keys its `capabilities` ask for.
fn plugin_conf(
    list: &NetworkConfigList,
    i: usize,
    prev: Option<&Value>,
    runtime_config: &Value,
) -> Value {
    let mut conf = list.plugins.get(i).cloned().unwrap_or_default();
    conf.insert("name".into(), json!(list.name));
    conf.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    conf.remove("runtimeConfig");
    let mut selected = Map::new();
    if let Some(Value::Object(caps)) = conf.get("capabilities") {
        for (cap, wanted) in caps {
            if wanted.as_bool() == Some(true) {
                if let Some(v) = runtime_config.get(cap) {
                    selected.insert(cap.clone(), v.clone());
                }
            }
        }
    }
    if !selected.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(selected));
    }
    Value::Object(conf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{PortMapping, Protocol};

    #[test]
    fn runtime_config_goes_only_to_plugins_whose_capabilities_ask() {
        let v = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "bridge"},
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}
        ]});
        let list = config::parse(Path::new("/x"), v).unwrap();
        let req = PodNetworkRequest {
            port_mappings: vec![PortMapping {
                protocol: Protocol::Tcp,
                container_port: 80,
                host_port: 8080,
                host_ip: None,
            }],
            bandwidth: Some(Default::default()),
            ..Default::default()
        };
        let rc = runtime_config(&req);
        let bridge = plugin_conf(&list, 0, None, &rc);
        assert!(bridge.get("runtimeConfig").is_none());
        let prev = json!({"ips": []});
        let portmap = plugin_conf(&list, 1, Some(&prev), &rc);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        assert!(portmap["runtimeConfig"].get("bandwidth").is_none());
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(portmap["name"], "n");
        assert_eq!(portmap["cniVersion"], "1.0.0");
    }

    #[test]
    fn cni_args_carry_the_kubernetes_keys() {
        let req = PodNetworkRequest {
            pod_id: "abc".into(),
            pod_name: "web".into(),
            pod_namespace: "prod".into(),
            pod_uid: "u1".into(),
            ..Default::default()
        };
        assert_eq!(
            cni_args(&req),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1"
        );
    }
}

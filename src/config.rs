//! The daemon's configuration: one typed struct, every key with a default, unknown keys
//! rejected, validation as a separate step. `crius config default` prints
//! `Config::default()`, so the documented defaults cannot drift from the code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crius_core::{
    CgroupDriverChoice, ImageConfig, NetworkMode, NetworkOptions, RegistryConfig,
    RuntimeHandlerConfig, RuntimeOptions,
};
use serde::{Deserialize, Serialize};

/// Where criusd looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/crius/config.toml";

/// Errors of loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("parse config file {path}: {error}")]
    Parse {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole criusd configuration (TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent data: metadata store, content store, snapshots, writable layers.
    pub root: PathBuf,
    /// Volatile state (tmpfs): sockets, namespace pins, monitor state.
    pub state: PathBuf,
    /// The CRI endpoint; only `unix://` paths are accepted, never TCP.
    pub listen: String,
    /// Logging of the daemon itself.
    pub log: LogConfig,
    /// `auto` (systemd when it is init, else cgroupfs), `cgroupfs` or `systemd`; kubelet's
    /// `--cgroup-driver` must match what `crius status` reports. With `systemd`, a pod's
    /// cgroup parent is a slice name (`kubepods-burstable-pod<uid>.slice`, anything else
    /// is refused; `crius.slice` when kubelet gives none), and each container is a
    /// transient scope unit `crius-<id>.scope` in that slice, which crius asks systemd to
    /// create over D-Bus (StartTransientUnit, with the container's memory, CPU and pids
    /// limits as unit properties, so `daemon-reload` keeps them) and to stop when the
    /// container is removed. criusd refuses to start when no systemd manager answers on
    /// `systemd_bus`.
    pub cgroup_driver: CgroupDriverChoice,
    /// The systemd manager's D-Bus socket for the systemd driver: its private socket
    /// (`/run/systemd/private`, peer-to-peer) or a message bus
    /// (`/run/dbus/system_bus_socket`). Empty: the private socket when it exists, else
    /// the system bus.
    pub systemd_bus: PathBuf,
    /// Where the cgroup filesystem is mounted.
    pub cgroup_root: PathBuf,
    /// Pod network CIDR used until kubelet sends one through UpdateRuntimeConfig; for
    /// dual-stack pods on the built-in network, one IPv4 and one IPv6 network separated by
    /// a comma (`10.88.0.0/16,fd00:88::/64`).
    pub pod_cidr: String,
    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish before criusd exits.
    /// Containers keep running either way.
    pub shutdown_grace_seconds: u64,
    /// The per-pod monitor binary; empty means `crius-monitor` beside criusd.
    pub monitor_path: String,
    /// Image pulls.
    pub image: ImageOptions,
    /// Pod networking.
    pub network: NetworkConfig,
    /// Per-registry settings keyed by host: `insecure = true` (plain HTTP) and `mirrors`
    /// (tried in order, then the registry itself).
    pub registries: BTreeMap<String, RegistryConfig>,
    /// RuntimeClass handlers served by runc-compatible binaries, by handler name.
    pub runtimes: BTreeMap<String, RuntimeEntry>,
    /// The streaming server behind the URLs `Exec`, `Attach` and `PortForward` return.
    pub stream: StreamConfig,
}

/// The streaming server (exec, attach, port-forward over SPDY and WebSocket). It serves
/// plain HTTP unless `tls_cert_file` and `tls_key_file` are set; without TLS keep it on a
/// loopback or otherwise private address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// The IP address to listen on.
    pub address: String,
    /// The TCP port; 0 lets the kernel choose one.
    pub port: u16,
    /// The `http://host:port` (`https://` with TLS) the returned URLs start with; empty
    /// means the bound address. Set it when listening on a wildcard address such as 0.0.0.0.
    pub base_url: String,
    /// PEM certificate chain to serve TLS with; set together with `tls_key_file`.
    pub tls_cert_file: String,
    /// PEM private key of that certificate; set together with `tls_cert_file`.
    pub tls_key_file: String,
    /// How long a returned URL stays usable (it is single use either way).
    pub token_ttl_seconds: u64,
    /// A session without traffic for this long is closed; 0 never closes one.
    pub idle_timeout_seconds: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".to_string(),
            port: 0,
            base_url: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            token_ttl_seconds: 60,
            idle_timeout_seconds: 4 * 3600,
        }
    }
}

impl StreamConfig {
    /// Checks the values; returns warnings for settings that work but deserve attention.
    fn validate(&self) -> Result<Vec<String>, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let Ok(ip) = self.address.parse::<std::net::IpAddr>() else {
            return invalid(format!(
                "stream.address must be an IP address such as 127.0.0.1, got {:?}",
                self.address
            ));
        };
        if self.token_ttl_seconds == 0 {
            return invalid("stream.token_ttl_seconds must be at least 1".to_string());
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return invalid(
                "stream.tls_cert_file and stream.tls_key_file must be set together (both for TLS, neither for plain HTTP)"
                    .to_string(),
            );
        }
        let mut warnings = Vec::new();
        if !self.base_url.is_empty() {
            let scheme = if self.tls_cert_file.is_empty() {
                "http://"
            } else {
                "https://"
            };
            let Some(rest) = self.base_url.strip_prefix(scheme) else {
                return invalid(format!(
                    "stream.base_url must start with {scheme} (TLS is {} by stream.tls_cert_file), got {:?}",
                    if scheme == "http://" { "off" } else { "on" },
                    self.base_url
                ));
            };
            if rest.trim_end_matches('/').is_empty() {
                return invalid(format!(
                    "stream.base_url must name a host, got {:?}",
                    self.base_url
                ));
            }
        } else if ip.is_unspecified() {
            warnings.push(format!(
                "stream.address {ip} is a wildcard and stream.base_url is empty: returned URLs name {ip}, which only local clients can reach; set stream.base_url"
            ));
        }
        Ok(warnings)
    }

    /// The streaming server's settings, once [`Config::validate`] passed.
    pub fn server_config(&self) -> Result<crius_stream::StreamServerConfig, ConfigError> {
        let ip = self.address.parse::<std::net::IpAddr>().map_err(|_| {
            ConfigError::Invalid(format!(
                "stream.address must be an IP address, got {:?}",
                self.address
            ))
        })?;
        Ok(crius_stream::StreamServerConfig {
            addr: std::net::SocketAddr::new(ip, self.port),
            base_url: Some(self.base_url.clone()).filter(|u| !u.is_empty()),
            token_ttl: std::time::Duration::from_secs(self.token_ttl_seconds),
            idle_timeout: Some(std::time::Duration::from_secs(self.idle_timeout_seconds))
                .filter(|d| !d.is_zero()),
            tls: (!self.tls_cert_file.is_empty()).then(|| crius_stream::TlsFiles {
                cert: self.tls_cert_file.clone().into(),
                key: self.tls_key_file.clone().into(),
            }),
            ..crius_stream::StreamServerConfig::default()
        })
    }
}

/// Pod network options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// `auto` (CNI when `cni_conf_dir` has a config, else the built-in bridge), `cni`,
    /// `builtin`, or `none` (loopback only).
    pub mode: NetworkMode,
    /// Where CNI configs are read (the lexically first `.conf`/`.conflist`/`.json`).
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are looked up, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// How long one CNI plugin call may take.
    pub cni_timeout_seconds: u64,
    /// The built-in network's bridge.
    pub bridge: String,
    /// Built-in host ports (iptables DNAT).
    pub host_ports: bool,
    /// Masquerade pod traffic leaving the pod CIDR; off keeps pods on the node's networks.
    pub masquerade: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        let d = NetworkOptions::default();
        Self {
            mode: d.mode,
            cni_conf_dir: d.cni_conf_dir,
            cni_bin_dirs: d.cni_bin_dirs,
            cni_timeout_seconds: d.cni_timeout.as_secs(),
            bridge: d.bridge,
            host_ports: d.host_ports,
            masquerade: d.masquerade,
        }
    }
}

impl NetworkConfig {
    fn options(&self) -> NetworkOptions {
        NetworkOptions {
            mode: self.mode,
            cni_conf_dir: self.cni_conf_dir.clone(),
            cni_bin_dirs: self.cni_bin_dirs.clone(),
            cni_timeout: std::time::Duration::from_secs(self.cni_timeout_seconds),
            bridge: self.bridge.clone(),
            host_ports: self.host_ports,
            masquerade: self.masquerade,
        }
    }
}

/// Image pull options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageOptions {
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Layers at least this big log their progress at info level.
    pub progress_min_bytes: u64,
}

impl Default for ImageOptions {
    fn default() -> Self {
        let d = ImageConfig::default();
        Self {
            max_concurrent_downloads: d.max_concurrent_downloads,
            progress_min_bytes: d.progress_min_bytes,
        }
    }
}

/// Logging options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `error`, `warn`, `info`, `debug`, `trace`, or directives such as
    /// `info,crius_core=debug`.
    pub level: String,
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A RuntimeClass handler backed by a runc-compatible binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEntry {
    /// Absolute path of the binary (runc, crun, youki, ...).
    pub path: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/var/lib/crius"),
            state: PathBuf::from("/run/crius"),
            listen: "unix:///run/crius/crius.sock".to_string(),
            log: LogConfig::default(),
            cgroup_driver: CgroupDriverChoice::Auto,
            systemd_bus: PathBuf::new(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            pod_cidr: String::new(),
            shutdown_grace_seconds: 10,
            monitor_path: String::new(),
            image: ImageOptions::default(),
            network: NetworkConfig::default(),
            registries: BTreeMap::new(),
            runtimes: BTreeMap::new(),
            stream: StreamConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Reads a config file. Keys it does not set keep their defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            error: Box::new(error),
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The full configuration as TOML, every key present.
    pub fn to_toml(&self) -> String {
        // Serialising a struct of strings, paths and maps cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the values; returns warnings for settings that work but deserve attention.
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.socket_path()?;
        for (name, path) in [
            ("root", &self.root),
            ("state", &self.state),
            ("cgroup_root", &self.cgroup_root),
        ] {
            if !path.is_absolute() {
                return invalid(format!(
                    "{name} must be an absolute path, got {}",
                    path.display()
                ));
            }
        }
        if !self.systemd_bus.as_os_str().is_empty() && !self.systemd_bus.is_absolute() {
            return invalid(format!(
                "systemd_bus must be an absolute socket path, got {}",
                self.systemd_bus.display()
            ));
        }
        // <state>/pods/<64-hex pod id>/monitor.sock must fit a unix socket path (107 bytes).
        let longest_socket =
            self.state.as_os_str().len() + "/pods/".len() + 64 + "/monitor.sock".len();
        if longest_socket > 107 {
            return invalid(format!(
                "state {} is too long: pod monitor sockets under it would exceed the 107-byte unix socket path limit; use a path of at most {} bytes",
                self.state.display(),
                107 - (longest_socket - self.state.as_os_str().len())
            ));
        }
        let mut warnings = self.stream.validate()?;
        for (name, entry) in &self.runtimes {
            if name.is_empty() || name == "crius" {
                return invalid(format!(
                    "runtime handler name {name:?} is reserved for the built-in runtime"
                ));
            }
            if !entry.path.is_absolute() {
                return invalid(format!(
                    "runtimes.{name}.path must be absolute, got {}",
                    entry.path.display()
                ));
            }
            if !entry.path.exists() {
                warnings.push(format!(
                    "runtimes.{name}.path {} does not exist",
                    entry.path.display()
                ));
            }
        }
        Ok(warnings)
    }

    /// The socket path of `listen`, which must be `unix://` followed by an absolute path.
    pub fn socket_path(&self) -> Result<PathBuf, ConfigError> {
        let path = self.listen.strip_prefix("unix://").ok_or_else(|| {
            ConfigError::Invalid(format!(
                "listen must be unix:///absolute/path (crius never serves CRI over TCP), got {:?}",
                self.listen
            ))
        })?;
        if !path.starts_with('/') {
            return Err(ConfigError::Invalid(format!(
                "listen must name an absolute socket path, got {:?}",
                self.listen
            )));
        }
        Ok(PathBuf::from(path))
    }

    /// The options the domain runtime is opened with.
    pub fn runtime_options(&self) -> RuntimeOptions {
        RuntimeOptions {
            root: self.root.clone(),
            state: self.state.clone(),
            cgroup_root: self.cgroup_root.clone(),
            cgroup_driver: self.cgroup_driver,
            systemd_bus: Some(self.systemd_bus.clone()).filter(|p| !p.as_os_str().is_empty()),
            handlers: self
                .runtimes
                .iter()
                .map(|(name, e)| RuntimeHandlerConfig {
                    name: name.clone(),
                    path: Some(e.path.clone()),
                })
                .collect(),
            pod_cidr: Some(self.pod_cidr.clone()).filter(|c| !c.is_empty()),
            image: self.image_config(),
            monitor_binary: Some(PathBuf::from(&self.monitor_path))
                .filter(|p| !p.as_os_str().is_empty()),
            network: self.network.options(),
        }
    }

    fn image_config(&self) -> ImageConfig {
        ImageConfig {
            registries: self.registries.clone(),
            max_concurrent_downloads: self.image.max_concurrent_downloads,
            progress_min_bytes: self.image.progress_min_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips_through_toml() {
        let text = Config::default().to_toml();
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
        for key in [
            "root",
            "state",
            "listen",
            "cgroup_driver",
            "systemd_bus",
            "cgroup_root",
            "pod_cidr",
            "[log]",
            "level",
            "format",
            "[stream]",
            "address = \"127.0.0.1\"",
            "port = 0",
            "base_url",
            "token_ttl_seconds = 60",
            "idle_timeout_seconds = 14400",
            "tls_cert_file = \"\"",
            "tls_key_file = \"\"",
        ] {
            assert!(text.contains(key), "default config lacks {key}:\n{text}");
        }
    }

    #[test]
    fn empty_file_gives_defaults_and_partial_file_keeps_the_rest() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::parse("root = \"/data\"\n[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(c.root, PathBuf::from("/data"));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.state, Config::default().state);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::parse("roots = \"/x\"\n").unwrap_err().to_string();
        assert!(err.contains("roots"), "{err}");
        assert!(Config::parse("[log]\ncolour = true\n").is_err());
    }

    #[test]
    fn listen_must_be_an_absolute_unix_path() {
        let mut c = Config::default();
        assert_eq!(
            c.socket_path().unwrap(),
            PathBuf::from("/run/crius/crius.sock")
        );
        for bad in ["tcp://0.0.0.0:1234", "/run/x.sock", "unix://relative.sock"] {
            c.listen = bad.to_string();
            assert!(c.validate().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn runtime_handlers_are_checked() {
        let c = Config::parse("[runtimes.runc]\npath = \"/nonexistent/runc\"\n").unwrap();
        let warnings = c.validate().unwrap();
        assert!(warnings[0].contains("/nonexistent/runc"));
        let c = Config::parse("[runtimes.crius]\npath = \"/bin/true\"\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse("[runtimes.x]\npath = \"bin/true\"\n").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn stream_table_parses_and_converts() {
        let c = Config::parse(
            "[stream]\naddress = \"::1\"\nport = 10010\ntoken_ttl_seconds = 5\nidle_timeout_seconds = 0\n",
        )
        .unwrap();
        assert!(c.validate().unwrap().is_empty());
        let s = c.stream.server_config().unwrap();
        assert_eq!(s.addr, "[::1]:10010".parse().unwrap());
        assert_eq!(s.token_ttl, std::time::Duration::from_secs(5));
        assert_eq!(s.idle_timeout, None);
        assert_eq!(s.base_url, None);
        let d = Config::default().stream.server_config().unwrap();
        assert_eq!(d.addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(d.idle_timeout, Some(std::time::Duration::from_secs(14400)));
        assert_eq!(d.token_ttl, std::time::Duration::from_secs(60));
    }

    #[test]
    fn stream_table_refuses_bad_values_and_unknown_keys() {
        for bad in [
            "address = \"localhost\"",
            "token_ttl_seconds = 0",
            "base_url = \"https://node:10010\"",
            "base_url = \"http://\"",
        ] {
            let c = Config::parse(&format!("[stream]\n{bad}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("stream."), "{bad}: {err}");
        }
        assert!(Config::parse("[stream]\ntls_cert = \"/x\"\n").is_err());
        assert!(Config::parse("[stream]\nport = 70000\n").is_err());
    }

    #[test]
    fn stream_tls_files_go_together_and_switch_the_scheme() {
        for one in ["tls_cert_file = \"/c.pem\"", "tls_key_file = \"/k.pem\""] {
            let c = Config::parse(&format!("[stream]\n{one}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("must be set together"), "{one}: {err}");
        }
        let both = "[stream]\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\n";
        let c = Config::parse(both).unwrap();
        assert!(c.validate().unwrap().is_empty());
        let tls = c.stream.server_config().unwrap().tls.unwrap();
        assert_eq!(tls.cert, std::path::Path::new("/c.pem"));
        assert_eq!(tls.key, std::path::Path::new("/k.pem"));
        assert_eq!(Config::default().stream.server_config().unwrap().tls, None);
        let c = Config::parse(&format!("{both}base_url = \"http://node:10010\"\n")).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("https://"), "{err}");
        let c = Config::parse(&format!("{both}base_url = \"https://node:10010\"\n")).unwrap();
        assert!(c.validate().unwrap().is_empty());
    }

    #[test]
    fn wildcard_stream_address_without_base_url_warns() {
        let c = Config::parse("[stream]\naddress = \"0.0.0.0\"\n").unwrap();
        let warnings = c.validate().unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("base_url")),
            "{warnings:?}"
        );
        let c = Config::parse(
            "[stream]\naddress = \"0.0.0.0\"\nbase_url = \"http://10.0.0.5:10010\"\n",
        )
        .unwrap();
        assert!(c.validate().unwrap().is_empty());
        assert_eq!(
            c.stream.server_config().unwrap().base_url.as_deref(),
            Some("http://10.0.0.5:10010")
        );
    }
}

//! Loading the network configuration from the CNI conf dir.
//!
//! Like libcni, the lexically first file with a `.conf`, `.conflist` or `.json` extension
//! wins; a `.conf`/`.json` file holding a single plugin becomes a list of one. The file is
//! not skipped when it is broken: a broken first file is an error, so that a typo never
//! silently selects another network.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Largest config file read; real ones are a few hundred bytes.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A network configuration list, as used for one pod.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NetworkConfigList {
    /// The file it came from.
    pub(crate) source: PathBuf,
    /// The network name.
    pub(crate) name: String,
    /// The CNI spec version of the list.
    pub(crate) cni_version: String,
    /// `disableCheck` of the list.
    pub(crate) disable_check: bool,
    /// The plugin configurations, each with a string `type`.
    pub(crate) plugins: Vec<Map<String, Value>>,
}

/// Returns the lexically first config file in `dir`, or `None` when there is none.
pub(crate) fn first_config_file(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read cni conf dir", dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read cni conf dir", dir, e))?;
        let path = entry.path();
        let wanted = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("conf" | "conflist" | "json")
        );
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files.into_iter().next())
}

/// Loads the lexically first config of `dir`.
pub(crate) fn load_first(dir: &Path) -> Result<NetworkConfigList> {
    let path = first_config_file(dir)?.ok_or_else(|| Error::NoConfig {
        dir: dir.to_owned(),
    })?;
    load_file(&path)
}

/// Loads one config file.
pub(crate) fn load_file(path: &Path) -> Result<NetworkConfigList> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("stat cni config", path, e))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(invalid(
            path,
            format!("larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io("read cni config", path, e))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(path, format!("not valid json: {e}")))?;
    parse(path, value)
}

fn invalid(path: &Path, reason: String) -> Error {
    Error::InvalidConfig {
        path: path.to_owned(),
        reason,
    }
}

/// Turns a parsed file (a list, or a single plugin) into a [`NetworkConfigList`].
pub(crate) fn parse(path: &Path, value: Value) -> Result<NetworkConfigList> {
    let Value::Object(mut top) = value else {
        return Err(invalid(path, "top level must be a json object".into()));
    };
    let name = string_field(path, &top, "name")?;
    let cni_version = match top.get("cniVersion") {
        None => "0.2.0".to_owned(),
        Some(Value::String(v)) => v.clone(),
        Some(_) => return Err(invalid(path, "cniVersion must be a string".into())),
    };
    let disable_check = matches!(top.get("disableCheck"), Some(Value::Bool(true)));
    let plugins = match top.remove("plugins") {
        Some(Value::Array(list)) => {
            let mut plugins = Vec::with_capacity(list.len());
            for (i, p) in list.into_iter().enumerate() {
                let Value::Object(p) = p else {
                    return Err(invalid(path, format!("plugins[{i}] must be an object")));
                };
                plugins.push(p);
            }
            plugins
        }
        Some(_) => return Err(invalid(path, "plugins must be an array".into())),
        None if top.contains_key("type") => vec![top],
        None => return Err(invalid(path, "has neither plugins nor type".into())),
    };
    if plugins.is_empty() {
        return Err(invalid(path, "plugins is empty".into()));
    }
    for (i, p) in plugins.iter().enumerate() {
        let ty = string_field(path, p, "type")
            .map_err(|_| invalid(path, format!("plugins[{i}] has no string type")))?;
        if ty.contains('/') || ty.starts_with('.') {
            return Err(invalid(
                path,
                format!("plugin type {ty:?} must be a plain file name"),
            ));
        }
    }
    Ok(NetworkConfigList {
        source: path.to_owned(),
        name,
        cni_version,
        disable_check,
        plugins,
    })
}

fn string_field(path: &Path, obj: &Map<String, Value>, key: &str) -> Result<String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(invalid(path, format!("{key} must be a non-empty string"))),
    }
}

impl NetworkConfigList {
    /// The `type` of plugin `i`.
    pub(crate) fn plugin_type(&self, i: usize) -> &str {
        self.plugins
            .get(i)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The list as json, for the cache.
    pub(crate) fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "cniVersion": self.cni_version,
            "disableCheck": self.disable_check,
            "plugins": self.plugins,
        })
    }

    /// Whether CHECK and prevResult-on-DEL exist in this spec version (0.4.0 and later).
    pub(crate) fn has_check(&self) -> bool {
        version_at_least(&self.cni_version, (0, 4, 0))
    }
}

/// Compares a dotted version to `min`; unparsable versions count as old.
pub(crate) fn version_at_least(version: &str, min: (u32, u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let mut next = || parts.next().flatten().unwrap_or(0);
    (next(), next(), next()) >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexically_first_config_wins_and_other_extensions_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20-b.conflist"), "{}").unwrap();
        std::fs::write(dir.path().join("10-a.conf"), "{}").unwrap();
        std::fs::write(dir.path().join("00-x.txt"), "{}").unwrap();
        let first = first_config_file(dir.path()).unwrap().unwrap();
        assert_eq!(first.file_name().unwrap(), "10-a.conf");
    }

    #[test]
    fn single_plugin_conf_becomes_a_list_of_one() {
        let v = serde_json::json!({"cniVersion":"0.4.0","name":"n","type":"bridge"});
        let list = parse(Path::new("/x.conf"), v).unwrap();
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugin_type(0), "bridge");
        assert!(list.has_check());
    }

    #[test]
    fn plugin_type_with_a_slash_is_refused() {
        let v = serde_json::json!({"name":"n","plugins":[{"type":"../../bin/sh"}]});
        let err = parse(Path::new("/x.conflist"), v).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
    }

    #[test]
    fn bad_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-a.conflist"), "{not json").unwrap();
        let err = load_first(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("10-a.conflist") && err.contains("not valid json"),
            "{err}"
        );
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
        assert!(!version_at_least("garbage", (0, 4, 0)));
    }
}

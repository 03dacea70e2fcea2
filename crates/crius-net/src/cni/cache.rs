//! The on-disk record of each ADD: the exact config and arguments used and the result, so
//! DEL and CHECK after a daemon restart run with what ADD ran with.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fsutil::{remove_if_exists, write_atomic};

/// Format marker of a cache file; bumped when the layout changes.
const CACHE_VERSION: u32 = 1;

/// One pod's cached ADD.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CacheEntry {
    /// Layout version.
    pub(crate) version: u32,
    /// The pod (CNI container id).
    pub(crate) pod_id: String,
    /// `CNI_IFNAME`.
    pub(crate) ifname: String,
    /// `CNI_NETNS` at ADD time.
    pub(crate) netns: PathBuf,
    /// `CNI_ARGS` at ADD time.
    pub(crate) cni_args: String,
    /// The config file the list came from.
    pub(crate) source: PathBuf,
    /// The network config list, as used.
    pub(crate) config: Value,
    /// The full runtimeConfig offered to plugins (each got the part its capabilities ask).
    pub(crate) runtime_config: Value,
    /// The final result of the chain.
    pub(crate) result: Value,
}

/// The cache file of `pod_id` (already validated as a file name).
pub(crate) fn path(cache_dir: &Path, pod_id: &str) -> PathBuf {
    cache_dir.join(format!("{pod_id}.json"))
}

/// Writes `entry` atomically.
pub(crate) fn write(cache_dir: &Path, entry: &CacheEntry) -> Result<()> {
    let p = path(cache_dir, &entry.pod_id);
    let data = serde_json::to_vec_pretty(entry).map_err(|e| Error::CorruptState {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    write_atomic(&p, &data)
}

/// Reads the entry of `pod_id`, `None` when there is none.
pub(crate) fn read(cache_dir: &Path, pod_id: &str) -> Result<Option<CacheEntry>> {
    let p = path(cache_dir, pod_id);
    let data = match std::fs::read(&p) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read cni cache", &p, e)),
    };
    let entry: CacheEntry = serde_json::from_slice(&data).map_err(|e| Error::CorruptState {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    if entry.version != CACHE_VERSION || entry.pod_id != pod_id {
        return Err(Error::CorruptState {
            path: p,
            reason: format!(
                "version {} for pod {:?}, expected version {CACHE_VERSION} for {pod_id:?}",
                entry.version, entry.pod_id
            ),
        });
    }
    Ok(Some(entry))
}

/// The pods with an entry (temporary files of an interrupted write are not entries).
pub(crate) fn pods(cache_dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(cache_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list cni cache", cache_dir, e)),
    };
    let mut pods: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .filter(|id| crate::types::validate_pod_id(id).is_ok())
        .collect();
    pods.sort();
    Ok(pods)
}

/// Removes the entry of `pod_id`; a missing entry is fine.
pub(crate) fn remove(cache_dir: &Path, pod_id: &str) -> Result<()> {
    remove_if_exists(&path(cache_dir, pod_id))
}

impl CacheEntry {
    /// A new entry in the current layout.
    pub(crate) fn new(pod_id: &str, ifname: &str, netns: &Path, cni_args: &str) -> Self {
        CacheEntry {
            version: CACHE_VERSION,
            pod_id: pod_id.to_owned(),
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
            cni_args: cni_args.to_owned(),
            source: PathBuf::new(),
            config: Value::Null,
            runtime_config: Value::Null,
            result: Value::Null,
        }
    }
}

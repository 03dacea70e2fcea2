//! `update_pod_resources`: the pod-level resources kubelet computed (overhead plus the
//! sum of its containers), recorded in the pod record's spec.
//!
//! They are recorded only, never applied: kubelet owns and sizes the pod-level cgroup
//! under its cgroup parent itself, and the `/crius/<id>` parent crius creates when kubelet
//! gives none carries no limits of its own (each container's cgroup carries them).

use crate::container::config::Resources;
use crate::error::Result;
use crate::runtime::Runtime;

impl Runtime {
    /// Records pod `id`'s `overhead` and `resources` in its spec under `linuxResources`.
    pub fn update_pod_resources(
        &self,
        id: &str,
        overhead: Option<&Resources>,
        resources: Option<&Resources>,
    ) -> Result<()> {
        let mut record = self.find_pod(id)?;
        let json = |r: Option<&Resources>| -> Result<serde_json::Value> {
            Ok(match r {
                Some(r) => {
                    serde_json::to_value(crate::container::spec::limits(r)?).unwrap_or_default()
                }
                None => serde_json::Value::Null,
            })
        };
        let value = serde_json::json!({
            "overhead": json(overhead)?,
            "resources": json(resources)?,
        });
        if let Some(spec) = record.spec.as_object_mut() {
            spec.insert("linuxResources".to_string(), value);
        } else {
            record.spec = serde_json::json!({ "linuxResources": value });
        }
        let txn = self.store().write()?;
        txn.pods().update(&record)?;
        txn.commit()?;
        tracing::info!(pod_id = %record.id, "pod resources recorded");
        Ok(())
    }
}

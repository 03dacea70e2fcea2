//! `create_container`: resolve the image, prepare and mount the writable rootfs, build
//! the OCI spec, have the pod's monitor create the process, record it. Every step taken is
//! undone if a later one fails.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use crius_monitor::protocol::{CreateContainer, RuntimeChoice};
use crius_monitor::MonitorClient;
use crius_store::{
    ContainerMetadata, ContainerRecord, ContainerState, ImageVolumeSummary, PodRecord, PodState,
    SpecSummary, IMAGE_VOLUMES_ANNOTATION, STOP_SIGNAL_ANNOTATION,
};

use super::config::ContainerConfig;
use super::spec::{build_spec, ImageConfig, PodContext, SpecInput};
use crate::error::{Error, Result};
use crate::pod::config::IdMapping;
use crate::pod::remove::MONITOR_TIMEOUT;
use crate::rollback::Rollback;
use crate::runtime::{new_id, now_ns, Runtime};

impl Runtime {
    /// Creates a container in pod `pod_id` and returns its id. A retry with the same
    /// metadata while the first call runs gets the first call's answer.
    pub fn create_container(&self, pod_id: &str, config: ContainerConfig) -> Result<String> {
        let pod = self.find_pod(pod_id)?;
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod {} is not ready (stopped); containers can only be created in a ready pod",
                pod.id
            )));
        }
        let key = ContainerMetadata {
            name: config.name.clone(),
            attempt: config.attempt,
        };
        self.container_creates.run((pod.id.clone(), key.clone()), || {
            if let Some(existing) = self.store().read()?.container_by_key(&pod.id, &key)? {
                return Err(Error::AlreadyExists(format!(
                    "container {:?} attempt {} already exists in pod {} as {}; remove it or use a new attempt",
                    key.name, key.attempt, pod.id, existing.id
                )));
            }
            self.create_in_pod(&pod, &config)
        })
    }

    fn create_in_pod(&self, pod: &PodRecord, config: &ContainerConfig) -> Result<String> {
        let image = self.images().status(&config.image)?.ok_or_else(|| {
            Error::NotFound(format!(
                "image {:?} is not present; pull it first",
                config.image
            ))
        })?;
        let log_path = log_path(pod, &config.log_path)?;
        let id = new_id();
        let mut rollback = Rollback::default();
        let bundle = self.pod_dir(&pod.id).join("containers").join(&id);
        let rootfs = bundle.join("rootfs");
        let mappings = crate::pod::status::stored_mappings(pod);
        let user_ns = mappings.is_some();
        crate::runtime::create_private_dir(&bundle, crate::runtime::bundle_dir_mode(user_ns))
            .and_then(|()| {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&rootfs)
                    .map_err(|e| Error::io(format!("create {}", rootfs.display()), e))
            })?;
        let undo_bundle = bundle.clone();
        rollback.push("remove bundle", move || {
            fs::remove_dir_all(&undo_bundle).map_err(|e| e.to_string())
        });

        self.images().prepare_rootfs(&id, &image.id.to_string())?;
        let images = self.images_handle();
        let undo_id = id.clone();
        rollback.push("remove rootfs snapshot", move || {
            images
                .remove_rootfs(&undo_id)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        match &mappings {
            None => self.images().mount_rootfs(&id, &rootfs)?,
            Some((uids, gids)) => self.mount_rootfs_idmapped(pod, &id, &rootfs, uids, gids)?,
        }
        let images = self.images_handle();
        let undo_rootfs = rootfs.clone();
        rollback.push("unmount rootfs", move || {
            super::lifecycle::unmount_rootfs(&images, &undo_rootfs).map_err(|e| e.to_string())
        });

        let image_config = ImageConfig::from_json(&image.config);
        // The image's VOLUMEs that no CRI mount covers become private directories of the
        // writable layer, created without ever following a symlink out of the rootfs.
        super::volumes::create(&rootfs, &super::spec::volumes(config, &image_config))?;
        let mut config = config.clone();
        let image_volumes =
            self.mount_image_volumes(pod, user_ns, &id, &bundle, &mut config, &mut rollback)?;
        let config = &config;
        let spec = build_spec(&SpecInput {
            config,
            image: &image_config,
            rootfs: &rootfs,
            pod: &self.pod_context(pod),
            defaults: &self.spec_defaults(),
            host_capabilities: &super::caps::host_capabilities(),
            cgroups_path: self
                .cgroup_driver()
                .container_cgroups_path(&pod.cgroup_parent, &id),
        })?;
        if let Some(dir) = log_path.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create log directory {}", dir.display()), e))?;
        }
        let runtime = match self.handler(&pod.runtime_handler)? {
            None => RuntimeChoice::Builtin,
            Some(path) => RuntimeChoice::Binary { path },
        };
        let mut spec_json = serde_json::to_value(&spec).unwrap_or_default();
        if let (Some(signal), Some(spec)) = (&image_config.stop_signal, spec_json.as_object_mut()) {
            // Kept for StopContainer, which must send the image's StopSignal.
            let annotations = spec
                .entry("annotations")
                .or_insert_with(|| serde_json::json!({}));
            annotations[STOP_SIGNAL_ANNOTATION] = serde_json::Value::String(signal.clone());
        }
        if let (false, Some(spec)) = (image_volumes.is_empty(), spec_json.as_object_mut()) {
            // Kept for ContainerStatus, which reports which mounts are images.
            let annotations = spec
                .entry("annotations")
                .or_insert_with(|| serde_json::json!({}));
            annotations[IMAGE_VOLUMES_ANNOTATION] = serde_json::Value::String(
                serde_json::to_string(&image_volumes).unwrap_or_default(),
            );
        }
        let mut monitor = MonitorClient::connect(&pod.monitor_socket, MONITOR_TIMEOUT)?;
        let pid = monitor.create(CreateContainer {
            id: id.clone(),
            bundle: bundle.clone(),
            spec,
            log_path: log_path.clone(),
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            tty: config.tty,
            runtime,
        })?;
        let socket = pod.monitor_socket.clone();
        let undo_id = id.clone();
        rollback.push("remove container from monitor", move || {
            MonitorClient::connect(&socket, MONITOR_TIMEOUT)
                .and_then(|mut m| {
                    m.stop(&undo_id, std::time::Duration::ZERO, 9)
                        .and_then(|()| m.remove(&undo_id))
                })
                .map_err(|e| e.to_string())
        });

        let record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            metadata: ContainerMetadata {
                name: config.name.clone(),
                attempt: config.attempt,
            },
            image: config.image.clone(),
            image_ref: image.id.to_string(),
            state: ContainerState::Created,
            created_at_ns: now_ns(),
            pid: u32::try_from(pid).ok(),
            log_path: log_path.display().to_string(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            snapshot_key: format!("container-{id}"),
            spec_summary: SpecSummary::of(&spec_json),
            ..ContainerRecord::default()
        };
        let txn = self.store().write()?;
        txn.insert_container(&record, &spec_json)?;
        txn.commit()?;
        rollback.disarm();
        self.events()
            .publish(&record, crate::events::ContainerEventKind::Created);
        tracing::info!(container_id = %id, pod_id = %pod.id, name = %config.name, "container created");
        Ok(id)
    }

    /// Mounts the rootfs of a container of user-namespaced `pod`: the pod's root is an
    /// unprivileged host uid, so the image's layers are id-mapped through the pod's user
    /// namespace (its root owns what the image's root owns) and the writable layer's top
    /// directory is given to the pod's root (what the container writes keeps its ids).
    fn mount_rootfs_idmapped(
        &self,
        pod: &PodRecord,
        id: &str,
        rootfs: &Path,
        uids: &[IdMapping],
        gids: &[IdMapping],
    ) -> Result<()> {
        let mounts = self.images().rootfs_mounts(id)?;
        let (Some(upper), Some(work)) = (mounts.upper_path(), mounts.work.as_ref()) else {
            return Err(Error::FailedPrecondition(format!(
                "container {id}: its rootfs snapshot has no writable layer"
            )));
        };
        let root_of = |maps: &[IdMapping]| {
            IdMapping::host_id_of(maps, 0).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "pod {}: its user namespace maps no host id to the container's root (0)",
                    pod.id
                ))
            })
        };
        std::os::unix::fs::chown(&upper, Some(root_of(uids)?), Some(root_of(gids)?))
            .map_err(|e| Error::io(format!("chown {}", upper.display()), e))?;
        let lowers: Vec<PathBuf> = mounts.lowers.iter().map(|l| mounts.base.join(l)).collect();
        crius_monitor::mounts::mount_layers_idmapped(
            &lowers,
            Some((&upper, &mounts.base.join(work))),
            rootfs,
            &self.pod_dir(&pod.id).join("ns").join("user"),
        )?;
        Ok(())
    }

    /// Mounts each image volume of `config` read-only under `bundle/volumes/<n>` and
    /// points its mount there (at its sub path), undone by `rollback` on failure. In a pod
    /// with a user namespace (`user_ns`) the volume's layers are id-mapped through it.
    fn mount_image_volumes(
        &self,
        pod: &PodRecord,
        user_ns: bool,
        id: &str,
        bundle: &Path,
        config: &mut ContainerConfig,
        rollback: &mut Rollback,
    ) -> Result<Vec<ImageVolumeSummary>> {
        let mut summaries = Vec::new();
        for (index, mount) in config.mounts.iter_mut().enumerate() {
            let Some(volume) = &mount.image else { continue };
            if self.images().status(&volume.image)?.is_none() {
                return Err(Error::NotFound(format!(
                    "image {:?} of the image volume at {} is not present; pull it first",
                    volume.image,
                    mount.container_path.display()
                )));
            }
            if summaries.is_empty() {
                let images = self.images_handle();
                let undo_id = id.to_string();
                rollback.push("remove image volume snapshots", move || {
                    images
                        .remove_image_volumes(&undo_id)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                });
            }
            self.images()
                .prepare_image_volume(id, index, &volume.image)?;
            let mode = crate::runtime::bundle_dir_mode(user_ns);
            let target = bundle.join("volumes").join(index.to_string());
            crate::runtime::create_private_dir(&bundle.join("volumes"), mode)?;
            crate::runtime::create_private_dir(&target, mode)?;
            if user_ns {
                // Id-mapped here, layer by layer (an overlay cannot be id-mapped as a
                // whole): the bind into the container needs no mapping of its own.
                let mounts = self.images().image_volume_mounts(id, index)?;
                let lowers: Vec<PathBuf> =
                    mounts.lowers.iter().map(|l| mounts.base.join(l)).collect();
                crius_monitor::mounts::mount_layers_idmapped(
                    &lowers,
                    None,
                    &target,
                    &self.pod_dir(&pod.id).join("ns").join("user"),
                )?;
                mount.uid_mappings.clear();
                mount.gid_mappings.clear();
            } else {
                self.images().mount_image_volume(id, index, &target)?;
            }
            let images = self.images_handle();
            let undo_target = target.clone();
            rollback.push("unmount image volume", move || {
                images
                    .unmount_rootfs(&undo_target)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            super::volumes::check_image_sub_path(&target, volume, &mount.container_path)?;
            mount.host_path = target.join(&volume.sub_path);
            mount.readonly = true;
            summaries.push(ImageVolumeSummary {
                destination: mount.container_path.display().to_string(),
                image: volume.image.clone(),
                sub_path: volume.sub_path.display().to_string(),
            });
        }
        Ok(summaries)
    }

    /// The namespaces and files of `pod` its containers share.
    fn pod_context(&self, pod: &PodRecord) -> PodContext {
        let dir = self.pod_dir(&pod.id);
        let ns = pod.namespace_options;
        let pin = |name: &str, wanted: bool| wanted.then(|| dir.join("ns").join(name));
        let user_ns = dir.join("ns/user");
        let mappings = crate::pod::status::stored_mappings(pod);
        PodContext {
            pod_id: pod.id.clone(),
            hostname: pod.hostname.clone(),
            network_ns: pin("net", !ns.host_network),
            ipc_ns: pin("ipc", !ns.host_ipc),
            uts_ns: pin("uts", !ns.host_network),
            pid_ns: pin("pid", ns.share_pid && !ns.host_pid),
            user_ns: mappings.is_some().then_some(user_ns),
            uid_mappings: mappings.as_ref().map(|m| m.0.clone()).unwrap_or_default(),
            gid_mappings: mappings.map(|m| m.1).unwrap_or_default(),
            host_network: ns.host_network,
            host_pid: ns.host_pid,
            host_ipc: ns.host_ipc,
            resolv_conf: Some(dir.join("resolv.conf")),
            hostname_file: Some(dir.join("hostname")),
            hosts_file: Some(dir.join("hosts")),
            shm: if ns.host_ipc {
                None
            } else {
                crate::pod::shm::pod_shm(&dir)
            },
            privileged: pod
                .spec
                .get("privileged")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        }
    }
}

/// The container's log file: kubelet's path relative to the pod's log directory, which it
/// must not leave (no absolute path, no `..`).
fn log_path(pod: &PodRecord, relative: &str) -> Result<PathBuf> {
    if relative.is_empty() {
        // No log requested: keep the output beside the bundle so nothing is lost.
        return Ok(PathBuf::from("/dev/null"));
    }
    let rel = Path::new(relative);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::InvalidArgument(format!(
            "log_path {relative:?} must be relative to the pod's log directory without '..'"
        )));
    }
    if pod.log_directory.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "log_path {relative:?} given but the pod has no log_directory"
        )));
    }
    Ok(Path::new(&pod.log_directory).join(rel))
}

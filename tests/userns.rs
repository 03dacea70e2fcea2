//! User-namespaced pods end to end (`userns_options` mode POD, kubelet's
//! `hostUsers: false`): the container's root is an unprivileged host uid, and a volume
//! kubelet sends with the pod's mappings is id-mapped so the pod sees its real owners
//! and writes files the host sees as its own. Needs root.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use std::os::unix::fs::MetadataExt;

use common::{container_config, create_with, exec, run_pod_with, setup, start};
use crius::api;
use tonic::Code;

const HOST_BASE: u32 = 1_200_000;
const LENGTH: u32 = 65536;

fn pod_mapping() -> Vec<api::IdMapping> {
    vec![api::IdMapping {
        host_id: HOST_BASE,
        container_id: 0,
        length: LENGTH,
    }]
}

fn userns_pod(config: &mut api::PodSandboxConfig) {
    config.linux = Some(api::LinuxPodSandboxConfig {
        security_context: Some(api::LinuxSandboxSecurityContext {
            namespace_options: Some(api::NamespaceOption {
                userns_options: Some(api::UserNamespace {
                    mode: api::NamespaceMode::Pod as i32,
                    uids: pod_mapping(),
                    gids: pod_mapping(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
}

fn bind(container_path: &str, host: &std::path::Path, mapped: bool) -> api::Mount {
    api::Mount {
        container_path: container_path.into(),
        host_path: host.display().to_string(),
        uid_mappings: if mapped { pod_mapping() } else { vec![] },
        gid_mappings: if mapped { pod_mapping() } else { vec![] },
        ..Default::default()
    }
}

#[tokio::test]
async fn a_user_namespaced_pod_sees_id_mapped_volumes_as_their_owners_see_them() {
    let Some(mut s) = setup("userns").await else {
        return;
    };
    // A volume as kubelet makes it: a directory and a file owned by the host's root.
    let volume = s.layout.scratch.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("config"), "from the host\n").unwrap();

    let data = common::pull_data_image(&mut s).await;
    let mut sandbox = common::pod_config(&s.layout, "userns");
    userns_pod(&mut sandbox);
    let pod = run_pod_with(&mut s.client, &sandbox).await;
    let mut config = container_config(&s.image, "work", &["sleep", "300"]);
    config.mounts = vec![
        bind("/mapped", &volume, true),
        bind("/plain", &volume, false),
        // An image volume as kubelet sends it in such a pod: with the pod's mappings.
        api::Mount {
            container_path: "/tools".into(),
            image: Some(api::ImageSpec {
                image: s.image.clone(),
                ..Default::default()
            }),
            image_sub_path: "bin".into(),
            readonly: true,
            uid_mappings: pod_mapping(),
            gid_mappings: pod_mapping(),
            ..Default::default()
        },
        // A one-layer image volume: the mapped layer itself.
        api::Mount {
            container_path: "/models".into(),
            image: Some(api::ImageSpec {
                image: data,
                ..Default::default()
            }),
            readonly: true,
            uid_mappings: pod_mapping(),
            gid_mappings: pod_mapping(),
            ..Default::default()
        },
    ];
    config.linux = Some(api::LinuxContainerConfig {
        resources: Some(api::LinuxContainerResources {
            oom_score_adj: 500,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create_with(&mut s.client, &pod, &sandbox, config).await;
    start(&mut s.client, &id).await;

    let (code, out, err) = exec(&mut s.client, &id, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(code, 0, "{err}");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, ["0", &HOST_BASE.to_string(), &LENGTH.to_string()]);
    let pid = common::pid_of(&mut s.client, &id).await.unwrap();
    let host_uid = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
    assert_eq!(
        host_uid, HOST_BASE,
        "the container's root is not the mapped host uid"
    );

    // The parent wrote what a process in a user namespace cannot write itself.
    let (_, out, _) = exec(&mut s.client, &id, &["cat", "/proc/self/oom_score_adj"]).await;
    assert_eq!(out.trim(), "500");

    // The image's files are the pod root's (its layers are id-mapped), so the pod's
    // root can write where the image's root could; the host sees the pod's ids.
    let (_, out, _) = exec(
        &mut s.client,
        &id,
        &["stat", "-c", "%u:%g", "/bin/busybox", "/etc"],
    )
    .await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0:0", "0:0"]);
    let (code, _, err) = exec(&mut s.client, &id, &["mkdir", "/etc/made-here"]).await;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = exec(&mut s.client, &id, &["stat", "-c", "%u", "/etc/made-here"]).await;
    assert_eq!(out.trim(), "0");
    let rootfs = s
        .layout
        .state
        .join("pods")
        .join(&pod)
        .join("containers")
        .join(&id)
        .join("rootfs");
    let made = std::fs::metadata(rootfs.join("etc/made-here")).unwrap();
    assert_eq!((made.uid(), made.gid()), (HOST_BASE, HOST_BASE));

    // The image volume's layers are id-mapped too: the image's root owns its files.
    let (code, out, err) = exec(
        &mut s.client,
        &id,
        &["stat", "-c", "%u:%g", "/tools/busybox"],
    )
    .await;
    assert_eq!((code, out.trim()), (0, "0:0"), "{err}");
    let (code, _, _) = exec(&mut s.client, &id, &["/tools/busybox", "true"]).await;
    assert_eq!(code, 0);
    let (_, out, _) = exec(
        &mut s.client,
        &id,
        &["stat", "-c", "%u:%g", "/models/models/weights.bin"],
    )
    .await;
    assert_eq!(out.trim(), "0:0");
    for path in ["/tools/new", "/models/new"] {
        let (code, _, _) = exec(&mut s.client, &id, &["touch", path]).await;
        assert_ne!(code, 0, "{path} is writable");
    }

    // The pod's files are its root's: it may edit its /etc/hosts.
    let (_, out, _) = exec(
        &mut s.client,
        &id,
        &[
            "stat",
            "-c",
            "%u:%g",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/hostname",
        ],
    )
    .await;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0:0", "0:0", "0:0"]
    );
    let (code, _, err) = exec(
        &mut s.client,
        &id,
        &["sh", "-c", "echo 10.0.0.9 extra >> /etc/hosts"],
    )
    .await;
    assert_eq!(code, 0, "{err}");

    // Through the id-mapped mount the host's root owns the volume, as in the pod.
    let (_, out, _) = exec(
        &mut s.client,
        &id,
        &["stat", "-c", "%u:%g", "/mapped/config"],
    )
    .await;
    assert_eq!(out.trim(), "0:0");
    // Without mappings the host's root is nobody in the pod, and the pod's root has no
    // right to the directory.
    let (_, out, _) = exec(&mut s.client, &id, &["stat", "-c", "%u", "/plain/config"]).await;
    assert_eq!(out.trim(), "65534");
    let (code, _, _) = exec(&mut s.client, &id, &["touch", "/plain/denied"]).await;
    assert_ne!(
        code, 0,
        "the unmapped volume was writable by the pod's root"
    );
    assert!(!volume.join("denied").exists());

    // A file the pod's root writes through the mapping belongs to the host's root.
    let (code, _, err) = exec(&mut s.client, &id, &["touch", "/mapped/written"]).await;
    assert_eq!(code, 0, "{err}");
    let meta = std::fs::metadata(volume.join("written")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));

    // Status reports the mappings it was given.
    let status = common::status_of(&mut s.client, &id).await;
    let mapped = status
        .mounts
        .iter()
        .find(|m| m.container_path == "/mapped")
        .unwrap();
    assert_eq!(mapped.uid_mappings, pod_mapping());
    assert_eq!(mapped.gid_mappings, pod_mapping());
}

#[tokio::test]
async fn mount_mappings_without_a_user_namespace_or_half_given_are_refused() {
    let Some(mut s) = setup("userns-bad").await else {
        return;
    };
    let volume = s.layout.scratch.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    let sandbox = common::pod_config(&s.layout, "hostusers");
    let pod = run_pod_with(&mut s.client, &sandbox).await;
    let mut half = bind("/v", &volume, true);
    half.gid_mappings.clear();
    for (mount, needle) in [
        (bind("/v", &volume, true), "user namespace"),
        (half, "go together"),
    ] {
        let mut config = container_config(&s.image, "bad", &["sleep", "300"]);
        config.mounts = vec![mount];
        let err = common::create_refused(&mut s.client, &pod, Some(&sandbox), config).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(needle), "{}", err.message());
    }
}

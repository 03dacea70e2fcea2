//! Image volumes (CRI `Mount.image`, kubelet's `volumes[].image`) end to end: a real
//! criusd and registry. The image's merged layers appear read-only at the mount, a sub
//! path mounts only that part, hostile or missing sub paths and absent images are refused
//! with nothing left behind, and removal releases the mounts. Needs root.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use common::{container_config, create, exec, run_pod, setup, start, Daemon, Setup};
use crius::api;
use tonic::Code;

fn image_mount(container_path: &str, image: &str, sub_path: &str) -> api::Mount {
    api::Mount {
        container_path: container_path.into(),
        image: Some(api::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        readonly: true,
        ..Default::default()
    }
}

/// Mount points of this host whose path names an image volume of `layout`'s state.
fn volume_mounts(s: &Setup) -> Vec<String> {
    let state = s.layout.state.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&state) && m.contains("/volumes/"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn an_image_volume_shows_the_image_read_only_and_goes_with_its_container() {
    let Some(mut s) = setup("image-volume").await else {
        return;
    };
    let data = common::pull_data_image(&mut s).await;
    let (pod, sandbox) = run_pod(&mut s, "imgvol").await;
    let mut config = container_config(&s.image, "work", &["sleep", "300"]);
    config.mounts = vec![
        // The three-layer busybox image: an overlay of its layers.
        image_mount("/tools", &s.image, ""),
        // A sub path of it.
        image_mount("/tools-bin", &s.image, "bin"),
        // A one-layer image: a bind of its only layer.
        image_mount("/models", &data, ""),
    ];
    let id = create(&mut s, &pod, &sandbox, config).await;
    start(&mut s.client, &id).await;

    let (code, out, err) = exec(&mut s.client, &id, &["cat", "/models/models/weights.bin"]).await;
    assert_eq!((code, out.as_str()), (0, "0123456789"), "{err}");
    // The layers are merged as for a rootfs: the top layer's file, whiteouts applied.
    let (code, out, _) = exec(&mut s.client, &id, &["cat", "/tools/data/hello"]).await;
    assert_eq!((code, out.as_str()), (0, "hello from crius\n"));
    let (code, _, _) = exec(&mut s.client, &id, &["ls", "/tools/etc/removed"]).await;
    assert_ne!(code, 0, "a whited-out file shows through the image volume");
    let (code, _, _) = exec(&mut s.client, &id, &["/tools-bin/busybox", "true"]).await;
    assert_eq!(code, 0, "the sub path is not the image's bin");
    let (code, _, _) = exec(&mut s.client, &id, &["ls", "/tools-bin/data"]).await;
    assert_ne!(code, 0, "the sub path mount shows more than the sub path");

    // Read-only, whatever the writer; no set-id bits or device nodes take effect.
    for path in ["/tools/new", "/tools-bin/new", "/models/new"] {
        let (code, _, _) = exec(&mut s.client, &id, &["touch", path]).await;
        assert_ne!(code, 0, "{path} is writable");
    }
    let (_, mountinfo, _) = exec(&mut s.client, &id, &["cat", "/proc/self/mountinfo"]).await;
    for target in ["/tools", "/tools-bin", "/models"] {
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(target))
            .unwrap_or_else(|| panic!("{target} not mounted: {mountinfo}"));
        let options = line.split(' ').nth(5).unwrap();
        for flag in ["ro", "nosuid", "nodev"] {
            assert!(options.split(',').any(|o| o == flag), "{target}: {line}");
        }
    }
    assert_eq!(volume_mounts(&s).len(), 3);

    // Status reports which mounts are images.
    let status = common::status_of(&mut s.client, &id).await;
    let bin = status
        .mounts
        .iter()
        .find(|m| m.container_path == "/tools-bin")
        .unwrap();
    assert_eq!(
        bin.image.as_ref().map(|i| i.image.as_str()),
        Some(s.image.as_str())
    );
    assert_eq!(bin.image_sub_path, "bin");
    assert!(bin.readonly);

    // The image can be removed while in use: the volume keeps its layers.
    s.client
        .image
        .remove_image(api::RemoveImageRequest {
            image: Some(api::ImageSpec {
                image: data.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let (code, out, _) = exec(&mut s.client, &id, &["cat", "/models/models/weights.bin"]).await;
    assert_eq!((code, out.as_str()), (0, "0123456789"));

    s.client
        .runtime
        .stop_container(api::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    s.client
        .runtime
        .remove_container(api::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    assert!(volume_mounts(&s).is_empty(), "{:?}", volume_mounts(&s));
}

#[tokio::test]
async fn bad_image_volumes_are_refused_and_leave_nothing() {
    let Some(mut s) = setup("image-volume-bad").await else {
        return;
    };
    let (pod, sandbox) = run_pod(&mut s, "imgvolbad").await;
    let cases = [
        (
            image_mount("/v", "example.invalid/absent:1", ""),
            Code::NotFound,
            "pull it first",
        ),
        (
            image_mount("/v", &s.image, "no/such/dir"),
            Code::NotFound,
            "no such path",
        ),
        // /bin/sh is a link to busybox: a sub path may never follow a link of the image.
        (
            image_mount("/v", &s.image, "bin/sh"),
            Code::InvalidArgument,
            "symlink",
        ),
        (
            image_mount("/v", &s.image, "../etc"),
            Code::InvalidArgument,
            "inside the image",
        ),
        (
            image_mount("/v", &s.image, "/etc"),
            Code::InvalidArgument,
            "inside the image",
        ),
        (
            api::Mount {
                container_path: "/v".into(),
                host_path: "/tmp".into(),
                image_sub_path: "bin".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "only for image volumes",
        ),
    ];
    for (mount, code, needle) in cases {
        let mut config = container_config(&s.image, "bad", &["sleep", "300"]);
        // A good volume first, so a failure has something to undo.
        config.mounts = vec![image_mount("/ok", &s.image, ""), mount.clone()];
        let err = common::create_refused(&mut s.client, &pod, Some(&sandbox), config).await;
        assert_eq!(err.code(), code, "{mount:?}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{mount:?}: {}",
            err.message()
        );
        assert!(
            volume_mounts(&s).is_empty(),
            "{mount:?} left {:?}",
            volume_mounts(&s)
        );
    }
    let listed = s
        .client
        .runtime
        .list_containers(api::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn a_container_a_killed_daemon_never_recorded_is_released_at_start() {
    let Some(s) = setup("image-volume-stale").await else {
        return;
    };
    let Setup {
        layout,
        fixture: _fixture,
        daemon,
        mut client,
        image,
    } = s;
    let sandbox = common::pod_config(&layout, "stale");
    let pod = common::run_pod_with(&mut client, &sandbox).await;
    let mut config = container_config(&image, "work", &["sleep", "300"]);
    config.mounts = vec![image_mount("/tools", &image, "bin")];
    let id = common::create_with(&mut client, &pod, &sandbox, config).await;
    start(&mut client, &id).await;
    let pid = common::pid_of(&mut client, &id).await.unwrap();
    let bundle = layout
        .state
        .join("pods")
        .join(&pod)
        .join("containers")
        .join(&id);
    assert!(bundle.join("volumes/0").is_dir());
    drop(client);
    daemon.stop_with(nix::sys::signal::Signal::SIGKILL);

    // What a daemon killed inside CreateContainer leaves: a bundle, its mounts and
    // snapshots and maybe a process, but no record.
    // The daemon's own runtime, opened while no daemon runs, forgets it.
    let runtime = layout.open_runtime();
    let txn = runtime.store().write().unwrap();
    assert!(txn.containers().remove(&id).unwrap());
    txn.commit().unwrap();
    drop(runtime);

    let daemon = Daemon::start(&layout, &[]);
    assert!(!bundle.exists(), "the unrecorded bundle is still there");
    let state = layout.state.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains(&state) && l.contains(&id)),
        "mounts of {id} left: {mounts}"
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "process {pid} of {id} still runs"
    );
    let mut client = daemon.client().await;
    let listed = client
        .runtime
        .list_containers(api::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "{listed:?}");
}

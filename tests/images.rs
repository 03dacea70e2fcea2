//! ImageService end to end: a real criusd pulling from a real local registry.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use common::{Daemon, Layout, RegistryFixture};
use crius::api;
use tonic::Code;

fn spec(image: &str) -> Option<api::ImageSpec> {
    Some(api::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

#[tokio::test]
async fn pull_list_inspect_and_remove_like_crictl() {
    let layout = Layout::new("images");
    let fixture = RegistryFixture::start(&layout).await;
    let daemon = Daemon::start(&layout, &[]);
    let mut client = daemon.client().await;
    let image = fixture.image();

    let pulled = client
        .image
        .pull_image(api::PullImageRequest {
            image: spec(&image),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        pulled.image_ref.starts_with("sha256:"),
        "{}",
        pulled.image_ref
    );

    let list = client
        .image
        .list_images(api::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let found = list
        .images
        .iter()
        .find(|i| i.id == pulled.image_ref)
        .expect("pulled image listed");
    assert_eq!(found.repo_tags, std::slice::from_ref(&image));
    assert!(
        found.repo_digests[0].contains("@sha256:"),
        "{:?}",
        found.repo_digests
    );
    assert!(found.size > 0);

    let status = client
        .image
        .image_status(api::ImageStatusRequest {
            image: spec(&image),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.image.unwrap().id, pulled.image_ref);
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    assert!(
        info["chainIDs"].as_array().is_some_and(|c| c.len() == 3),
        "{info}"
    );

    // By id prefix, as crictl allows.
    let short = &pulled.image_ref["sha256:".len().."sha256:".len() + 12];
    let status = client
        .image
        .image_status(api::ImageStatusRequest {
            image: spec(short),
            verbose: false,
        })
        .await
        .unwrap();
    assert!(status.into_inner().image.is_some());

    let fs = client
        .image
        .image_fs_info(api::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.unwrap().value > 0);

    client
        .image
        .remove_image(api::RemoveImageRequest {
            image: spec(&image),
        })
        .await
        .unwrap();
    let status = client
        .image
        .image_status(api::ImageStatusRequest {
            image: spec(&image),
            verbose: false,
        })
        .await
        .unwrap();
    assert!(
        status.into_inner().image.is_none(),
        "image still present after removal"
    );
    // Removing again is not an error (CRI: idempotent).
    client
        .image
        .remove_image(api::RemoveImageRequest {
            image: spec(&image),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn pulling_an_absent_image_names_it() {
    let layout = Layout::new("images-absent");
    let fixture = RegistryFixture::start(&layout).await;
    let daemon = Daemon::start(&layout, &[]);
    let mut client = daemon.client().await;
    let missing = format!("{}/nothing-here:v1", fixture.registry.host());
    let err = client
        .image
        .pull_image(api::PullImageRequest {
            image: spec(&missing),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert!(err.message().contains("nothing-here"), "{}", err.message());
    let err = client
        .image
        .pull_image(api::PullImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

//! `runtime.v1.ImageService`: one line per RPC; conversions at the bottom.

use std::sync::Arc;

use crius_core::{Image, PullAuth, Runtime};
use tonic::{Request, Response, Status};

use super::{blocking, handle, CriError, Ids, ResponseStream};
use crate::api;
use crate::api::image_service_server::ImageService as Service;

/// Images per message of `StreamImages`: far below the 16 MiB gRPC limit even for images
/// with many tags.
const STREAM_BATCH: usize = 500;

/// The ImageService over the domain runtime.
#[derive(Debug, Clone)]
pub struct ImageService {
    runtime: Arc<Runtime>,
}

impl ImageService {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }
}

#[tonic::async_trait]
impl Service for ImageService {
    type StreamImagesStream = ResponseStream<api::StreamImagesResponse>;

    async fn list_images(
        &self,
        r: Request<api::ListImagesRequest>,
    ) -> Result<Response<api::ListImagesResponse>, Status> {
        let filter = r.into_inner().filter.and_then(|f| f.image).map(|i| i.image);
        handle("ListImages", Ids::default(), async {
            Ok(api::ListImagesResponse {
                images: self.list(filter).await?,
            })
        })
        .await
    }

    async fn stream_images(
        &self,
        r: Request<api::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let filter = r.into_inner().filter.and_then(|f| f.image).map(|i| i.image);
        handle("StreamImages", Ids::default(), async {
            let images = self.list(filter).await?;
            let batches: Vec<Result<api::StreamImagesResponse, Status>> = images
                .chunks(STREAM_BATCH)
                .map(|c| Ok(api::StreamImagesResponse { images: c.to_vec() }))
                .collect();
            Ok(Box::pin(tokio_stream::iter(batches)) as Self::StreamImagesStream)
        })
        .await
    }

    async fn image_status(
        &self,
        r: Request<api::ImageStatusRequest>,
    ) -> Result<Response<api::ImageStatusResponse>, Status> {
        let r = r.into_inner();
        let reference = r.image.map(|i| i.image).unwrap_or_default();
        handle(
            "ImageStatus",
            Ids {
                image: &reference,
                ..Ids::default()
            },
            async {
                let runtime = self.runtime.clone();
                let wanted = reference.clone();
                let found = blocking(move || {
                    runtime
                        .images()
                        .status(&wanted)
                        .map_err(|e| CriError::Core(e.into()))
                })
                .await?;
                let info = match (&found, r.verbose) {
                    (Some(image), true) => verbose_info(image),
                    _ => Default::default(),
                };
                Ok(api::ImageStatusResponse {
                    image: found.as_ref().map(image),
                    info,
                })
            },
        )
        .await
    }

    async fn pull_image(
        &self,
        r: Request<api::PullImageRequest>,
    ) -> Result<Response<api::PullImageResponse>, Status> {
        let r = r.into_inner();
        let reference = r.image.map(|i| i.image).unwrap_or_default();
        handle(
            "PullImage",
            Ids {
                image: &reference,
                ..Ids::default()
            },
            async {
                if reference.is_empty() {
                    return Err(CriError::InvalidArgument(
                        "image.image must name an image to pull".into(),
                    ));
                }
                let auth = r.auth.map(auth).unwrap_or_default();
                let pulled = self
                    .runtime
                    .images()
                    .pull(&reference, &auth)
                    .await
                    .map_err(crius_core::Error::from)?;
                Ok(api::PullImageResponse {
                    image_ref: pulled.image.id.to_string(),
                })
            },
        )
        .await
    }

    async fn remove_image(
        &self,
        r: Request<api::RemoveImageRequest>,
    ) -> Result<Response<api::RemoveImageResponse>, Status> {
        let reference = r.into_inner().image.map(|i| i.image).unwrap_or_default();
        handle(
            "RemoveImage",
            Ids {
                image: &reference,
                ..Ids::default()
            },
            async {
                if reference.is_empty() {
                    return Err(CriError::InvalidArgument(
                        "image.image must name the image to remove".into(),
                    ));
                }
                let runtime = self.runtime.clone();
                let wanted = reference.clone();
                blocking(move || {
                    runtime
                        .images()
                        .remove(&wanted)
                        .map_err(|e| CriError::Core(e.into()))
                })
                .await?;
                Ok(api::RemoveImageResponse {})
            },
        )
        .await
    }

    async fn image_fs_info(
        &self,
        _: Request<api::ImageFsInfoRequest>,
    ) -> Result<Response<api::ImageFsInfoResponse>, Status> {
        handle("ImageFsInfo", Ids::default(), async {
            let runtime = self.runtime.clone();
            let (images, containers) = blocking(move || {
                let images = runtime
                    .images()
                    .fs_usage()
                    .map_err(crius_core::Error::from)?;
                let containers = runtime
                    .images()
                    .container_fs_usage()
                    .map_err(crius_core::Error::from)?;
                Ok::<_, CriError>((images, containers))
            })
            .await?;
            Ok(api::ImageFsInfoResponse {
                image_filesystems: vec![filesystem_usage(&images)],
                container_filesystems: vec![filesystem_usage(&containers)],
            })
        })
        .await
    }
}

impl ImageService {
    async fn list(&self, filter: Option<String>) -> Result<Vec<api::Image>, CriError> {
        let runtime = self.runtime.clone();
        let images = blocking(move || {
            runtime
                .images()
                .list(filter.as_deref())
                .map_err(|e| CriError::Core(e.into()))
        })
        .await?;
        Ok(images.iter().map(image).collect())
    }
}

fn auth(a: api::AuthConfig) -> PullAuth {
    PullAuth {
        username: a.username,
        password: a.password,
        auth: a.auth,
        identity_token: a.identity_token,
        registry_token: a.registry_token,
    }
}

/// CRI `Image`: a numeric image user is reported as `uid`, a name as `username`.
fn image(i: &Image) -> api::Image {
    let user = i.username.split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(api::Int64Value { value: n }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    api::Image {
        id: i.id.to_string(),
        repo_tags: i.repo_tags.clone(),
        repo_digests: i.repo_digests.clone(),
        size: i.size,
        uid,
        username,
        spec: Some(api::ImageSpec {
            image: i.id.to_string(),
            ..Default::default()
        }),
        pinned: i.pinned,
    }
}

fn verbose_info(i: &Image) -> std::collections::HashMap<String, String> {
    let info = serde_json::json!({
        "imageSpec": i.config,
        "chainID": i.chain_ids.last().map(ToString::to_string),
        "chainIDs": i.chain_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "manifestDigest": i.manifest_digest.to_string(),
        "size": i.size,
    });
    std::collections::HashMap::from([("info".to_string(), info.to_string())])
}

fn filesystem_usage(u: &crius_core::FsUsage) -> api::FilesystemUsage {
    api::FilesystemUsage {
        timestamp: crius_core::now_ns(),
        fs_id: Some(api::FilesystemIdentifier {
            mountpoint: u.mountpoint.display().to_string(),
        }),
        used_bytes: Some(api::UInt64Value {
            value: u.used.bytes,
        }),
        inodes_used: Some(api::UInt64Value {
            value: u.used.inodes,
        }),
    }
}

//! `runtime.v1.ImageService`: answers Unimplemented until the image issue lands.

use tonic::{Request, Response, Status};

use super::{unimplemented, ResponseStream};
use crate::api;
use crate::api::image_service_server::ImageService as Service;

/// The ImageService.
#[derive(Debug, Clone, Default)]
pub struct ImageService {}

#[tonic::async_trait]
impl Service for ImageService {
    type StreamImagesStream = ResponseStream<api::StreamImagesResponse>;

    async fn list_images(
        &self,
        _: Request<api::ListImagesRequest>,
    ) -> Result<Response<api::ListImagesResponse>, Status> {
        unimplemented("ListImages").await
    }
    async fn stream_images(
        &self,
        _: Request<api::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        unimplemented("StreamImages").await
    }
    async fn image_status(
        &self,
        _: Request<api::ImageStatusRequest>,
    ) -> Result<Response<api::ImageStatusResponse>, Status> {
        unimplemented("ImageStatus").await
    }
    async fn pull_image(
        &self,
        _: Request<api::PullImageRequest>,
    ) -> Result<Response<api::PullImageResponse>, Status> {
        unimplemented("PullImage").await
    }
    async fn remove_image(
        &self,
        _: Request<api::RemoveImageRequest>,
    ) -> Result<Response<api::RemoveImageResponse>, Status> {
        unimplemented("RemoveImage").await
    }
    async fn image_fs_info(
        &self,
        _: Request<api::ImageFsInfoRequest>,
    ) -> Result<Response<api::ImageFsInfoResponse>, Status> {
        unimplemented("ImageFsInfo").await
    }
}

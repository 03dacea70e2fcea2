//! A CRI client over a unix socket, for the `crius` CLI, the bench tool and the tests;
//! with crius's own `Admin` service, served on the same socket.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::admin::wire::admin_client::AdminClient;
use crate::api::image_service_client::ImageServiceClient;
use crate::api::runtime_service_client::RuntimeServiceClient;

/// Both CRI services and crius's `Admin` service on one connection.
#[derive(Debug, Clone)]
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
    /// Image archive import/export and fsck; criusd only (not part of CRI).
    pub admin: AdminClient<Channel>,
}

/// The socket path of an endpoint given as `unix:///path` or a bare absolute path.
pub fn endpoint_path(endpoint: &str) -> Option<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    path.starts_with('/').then(|| PathBuf::from(path))
}

/// Connects to the CRI socket at `path`.
pub async fn connect(path: &Path) -> Result<CriClient, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by tonic but unused: every connection goes to the socket.
    let channel = Endpoint::from_static("http://crius.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await?;
    Ok(CriClient {
        runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
        image: ImageServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
        admin: AdminClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
    })
}

/// The largest message the client accepts; kubelet allows 16 MiB too.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

use crate::backend::{PortForwardRequest, StreamBackend};
use crate::session::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
pub(crate) const EXEC_PROTOCOLS: &[&str] = &["v4.channel.k8s.io"];
pub(crate) const PORT_FORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
pub(crate) async fn serve_exec<IO: AsyncRead + AsyncWrite + Send + 'static>(
    _io: IO,
    _p: &'static str,
    _b: Arc<dyn StreamBackend>,
    _c: Command,
    _t: Duration,
) {
}
pub(crate) async fn serve_port_forward<IO: AsyncRead + AsyncWrite + Send + 'static>(
    _io: IO,
    _b: Arc<dyn StreamBackend>,
    _r: PortForwardRequest,
    _t: Duration,
) {
}

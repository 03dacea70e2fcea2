//! crius-stream: the CRI streaming server for `exec`, `attach` and
//! `port-forward`.
//!
//! It owns the HTTP listener, the single-use tokens behind the URLs that the
//! CRI `Exec`/`Attach`/`PortForward` calls return, and the wire protocols
//! that kubelet, kubectl and crictl speak to those URLs: SPDY/3.1 with the
//! `v1`–`v4.channel.k8s.io` remotecommand and `portforward.k8s.io`
//! subprotocols, and WebSocket (RFC 6455) with `channel.k8s.io`,
//! `base64.channel.k8s.io`, `v4.channel.k8s.io`, `v5.channel.k8s.io` and
//! the `v4` port-forward framing. The work itself is done by a
//! [`StreamBackend`] that the daemon implements.
//!
//! It refuses to know about pods, containers or protobuf: requests arrive as
//! plain structs already validated for existence by the caller, and the
//! backend is opaque. With [`TlsFiles`] set it serves HTTPS: every
//! connection completes a TLS handshake (bounded by the request-head timeout)
//! before any HTTP is read, and the returned URLs start with `https://`.
//!
//! Threat model: every byte read from a connection is untrusted. Tokens
//! carry 128 bits from the kernel's random source, are single use, expire
//! (60 s by default) and are capped in number; any unknown, used or expired
//! token gets a bare 404. SPDY frames, zlib header blocks (inflated size
//! capped at 256 KiB, at most 1024 pairs) and WebSocket frames (messages
//! capped at 1 MiB, client frames must be masked) are parsed without
//! panicking on any input. A SPDY session holds at most 256 open client
//! streams and buffers at most 1 MiB per stream before it stops reading.
//! Request heads must arrive within 30 s and upgraded sessions end after an
//! idle period (4 h by default). A misbehaving peer only ends its own
//! connection, and the backend's future is dropped when its client leaves.
//!
//! [`client`] holds a small client for both protocols, for tests and tools.
//!
//! # Wiring
//!
//! ```no_run
//! use std::sync::Arc;
//! use crius_stream::{
//!     AttachRequest, BoxFuture, ExecRequest, PortStream, StreamBackend, StreamServer,
//!     StreamServerConfig, Streams,
//! };
//!
//! struct Daemon;
//!
//! impl StreamBackend for Daemon {
//!     fn exec(&self, req: ExecRequest, streams: Streams) -> BoxFuture<'_, crius_stream::Result<i32>> {
//!         Box::pin(async move { /* run req.cmd through the monitor */ Ok(0) })
//!     }
//!     fn attach(&self, req: AttachRequest, streams: Streams) -> BoxFuture<'_, crius_stream::Result<()>> {
//!         Box::pin(async move { Ok(()) })
//!     }
//!     fn port_forward(&self, pod_id: String, port: u16, stream: PortStream)
//!         -> BoxFuture<'_, crius_stream::Result<()>> {
//!         Box::pin(async move { Ok(()) })
//!     }
//! }
//!
//! # async fn wire() -> crius_stream::Result<()> {
//! let server = StreamServer::start(StreamServerConfig::default(), Arc::new(Daemon)).await?;
//! // In the CRI Exec handler, after checking the container is running:
//! let url = server.issue_exec(ExecRequest {
//!     container_id: "abc".into(),
//!     cmd: vec!["sh".into()],
//!     tty: true,
//!     stdin: true,
//!     stdout: true,
//!     stderr: false,
//! })?;
//! // Return `url` in ExecResponse; the client connects to it once.
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod backend;
pub mod client;
mod error;
mod idle;
mod server;
mod session;
pub mod spdy;
mod status;
mod token;
pub mod ws;

#[cfg(test)]
mod testutil;

pub use backend::{
    AttachRequest, BoxFuture, BoxReader, BoxWriter, ExecRequest, PortForwardRequest, PortStream,
    StreamBackend, Streams, TermSize,
};
pub use error::{Error, ErrorKind, Result};
pub use server::{StreamServer, StreamServerConfig, TlsFiles};

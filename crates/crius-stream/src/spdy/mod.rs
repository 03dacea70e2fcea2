//! SPDY/3 framing and sessions, as the Kubernetes `httpstream` clients speak
//! it after an `Upgrade: SPDY/3.1` handshake.

pub(crate) mod conn;
pub mod frame;
pub mod header;
pub(crate) mod serve;

/// Header naming the negotiated stream protocol.
pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

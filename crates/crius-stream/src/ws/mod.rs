//! WebSocket (RFC 6455) server side: handshake, message reader and the
//! Kubernetes channel protocols for exec, attach and port-forward.

pub mod frame;
pub(crate) mod serve;

use base64::Engine;
use bytes::BytesMut;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::{Error, Result};

/// The GUID RFC 6455 appends to the client key.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest message accepted from a client.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A complete message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

/// Reads messages from the client, answering pings and closes through `out`.
#[derive(Debug)]
pub(crate) struct Reader<R> {
    io: R,
    buf: BytesMut,
    out: mpsc::Sender<Vec<u8>>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub(crate) fn new(io: R, out: mpsc::Sender<Vec<u8>>) -> Self {
        Reader {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
            out,
        }
    }

    /// The next data message; `Ok(None)` once the client closed.
    pub(crate) async fn next(&mut self) -> Result<Option<Message>> {
        let mut partial: Option<(u8, Vec<u8>)> = None;
        loop {
            let Some(f) = self.frame().await? else {
                return Ok(None);
            };
            match f.opcode {
                frame::OP_PING => {
                    let mut pong = Vec::new();
                    frame::encode(&mut pong, true, frame::OP_PONG, &f.payload, None);
                    let _ = self.out.send(pong).await;
                }
                frame::OP_PONG => {}
                frame::OP_CLOSE => {
                    let mut close = Vec::new();
                    let code = f.payload.get(..2).unwrap_or(&[0x03, 0xe8]);
                    frame::encode(&mut close, true, frame::OP_CLOSE, code, None);
                    let _ = self.out.send(close).await;
                    return Ok(None);
                }
                frame::OP_CONTINUATION => {
                    let Some((op, mut data)) = partial.take() else {
                        return Err(Error::Protocol(
                            "websocket continuation without a start".into(),
                        ));
                    };
                    if data.len() + f.payload.len() > MAX_MESSAGE {
                        return Err(Error::Protocol("websocket message too long".into()));
                    }
                    data.extend_from_slice(&f.payload);
                    if f.fin {
                        return Ok(Some(message(op, data)));
                    }
                    partial = Some((op, data));
                }
                op => {
                    if partial.is_some() {
                        return Err(Error::Protocol("websocket message interleaved".into()));
                    }
                    if f.fin {
                        return Ok(Some(message(op, f.payload)));
                    }
                    partial = Some((op, f.payload));
                }
            }
        }
    }

    async fn frame(&mut self) -> Result<Option<frame::Frame>> {
        loop {
            match frame::parse(&self.buf, MAX_MESSAGE, true) {
                Ok(Some((f, used))) => {
                    let _ = self.buf.split_to(used);
                    return Ok(Some(f));
                }
                Ok(None) => {}
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

fn message(op: u8, data: Vec<u8>) -> Message {
    if op == frame::OP_TEXT {
        Message::Text(data)
    } else {
        Message::Binary(data)
    }
}

/// Writes encoded frames in order until every sender is dropped, then shuts
/// the connection down.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(mut io: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if io.write_all(&bytes).await.is_err() {
            return;
        }
        if rx.is_empty() && io.flush().await.is_err() {
            return;
        }
    }
    let _ = io.shutdown().await;
}

/// The server-side (unmasked) encoding of one data frame.
pub(crate) fn data_frame(binary: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    let op = if binary {
        frame::OP_BINARY
    } else {
        frame::OP_TEXT
    };
    frame::encode(&mut out, true, op, payload, None);
    out
}

/// A close frame with status 1000.
pub(crate) fn close_frame() -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(
        &mut out,
        true,
        frame::OP_CLOSE,
        &1000u16.to_be_bytes(),
        None,
    );
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}

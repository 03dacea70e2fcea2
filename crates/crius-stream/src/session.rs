//! Protocol-independent driver for exec and attach sessions.
//!
//! A protocol (SPDY or WebSocket) turns its wire streams into channels of
//! byte chunks; this module plumbs them to the backend's async readers and
//! writers, parses resize events and writes the final status.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backend::{AttachRequest, ExecRequest, StreamBackend, Streams, TermSize};
use crate::status;

/// Capacity of the in-memory pipes between the wire and the backend.
const PIPE_BYTES: usize = 64 * 1024;
/// Largest chunk read from a backend writer at once.
const CHUNK: usize = 32 * 1024;
/// Largest resize message buffered while waiting for its end.
const MAX_RESIZE_BUFFER: usize = 4096;

/// How long forwarded connections may drain after their client went away.
pub(crate) const GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What the session runs.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    Exec(ExecRequest),
    Attach(AttachRequest),
}

impl Command {
    pub(crate) fn flags(&self) -> (bool, bool, bool, bool) {
        match self {
            Command::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Command::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        }
    }
}

/// The wire side of a session: chunks from the client, senders to it.
/// A dropped sender closes that stream for the client.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub error: Option<mpsc::Sender<Bytes>>,
    pub resize: Option<mpsc::Receiver<Bytes>>,
}

/// Runs the command against the backend, copying the channels, then writes
/// the status (Status JSON when `json_status`, else plain text on failure).
/// When `gone` completes first (the client's connection ended) the backend
/// future is dropped: there is nobody left to report to.
pub(crate) async fn run(
    backend: Arc<dyn StreamBackend>,
    cmd: Command,
    ch: Channels,
    json_status: bool,
    gone: impl std::future::Future<Output = ()> + Send,
) {
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    let mut streams = Streams::default();
    if let Some(rx) = ch.stdin {
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        pumps.push(tokio::spawn(pump_in(rx, ours)));
        streams.stdin = Some(Box::new(theirs));
    }
    let mut out_pumps = Vec::new();
    if let Some(tx) = ch.stdout {
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        out_pumps.push(tokio::spawn(pump_out(ours, tx)));
        streams.stdout = Some(Box::new(theirs));
    }
    if let Some(tx) = ch.stderr {
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        out_pumps.push(tokio::spawn(pump_out(ours, tx)));
        streams.stderr = Some(Box::new(theirs));
    }
    if let Some(rx) = ch.resize {
        let (tx, sizes) = mpsc::channel(16);
        pumps.push(tokio::spawn(pump_resize(rx, tx)));
        streams.resize = Some(sizes);
    }
    let work = async {
        match cmd {
            Command::Exec(req) => match backend.exec(req, streams).await {
                Ok(0) => status::success(),
                Ok(code) => status::exit_code(code),
                Err(e) => status::failure(&e),
            },
            Command::Attach(req) => match backend.attach(req, streams).await {
                Ok(()) => status::success(),
                Err(e) => status::failure(&e),
            },
        }
    };
    let status = tokio::select! {
        biased;
        s = work => s,
        () = gone => {
            tracing::debug!("stream client went away; session cancelled");
            for p in pumps.into_iter().chain(out_pumps) {
                p.abort();
            }
            return;
        }
    };
    // Output drains once the backend dropped its writers.
    for p in out_pumps {
        let _ = p.await;
    }
    for p in pumps {
        p.abort();
    }
    if let Some(err) = ch.error {
        let body = if json_status {
            Some(status)
        } else {
            status::plain_message(&status).map(String::into_bytes)
        };
        if let Some(body) = body {
            let _ = err.send(Bytes::from(body)).await;
        }
    }
}

/// Copies chunks from the client into the backend's stdin pipe; closes the
/// pipe when the client closes its stdin.
async fn pump_in(mut rx: mpsc::Receiver<Bytes>, mut pipe: DuplexStream) {
    while let Some(chunk) = rx.recv().await {
        if pipe.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = pipe.shutdown().await;
}

/// Copies what the backend writes to the client until the backend closes.
async fn pump_out(mut pipe: DuplexStream, tx: mpsc::Sender<Bytes>) {
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK);
        match pipe.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(buf.freeze()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Parses a stream of JSON terminal sizes (possibly split or concatenated).
async fn pump_resize(mut rx: mpsc::Receiver<Bytes>, tx: mpsc::Sender<TermSize>) {
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = rx.recv().await {
        pending.extend_from_slice(&chunk);
        let (sizes, used) = parse_sizes(&pending);
        pending.drain(..used);
        if pending.len() > MAX_RESIZE_BUFFER {
            pending.clear();
        }
        for s in sizes {
            if tx.send(s).await.is_err() {
                return;
            }
        }
    }
}

/// Decodes complete JSON objects at the front of `buf`; returns the sizes and
/// how many bytes were consumed. Malformed input is skipped.
pub(crate) fn parse_sizes(buf: &[u8]) -> (Vec<TermSize>, usize) {
    let mut sizes = Vec::new();
    let mut iter = serde_json::Deserializer::from_slice(buf).into_iter::<TermSize>();
    let mut used = 0;
    loop {
        match iter.next() {
            Some(Ok(size)) => {
                sizes.push(size);
                used = iter.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                used = buf.len();
                break;
            }
            None => {
                used = buf.len();
                break;
            }
        }
    }
    (sizes, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_events_split_and_joined_are_decoded() {
        let (s, used) = parse_sizes(br#"{"Width":80,"Height":24}{"Width":100,"#);
        assert_eq!(
            s,
            vec![TermSize {
                width: 80,
                height: 24
            }]
        );
        assert_eq!(used, 24);
        let (s, _) = parse_sizes(b"{\"Width\":1,\"Height\":2}\n");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn malformed_resize_is_skipped() {
        let (s, used) = parse_sizes(b"garbage");
        assert!(s.is_empty());
        assert_eq!(used, 7);
    }
}

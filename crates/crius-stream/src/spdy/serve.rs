//! Kubernetes subprotocols over a SPDY session: remotecommand
//! (`channel.k8s.io`, `v2`–`v4.channel.k8s.io`) and `portforward.k8s.io`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conn::{Incoming, Session, StreamReader, StreamWriter};
use super::header;
use crate::backend::{PortForwardRequest, StreamBackend};
use crate::session::{self, Channels, Command};

/// remotecommand versions served over SPDY, preferred first.
pub(crate) const EXEC_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The port-forward protocol.
pub(crate) const PORT_FORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// How long the client gets to read the end of a session before we close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Turns a stream's incoming data into a bounded channel of chunks.
fn reader_channel(mut r: StreamReader) -> (mpsc::Receiver<Bytes>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(async move {
        while let Some(b) = r.recv().await {
            if tx.send(b).await.is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// A sender whose chunks are written to the stream, which is half-closed
/// when the sender is dropped.
fn writer_channel(w: StreamWriter) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let task = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if w.write(&b).await.is_err() {
                return;
            }
        }
        w.finish().await;
    });
    (tx, task)
}

/// Serves exec or attach: waits for the client's streams (named by their
/// `streamType` header), runs the session, then closes.
pub(crate) async fn serve_exec<IO>(
    io: IO,
    protocol: &'static str,
    backend: Arc<dyn StreamBackend>,
    cmd: Command,
    timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (sess, mut accept) = Session::start(io);
    let (stdin, stdout, stderr, tty) = cmd.flags();
    let resizable = tty && matches!(protocol, "v3.channel.k8s.io" | "v4.channel.k8s.io");
    let mut wanted: Vec<&str> = vec!["error"];
    for (on, name) in [
        (stdin, "stdin"),
        (stdout, "stdout"),
        (stderr && !tty, "stderr"),
        (resizable, "resize"),
    ] {
        if on {
            wanted.push(name);
        }
    }
    let Some(got) = wait_for_streams(&mut accept, &wanted, timeout).await else {
        sess.close(Duration::ZERO).await;
        return;
    };
    // Streams opened later are refused.
    drop(accept);
    let (ch, tasks, outs) = wire(got);
    session::run(
        backend,
        cmd,
        ch,
        protocol == "v4.channel.k8s.io",
        sess.gone(),
    )
    .await;
    for t in outs {
        let _ = t.await;
    }
    for t in tasks {
        t.abort();
    }
    sess.close(CLOSE_GRACE).await;
}

/// Collects the client's streams by `streamType` until every wanted one is
/// open; `None` on timeout or when the client goes away first.
async fn wait_for_streams(
    accept: &mut mpsc::Receiver<Incoming>,
    wanted: &[&str],
    timeout: Duration,
) -> Option<HashMap<String, Incoming>> {
    let mut got: HashMap<String, Incoming> = HashMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while wanted.iter().any(|w| !got.contains_key(*w)) {
        let Ok(Some(s)) = tokio::time::timeout_at(deadline, accept.recv()).await else {
            tracing::debug!(
                ?wanted,
                got = got.len(),
                "spdy exec client did not open its streams"
            );
            return None;
        };
        let kind = header::get(&s.headers, "streamtype")
            .unwrap_or("")
            .to_string();
        if wanted.contains(&kind.as_str()) && !got.contains_key(&kind) {
            got.insert(kind, s);
        } else {
            s.writer.reset(super::frame::RST_PROTOCOL_ERROR).await;
        }
    }
    Some(got)
}

/// Connects each stream to its session channel; returns the channels, the
/// input pump tasks and the output pump tasks.
fn wire(got: HashMap<String, Incoming>) -> (Channels, Vec<JoinHandle<()>>, Vec<JoinHandle<()>>) {
    let mut ch = Channels::default();
    let mut tasks = Vec::new();
    let mut outs = Vec::new();
    for (kind, s) in got {
        match kind.as_str() {
            "stdin" | "resize" => {
                let (rx, t) = reader_channel(s.reader);
                tasks.push(t);
                if kind == "stdin" {
                    ch.stdin = Some(rx);
                } else {
                    ch.resize = Some(rx);
                }
            }
            _ => {
                let (tx, t) = writer_channel(s.writer);
                outs.push(t);
                match kind.as_str() {
                    "stdout" => ch.stdout = Some(tx),
                    "stderr" => ch.stderr = Some(tx),
                    _ => ch.error = Some(tx),
                }
            }
        }
    }
    (ch, tasks, outs)
}

/// Data and error streams of one forwarded connection, paired by `requestID`.
#[derive(Debug, Default)]
struct Pair {
    data: Option<Incoming>,
    error: Option<Incoming>,
}

/// Serves port-forward: every (data, error) stream pair is one connection
/// to the `port` its headers name.
pub(crate) async fn serve_port_forward<IO>(
    io: IO,
    backend: Arc<dyn StreamBackend>,
    req: PortForwardRequest,
    timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (sess, mut accept) = Session::start(io);
    let mut pairs: HashMap<String, (Instant, Pair)> = HashMap::new();
    let mut running: Vec<JoinHandle<()>> = Vec::new();
    loop {
        running.retain(|t| !t.is_finished());
        let deadline = pairs.values().map(|(t, _)| *t + timeout).min();
        let next = match deadline {
            Some(d) => tokio::time::timeout_at(d, accept.recv()).await,
            None => Ok(accept.recv().await),
        };
        let s = match next {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(_) => {
                expire_pairs(&mut pairs, timeout).await;
                continue;
            }
        };
        let kind = header::get(&s.headers, "streamtype")
            .unwrap_or("")
            .to_string();
        let request_id = match header::get(&s.headers, "requestid") {
            Some(r) => r.to_string(),
            // Old clients open the error stream, then the data stream.
            None if kind == "data" => s.id.saturating_sub(2).to_string(),
            None => s.id.to_string(),
        };
        let (_, pair) = pairs
            .entry(request_id.clone())
            .or_insert_with(|| (Instant::now(), Pair::default()));
        match kind.as_str() {
            "data" if pair.data.is_none() => pair.data = Some(s),
            "error" if pair.error.is_none() => pair.error = Some(s),
            _ => {
                s.writer.reset(super::frame::RST_PROTOCOL_ERROR).await;
                continue;
            }
        }
        if pair.data.is_some() && pair.error.is_some() {
            if let Some((
                _,
                Pair {
                    data: Some(d),
                    error: Some(e),
                },
            )) = pairs.remove(&request_id)
            {
                running.push(tokio::spawn(forward(backend.clone(), req.clone(), d, e)));
            }
        }
    }
    // The client is gone: give forwarded connections a moment to drain.
    let aborts: Vec<_> = running.iter().map(JoinHandle::abort_handle).collect();
    let all = async {
        for t in running {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(crate::session::GONE_GRACE, all)
        .await
        .is_err()
    {
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
    sess.close(Duration::ZERO).await;
}

/// Resets the streams of pairs whose partner did not arrive in time.
async fn expire_pairs(pairs: &mut HashMap<String, (Instant, Pair)>, timeout: Duration) {
    let now = Instant::now();
    let expired: Vec<String> = pairs
        .iter()
        .filter(|(_, (t, _))| *t + timeout <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for k in expired {
        if let Some((_, p)) = pairs.remove(&k) {
            tracing::debug!(request_id = %k, "port-forward stream pair incomplete, resetting");
            for s in [p.data, p.error].into_iter().flatten() {
                s.writer.reset(super::frame::RST_CANCEL).await;
            }
        }
    }
}

async fn forward(
    backend: Arc<dyn StreamBackend>,
    req: PortForwardRequest,
    data: Incoming,
    error: Incoming,
) {
    let port = header::get(&data.headers, "port").and_then(|p| p.parse::<u16>().ok());
    let port = match port {
        Some(p) if p != 0 && (req.ports.is_empty() || req.ports.contains(&p)) => p,
        _ => {
            let msg = format!(
                "port-forward to pod {} refused: the port header must name an allowed port",
                req.pod_id
            );
            let _ = error.writer.write(msg.as_bytes()).await;
            error.writer.finish().await;
            data.writer.finish().await;
            return;
        }
    };
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut ours_r, mut ours_w) = tokio::io::split(ours);
    let mut reader = data.reader;
    let inbound = tokio::spawn(async move {
        while let Some(b) = reader.recv().await {
            if ours_w.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = ours_w.shutdown().await;
    });
    let writer = data.writer.clone();
    let outbound = tokio::spawn(async move {
        loop {
            let mut buf = BytesMut::with_capacity(32 * 1024);
            match ours_r.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if writer.write(&buf).await.is_err() {
                        return;
                    }
                }
            }
        }
        writer.finish().await;
    });
    let result = backend.port_forward(req.pod_id.clone(), port, theirs).await;
    let _ = outbound.await;
    inbound.abort();
    if let Err(e) = result {
        let msg = format!("error forwarding port {port} to pod {}: {e}", req.pod_id);
        let _ = error.writer.write(msg.as_bytes()).await;
    }
    error.writer.finish().await;
}

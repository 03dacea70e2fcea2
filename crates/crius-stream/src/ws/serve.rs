//! Channel protocols over WebSocket: `channel.k8s.io` and its `base64`,
//! `v4` and `v5` variants for exec/attach, and the `v4` port-forward framing.

use std::sync::Arc;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{close_frame, data_frame, write_loop, Message, Reader};
use crate::backend::{PortForwardRequest, PortStream, StreamBackend};
use crate::session::{self, Channels, Command};

/// Subprotocols served for exec and attach, in our order of preference.
pub(crate) const EXEC_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// Subprotocols served for port-forward.
pub(crate) const PORT_FORWARD_PROTOCOLS: &[&str] =
    &["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: a message on this channel closes the channel named by its payload.
const CLOSE: u8 = 255;

/// How channel numbers and payloads are put on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codec {
    base64: bool,
}

impl Codec {
    pub(crate) fn for_protocol(protocol: &str) -> Self {
        Codec {
            base64: protocol.contains("base64"),
        }
    }

    /// One server frame carrying `data` on `channel`.
    pub(crate) fn encode(self, channel: u8, data: &[u8]) -> Vec<u8> {
        if self.base64 {
            let mut s = vec![b'0'.wrapping_add(channel)];
            s.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
            data_frame(false, &s)
        } else {
            let mut s = Vec::with_capacity(data.len() + 1);
            s.push(channel);
            s.extend_from_slice(data);
            data_frame(true, &s)
        }
    }

    /// The channel and payload of a client message; `None` if malformed.
    pub(crate) fn decode(self, msg: Message) -> Option<(u8, Vec<u8>)> {
        let raw = match msg {
            Message::Text(d) | Message::Binary(d) => d,
        };
        let (&first, rest) = raw.split_first()?;
        if self.base64 {
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            Some((first.wrapping_sub(b'0'), data))
        } else {
            Some((first, rest.to_vec()))
        }
    }
}

/// Picks the first protocol the client offered that we serve. With no offer
/// the unnamed binary protocol is used (`Some("")`).
pub(crate) fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    if offered.is_empty() {
        return Some("");
    }
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

/// Sender whose chunks go out on `channel`; the task ends when it is dropped.
fn out_channel(
    channel: u8,
    codec: Codec,
    wtx: mpsc::Sender<Vec<u8>>,
) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let task = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wtx.send(codec.encode(channel, &b)).await.is_err() {
                return;
            }
        }
    });
    (tx, task)
}

/// Serves an exec or attach session on an upgraded connection.
pub(crate) async fn serve_exec<IO>(
    io: IO,
    protocol: &'static str,
    backend: Arc<dyn StreamBackend>,
    cmd: Command,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (wtx, wrx) = mpsc::channel::<Vec<u8>>(32);
    let writer = tokio::spawn(write_loop(wr, wrx));
    let codec = Codec::for_protocol(protocol);
    let (stdin, stdout, stderr, tty) = cmd.flags();
    let first = if stdout {
        STDOUT
    } else if stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = wtx.send(codec.encode(first, &[])).await;

    let mut ch = Channels::default();
    let mut outs = Vec::new();
    let stdin_tx = stdin.then(|| {
        let (t, r) = mpsc::channel(16);
        ch.stdin = Some(r);
        t
    });
    let resize_tx = tty.then(|| {
        let (t, r) = mpsc::channel(16);
        ch.resize = Some(r);
        t
    });
    for (want, num) in [(stdout, STDOUT), (stderr && !tty, STDERR), (true, ERROR)] {
        if !want {
            continue;
        }
        let (tx, task) = out_channel(num, codec, wtx.clone());
        outs.push(task);
        match num {
            STDOUT => ch.stdout = Some(tx),
            STDERR => ch.stderr = Some(tx),
            _ => ch.error = Some(tx),
        }
    }
    let v5 = protocol.starts_with("v5.");
    let mut reader = tokio::spawn(read_exec(
        Reader::new(rd, wtx.clone()),
        codec,
        v5,
        stdin_tx,
        resize_tx,
    ));
    let json_status = protocol.starts_with("v4.") || v5;
    let gone = async {
        let _ = (&mut reader).await;
    };
    session::run(backend, cmd, ch, json_status, gone).await;
    for t in outs {
        let _ = t.await;
    }
    let _ = wtx.send(close_frame()).await;
    drop(wtx);
    reader.abort();
    let _ = writer.await;
}

async fn read_exec<R: AsyncRead + Unpin>(
    mut reader: Reader<R>,
    codec: Codec,
    v5: bool,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    resize: Option<mpsc::Sender<Bytes>>,
) {
    while let Ok(Some(msg)) = reader.next().await {
        let Some((channel, data)) = codec.decode(msg) else {
            continue;
        };
        match channel {
            STDIN => {
                if let Some(tx) = &stdin {
                    if !data.is_empty() && tx.send(Bytes::from(data)).await.is_err() {
                        stdin = None;
                    }
                }
            }
            RESIZE => {
                if let Some(tx) = &resize {
                    let _ = tx.send(Bytes::from(data)).await;
                }
            }
            CLOSE if v5 && data.first() == Some(&STDIN) => stdin = None,
            _ => {}
        }
    }
}

/// Serves port-forward: channel `2i` carries port `i`'s data, `2i+1` its
/// errors; the first message on each starts with the port, little-endian.
pub(crate) async fn serve_port_forward<IO>(
    io: IO,
    protocol: &'static str,
    backend: Arc<dyn StreamBackend>,
    req: PortForwardRequest,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (wtx, wrx) = mpsc::channel::<Vec<u8>>(32);
    let writer = tokio::spawn(write_loop(wr, wrx));
    let codec = Codec::for_protocol(protocol);
    let mut inputs: Vec<WriteHalf<PortStream>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in req.ports.iter().copied().enumerate() {
        let Ok(data_ch) = u8::try_from(i * 2) else {
            break;
        };
        let err_ch = data_ch.wrapping_add(1);
        let _ = wtx.send(codec.encode(data_ch, &port.to_le_bytes())).await;
        let _ = wtx.send(codec.encode(err_ch, &port.to_le_bytes())).await;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (ours_r, ours_w) = tokio::io::split(ours);
        inputs.push(ours_w);
        let (be, pod, w1, w2) = (
            backend.clone(),
            req.pod_id.clone(),
            wtx.clone(),
            wtx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = be.port_forward(pod.clone(), port, theirs).await {
                let msg = format!("error forwarding port {port} to pod {pod}: {e}");
                let _ = w1.send(codec.encode(err_ch, msg.as_bytes())).await;
            }
        }));
        tasks.push(tokio::spawn(copy_out(ours_r, data_ch, codec, w2)));
    }
    let mut reader = tokio::spawn(read_port_forward(
        Reader::new(rd, wtx.clone()),
        codec,
        inputs,
    ));
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let all = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    let gone = async {
        let _ = (&mut reader).await;
        tokio::time::sleep(crate::session::GONE_GRACE).await;
    };
    tokio::select! {
        () = all => {}
        () = gone => aborts.iter().for_each(tokio::task::AbortHandle::abort),
    }
    let _ = wtx.send(close_frame()).await;
    drop(wtx);
    reader.abort();
    let _ = writer.await;
}

async fn copy_out<R: AsyncRead + Unpin>(
    mut r: R,
    channel: u8,
    codec: Codec,
    wtx: mpsc::Sender<Vec<u8>>,
) {
    loop {
        let mut buf = BytesMut::with_capacity(32 * 1024);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if wtx.send(codec.encode(channel, &buf)).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn read_port_forward<R: AsyncRead + Unpin>(
    mut reader: Reader<R>,
    codec: Codec,
    mut inputs: Vec<WriteHalf<PortStream>>,
) {
    while let Ok(Some(msg)) = reader.next().await {
        let Some((channel, data)) = codec.decode(msg) else {
            continue;
        };
        if channel % 2 != 0 {
            continue;
        }
        if let Some(w) = inputs.get_mut(usize::from(channel / 2)) {
            let _ = w.write_all(&data).await;
        }
    }
    for mut w in inputs {
        let _ = w.shutdown().await;
    }
}

//! One SPDY/3 session, server side: a reader task that parses frames,
//! accepts client streams and routes data, and a writer task that owns the
//! sending zlib context and serialises every frame.
//!
//! Flow control: we grant each stream a receive window and return it with
//! WINDOW_UPDATE as data is consumed; a peer that sends data beyond what we
//! buffer is slowed by TCP back-pressure. We honour the peer's windows once
//! it shows it implements flow control (it sent SETTINGS or WINDOW_UPDATE);
//! the Kubernetes Go clients (spdystream) never do, and never send updates.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use super::frame::{self, Frame};
use super::header::{Deflater, Headers, Inflater};

/// Initial window of a SPDY/3 stream.
const INITIAL_WINDOW: i64 = 64 * 1024;
/// Bytes buffered per incoming stream before the reader waits.
const STREAM_BUFFER: usize = 1 << 20;
/// Largest frame accepted from the peer.
const MAX_FRAME: usize = frame::MAX_FRAME_LEN;
/// Client streams open at once (not yet half-closed by the client).
const MAX_OPEN_STREAMS: usize = 256;
/// Largest DATA payload we send in one frame.
const MAX_DATA_CHUNK: usize = 32 * 1024;

/// What the writer task sends.
#[derive(Debug)]
enum Out {
    Frame(Frame),
    SynReply(u32),
}

/// Send-side flow-control state, shared by writers and the reader.
#[derive(Debug, Default)]
struct FlowState {
    enabled: bool,
    initial: i64,
    windows: HashMap<u32, i64>,
    reset: HashSet<u32>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Flow {
    state: Mutex<FlowState>,
    notify: Notify,
}

impl Flow {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlowState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes up to `want` bytes of window for `id`, waiting while the peer
    /// enforces flow control and the window is empty.
    async fn take(&self, id: u32, want: usize) -> io::Result<usize> {
        loop {
            let notified = {
                let mut s = self.lock();
                if s.closed || s.reset.contains(&id) {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "spdy stream reset",
                    ));
                }
                let initial = s.initial;
                let enabled = s.enabled;
                let w = s.windows.entry(id).or_insert(initial);
                let want_i = i64::try_from(want).unwrap_or(i64::MAX);
                if !enabled || *w >= want_i {
                    *w -= want_i;
                    return Ok(want);
                }
                if *w > 0 {
                    let n = usize::try_from(*w).unwrap_or(0);
                    *w = 0;
                    return Ok(n);
                }
                self.notify.notified()
            };
            notified.await;
        }
    }

    fn update(&self, id: u32, delta: u32) {
        let mut s = self.lock();
        s.enabled = true;
        let initial = s.initial;
        *s.windows.entry(id).or_insert(initial) += i64::from(delta);
        drop(s);
        self.notify.notify_waiters();
    }

    fn set_initial(&self, value: u32) {
        let mut s = self.lock();
        s.enabled = true;
        let diff = i64::from(value) - s.initial;
        s.initial = i64::from(value);
        for w in s.windows.values_mut() {
            *w += diff;
        }
        drop(s);
        self.notify.notify_waiters();
    }

    fn reset(&self, id: u32) {
        self.lock().reset.insert(id);
        self.notify.notify_waiters();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }
}

/// The sending half of one stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamWriter {
    id: u32,
    tx: mpsc::Sender<Out>,
    flow: Arc<Flow>,
}

impl StreamWriter {
    /// Sends `data` as DATA frames, respecting the peer's window.
    pub(crate) async fn write(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self
                .flow
                .take(self.id, data.len().min(MAX_DATA_CHUNK))
                .await?;
            let (now, rest) = data.split_at(n);
            self.send(Frame::Data {
                stream_id: self.id,
                fin: false,
                data: now.to_vec(),
            })
            .await?;
            data = rest;
        }
        Ok(())
    }

    /// Half-closes the stream (empty DATA with FIN).
    pub(crate) async fn finish(&self) {
        let _ = self
            .send(Frame::Data {
                stream_id: self.id,
                fin: true,
                data: Vec::new(),
            })
            .await;
    }

    /// Resets the stream.
    pub(crate) async fn reset(&self, status: u32) {
        let _ = self
            .send(Frame::RstStream {
                stream_id: self.id,
                status,
            })
            .await;
    }

    async fn send(&self, f: Frame) -> io::Result<()> {
        self.tx
            .send(Out::Frame(f))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "spdy session closed"))
    }
}

/// The receiving half of one stream. Each chunk taken returns its bytes to
/// the peer's window.
#[derive(Debug)]
pub(crate) struct StreamReader {
    id: u32,
    rx: mpsc::UnboundedReceiver<Bytes>,
    budget: Arc<Semaphore>,
    tx: mpsc::Sender<Out>,
}

impl StreamReader {
    /// The next chunk; `None` after FIN, reset or session end.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        let b = self.rx.recv().await?;
        let n = b.len().min(STREAM_BUFFER);
        self.budget.add_permits(n);
        if let Ok(delta) = u32::try_from(n) {
            let _ = self
                .tx
                .send(Out::Frame(Frame::WindowUpdate {
                    stream_id: self.id,
                    delta,
                }))
                .await;
        }
        Some(b)
    }
}

impl Drop for StreamReader {
    /// Unblocks the session reader if it waits for room in this stream.
    fn drop(&mut self) {
        self.budget.close();
    }
}

/// A stream the client opened.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

/// A running session.
#[derive(Debug)]
pub(crate) struct Session {
    tx: mpsc::Sender<Out>,
    flow: Arc<Flow>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    last_stream: Arc<Mutex<u32>>,
    ended: watch::Receiver<bool>,
}

impl Session {
    /// Completes when the client's side of the connection has ended.
    pub(crate) fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut ended = self.ended.clone();
        async move {
            let _ = ended.wait_for(|e| *e).await;
        }
    }

    /// Starts the session tasks; client streams arrive on the receiver.
    pub(crate) fn start<IO>(io: IO) -> (Session, mpsc::Receiver<Incoming>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel(64);
        let (accept_tx, accept_rx) = mpsc::channel(64);
        let flow = Arc::new(Flow {
            state: Mutex::new(FlowState {
                initial: INITIAL_WINDOW,
                ..Default::default()
            }),
            notify: Notify::new(),
        });
        let last_stream = Arc::new(Mutex::new(0));
        let (ended_tx, ended) = watch::channel(false);
        let writer = tokio::spawn(write_loop(wr, rx));
        let r = ReaderTask {
            io: rd,
            buf: BytesMut::with_capacity(64 * 1024),
            inflater: Inflater::default(),
            tx: tx.clone(),
            accept: Some(accept_tx),
            flow: flow.clone(),
            streams: HashMap::new(),
            last_stream: last_stream.clone(),
            ended: ended_tx,
        };
        let reader = tokio::spawn(r.run());
        let s = Session {
            tx,
            flow,
            reader,
            writer,
            last_stream,
            ended,
        };
        (s, accept_rx)
    }

    /// Sends GOAWAY, waits up to `grace` for the client to close the
    /// connection, then closes it.
    pub(crate) async fn close(self, grace: Duration) {
        let last = *self.last_stream.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .tx
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id: last,
                status: 0,
            }))
            .await;
        let mut reader = self.reader;
        if tokio::time::timeout(grace, &mut reader).await.is_err() {
            reader.abort();
        }
        self.flow.close();
        drop(self.tx);
        let _ = self.writer.await;
    }
}

async fn write_loop<W: AsyncWrite>(mut io: WriteHalf<W>, mut rx: mpsc::Receiver<Out>) {
    let mut deflater = Deflater::default();
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(out) = rx.recv().await {
        buf.clear();
        let f = match out {
            Out::Frame(f) => f,
            Out::SynReply(id) => Frame::SynReply {
                stream_id: id,
                fin: false,
                header_block: deflater.encode(&[]),
            },
        };
        frame::encode(&mut buf, &f);
        if io.write_all(&buf).await.is_err() {
            return;
        }
        if rx.is_empty() && io.flush().await.is_err() {
            return;
        }
    }
    let _ = io.shutdown().await;
}

struct StreamIn {
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    budget: Arc<Semaphore>,
}

struct ReaderTask<R> {
    io: ReadHalf<R>,
    buf: BytesMut,
    inflater: Inflater,
    tx: mpsc::Sender<Out>,
    accept: Option<mpsc::Sender<Incoming>>,
    flow: Arc<Flow>,
    streams: HashMap<u32, StreamIn>,
    last_stream: Arc<Mutex<u32>>,
    ended: watch::Sender<bool>,
}

impl<R: AsyncRead> ReaderTask<R> {
    async fn run(mut self) {
        loop {
            let f = match frame::parse(&self.buf, MAX_FRAME) {
                Ok(Some((f, used))) => {
                    let _ = self.buf.split_to(used);
                    f
                }
                Ok(None) => match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "spdy protocol error, closing session");
                    self.go_away(1).await;
                    break;
                }
            };
            if !self.handle(f).await {
                break;
            }
        }
        self.streams.clear();
        self.flow.close();
        let _ = self.ended.send(true);
    }

    async fn go_away(&mut self, status: u32) {
        let last = *self.last_stream.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .tx
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id: last,
                status,
            }))
            .await;
    }

    async fn rst(&mut self, stream_id: u32, status: u32) {
        let _ = self
            .tx
            .send(Out::Frame(Frame::RstStream { stream_id, status }))
            .await;
    }

    /// Handles one frame; false ends the session.
    async fn handle(&mut self, f: Frame) -> bool {
        match f {
            Frame::SynStream {
                stream_id,
                flags,
                header_block,
                ..
            } => {
                return self.syn_stream(stream_id, flags, &header_block).await;
            }
            Frame::Headers { header_block, .. } | Frame::SynReply { header_block, .. } => {
                if self.inflater.decode(&header_block).is_err() {
                    self.go_away(1).await;
                    return false;
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => self.data(stream_id, fin, data).await,
            Frame::RstStream { stream_id, .. } => {
                self.streams.remove(&stream_id);
                self.flow.reset(stream_id);
            }
            Frame::Settings { entries } => {
                for (_, id, value) in entries {
                    if id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                        self.flow.set_initial(value);
                    }
                }
            }
            Frame::Ping { id } => {
                // Our (server) ping ids are even; echo the client's.
                if id % 2 == 1 {
                    let _ = self.tx.send(Out::Frame(Frame::Ping { id })).await;
                }
            }
            Frame::GoAway { .. } => return false,
            Frame::WindowUpdate { stream_id, delta } => self.flow.update(stream_id, delta),
            Frame::Unknown { .. } => {}
        }
        true
    }

    async fn syn_stream(&mut self, id: u32, flags: u8, block: &[u8]) -> bool {
        let headers = match self.inflater.decode(block) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "spdy header block rejected, closing session");
                self.go_away(1).await;
                return false;
            }
        };
        let valid = {
            let mut last = self.last_stream.lock().unwrap_or_else(|e| e.into_inner());
            let valid = id % 2 == 1 && id > *last;
            if valid {
                *last = id;
            }
            valid
        };
        if !valid {
            self.rst(id, frame::RST_PROTOCOL_ERROR).await;
            return true;
        }
        if self.streams.len() >= MAX_OPEN_STREAMS {
            self.rst(id, frame::RST_REFUSED_STREAM).await;
            return true;
        }
        let (dtx, drx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(STREAM_BUFFER));
        let fin = flags & frame::FLAG_FIN != 0;
        if !fin {
            let s = StreamIn {
                tx: Some(dtx),
                budget: budget.clone(),
            };
            self.streams.insert(id, s);
        }
        let _ = self.tx.send(Out::SynReply(id)).await;
        let incoming = Incoming {
            id,
            headers,
            reader: StreamReader {
                id,
                rx: drx,
                budget,
                tx: self.tx.clone(),
            },
            writer: StreamWriter {
                id,
                tx: self.tx.clone(),
                flow: self.flow.clone(),
            },
        };
        let refused = match &self.accept {
            Some(a) => a.send(incoming).await.is_err(),
            None => true,
        };
        if refused {
            self.accept = None;
            self.streams.remove(&id);
            self.rst(id, frame::RST_REFUSED_STREAM).await;
        }
        true
    }

    async fn data(&mut self, id: u32, fin: bool, data: Vec<u8>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if !data.is_empty() {
            if s.tx.as_ref().is_some_and(|t| t.is_closed()) {
                s.tx = None;
            }
            if let Some(tx) = &s.tx {
                let n = u32::try_from(data.len().min(STREAM_BUFFER)).unwrap_or(u32::MAX);
                if let Ok(p) = s.budget.clone().acquire_many_owned(n).await {
                    p.forget();
                }
                if tx.send(Bytes::from(data)).is_err() {
                    s.tx = None;
                }
            }
        }
        if fin {
            self.streams.remove(&id);
        }
    }
}

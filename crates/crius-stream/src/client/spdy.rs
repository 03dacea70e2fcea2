//! SPDY/3 client: opens streams, returns window as it reads when asked to,
//! and honours the server's windows then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, Notify};

use crate::spdy::frame::{self, Frame};
use crate::spdy::header::{Deflater, Inflater};
use crate::{Error, Result};

const WINDOW: i64 = 64 * 1024;

#[derive(Debug)]
enum Event {
    Data(Vec<u8>),
    End,
}

type Writer = Arc<tokio::sync::Mutex<(BufWriter<OwnedWriteHalf>, Deflater)>>;
type Routes = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Event>>>>;

#[derive(Debug, Default)]
struct Windows {
    map: Mutex<HashMap<u32, i64>>,
    notify: Notify,
}

/// A SPDY/3 session to the streaming server.
#[derive(Debug)]
pub struct SpdyClient {
    w: Writer,
    flow: bool,
    windows: Arc<Windows>,
    next_id: u32,
    routes: Routes,
    /// The negotiated `X-Stream-Protocol-Version`.
    pub protocol: String,
}

/// One stream the client opened.
#[derive(Debug)]
pub struct ClientStream {
    /// Its id.
    pub id: u32,
    flow: bool,
    windows: Arc<Windows>,
    rx: mpsc::UnboundedReceiver<Event>,
    w: Writer,
}

async fn write_frame(w: &Writer, f: &Frame) -> Result<()> {
    let mut out = Vec::new();
    frame::encode(&mut out, f);
    let mut g = w.lock().await;
    g.0.write_all(&out).await?;
    g.0.flush().await?;
    Ok(())
}

impl SpdyClient {
    /// Upgrades `url` to SPDY/3.1 offering `protocols`. With `flow` the
    /// client does SPDY flow control (the Kubernetes Go clients do not).
    pub async fn connect(url: &str, protocols: &[&str], flow: bool) -> Result<SpdyClient> {
        let mut h = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
        for p in protocols {
            h.push(("X-Stream-Protocol-Version", p));
        }
        let u = super::accepted(super::request(url, &h).await?)?;
        let protocol = u
            .header(crate::spdy::PROTOCOL_HEADER)
            .unwrap_or("")
            .to_string();
        let (r, w) = u.tcp.into_split();
        let w: Writer = Arc::new(tokio::sync::Mutex::new((
            BufWriter::new(w),
            Deflater::default(),
        )));
        let routes: Routes = Arc::default();
        let windows: Arc<Windows> = Arc::default();
        let reader = ReadLoop {
            r,
            buf: u.rest,
            w: w.clone(),
            routes: routes.clone(),
            windows: windows.clone(),
            flow,
        };
        tokio::spawn(reader.run());
        if flow {
            let entries = vec![(0u8, frame::SETTINGS_INITIAL_WINDOW_SIZE, 64 * 1024u32)];
            write_frame(&w, &Frame::Settings { entries }).await?;
        }
        Ok(SpdyClient {
            w,
            flow,
            windows,
            next_id: 1,
            routes,
            protocol,
        })
    }

    /// Opens a stream with `headers` (for example `streamType: stdout`).
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> Result<ClientStream> {
        let id = self.next_id;
        self.next_id += 2;
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut g = self.w.lock().await;
        let header_block = g.1.encode(headers);
        let f = Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            header_block,
        };
        let mut out = Vec::new();
        frame::encode(&mut out, &f);
        g.0.write_all(&out).await?;
        g.0.flush().await?;
        drop(g);
        Ok(ClientStream {
            id,
            flow: self.flow,
            windows: self.windows.clone(),
            rx,
            w: self.w.clone(),
        })
    }

    /// Sends GOAWAY and closes the client's side of the connection.
    pub async fn go_away(&self) -> Result<()> {
        let f = Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        };
        write_frame(&self.w, &f).await?;
        self.w.lock().await.0.shutdown().await?;
        Ok(())
    }
}

struct ReadLoop {
    r: OwnedReadHalf,
    buf: Vec<u8>,
    w: Writer,
    routes: Routes,
    windows: Arc<Windows>,
    flow: bool,
}

impl ReadLoop {
    async fn run(mut self) {
        let mut inflater = Inflater::default();
        loop {
            let f = match frame::parse(&self.buf, frame::MAX_FRAME_LEN) {
                Ok(Some((f, used))) => {
                    self.buf.drain(..used);
                    f
                }
                Ok(None) => {
                    let mut chunk = vec![0u8; 64 * 1024];
                    match self.r.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    }
                    continue;
                }
                Err(_) => break,
            };
            match f {
                Frame::SynReply { header_block, .. } | Frame::Headers { header_block, .. }
                    if inflater.decode(&header_block).is_err() =>
                {
                    break;
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => self.data(stream_id, fin, data).await,
                Frame::WindowUpdate { stream_id, delta } => {
                    let mut m = self.windows.map.lock().unwrap_or_else(|e| e.into_inner());
                    *m.entry(stream_id).or_insert(WINDOW) += i64::from(delta);
                    drop(m);
                    self.windows.notify.notify_waiters();
                }
                Frame::RstStream { stream_id, .. } => self.route(stream_id, Event::End),
                _ => {}
            }
        }
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn route(&self, id: u32, e: Event) {
        if let Some(tx) = self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            let _ = tx.send(e);
        }
    }

    async fn data(&mut self, stream_id: u32, fin: bool, data: Vec<u8>) {
        let n = data.len();
        if n > 0 {
            self.route(stream_id, Event::Data(data));
        }
        if fin {
            self.route(stream_id, Event::End);
        }
        if self.flow && n > 0 {
            if let Ok(delta) = u32::try_from(n) {
                let _ = write_frame(&self.w, &Frame::WindowUpdate { stream_id, delta }).await;
            }
        }
    }
}

impl ClientStream {
    fn take_window(&self, n: i64) -> bool {
        let mut m = self.windows.map.lock().unwrap_or_else(|e| e.into_inner());
        let w = m.entry(self.id).or_insert(WINDOW);
        if *w >= n {
            *w -= n;
            return true;
        }
        false
    }

    /// Sends `data` as DATA frames.
    pub async fn send(&self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(16 * 1024) {
            let n = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
            if self.flow {
                loop {
                    let notified = self.windows.notify.notified();
                    if self.take_window(n) {
                        break;
                    }
                    notified.await;
                }
            }
            let f = Frame::Data {
                stream_id: self.id,
                fin: false,
                data: chunk.to_vec(),
            };
            write_frame(&self.w, &f).await?;
        }
        Ok(())
    }

    /// Half-closes the stream.
    pub async fn close(&self) -> Result<()> {
        let f = Frame::Data {
            stream_id: self.id,
            fin: true,
            data: Vec::new(),
        };
        write_frame(&self.w, &f).await
    }

    /// The next chunk; `None` after FIN, reset or the session's end.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        match self.rx.recv().await? {
            Event::Data(d) => Some(d),
            Event::End => None,
        }
    }

    /// Everything until the stream ends.
    pub async fn read_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(d) = self.next().await {
            out.extend_from_slice(&d);
        }
        out
    }
}

/// A port-forward session over SPDY.
#[derive(Debug)]
pub struct PortForwardClient {
    session: SpdyClient,
    next_request: u64,
}

impl PortForwardClient {
    /// Upgrades `url` with `portforward.k8s.io`.
    pub async fn connect(url: &str) -> Result<PortForwardClient> {
        let session = SpdyClient::connect(url, &["portforward.k8s.io"], false).await?;
        if session.protocol != "portforward.k8s.io" {
            return Err(Error::Protocol(
                "server did not choose portforward.k8s.io".into(),
            ));
        }
        Ok(PortForwardClient {
            session,
            next_request: 0,
        })
    }

    /// Opens one forwarded connection to `port`: (data, error) streams.
    pub async fn open(&mut self, port: u16) -> Result<(ClientStream, ClientStream)> {
        let (p, r) = (port.to_string(), self.next_request.to_string());
        self.next_request += 1;
        let error = self
            .session
            .open(&[("streamType", "error"), ("port", &p), ("requestID", &r)])
            .await?;
        let data = self
            .session
            .open(&[("streamType", "data"), ("port", &p), ("requestID", &r)])
            .await?;
        Ok((data, error))
    }
}

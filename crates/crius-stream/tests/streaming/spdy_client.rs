//! A minimal SPDY/3 client for the tests, built on the crate's codecs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crius_stream::spdy::frame::{self, Frame};
use crius_stream::spdy::header::{Deflater, Inflater};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::common::http_request;

#[derive(Debug)]
pub enum Event {
    Data(Vec<u8>),
    Fin,
    Reset,
}

type Writer = Arc<tokio::sync::Mutex<(OwnedWriteHalf, Deflater)>>;

/// Send windows per stream (used when the client does flow control).
#[derive(Default)]
pub struct Windows {
    map: Mutex<HashMap<u32, i64>>,
    notify: tokio::sync::Notify,
}

pub struct SpdyClient {
    w: Writer,
    flow: bool,
    windows: Arc<Windows>,
    next_id: u32,
    streams: Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Event>>>>,
    pub protocol: String,
}

pub struct ClientStream {
    pub id: u32,
    flow: bool,
    windows: Arc<Windows>,
    rx: mpsc::UnboundedReceiver<Event>,
    w: Writer,
}

async fn write_frame(w: &Writer, f: Frame) {
    let mut out = Vec::new();
    frame::encode(&mut out, &f);
    let _ = w.lock().await.0.write_all(&out).await;
}

impl SpdyClient {
    /// Upgrades to SPDY/3.1 offering `protocols`. With `flow` the client
    /// returns window as it reads (spdystream does not).
    pub async fn connect(url: &str, protocols: &[&str], flow: bool) -> Result<SpdyClient, u16> {
        let mut h = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
        for p in protocols {
            h.push(("X-Stream-Protocol-Version", p));
        }
        let (status, headers, rest, tcp) = http_request(url, &h).await;
        if status != 101 {
            return Err(status);
        }
        let protocol = headers["x-stream-protocol-version"][0].clone();
        let (mut r, w) = tcp.into_split();
        let w: Writer = Arc::new(tokio::sync::Mutex::new((w, Deflater::default())));
        let streams: Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Event>>>> = Arc::default();
        let windows: Arc<Windows> = Arc::default();
        let (w2, s2, win2) = (w.clone(), streams.clone(), windows.clone());
        tokio::spawn(async move {
            let mut buf = rest;
            let mut inflater = Inflater::default();
            loop {
                let f = match frame::parse(&buf, frame::MAX_FRAME_LEN).unwrap() {
                    Some((f, used)) => {
                        buf.drain(..used);
                        f
                    }
                    None => {
                        let mut chunk = vec![0u8; 64 * 1024];
                        match r.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    }
                };
                match f {
                    Frame::SynReply { header_block, .. } | Frame::Headers { header_block, .. } => {
                        inflater.decode(&header_block).unwrap();
                    }
                    Frame::Data {
                        stream_id,
                        fin,
                        data,
                    } => {
                        let n = data.len();
                        let tx = s2.lock().unwrap().get(&stream_id).cloned();
                        if let Some(tx) = tx {
                            if n > 0 {
                                let _ = tx.send(Event::Data(data));
                            }
                            if fin {
                                let _ = tx.send(Event::Fin);
                            }
                        }
                        if flow && n > 0 {
                            let delta = n as u32;
                            write_frame(&w2, Frame::WindowUpdate { stream_id, delta }).await;
                        }
                    }
                    Frame::WindowUpdate { stream_id, delta } => {
                        *win2
                            .map
                            .lock()
                            .unwrap()
                            .entry(stream_id)
                            .or_insert(64 * 1024) += i64::from(delta);
                        win2.notify.notify_waiters();
                    }
                    Frame::RstStream { stream_id, .. } => {
                        if let Some(tx) = s2.lock().unwrap().get(&stream_id) {
                            let _ = tx.send(Event::Reset);
                        }
                    }
                    _ => {}
                }
            }
            s2.lock().unwrap().clear();
        });
        if flow {
            let entries = vec![(0u8, frame::SETTINGS_INITIAL_WINDOW_SIZE, 64 * 1024u32)];
            write_frame(&w, Frame::Settings { entries }).await;
        }
        Ok(SpdyClient {
            w,
            flow,
            windows,
            next_id: 1,
            streams,
            protocol,
        })
    }

    /// Opens a stream with the given headers.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> ClientStream {
        let id = self.next_id;
        self.next_id += 2;
        let (tx, rx) = mpsc::unbounded_channel();
        self.streams.lock().unwrap().insert(id, tx);
        let mut g = self.w.lock().await;
        let header_block = g.1.encode(headers);
        let mut out = Vec::new();
        let f = Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            header_block,
        };
        frame::encode(&mut out, &f);
        g.0.write_all(&out).await.unwrap();
        drop(g);
        ClientStream {
            id,
            rx,
            w: self.w.clone(),
            flow: self.flow,
            windows: self.windows.clone(),
        }
    }

    pub async fn go_away(&self) {
        write_frame(
            &self.w,
            Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            },
        )
        .await;
        let _ = self.w.lock().await.0.shutdown().await;
    }
}

impl ClientStream {
    fn take_window(&self, n: i64) -> bool {
        let mut m = self.windows.map.lock().unwrap();
        let w = m.entry(self.id).or_insert(64 * 1024);
        if *w >= n {
            *w -= n;
            return true;
        }
        false
    }

    pub async fn send(&self, data: &[u8]) {
        for chunk in data.chunks(16 * 1024) {
            if self.flow {
                loop {
                    let notified = self.windows.notify.notified();
                    if self.take_window(chunk.len() as i64) {
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
            write_frame(&self.w, f).await;
        }
    }

    pub async fn close(&self) {
        write_frame(
            &self.w,
            Frame::Data {
                stream_id: self.id,
                fin: true,
                data: vec![],
            },
        )
        .await;
    }

    /// Next chunk, or None at FIN/reset/EOF.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        match self.rx.recv().await? {
            Event::Data(d) => Some(d),
            Event::Fin | Event::Reset => None,
        }
    }

    pub async fn read_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(d) = self.next().await {
            out.extend_from_slice(&d);
        }
        out
    }
}

//! Hostile bytes on live upgraded connections: the server must close the
//! connection, keep serving others, and never panic (panics in spawned
//! tasks are caught by tokio, so a panic hook counts them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crius_stream::spdy::frame::{self, Frame};
use crius_stream::spdy::header::Deflater;
use crius_stream::ws::frame as wsframe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        prev(info);
    }));
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % (max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A plausible SPDY byte stream with random damage.
fn spdy_input(rng: &mut Rng) -> Vec<u8> {
    let mut d = Deflater::default();
    let mut out = Vec::new();
    for i in 0..(rng.next() % 6) {
        let f = match rng.next() % 5 {
            0 => Frame::SynStream {
                stream_id: (i as u32) * 2 + 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                header_block: d.encode(&[
                    ("streamType", "stdin"),
                    ("port", "80"),
                    ("requestID", "1"),
                ]),
            },
            1 => Frame::Data {
                stream_id: (rng.next() % 8) as u32,
                fin: rng.next().is_multiple_of(2),
                data: rng.bytes(100),
            },
            2 => Frame::WindowUpdate {
                stream_id: (rng.next() % 8) as u32,
                delta: rng.next() as u32,
            },
            3 => Frame::Settings {
                entries: vec![(0, 7, rng.next() as u32)],
            },
            _ => Frame::Ping {
                id: rng.next() as u32,
            },
        };
        frame::encode(&mut out, &f);
    }
    if !out.is_empty() && rng.next().is_multiple_of(2) {
        let i = (rng.next() as usize) % out.len();
        out[i] ^= rng.next() as u8;
    }
    out.extend(rng.bytes(40));
    out
}

/// A plausible WebSocket byte stream with random damage.
fn ws_input(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..(rng.next() % 6) {
        let op = [
            wsframe::OP_BINARY,
            wsframe::OP_TEXT,
            wsframe::OP_PING,
            wsframe::OP_CONTINUATION,
        ][(rng.next() % 4) as usize];
        let mut p = vec![(rng.next() % 6) as u8];
        p.extend(rng.bytes(60));
        wsframe::encode(
            &mut out,
            !rng.next().is_multiple_of(4),
            op,
            &p,
            Some([1, 2, 3, 4]),
        );
    }
    if !out.is_empty() && rng.next().is_multiple_of(2) {
        let i = (rng.next() as usize) % out.len();
        out[i] ^= rng.next() as u8;
    }
    out.extend(rng.bytes(40));
    out
}

async fn hammer(url: String, spdy: bool, input: Vec<u8>) {
    let headers: Vec<(&str, &str)> = if spdy {
        vec![
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io"),
        ]
    } else {
        vec![
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Protocol", "v4.channel.k8s.io"),
        ]
    };
    let (status, _, _, mut tcp) = http_request(&url, &headers).await;
    assert_eq!(status, 101);
    let _ = tcp.write_all(&input).await;
    let _ = tcp.shutdown().await;
    let mut sink = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
    assert!(done.is_ok(), "server did not close a hostile connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_on_live_connections_never_panic_the_server() {
    count_panics();
    let (srv, _) = server().await;
    let port = echo_server().await;
    let mut rng = Rng(0x5eed);
    for round in 0..8 {
        let mut tasks = Vec::new();
        for i in 0..24 {
            let spdy = i % 2 == 0;
            let url = match i % 3 {
                0 => srv
                    .issue_exec(exec_req(&["cat"], i % 4 == 0, true, false))
                    .unwrap(),
                1 => srv
                    .issue_exec(exec_req(&["sleep"], false, true, true))
                    .unwrap(),
                _ => srv.issue_port_forward("pod1", &[port]).unwrap(),
            };
            let input = if spdy {
                spdy_input(&mut rng)
            } else {
                ws_input(&mut rng)
            };
            tasks.push(tokio::spawn(hammer(url, spdy, input)));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "panic in round {round}");
    }
    // Still serving.
    let url = srv
        .issue_exec(exec_req(&["echo", "ok"], false, false, false))
        .unwrap();
    let mut c = WsClient::connect(&url, "v5.channel.k8s.io").await.unwrap();
    assert_eq!(c.collect().await.unwrap()[&1], b"ok");
}

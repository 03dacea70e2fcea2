//! Test helpers: a fake backend and raw HTTP/WebSocket client pieces.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crius_stream::ws::frame;
use crius_stream::{
    AttachRequest, BoxFuture, Error, ErrorKind, ExecRequest, PortStream, StreamBackend,
    StreamServer, StreamServerConfig, Streams,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Exec commands: `cat`, `exit N` (prints to stdout and stderr), `resize`
/// (prints the first size), `sleep` (forever), `fail` (backend error),
/// `echo ARGS...`.
#[derive(Debug, Default)]
pub struct FakeBackend {
    pub forwarded: Mutex<Vec<(String, u16)>>,
    /// Execs of `sleep` that were cancelled (their future dropped).
    pub cancelled: std::sync::atomic::AtomicUsize,
}

struct CancelGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl StreamBackend for FakeBackend {
    fn exec(&self, req: ExecRequest, mut s: Streams) -> BoxFuture<'_, crius_stream::Result<i32>> {
        Box::pin(async move {
            match req.cmd[0].as_str() {
                "cat" => {
                    let (Some(mut i), Some(mut o)) = (s.stdin.take(), s.stdout.take()) else {
                        return Ok(2);
                    };
                    tokio::io::copy(&mut i, &mut o).await?;
                    Ok(0)
                }
                "exit" => {
                    let code: i32 = req.cmd[1].parse().unwrap();
                    if let Some(o) = s.stdout.as_mut() {
                        o.write_all(b"bye\n").await?;
                    }
                    if let Some(e) = s.stderr.as_mut() {
                        e.write_all(b"err\n").await?;
                    }
                    Ok(code)
                }
                "resize" => {
                    let size = s.resize.as_mut().unwrap().recv().await.unwrap();
                    let o = s.stdout.as_mut().unwrap();
                    o.write_all(format!("{}x{}\n", size.width, size.height).as_bytes())
                        .await?;
                    Ok(0)
                }
                "sleep" => {
                    let _guard = CancelGuard(&self.cancelled);
                    std::future::pending::<()>().await;
                    Ok(0)
                }
                "fail" => Err(Error::backend(
                    ErrorKind::FailedPrecondition,
                    "container is not running",
                )),
                _ => {
                    let o = s.stdout.as_mut().unwrap();
                    o.write_all(req.cmd[1..].join(" ").as_bytes()).await?;
                    Ok(0)
                }
            }
        })
    }

    fn attach(
        &self,
        _req: AttachRequest,
        mut s: Streams,
    ) -> BoxFuture<'_, crius_stream::Result<()>> {
        Box::pin(async move {
            let mut o = s.stdout.take().unwrap();
            o.write_all(b"attached\n").await?;
            if let Some(mut i) = s.stdin.take() {
                tokio::io::copy(&mut i, &mut o).await?;
            }
            Ok(())
        })
    }

    fn port_forward(
        &self,
        pod_id: String,
        port: u16,
        mut stream: PortStream,
    ) -> BoxFuture<'_, crius_stream::Result<()>> {
        Box::pin(async move {
            self.forwarded.lock().unwrap().push((pod_id, port));
            let mut tcp = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| Error::backend(ErrorKind::Unavailable, format!("connect: {e}")))?;
            tokio::io::copy_bidirectional(&mut tcp, &mut stream).await?;
            Ok(())
        })
    }
}

pub async fn server() -> (StreamServer, Arc<FakeBackend>) {
    server_with(StreamServerConfig::default()).await
}

pub async fn server_with(cfg: StreamServerConfig) -> (StreamServer, Arc<FakeBackend>) {
    let backend = Arc::new(FakeBackend::default());
    let s = StreamServer::start(cfg, backend.clone()).await.unwrap();
    (s, backend)
}

pub fn exec_req(cmd: &[&str], tty: bool, stdin: bool, stderr: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr,
    }
}

/// Splits `http://host:port/path` into (addr, path).
pub fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let i = rest.find('/').unwrap();
    (rest[..i].to_string(), rest[i..].to_string())
}

/// Sends a request head and returns (status, headers, leftover bytes, stream).
pub async fn http_request(
    url: &str,
    extra_headers: &[(&str, &str)],
) -> (u16, HashMap<String, Vec<String>>, Vec<u8>, TcpStream) {
    let (addr, path) = split_url(url);
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before response head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let (k, v) = l.split_once(':').unwrap();
        headers
            .entry(k.trim().to_ascii_lowercase())
            .or_default()
            .push(v.trim().to_string());
    }
    (status, headers, buf[end..].to_vec(), tcp)
}

/// A minimal masked WebSocket client.
pub struct WsClient {
    pub tcp: TcpStream,
    pub buf: Vec<u8>,
    pub protocol: String,
}

impl WsClient {
    pub async fn connect(url: &str, protocols: &str) -> Result<WsClient, u16> {
        let mut h = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ];
        if !protocols.is_empty() {
            h.push(("Sec-WebSocket-Protocol", protocols));
        }
        let (status, headers, rest, tcp) = http_request(url, &h).await;
        if status != 101 {
            return Err(status);
        }
        assert_eq!(
            headers["sec-websocket-accept"][0],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let protocol = headers
            .get("sec-websocket-protocol")
            .map(|v| v[0].clone())
            .unwrap_or_default();
        Ok(WsClient {
            tcp,
            buf: rest,
            protocol,
        })
    }

    pub async fn send_raw(&mut self, opcode: u8, payload: &[u8]) {
        let mut out = Vec::new();
        frame::encode(
            &mut out,
            true,
            opcode,
            payload,
            Some([0x11, 0x22, 0x33, 0x44]),
        );
        self.tcp.write_all(&out).await.unwrap();
    }

    pub async fn send(&mut self, channel: u8, data: &[u8]) {
        let mut p = vec![channel];
        p.extend_from_slice(data);
        self.send_raw(frame::OP_BINARY, &p).await;
    }

    /// The next frame, or None at EOF.
    pub async fn recv(&mut self) -> Option<frame::Frame> {
        loop {
            if let Some((f, used)) = frame::parse(&self.buf, 1 << 24, false).unwrap() {
                self.buf.drain(..used);
                return Some(f);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = self.tcp.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the close frame; returns the bytes per channel.
    pub async fn collect(&mut self) -> HashMap<u8, Vec<u8>> {
        let mut out: HashMap<u8, Vec<u8>> = HashMap::new();
        while let Some(f) = self.recv().await {
            match f.opcode {
                frame::OP_CLOSE => break,
                frame::OP_BINARY => {
                    let (ch, data) = f.payload.split_first().unwrap();
                    out.entry(*ch).or_default().extend_from_slice(data);
                }
                frame::OP_TEXT => {
                    use base64::Engine;
                    let (ch, data) = f.payload.split_first().unwrap();
                    let d = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .unwrap();
                    out.entry(ch - b'0').or_default().extend_from_slice(&d);
                }
                _ => {}
            }
        }
        out
    }
}

/// A TCP echo server on 127.0.0.1; returns its port.
pub async fn echo_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

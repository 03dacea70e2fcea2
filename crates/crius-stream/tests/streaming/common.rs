//! Test helpers: a fake backend and raw HTTP/WebSocket client pieces.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crius_stream::{
    AttachRequest, BoxFuture, Error, ErrorKind, ExecRequest, PortStream, StreamBackend,
    StreamServer, StreamServerConfig, Streams,
};
use tokio::io::AsyncWriteExt;
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

pub use crius_stream::client::ws::WsClient;

/// Splits `http://host:port/path` into (addr, path).
pub fn split_url(url: &str) -> (String, String) {
    crius_stream::client::split_url(url).unwrap()
}

/// Sends a request head and returns (status, headers, leftover bytes, stream).
pub async fn http_request(
    url: &str,
    extra_headers: &[(&str, &str)],
) -> (u16, HashMap<String, Vec<String>>, Vec<u8>, TcpStream) {
    let u = crius_stream::client::request(url, extra_headers)
        .await
        .unwrap();
    (u.status, u.headers, u.rest, u.tcp)
}

/// The HTTP status of a refused upgrade.
pub fn refused<T>(r: crius_stream::Result<T>) -> Option<u16> {
    match r {
        Err(Error::Refused { status }) => Some(status),
        _ => None,
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

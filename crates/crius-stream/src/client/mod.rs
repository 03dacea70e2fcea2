//! A small client for the streaming protocols, for tests and tools: raw
//! HTTP upgrade, a WebSocket channel client and a SPDY/3 client. It trusts
//! the server it talks to (no size limits beyond the codecs').

pub mod spdy;
pub mod ws;

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Error, Result};

/// A response to an upgrade request, with the connection kept.
#[derive(Debug)]
pub struct Upgraded {
    /// HTTP status (101 when the upgrade was accepted).
    pub status: u16,
    /// Response headers, names lowercased.
    pub headers: HashMap<String, Vec<String>>,
    /// Bytes read past the response head.
    pub rest: Vec<u8>,
    /// The connection.
    pub tcp: TcpStream,
}

impl Upgraded {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// Splits `http://host:port/path` into the address and the path.
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::InvalidRequest(format!("url {url} is not http://")))?;
    let i = rest.find('/').unwrap_or(rest.len());
    let path = if i == rest.len() { "/" } else { &rest[i..] };
    Ok((rest[..i].to_string(), path.to_string()))
}

/// Sends `GET url` with `headers` and reads the response head.
pub async fn request(url: &str, headers: &[(&str, &str)]) -> Result<Upgraded> {
    let (addr, path) = split_url(url)?;
    let mut tcp = TcpStream::connect(&addr).await?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::Protocol(
                "connection closed before the response head".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(Error::Protocol("response head too long".into()));
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Protocol("malformed status line".into()))?;
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for l in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = l.split_once(':') {
            let e = headers.entry(k.trim().to_ascii_lowercase()).or_default();
            e.push(v.trim().to_string());
        }
    }
    Ok(Upgraded {
        status,
        headers,
        rest: buf[end..].to_vec(),
        tcp,
    })
}

/// Fails with [`Error::Refused`] unless the upgrade was accepted.
fn accepted(u: Upgraded) -> Result<Upgraded> {
    if u.status == 101 {
        Ok(u)
    } else {
        Err(Error::Refused { status: u.status })
    }
}

//! WebSocket client for the Kubernetes channel protocols.

use std::collections::HashMap;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws::frame::{self, Frame};
use crate::{Error, Result};

/// The key sent in `Sec-WebSocket-Key` (clients may use any 16 bytes).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A WebSocket connection speaking a channel protocol.
#[derive(Debug)]
pub struct WsClient {
    /// The connection.
    pub tcp: TcpStream,
    /// Bytes received and not parsed yet.
    pub buf: Vec<u8>,
    /// The subprotocol the server chose ("" for none).
    pub protocol: String,
    mask: u32,
}

/// What an exec or attach session produced.
#[derive(Debug, Default, Clone)]
pub struct ExecOutput {
    /// Bytes received on stdout.
    pub stdout: Vec<u8>,
    /// Bytes received on stderr.
    pub stderr: Vec<u8>,
    /// The raw bytes of the error channel (a Status JSON with v4/v5).
    pub error: Vec<u8>,
}

impl ExecOutput {
    /// The exit code the Status reports: 0 for Success, the `ExitCode`
    /// cause for NonZeroExitCode, `None` for other failures.
    pub fn exit_code(&self) -> Option<i32> {
        let v: serde_json::Value = serde_json::from_slice(&self.error).ok()?;
        if v.get("status")?.as_str()? == "Success" {
            return Some(0);
        }
        let causes = v.get("details")?.get("causes")?.as_array()?;
        causes
            .iter()
            .find(|c| c.get("reason").and_then(|r| r.as_str()) == Some("ExitCode"))?
            .get("message")?
            .as_str()?
            .parse()
            .ok()
    }
}

impl WsClient {
    /// Upgrades `url`, offering the comma-separated `protocols`.
    pub async fn connect(url: &str, protocols: &str) -> Result<WsClient> {
        let mut h = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", KEY),
            ("Sec-WebSocket-Version", "13"),
        ];
        if !protocols.is_empty() {
            h.push(("Sec-WebSocket-Protocol", protocols));
        }
        let u = super::accepted(super::request(url, &h).await?)?;
        if u.header("sec-websocket-accept") != Some(crate::ws::accept_key(KEY).as_str()) {
            return Err(Error::Protocol("wrong Sec-WebSocket-Accept".into()));
        }
        let protocol = u.header("sec-websocket-protocol").unwrap_or("").to_string();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(WsClient {
            tcp: u.tcp,
            buf: u.rest,
            protocol,
            mask: seed | 1,
        })
    }

    fn next_mask(&mut self) -> [u8; 4] {
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        self.mask.to_be_bytes()
    }

    /// Sends one masked frame.
    pub async fn send_raw(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        let mask = self.next_mask();
        frame::encode(&mut out, true, opcode, payload, Some(mask));
        self.tcp.write_all(&out).await?;
        Ok(())
    }

    /// Sends `data` on `channel` (binary protocols).
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        let mut p = Vec::with_capacity(data.len() + 1);
        p.push(channel);
        p.extend_from_slice(data);
        self.send_raw(frame::OP_BINARY, &p).await
    }

    /// v5: closes the client's side of `channel` (for example stdin, 0).
    pub async fn close_channel(&mut self, channel: u8) -> Result<()> {
        self.send(255, &[channel]).await
    }

    /// The next frame; `None` when the connection ends.
    pub async fn recv(&mut self) -> Result<Option<Frame>> {
        loop {
            match frame::parse(&self.buf, 1 << 24, false) {
                Ok(Some((f, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(f));
                }
                Ok(None) => {}
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = self.tcp.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the server closes; returns the bytes per channel
    /// (decoding base64 protocols).
    pub async fn collect(&mut self) -> Result<HashMap<u8, Vec<u8>>> {
        let mut out: HashMap<u8, Vec<u8>> = HashMap::new();
        while let Some(f) = self.recv().await? {
            let Some((&ch, data)) = f.payload.split_first() else {
                if f.opcode == frame::OP_CLOSE {
                    break;
                }
                continue;
            };
            match f.opcode {
                frame::OP_CLOSE => break,
                frame::OP_BINARY => out.entry(ch).or_default().extend_from_slice(data),
                frame::OP_TEXT => {
                    let d = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .map_err(|e| Error::Protocol(e.to_string()))?;
                    out.entry(ch.wrapping_sub(b'0'))
                        .or_default()
                        .extend_from_slice(&d);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Runs a whole v5 exec/attach session: sends `stdin` (then closes it)
    /// and collects the output.
    pub async fn exec(url: &str, stdin: Option<&[u8]>) -> Result<ExecOutput> {
        let mut c = WsClient::connect(url, "v5.channel.k8s.io").await?;
        if let Some(data) = stdin {
            for chunk in data.chunks(32 * 1024) {
                c.send(0, chunk).await?;
            }
            c.close_channel(0).await?;
        }
        let mut out = c.collect().await?;
        Ok(ExecOutput {
            stdout: out.remove(&1).unwrap_or_default(),
            stderr: out.remove(&2).unwrap_or_default(),
            error: out.remove(&3).unwrap_or_default(),
        })
    }
}

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

/// What a WebSocket port-forward session received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortEvent {
    /// Bytes from the pod's port at this index of the request's ports.
    Data(usize, Vec<u8>),
    /// Text on the error channel of the port at this index.
    Error(usize, Vec<u8>),
}

/// The binary channel protocol port-forward speaks over WebSocket (as kubelet does).
const PORT_FORWARD: &str = "v4.channel.k8s.io";

/// A port-forward session over WebSocket (`v4.channel.k8s.io`): port `i` of the
/// PortForward request has data channel `2i` and error channel `2i+1`, and the
/// server's first message on each channel starts with the port, little-endian.
/// One connection per port for the session's lifetime (no half-close: the
/// session ends when either side closes the WebSocket).
#[derive(Debug)]
pub struct WsPortForward {
    ws: WsClient,
    ports: Vec<u16>,
    /// Per channel: whether its port prefix was received.
    prefixed: Vec<bool>,
}

impl WsPortForward {
    /// Upgrades `url`, which was issued for `ports` (in the request's order).
    pub async fn connect(url: &str, ports: &[u16]) -> Result<WsPortForward> {
        let ws = WsClient::connect(url, PORT_FORWARD).await?;
        if ws.protocol != PORT_FORWARD {
            return Err(Error::Protocol(format!(
                "server chose protocol {:?}, not {PORT_FORWARD}",
                ws.protocol
            )));
        }
        Ok(WsPortForward {
            ws,
            ports: ports.to_vec(),
            prefixed: vec![false; ports.len() * 2],
        })
    }

    /// Sends `data` to the port at `index`.
    pub async fn send(&mut self, index: usize, data: &[u8]) -> Result<()> {
        let channel = u8::try_from(index * 2)
            .ok()
            .filter(|_| index < self.ports.len())
            .ok_or_else(|| Error::InvalidRequest(format!("no forwarded port at {index}")))?;
        for chunk in data.chunks(32 * 1024) {
            self.ws.send(channel, chunk).await?;
        }
        Ok(())
    }

    /// The next data or error bytes; `None` once the server closed the session.
    pub async fn recv(&mut self) -> Result<Option<PortEvent>> {
        loop {
            let Some(f) = self.ws.recv().await? else {
                return Ok(None);
            };
            match f.opcode {
                frame::OP_CLOSE => return Ok(None),
                frame::OP_BINARY => {}
                frame::OP_PING | frame::OP_PONG => continue,
                op => {
                    return Err(Error::Protocol(format!(
                        "unexpected frame opcode {op} in a port-forward session"
                    )))
                }
            }
            if !f.fin {
                return Err(Error::Protocol("fragmented port-forward message".into()));
            }
            if let Some(event) = self.event(&f.payload)? {
                return Ok(Some(event));
            }
        }
    }

    /// Decodes one binary message; `None` when it carried no bytes for the caller.
    fn event(&mut self, payload: &[u8]) -> Result<Option<PortEvent>> {
        let Some((&channel, mut data)) = payload.split_first() else {
            return Err(Error::Protocol("empty port-forward message".into()));
        };
        let ch = usize::from(channel);
        let index = ch / 2;
        let (Some(&port), Some(prefixed)) = (self.ports.get(index), self.prefixed.get_mut(ch))
        else {
            return Err(Error::Protocol(format!(
                "message on channel {channel}, but only {} ports are forwarded",
                self.ports.len()
            )));
        };
        if !*prefixed {
            let Some((head, rest)) = data.split_first_chunk::<2>() else {
                return Err(Error::Protocol(format!(
                    "first message on channel {channel} lacks its port"
                )));
            };
            let got = u16::from_le_bytes(*head);
            if got != port {
                return Err(Error::Protocol(format!(
                    "channel {channel} announced port {got}, expected {port}"
                )));
            }
            *prefixed = true;
            data = rest;
        }
        if data.is_empty() {
            return Ok(None);
        }
        let data = data.to_vec();
        Ok(Some(if ch % 2 == 0 {
            PortEvent::Data(index, data)
        } else {
            PortEvent::Error(index, data)
        }))
    }

    /// Closes the session (every forwarded connection).
    pub async fn close(mut self) -> Result<()> {
        self.ws.send_raw(frame::OP_CLOSE, &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn session(ports: &[u16]) -> WsPortForward {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tcp.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n",
                crate::ws::accept_key(KEY)
            );
            tcp.write_all(resp.as_bytes()).await.unwrap();
            tcp
        });
        let url = format!("http://{addr}/portforward/t");
        let (pf, _tcp) = tokio::join!(WsPortForward::connect(&url, ports), server);
        pf.unwrap()
    }

    #[tokio::test]
    async fn decodes_prefixes_and_rejects_malformed_messages() {
        let mut pf = session(&[8080, 9]).await;
        // The prefix alone carries nothing; bytes after it are data.
        assert_eq!(pf.event(&[0, 0x90, 0x1f]).unwrap(), None);
        assert_eq!(
            pf.event(&[3, 9, 0, b'e']).unwrap(),
            Some(PortEvent::Error(1, b"e".to_vec()))
        );
        assert_eq!(
            pf.event(&[0, b'h', b'i']).unwrap(),
            Some(PortEvent::Data(0, b"hi".to_vec()))
        );
        for bad in [
            &[][..],
            &[1],
            &[1, 0x90],
            &[2, 1, 0],
            &[4, 0, 0],
            &[255, 1, 2],
        ] {
            assert!(pf.event(bad).is_err(), "{bad:?}");
        }
        // Every one-, two- and three-byte message is decoded or refused, never a panic.
        for a in 0..=255u8 {
            for b in [0u8, 1, 2, 255] {
                for msg in [&[a][..], &[a, b], &[a, b, 0]] {
                    pf.prefixed.fill(false);
                    let _ = pf.event(msg);
                    let _ = pf.event(msg);
                }
            }
        }
        assert!(pf.send(2, b"x").await.is_err());
    }
}

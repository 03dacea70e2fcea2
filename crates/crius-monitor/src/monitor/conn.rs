//! One client connection: non-blocking, with its own read and write buffers so a slow
//! client never blocks the monitor or the other clients.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use nix::sys::socket::{send, MsgFlags};

use crius_monitor::protocol::{encode, take_frame, Response};
use crius_monitor::Result;

/// A subscriber whose unsent events exceed this is dropped rather than buffered forever.
pub(crate) const MAX_BACKLOG: usize = 32 << 20;

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Hello was exchanged.
    pub(crate) greeted: bool,
    /// An answer is pending (stop, exec, shutdown); no new request is read until then.
    pub(crate) waiting: bool,
    /// The connection receives events and sends no more requests.
    pub(crate) subscribed: bool,
    /// Close once the write buffer is flushed.
    pub(crate) closing: bool,
    /// The peer is gone or broke the protocol; drop now.
    pub(crate) dead: bool,
}

impl Conn {
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            greeted: false,
            waiting: false,
            subscribed: false,
            closing: false,
            dead: false,
        }
    }

    /// Whether to poll for input.
    pub(crate) fn wants_read(&self) -> bool {
        !self.dead && !self.closing && !self.waiting && !self.subscribed
    }

    /// Whether to poll for output.
    pub(crate) fn wants_write(&self) -> bool {
        !self.dead && !self.wbuf.is_empty()
    }

    /// Reads whatever is available into the read buffer.
    pub(crate) fn fill(&mut self) {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => self.rbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// The next complete request body, if one is buffered. An oversized header is an
    /// error: the stream cannot be resynchronised, so the caller answers and closes.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        take_frame(&mut self.rbuf)
    }

    /// Queues `response` and tries to send it right away.
    pub(crate) fn send(&mut self, response: &Response) {
        match encode(response) {
            Ok(frame) => self.wbuf.extend_from_slice(&frame),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode response");
                if let Ok(frame) = encode(&Response::error(&e)) {
                    self.wbuf.extend_from_slice(&frame);
                }
            }
        }
        self.flush();
        if self.wbuf.len() > MAX_BACKLOG {
            tracing::warn!("client does not read its answers; dropping the connection");
            self.dead = true;
        }
    }

    /// Sends as much of the write buffer as the socket takes (never SIGPIPE).
    pub(crate) fn flush(&mut self) {
        while !self.wbuf.is_empty() && !self.dead {
            match send(
                self.stream.as_raw_fd(),
                &self.wbuf,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(nix::Error::EAGAIN) => return,
                Err(nix::Error::EINTR) => {}
                Err(_) => self.dead = true,
            }
        }
        if self.wbuf.is_empty() && self.closing {
            self.dead = true;
        }
    }

    /// Blocking best-effort flush (used right before the monitor exits).
    pub(crate) fn flush_blocking(&mut self) {
        let _ = self.stream.set_nonblocking(false);
        let _ = self
            .stream
            .set_write_timeout(Some(std::time::Duration::from_secs(2)));
        while !self.wbuf.is_empty() {
            match send(self.stream.as_raw_fd(), &self.wbuf, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(nix::Error::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}

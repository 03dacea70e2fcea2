//! One client connection: non-blocking, with its own read and write buffers so a slow
//! client never blocks the monitor or the other clients.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{send, MsgFlags};

use crius_monitor::fdpass;
use crius_monitor::protocol::{encode, take_frame, Response, MAX_PENDING_FDS};
use crius_monitor::Result;

/// A subscriber whose unsent events exceed this is dropped rather than buffered forever.
pub(crate) const MAX_BACKLOG: usize = 32 << 20;

/// What a connection serves once its session started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Session {
    /// Requests and answers (or events after Subscribe).
    None,
    /// Dedicated to the interactive exec with this id.
    Exec(u64),
    /// Dedicated to an attach to this container.
    Attach(String),
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: UnixStream,
    rbuf: Vec<u8>,
    /// Received descriptors, each with the offset in `rbuf` of the byte it came with
    /// (a frame owns the descriptors that arrived with its bytes).
    rfds: Vec<(usize, OwnedFd)>,
    wbuf: Vec<u8>,
    /// Descriptors to send, each group with the offset in `wbuf` of its frame's first byte.
    wfds: VecDeque<(usize, Vec<OwnedFd>)>,
    /// The session the connection is dedicated to.
    pub(crate) session: Session,
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
            rfds: Vec::new(),
            wbuf: Vec::new(),
            wfds: VecDeque::new(),
            session: Session::None,
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

    /// Reads whatever is available (bytes and descriptors) into the read buffer. At
    /// most [`MAX_PENDING_FDS`] descriptors are held; more are closed on arrival.
    pub(crate) fn fill(&mut self) {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match fdpass::recv(self.stream.as_fd(), &mut buf, true) {
                Ok((n, fds)) => {
                    let at = self.rbuf.len();
                    for fd in fds {
                        if self.rfds.len() < MAX_PENDING_FDS {
                            self.rfds.push((at, fd));
                        } else {
                            tracing::warn!("client passed more descriptors than allowed; closing");
                        }
                    }
                    if n == 0 {
                        self.dead = true;
                        return;
                    }
                    self.rbuf.extend_from_slice(&buf[..n]);
                }
                Err(nix::Error::EAGAIN) => return,
                Err(nix::Error::EINTR) => {}
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// The next complete request body with the descriptors that came with it, if one is
    /// buffered. An oversized header is an error: the stream cannot be resynchronised,
    /// so the caller answers and closes.
    pub(crate) fn next_frame(&mut self) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let Some(body) = take_frame(&mut self.rbuf)? else {
            return Ok(None);
        };
        let used = body.len() + 4;
        let (mine, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rfds)
            .into_iter()
            .partition(|(at, _)| *at < used);
        self.rfds = later.into_iter().map(|(at, fd)| (at - used, fd)).collect();
        Ok(Some((body, mine.into_iter().map(|(_, fd)| fd).collect())))
    }

    /// Queues `response` and tries to send it right away.
    pub(crate) fn send(&mut self, response: &Response) {
        self.send_with_fds(response, Vec::new());
    }

    /// Queues `response` with `fds` attached to its first byte; our copies of the
    /// descriptors are closed once sent (or with the connection).
    pub(crate) fn send_with_fds(&mut self, response: &Response, fds: Vec<OwnedFd>) {
        let at = self.wbuf.len();
        match encode(response) {
            Ok(frame) => {
                self.wbuf.extend_from_slice(&frame);
                if !fds.is_empty() {
                    self.wfds.push_back((at, fds));
                }
            }
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

    /// Sends as much of the write buffer as the socket takes (never SIGPIPE); a frame
    /// with descriptors goes with them in the sendmsg(2) of its first bytes.
    pub(crate) fn flush(&mut self) {
        while !self.wbuf.is_empty() && !self.dead {
            let next_fds = self.wfds.front().map(|(at, _)| *at);
            let sent = match next_fds {
                Some(0) => {
                    let end = self.wfds.get(1).map_or(self.wbuf.len(), |(at, _)| *at);
                    let fds: Vec<BorrowedFd<'_>> = self.wfds[0].1.iter().map(AsFd::as_fd).collect();
                    fdpass::send(self.stream.as_fd(), &self.wbuf[..end], &fds, true)
                }
                _ => {
                    let end = next_fds.unwrap_or(self.wbuf.len());
                    send(
                        self.stream.as_raw_fd(),
                        &self.wbuf[..end],
                        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                    )
                }
            };
            match sent {
                Ok(0) => return,
                Ok(n) => {
                    if next_fds == Some(0) {
                        self.wfds.pop_front();
                    }
                    self.wbuf.drain(..n);
                    for (at, _) in &mut self.wfds {
                        *at -= n;
                    }
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

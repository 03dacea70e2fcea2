//! Attach: criusd passes sinks (write ends) for a running container's output; every
//! chunk the monitor reads for the CRI log is also written to each attacher's sinks,
//! non-blocking, with at most [`MAX_ATTACH_BACKLOG`] bytes pending per sink. An attacher
//! that falls further behind is dropped, so an attacher never slows logging or the
//! other attachers. The container's stdin is handed out as a dup; the monitor never
//! writes into it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crius_monitor::protocol::{
    Attach, ContainerState, Response, ATTACH_ENDED_EXITED, ATTACH_ENDED_TOO_SLOW,
    MAX_ATTACH_BACKLOG,
};
use crius_monitor::{Error, Result};

use super::conn::Session;
use super::containers::set_nonblocking;
use super::logs::Stream;
use super::Monitor;

/// Why an attacher whose sink failed is dropped.
const ATTACH_ENDED_SINK_CLOSED: &str = "attach client closed its output";

/// One output sink of an attacher.
#[derive(Debug)]
struct Sink {
    fd: OwnedFd,
    /// Output the sink did not take yet, oldest first.
    pending: Vec<u8>,
}

impl Sink {
    /// Writes what the sink takes now; the rest waits for POLLOUT. Err: the attacher
    /// must be dropped, for this reason.
    fn push(&mut self, data: &[u8]) -> std::result::Result<(), &'static str> {
        let mut data = data;
        if self.pending.is_empty() {
            let n = write_some(self.fd.as_fd(), data)?;
            data = &data[n..];
        }
        if self.pending.len() + data.len() > MAX_ATTACH_BACKLOG {
            return Err(ATTACH_ENDED_TOO_SLOW);
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    /// Writes pending output until the sink would block.
    fn flush(&mut self) -> std::result::Result<(), &'static str> {
        let n = write_some(self.fd.as_fd(), &self.pending)?;
        self.pending.drain(..n);
        Ok(())
    }
}

/// Writes as much of `data` as `fd` takes without blocking. SIGPIPE is blocked in the
/// monitor, so a sink whose reader is gone fails with EPIPE.
fn write_some(fd: BorrowedFd<'_>, data: &[u8]) -> std::result::Result<usize, &'static str> {
    let mut done = 0;
    while done < data.len() {
        match nix::unistd::write(fd, &data[done..]) {
            Ok(0) | Err(nix::Error::EAGAIN) => break,
            Ok(n) => done += n,
            Err(nix::Error::EINTR) => {}
            Err(_) => return Err(ATTACH_ENDED_SINK_CLOSED),
        }
    }
    Ok(done)
}

/// One attached client of a container.
#[derive(Debug)]
pub(crate) struct Attacher {
    /// Its connection.
    conn: u64,
    stdout: Option<Sink>,
    stderr: Option<Sink>,
    /// Set when the attacher must be dropped, with the reason sent to the client.
    ended: Option<&'static str>,
    /// The container exited: end once the pending output is written.
    exited: bool,
    /// It was given the container's stdin.
    stdin: bool,
}

impl Attacher {
    fn sink(&mut self, stream: Stream) -> Option<&mut Sink> {
        match stream {
            Stream::Stdout => self.stdout.as_mut(),
            Stream::Stderr => self.stderr.as_mut(),
        }
    }

    /// Fans a chunk of container output out to the matching sink.
    pub(crate) fn offer(&mut self, stream: Stream, data: &[u8]) {
        if self.ended.is_some() {
            return;
        }
        if let Some(Err(reason)) = self.sink(stream).map(|s| s.push(data)) {
            self.ended = Some(reason);
        }
    }

    fn flush(&mut self, stream: Stream) {
        if self.ended.is_some() {
            return;
        }
        if let Some(Err(reason)) = self.sink(stream).map(Sink::flush) {
            self.ended = Some(reason);
        }
    }

    fn drained(&self) -> bool {
        [&self.stdout, &self.stderr]
            .into_iter()
            .flatten()
            .all(|s| s.pending.is_empty())
    }

    /// The sinks with pending output, to poll for POLLOUT.
    pub(crate) fn pending_sinks(&self) -> impl Iterator<Item = (u64, Stream, BorrowedFd<'_>)> {
        let conn = self.conn;
        let out = self.stdout.as_ref().map(|s| (Stream::Stdout, s));
        let err = self.stderr.as_ref().map(|s| (Stream::Stderr, s));
        out.into_iter()
            .chain(err)
            .filter(move |(_, s)| !s.pending.is_empty() && self.ended.is_none())
            .map(move |(stream, s)| (conn, stream, s.fd.as_fd()))
    }

    /// Why the attach is over, if it is.
    fn end_reason(&self) -> Option<&'static str> {
        self.ended
            .or_else(|| (self.exited && self.drained()).then_some(ATTACH_ENDED_EXITED))
    }
}

impl Monitor {
    /// Attaches `conn` to a running container, with the sinks `fds` (stdout, stderr,
    /// one per flag); answers Attached with a dup of the container's stdin if asked.
    pub(crate) fn attach(
        &mut self,
        conn: u64,
        req: Attach,
        fds: Vec<OwnedFd>,
    ) -> Result<(Response, Vec<OwnedFd>)> {
        let c = self.container(&req.id)?;
        if c.status.state != ContainerState::Running {
            return Err(Error::WrongState {
                id: req.id.clone(),
                op: "attach",
                state: format!("{:?}", c.status.state),
            });
        }
        if req.stderr && c.tty {
            return Err(Error::InvalidRequest(format!(
                "attach to {}: the container has a tty, so all its output is on stdout; \
                 attach with stderr=false",
                req.id
            )));
        }
        let wanted = usize::from(req.stdout) + usize::from(req.stderr);
        if fds.len() != wanted {
            return Err(Error::InvalidRequest(format!(
                "attach to {}: the request carried {} fds but needs {wanted} (one sink per \
                 output flag that is true)",
                req.id,
                fds.len()
            )));
        }
        for fd in &fds {
            set_nonblocking(fd)?;
        }
        let stdin = match (&c.stdin, req.stdin) {
            // try_clone dups with F_DUPFD_CLOEXEC.
            (Some(fd), true) => vec![fd
                .try_clone()
                .map_err(|e| Error::io(format!("dup stdin of {}", req.id), e))?],
            _ => Vec::new(),
        };
        let tty = c.tty;
        let mut fds = fds.into_iter();
        let mut sink = |wanted: bool| {
            wanted.then(|| fds.next()).flatten().map(|fd| Sink {
                fd,
                pending: Vec::new(),
            })
        };
        let attacher = Attacher {
            conn,
            stdout: sink(req.stdout),
            stderr: sink(req.stderr),
            ended: None,
            exited: false,
            stdin: !stdin.is_empty(),
        };
        self.container_mut(&req.id)?.attachers.push(attacher);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Session::Attach(req.id.clone());
        }
        tracing::debug!(container_id = %req.id, stdin = !stdin.is_empty(), "attached");
        Ok((
            Response::Attached {
                tty,
                stdin: !stdin.is_empty(),
            },
            stdin,
        ))
    }

    /// The attacher on `conn` went away. One that held stdin ends the container's
    /// stdin with `stdin_once` even without a CloseStdin: a client that disconnects
    /// right after closing its stdin may be gone before criusd could send it.
    pub(crate) fn detach(&mut self, id: &str, conn: u64) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let had_stdin = c.attachers.iter().any(|a| a.conn == conn && a.stdin);
        c.attachers.retain(|a| a.conn != conn);
        if had_stdin {
            self.close_stdin(id);
        }
    }

    /// CloseStdin: with `stdin_once`, the monitor closes its stdin write end.
    pub(crate) fn close_stdin(&mut self, id: &str) {
        if let Some(c) = self.containers.get_mut(id) {
            if c.stdin_once && c.stdin.take().is_some() {
                tracing::debug!(container_id = %id, "stdin closed after the attach (stdin_once)");
            }
        }
    }

    /// A sink with pending output became writable.
    pub(crate) fn on_sink_writable(&mut self, id: &str, conn: u64, stream: Stream) {
        if let Some(c) = self.containers.get_mut(id) {
            if let Some(a) = c.attachers.iter_mut().find(|a| a.conn == conn) {
                a.flush(stream);
            }
        }
        self.settle_attachers(id);
    }

    /// The container exited (its output drained into the sinks): each attacher ends
    /// once what it has pending is written.
    pub(crate) fn attach_container_exited(&mut self, id: &str) {
        if let Some(c) = self.containers.get_mut(id) {
            for a in &mut c.attachers {
                a.flush(Stream::Stdout);
                a.flush(Stream::Stderr);
                a.exited = true;
            }
        }
        self.settle_attachers(id);
    }

    /// Ends the attachers that are over: AttachEnded on their connection, which closes
    /// once flushed; their sinks close here.
    pub(crate) fn settle_attachers(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        let (over, live): (Vec<_>, Vec<_>) = std::mem::take(&mut c.attachers)
            .into_iter()
            .partition(|a| a.end_reason().is_some());
        c.attachers = live;
        for a in over {
            let reason = a.end_reason().unwrap_or(ATTACH_ENDED_EXITED);
            tracing::debug!(container_id = %id, reason, "attach ended");
            if let Some(conn) = self.conns.get_mut(&a.conn) {
                conn.send(&Response::AttachEnded {
                    reason: reason.into(),
                });
                conn.closing = true;
                conn.flush();
            }
        }
    }
}

//! ExecSync: the monitor clones the exec process through crius-oci itself (no helper
//! process per exec), collects its output up to a cap per stream, and kills it at the
//! timeout. The answer goes out once the process is reaped and its pipes are drained.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crius_monitor::protocol::{ContainerState, ExecSync, Response, MAX_EXEC_OUTPUT_CAP};
use crius_monitor::{Error, Result};
use crius_oci::{ExitStatus, Process, Stdio};

use super::containers::set_nonblocking;
use super::logs::Stream;
use super::Monitor;

/// One exec in flight.
#[derive(Debug)]
pub(crate) struct Exec {
    pub(crate) id: u64,
    conn: u64,
    pub(crate) pid: i32,
    _process: Process,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    cap: usize,
    truncated: bool,
    pub(crate) deadline: Option<Instant>,
    timed_out: bool,
    pub(crate) exit: Option<ExitStatus>,
}

impl Exec {
    pub(crate) fn output_fds(&self) -> impl Iterator<Item = (Stream, BorrowedFd<'_>)> {
        let out = self.out.as_ref().map(|fd| (Stream::Stdout, fd.as_fd()));
        let err = self.err.as_ref().map(|fd| (Stream::Stderr, fd.as_fd()));
        out.into_iter().chain(err)
    }

    /// Reads what is available on `stream`, keeping at most `cap` bytes.
    fn collect(&mut self, stream: Stream) {
        let (slot, sink) = match stream {
            Stream::Stdout => (&mut self.out, &mut self.stdout),
            Stream::Stderr => (&mut self.err, &mut self.stderr),
        };
        let Some(fd) = slot.as_ref() else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        let eof = loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    let room = self.cap.saturating_sub(sink.len());
                    if n > room {
                        self.truncated = true;
                    }
                    sink.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(nix::Error::EAGAIN) => break false,
                Err(nix::Error::EINTR) => {}
                Err(_) => break true,
            }
        };
        if eof {
            *slot = None;
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    set_nonblocking(&r)?;
    Ok((r, w))
}

impl Monitor {
    /// Starts an exec; the answer is sent by `finish_exec`.
    pub(crate) fn exec_sync(&mut self, conn: u64, req: ExecSync) -> Result<()> {
        let c = self.container(&req.id)?;
        if c.status.state != ContainerState::Running {
            return Err(Error::WrongState {
                id: req.id.clone(),
                op: "exec",
                state: format!("{:?}", c.status.state),
            });
        }
        let terminal = req.process.terminal().unwrap_or(false);
        let (stdio, out, err) = if terminal {
            (Stdio::default(), None, None)
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let stdio = Stdio {
                stdin: None,
                stdout: Some(out_w),
                stderr: Some(err_w),
                extra_fds: Vec::new(),
            };
            (stdio, Some(out_r), Some(err_r))
        };
        let choice = c.runtime_choice();
        let mut process = self.runtime(&choice).exec(&req.id, &req.process, stdio)?;
        let out = match process.take_pty_master() {
            Some(master) => {
                set_nonblocking(&master)?;
                Some(master)
            }
            None => out,
        };
        let id = self.next_id;
        self.next_id += 1;
        let deadline =
            (req.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(req.timeout_ms));
        tracing::debug!(container_id = %req.id, pid = process.pid(), "exec started");
        self.execs.insert(
            id,
            Exec {
                id,
                conn,
                pid: process.pid(),
                _process: process,
                out,
                err,
                stdout: Vec::new(),
                stderr: Vec::new(),
                cap: usize::try_from(req.output_cap.min(MAX_EXEC_OUTPUT_CAP)).unwrap_or(usize::MAX),
                truncated: false,
                deadline,
                timed_out: false,
                exit: None,
            },
        );
        Ok(())
    }

    pub(crate) fn on_exec_output(&mut self, id: u64, stream: Stream) {
        if let Some(e) = self.execs.get_mut(&id) {
            e.collect(stream);
        }
    }

    pub(crate) fn exec_timed_out(&mut self, id: u64) {
        if let Some(e) = self.execs.get_mut(&id) {
            e.deadline = None;
            if e.exit.is_none() {
                e.timed_out = true;
                // Not reaped yet, so the pid cannot have been reused.
                let _ = kill(Pid::from_raw(e.pid), Signal::SIGKILL);
            }
        }
    }

    /// The exec process was reaped: drain its output and answer.
    pub(crate) fn finish_exec(&mut self, id: u64) {
        let Some(mut e) = self.execs.remove(&id) else {
            return;
        };
        e.collect(Stream::Stdout);
        e.collect(Stream::Stderr);
        let exit_code = match e.exit {
            Some(ExitStatus::Exited(code)) => code,
            Some(ExitStatus::Signaled(sig)) => 128 + sig,
            None => -1,
        };
        let response = Response::ExecResult {
            exit_code,
            stdout: e.stdout,
            stderr: e.stderr,
            timed_out: e.timed_out,
            truncated: e.truncated,
        };
        if let Some(c) = self.conns.get_mut(&e.conn) {
            c.waiting = false;
            c.send(&response);
        }
        self.serve_buffered(e.conn);
    }
}

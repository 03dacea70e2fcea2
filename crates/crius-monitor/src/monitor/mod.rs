//! The monitor process: one per pod, single-threaded, a poll(2) loop over the listening
//! socket, client connections, the SIGCHLD self-pipe, container and exec output pipes,
//! and timers (stop and exec deadlines).
//!
//! Every child is reaped here (`waitpid(-1)` on SIGCHLD; the monitor is a child
//! subreaper, so runc-created inits and orphans come back to it). An exit is written to
//! `containers/<id>/status.json` before any client hears about it.

mod attach;
mod conn;
mod containers;
mod exec;
mod exec_session;
mod logs;
mod pins;
mod status;
pub(crate) mod sys;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crius_monitor::protocol::{decode, ContainerStatus, Request, Response, PROTOCOL_VERSION};
use crius_monitor::{Error, PodConfig, Result};
use crius_oci::{BinaryRuntime, BuiltinRuntime};

use conn::{Conn, Session};
use containers::Container;
use exec::Exec;
use exec_session::ExecSession;
pub(crate) use logs::Stream;
pub(crate) use pins::{pin_namespaces, Pins};

/// What a ready poll entry belongs to.
#[derive(Debug, Clone)]
enum Token {
    Listener,
    Sigchld,
    Conn(u64),
    Output(String, Stream),
    ExecOutput(u64, Stream),
    /// An attacher's sink with pending output: (container, attacher conn, stream).
    Sink(String, u64, Stream),
}

/// How a request is answered.
#[derive(Debug)]
enum Reply {
    /// Now, with these descriptors attached.
    Now(Response, Vec<OwnedFd>),
    /// Later; nothing more is read from the connection until then.
    Later,
    /// Never (CloseStdin).
    Silent,
}

impl From<Option<Response>> for Reply {
    fn from(r: Option<Response>) -> Self {
        r.map_or(Reply::Later, |r| Reply::Now(r, Vec::new()))
    }
}

/// A request whose answer waits for containers to exit.
#[derive(Debug)]
struct StopWaiter {
    conn: u64,
    ids: Vec<String>,
}

/// The monitor's whole state.
#[derive(Debug)]
pub(crate) struct Monitor {
    config: PodConfig,
    listener: UnixListener,
    sigchld: OwnedFd,
    pins: Pins,
    conns: BTreeMap<u64, Conn>,
    next_id: u64,
    containers: BTreeMap<String, Container>,
    builtin: BuiltinRuntime,
    binaries: HashMap<PathBuf, BinaryRuntime>,
    execs: BTreeMap<u64, Exec>,
    sessions: BTreeMap<u64, ExecSession>,
    stop_waiters: Vec<StopWaiter>,
    shutdown: Option<u64>,
}

impl Monitor {
    pub(crate) fn new(
        config: PodConfig,
        listener: UnixListener,
        sigchld: OwnedFd,
        pins: Pins,
    ) -> Self {
        let builtin = match &config.systemd_bus {
            Some(bus) => BuiltinRuntime::new().with_systemd_bus(bus),
            None => BuiltinRuntime::new(),
        };
        Self {
            config,
            listener,
            sigchld,
            pins,
            conns: BTreeMap::new(),
            next_id: 1,
            containers: BTreeMap::new(),
            builtin,
            binaries: HashMap::new(),
            execs: BTreeMap::new(),
            sessions: BTreeMap::new(),
            stop_waiters: Vec::new(),
            shutdown: None,
        }
    }

    /// Serves until `Shutdown`; then cleans up and exits the process.
    pub(crate) fn run(mut self) -> ! {
        loop {
            let ready = self.poll_once();
            for (token, revents) in ready {
                self.dispatch(token, revents);
            }
            self.reap_children();
            self.fire_timers();
            self.answer_stop_waiters();
            self.drop_dead_conns();
            if let Some(conn) = self.shutdown {
                if !self.containers.values().any(Container::is_live) {
                    self.finish_shutdown(conn);
                }
            }
        }
    }

    fn poll_once(&mut self) -> Vec<(Token, PollFlags)> {
        let mut tokens = Vec::new();
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        tokens.push(Token::Listener);
        fds.push(PollFd::new(self.sigchld.as_fd(), PollFlags::POLLIN));
        tokens.push(Token::Sigchld);
        for (id, c) in &self.conns {
            let mut flags = PollFlags::empty();
            if c.wants_read() {
                flags |= PollFlags::POLLIN;
            }
            if c.wants_write() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), flags));
            tokens.push(Token::Conn(*id));
        }
        for (id, c) in &self.containers {
            for (stream, fd) in c.output_fds() {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                tokens.push(Token::Output(id.clone(), stream));
            }
        }
        for (id, e) in &self.execs {
            for (stream, fd) in e.output_fds() {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                tokens.push(Token::ExecOutput(*id, stream));
            }
        }
        for (id, c) in &self.containers {
            for (conn, stream, fd) in c.pending_sinks() {
                fds.push(PollFd::new(fd, PollFlags::POLLOUT));
                tokens.push(Token::Sink(id.clone(), conn, stream));
            }
        }
        let timeout = self.next_deadline().map_or(PollTimeout::NONE, |d| {
            let ms = d.saturating_duration_since(Instant::now()).as_millis() + 1;
            PollTimeout::try_from(ms.min(60_000)).unwrap_or(PollTimeout::MAX)
        });
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => tracing::error!(error = %e, "poll"),
        }
        fds.iter()
            .zip(tokens)
            .filter_map(|(fd, token)| {
                let revents = fd.revents().unwrap_or(PollFlags::empty());
                (!revents.is_empty()).then_some((token, revents))
            })
            .collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let ctr = self.containers.values().filter_map(|c| c.kill_at);
        let exec = self.execs.values().filter_map(|e| e.deadline);
        ctr.chain(exec).min()
    }

    fn dispatch(&mut self, token: Token, revents: PollFlags) {
        match token {
            Token::Listener => self.accept(),
            Token::Sigchld => {
                let mut buf = [0u8; 256];
                while matches!(nix::unistd::read(&self.sigchld, &mut buf), Ok(n) if n > 0) {}
            }
            Token::Conn(id) => self.on_conn(id, revents),
            Token::Output(id, stream) => self.on_output(&id, stream),
            Token::ExecOutput(id, stream) => self.on_exec_output(id, stream),
            Token::Sink(id, conn, stream) => self.on_sink_writable(&id, conn, stream),
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    self.conns.insert(id, Conn::new(stream));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    return;
                }
            }
        }
    }

    fn on_conn(&mut self, id: u64, revents: PollFlags) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if revents.contains(PollFlags::POLLOUT) {
            conn.flush();
        }
        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            if conn.wants_read() {
                conn.fill();
            } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                conn.dead = true;
            }
        }
        self.serve_buffered(id);
    }

    /// Answers every complete request buffered on connection `id`, one at a time.
    fn serve_buffered(&mut self, id: u64) {
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            // One request at a time: nothing more is served while an answer is pending,
            // after Subscribe, or once the connection is being closed.
            if conn.waiting || conn.subscribed || conn.closing {
                return;
            }
            let (body, fds) = match conn.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    conn.send(&Response::error(&e));
                    conn.closing = true;
                    conn.flush();
                    return;
                }
            };
            let request = match decode::<Request>(&body) {
                Ok(r) => r,
                Err(e) => {
                    conn.send(&Response::error(&e));
                    continue;
                }
            };
            if let Some((response, fds)) = self.handle(id, request, fds) {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.send_with_fds(&response, fds);
                }
            }
        }
    }

    /// Serves one request with the descriptors that came with it; `None` when the
    /// answer comes later (or never).
    fn handle(
        &mut self,
        conn_id: u64,
        request: Request,
        fds: Vec<OwnedFd>,
    ) -> Option<(Response, Vec<OwnedFd>)> {
        let conn = self.conns.get_mut(&conn_id)?;
        if !conn.greeted {
            return Some((
                match request {
                    Request::Hello { version } if version == PROTOCOL_VERSION => {
                        conn.greeted = true;
                        Response::Hello {
                            version: PROTOCOL_VERSION,
                            monitor_pid: i32::try_from(std::process::id()).unwrap_or(0),
                        }
                    }
                    Request::Hello { version } => {
                        conn.closing = true;
                        Response::error(&Error::VersionMismatch {
                            ours: PROTOCOL_VERSION,
                            theirs: version,
                        })
                    }
                    _ => {
                        conn.closing = true;
                        Response::error(&Error::InvalidRequest(
                            "the first request must be Hello".into(),
                        ))
                    }
                },
                Vec::new(),
            ));
        }
        if self.shutdown.is_some() {
            return Some((
                Response::error(&Error::WrongState {
                    id: self.config.pod_id.clone(),
                    op: "serve requests",
                    state: "shutting down".into(),
                }),
                Vec::new(),
            ));
        }
        let span = tracing::debug_span!(
            "request",
            op = request.name(),
            container_id = request.container_id().unwrap_or_default()
        )
        .entered();
        let session = conn.session.clone();
        let result = match (&session, request) {
            (Session::None, request) => self.route(conn_id, request, fds),
            (Session::Attach(id), Request::CloseStdin) => {
                self.close_stdin(id);
                Ok(Reply::Silent)
            }
            (_, request) => Err(Error::InvalidRequest(format!(
                "{} on a connection dedicated to an exec or attach session",
                request.name()
            ))),
        };
        if let Err(e) = &result {
            // Answered to criusd, which logs it; here only for debugging.
            tracing::debug!(error = %e, "request failed");
        }
        drop(span);
        match result {
            Ok(Reply::Now(r, fds)) => Some((r, fds)),
            Ok(Reply::Later) => {
                if let Some(c) = self.conns.get_mut(&conn_id) {
                    c.waiting = true;
                }
                None
            }
            Ok(Reply::Silent) => None,
            Err(e) => Some((Response::error(&e), Vec::new())),
        }
    }

    fn route(&mut self, conn_id: u64, request: Request, fds: Vec<OwnedFd>) -> Result<Reply> {
        let now = |r: Result<Response>| r.map(|r| Reply::Now(r, Vec::new()));
        match request {
            Request::Hello { .. } => Err(Error::InvalidRequest("Hello was already sent".into())),
            Request::CreateContainer(c) => now(self.create(c)),
            Request::StartContainer { id } => now(self.start(&id).map(|()| Response::Ok)),
            Request::Signal { id, signal } => now(self.signal(&id, signal).map(|()| Response::Ok)),
            Request::StopContainer {
                id,
                timeout_ms,
                signal,
            } => self
                .stop(conn_id, vec![id], timeout_ms, signal)
                .map(Reply::from),
            Request::RemoveContainer { id } => now(self.remove(&id).map(|()| Response::Ok)),
            Request::ContainerState { id } => now(self
                .container(&id)
                .map(|c| Response::State(c.status.clone()))),
            Request::ListContainers => now(Ok(Response::Containers(
                self.containers.values().map(|c| c.status.clone()).collect(),
            ))),
            Request::ExecSync(e) => self.exec_sync(conn_id, e).map(|()| Reply::Later),
            Request::ReopenLog { id } => now(self.reopen_log(&id).map(|()| Response::Ok)),
            Request::UpdateResources { id, resources } => now(self
                .update_resources(&id, &resources)
                .map(|()| Response::Ok)),
            Request::Stats { id } => now(self.stats(&id).map(Response::Stats)),
            Request::Subscribe => {
                if let Some(c) = self.conns.get_mut(&conn_id) {
                    c.subscribed = true;
                }
                now(Ok(Response::Ok))
            }
            Request::StopPod { timeout_ms } => {
                let ids = self.containers.keys().cloned().collect();
                self.stop(conn_id, ids, timeout_ms, libc::SIGTERM)
                    .map(Reply::from)
            }
            Request::Shutdown => {
                self.shutdown = Some(conn_id);
                let ids: Vec<String> = self.containers.keys().cloned().collect();
                self.stop(conn_id, ids, 0, libc::SIGKILL)?;
                self.stop_waiters.retain(|w| w.conn != conn_id);
                Ok(Reply::Later)
            }
            Request::Exec(e) => {
                let (response, fds) = self.exec_interactive(conn_id, e, fds)?;
                Ok(Reply::Now(response, fds))
            }
            Request::Attach(a) => {
                let (response, fds) = self.attach(conn_id, a, fds)?;
                Ok(Reply::Now(response, fds))
            }
            Request::CloseStdin => Err(Error::InvalidRequest(
                "close_stdin is only valid on an attach connection".into(),
            )),
        }
    }

    /// Ends what closed connections left: an exec's process is killed, an attacher
    /// removed.
    fn drop_dead_conns(&mut self) {
        let dead: Vec<(u64, Session)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.dead)
            .map(|(id, c)| (*id, c.session.clone()))
            .collect();
        for (conn, session) in dead {
            match session {
                Session::None => {}
                Session::Exec(id) => self.exec_client_gone(id),
                Session::Attach(ctr) => self.detach(&ctr, conn),
            }
            self.conns.remove(&conn);
        }
    }

    /// Pushes a status change to every subscriber.
    fn broadcast(&mut self, status: &ContainerStatus) {
        let event = Response::Event(crius_monitor::protocol::ContainerEvent {
            id: status.id.clone(),
            status: status.clone(),
        });
        for c in self.conns.values_mut().filter(|c| c.subscribed) {
            c.send(&event);
        }
    }

    fn answer_stop_waiters(&mut self) {
        let containers = &self.containers;
        let live = |id: &String| containers.get(id).is_some_and(Container::is_live);
        let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stop_waiters)
            .into_iter()
            .partition(|w| !w.ids.iter().any(live));
        self.stop_waiters = pending;
        for w in done {
            if let Some(c) = self.conns.get_mut(&w.conn) {
                c.waiting = false;
                c.send(&Response::Ok);
            }
            self.serve_buffered(w.conn);
        }
    }

    /// Reaps every exited child and routes its status.
    fn reap_children(&mut self) {
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, crius_oci::ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid, crius_oci::ExitStatus::Signaled(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return,
                Ok(_) | Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waitpid");
                    return;
                }
            };
            let ctr = self
                .containers
                .iter()
                .find(|(_, c)| c.is_live() && c.status.pid == Some(pid.as_raw()))
                .map(|(id, _)| id.clone());
            if let Some(id) = ctr {
                self.on_container_exit(&id, status);
            } else if let Some(exec) = self.execs.values_mut().find(|e| e.pid == pid.as_raw()) {
                exec.exit = Some(status);
                let id = exec.id;
                self.finish_exec(id);
            } else if let Some(id) = self.session_of(pid.as_raw()) {
                self.exec_session_exited(id, status);
            } else if self.pins.reaper() == Some(pid) {
                tracing::error!(pid = pid.as_raw(), "the pod's pid namespace reaper died");
            } else {
                tracing::debug!(pid = pid.as_raw(), ?status, "reaped orphan");
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, c)| c.kill_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(c) = self.containers.get_mut(&id) {
                c.kill_at = None;
            }
            tracing::info!(container_id = %id, "stop timeout reached, sending SIGKILL");
            if let Err(e) = self.signal(&id, libc::SIGKILL) {
                tracing::warn!(container_id = %id, error = %e, "SIGKILL");
            }
        }
        let due: Vec<u64> = self
            .execs
            .values()
            .filter(|e| e.deadline.is_some_and(|t| t <= now))
            .map(|e| e.id)
            .collect();
        for id in due {
            self.exec_timed_out(id);
        }
    }

    /// Shutdown's last step: remove everything of ours, answer, exit.
    fn finish_shutdown(&mut self, conn: u64) -> ! {
        let ids: Vec<String> = self.containers.keys().cloned().collect();
        let mut errors = Vec::new();
        for id in ids {
            if let Err(e) = self.remove(&id) {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = self.pins.release() {
            errors.push(e.to_string());
        }
        let dir = &self.config.state_dir;
        let _ = std::fs::remove_file(self.config.socket_path());
        let _ = std::fs::remove_file(dir.join("monitor.lock"));
        for sub in ["containers", "runtime"] {
            let _ = std::fs::remove_dir_all(dir.join(sub));
        }
        let response = if errors.is_empty() {
            Response::Ok
        } else {
            Response::error(&Error::State {
                path: dir.clone(),
                message: format!("shutdown left errors: {}", errors.join("; ")),
            })
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.send(&response);
            c.flush_blocking();
        }
        tracing::info!(pod_id = %self.config.pod_id, "monitor shut down");
        std::process::exit(0)
    }
}

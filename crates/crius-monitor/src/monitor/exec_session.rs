//! Interactive exec: the process gets criusd's descriptors (or a pty whose master goes
//! back to criusd), so its bytes never pass through the monitor. The monitor only reaps
//! it and reports the exit on the session's connection; if that connection closes
//! first, the process is killed.

use std::os::fd::OwnedFd;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crius_monitor::protocol::{ContainerState, Exec, Response};
use crius_monitor::{Error, Result};
use crius_oci::{ExitStatus, Process, Stdio};

use super::conn::Session;
use super::Monitor;

/// One interactive exec whose process has not been reaped yet.
#[derive(Debug)]
pub(crate) struct ExecSession {
    /// The connection to report the exit on; `None` once it closed.
    conn: Option<u64>,
    pid: i32,
    /// Keeps the process's pidfd alive until it is reaped.
    _process: Process,
}

/// The request's descriptors as the process's stdio: one per flag that is true, in the
/// order stdin, stdout, stderr; none with a terminal.
fn exec_stdio(req: &Exec, terminal: bool, fds: Vec<OwnedFd>) -> Result<Stdio> {
    let wanted = if terminal {
        0
    } else {
        [req.stdin, req.stdout, req.stderr]
            .into_iter()
            .filter(|w| *w)
            .count()
    };
    if fds.len() != wanted {
        return Err(Error::InvalidRequest(format!(
            "exec in {}: the request carried {} fds but needs {wanted} (one per stdio flag \
             that is true, none with a terminal)",
            req.id,
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut take = |wanted: bool| {
        if wanted && !terminal {
            fds.next()
        } else {
            None
        }
    };
    Ok(Stdio {
        stdin: take(req.stdin),
        stdout: take(req.stdout),
        stderr: take(req.stderr),
        extra_fds: Vec::new(),
    })
}

/// The exit code CRI reports.
fn exit_code(status: ExitStatus) -> i32 {
    match status {
        ExitStatus::Exited(code) => code,
        ExitStatus::Signaled(sig) => 128 + sig,
    }
}

impl Monitor {
    /// Starts an interactive exec on `conn`; answers ExecStarted (with the pty master
    /// for a terminal) and dedicates the connection to the session.
    pub(crate) fn exec_interactive(
        &mut self,
        conn: u64,
        req: Exec,
        fds: Vec<OwnedFd>,
    ) -> Result<(Response, Vec<OwnedFd>)> {
        let c = self.container(&req.id)?;
        if c.status.state != ContainerState::Running {
            return Err(Error::WrongState {
                id: req.id.clone(),
                op: "exec",
                state: format!("{:?}", c.status.state),
            });
        }
        let choice = c.runtime_choice();
        let terminal = req.process.terminal().unwrap_or(false);
        let stdio = exec_stdio(&req, terminal, fds)?;
        // The runtime dups what it needs into the child; our copies close with `stdio`.
        let mut process = self.runtime(&choice).exec(&req.id, &req.process, stdio)?;
        let pid = process.pid();
        let master: Vec<OwnedFd> = process.take_pty_master().into_iter().collect();
        if terminal && master.is_empty() {
            // Not reaped yet, so the pid is still this process; the reaper logs it.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            return Err(Error::InvalidRequest(format!(
                "exec in {}: the runtime gave no pty master for a terminal exec",
                req.id
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.sessions.insert(
            id,
            ExecSession {
                conn: Some(conn),
                pid,
                _process: process,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Session::Exec(id);
        }
        tracing::debug!(container_id = %req.id, pid, terminal, "interactive exec started");
        Ok((Response::ExecStarted { pid, terminal }, master))
    }

    /// The session whose process has this pid.
    pub(crate) fn session_of(&self, pid: i32) -> Option<u64> {
        self.sessions
            .iter()
            .find(|(_, s)| s.pid == pid)
            .map(|(id, _)| *id)
    }

    /// The process was reaped: report it and close the connection once flushed.
    pub(crate) fn exec_session_exited(&mut self, id: u64, status: ExitStatus) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        let exit_code = exit_code(status);
        tracing::debug!(pid = session.pid, exit_code, "interactive exec exited");
        if let Some(c) = session.conn.and_then(|conn| self.conns.get_mut(&conn)) {
            c.send(&Response::ExecExited { exit_code });
            c.closing = true;
            c.flush();
        }
    }

    /// The session's client went away: kill the process (it is not reaped yet, so the
    /// pid cannot have been reused); the session is forgotten when it is reaped.
    pub(crate) fn exec_client_gone(&mut self, id: u64) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.conn = None;
            tracing::debug!(pid = s.pid, "exec client gone, killing the process");
            let _ = kill(Pid::from_raw(s.pid), Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(stdin: bool, stdout: bool, stderr: bool) -> Exec {
        let spec = crius_oci::spec::secure_default(&["/bin/sh".into()], "rootfs".as_ref()).unwrap();
        Exec {
            id: "c".into(),
            process: spec.process().clone().unwrap(),
            stdin,
            stdout,
            stderr,
        }
    }

    fn fds(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect()
    }

    #[test]
    fn descriptors_are_assigned_in_flag_order() {
        let stdio = exec_stdio(&req(false, true, true), false, fds(2)).unwrap();
        assert!(stdio.stdin.is_none() && stdio.stdout.is_some() && stdio.stderr.is_some());
        let stdio = exec_stdio(&req(true, false, false), false, fds(1)).unwrap();
        assert!(stdio.stdin.is_some() && stdio.stdout.is_none());
        let stdio = exec_stdio(&req(true, true, false), true, fds(0)).unwrap();
        assert!(stdio.stdin.is_none() && stdio.stdout.is_none());
    }

    #[test]
    fn a_descriptor_count_that_does_not_match_the_flags_is_refused() {
        for (r, terminal, n) in [
            (req(true, true, true), false, 2),
            (req(true, false, false), false, 3),
            (req(true, true, true), true, 1),
        ] {
            let err = exec_stdio(&r, terminal, fds(n)).unwrap_err();
            assert_eq!(
                err.kind(),
                crius_monitor::ErrorKind::InvalidArgument,
                "{err}"
            );
        }
    }
}

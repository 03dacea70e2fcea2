//! The typed parent/child protocol: one [`Message`] per `SOCK_SEQPACKET` datagram, JSON
//! encoded, optionally carrying one file descriptor (`SCM_RIGHTS`).
//!
//! Sequence for a container init (P = parent, 1 = stage-1 child, 2 = container init):
//!
//! ```text
//! 1→P MapIds          (only when a new user namespace was unshared)
//! P→1 IdsMapped
//! 1→P Spawned{pid}    + pidfd of the init (stage-1 then exits)
//! P→2 Continue        (cgroup joined)
//! 2→P Pty             + pty master (only for a terminal, after pivot_root)
//! 2→P Created         (rootfs ready; waits)
//! P→2 Start
//!     EOF             (the socket is CLOEXEC: EOF after Start means exec succeeded)
//! *→P Failed(chain)   at any point instead of the expected message
//! ```
//!
//! An exec skips `Created`/`Start`: after `Continue` the child goes straight to exec.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

use crate::error::InitError;

/// Largest message we accept; an error chain is the biggest payload.
const MAX_MESSAGE: usize = 64 * 1024;

/// Everything parent and child say to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Message {
    /// Child: I unshared a user namespace; write my uid/gid maps.
    MapIds,
    /// Parent: the maps are written.
    IdsMapped,
    /// Child (stage-1): the init runs as `pid`; its pidfd is attached.
    Spawned {
        /// Pid in the parent's pid namespace.
        pid: i32,
    },
    /// Parent: the init is in its cgroup; go on.
    Continue,
    /// Child: the pty master (attached), opened on the container's own devpts.
    Pty,
    /// Child: the container is set up and waits for `Start`.
    Created,
    /// Parent: exec the process now.
    Start,
    /// Child: a step failed.
    Failed(InitError),
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::MapIds => "MapIds",
            Message::IdsMapped => "IdsMapped",
            Message::Spawned { .. } => "Spawned",
            Message::Continue => "Continue",
            Message::Pty => "Pty",
            Message::Created => "Created",
            Message::Start => "Start",
            Message::Failed(_) => "Failed",
        }
    }
}

/// One end of the parent/child socketpair; both ends are close-on-exec.
#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair: (parent end, child end).
    pub(crate) fn pair() -> nix::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Sends `msg`, with `fd` attached when given.
    pub(crate) fn send(&self, msg: &Message, fd: Option<BorrowedFd<'_>>) -> Result<(), String> {
        let bytes = serde_json::to_vec(msg).map_err(|e| format!("encode {}: {e}", msg.name()))?;
        let iov = [IoSlice::new(&bytes)];
        let raw: Vec<RawFd> = fd.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&raw)]
        };
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map(drop)
        .map_err(|e| format!("send {}: {e}", msg.name()))
    }

    /// Receives one message; `Ok(None)` means the peer closed (or exec'd).
    pub(crate) fn recv(&self) -> Result<Option<(Message, Option<OwnedFd>)>, String> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let (len, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fd = None;
                    for c in msg.cmsgs().map_err(|e| format!("recv: {e}"))? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for raw in fds {
                                // SAFETY: `raw` was just installed in our fd table by
                                // SCM_RIGHTS for this message; nothing else owns it, and
                                // wrapping it at once means it is closed exactly once.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    break (msg.bytes, fd);
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(format!("recv: {e}")),
            }
        };
        if len == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..len]).map_err(|e| format!("decode: {e}"))?;
        Ok(Some((msg, fd)))
    }

    /// Receives a message and checks it is `want`; a `Failed` comes back as its error.
    pub(crate) fn expect(&self, want: &Message) -> Result<Option<OwnedFd>, Received> {
        match self.recv() {
            Ok(Some((Message::Failed(e), _))) => Err(Received::Failed(e)),
            Ok(Some((got, fd))) if std::mem::discriminant(&got) == std::mem::discriminant(want) => {
                Ok(fd)
            }
            Ok(Some((got, _))) => Err(Received::Unexpected(format!(
                "expected {}, got {}",
                want.name(),
                got.name()
            ))),
            Ok(None) => Err(Received::Closed(format!(
                "peer closed while waiting for {}",
                want.name()
            ))),
            Err(e) => Err(Received::Unexpected(e)),
        }
    }
}

/// Why [`Channel::expect`] did not get what it wanted.
#[derive(Debug)]
pub(crate) enum Received {
    /// The peer reported a failed step.
    Failed(InitError),
    /// The peer went away.
    Closed(String),
    /// Some other message or a socket error.
    Unexpected(String),
}

impl Received {
    /// Flattens into the child's view: everything is a sync problem except a real failure.
    pub(crate) fn into_init_error(self) -> InitError {
        match self {
            Received::Failed(e) => e,
            Received::Closed(m) | Received::Unexpected(m) => InitError::Sync(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_an_attached_fd() {
        let (a, b) = Channel::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        a.send(&Message::Spawned { pid: 42 }, Some(file.as_fd()))
            .unwrap();
        let (msg, fd) = b.recv().unwrap().unwrap();
        assert_eq!(msg, Message::Spawned { pid: 42 });
        assert!(fd.is_some());
    }

    #[test]
    fn expect_names_the_unexpected_message() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Message::Start, None).unwrap();
        let err = b.expect(&Message::Created).unwrap_err();
        assert!(format!("{err:?}").contains("expected Created, got Start"));
    }

    #[test]
    fn a_child_failure_arrives_as_its_chain() {
        let (a, b) = Channel::pair().unwrap();
        let e = InitError::PivotRoot("pivot_root .: EINVAL".into());
        a.send(&Message::Failed(e.clone()), None).unwrap();
        match b.expect(&Message::Created) {
            Err(Received::Failed(got)) => assert_eq!(got, e),
            other => panic!("unexpected {other:?}"),
        }
        drop(a);
        assert!(matches!(
            b.expect(&Message::Created),
            Err(Received::Closed(_))
        ));
    }
}

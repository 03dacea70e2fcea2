//! Descriptor passing over the monitor socket (SCM_RIGHTS, unix(7)): the only unsafe code
//! of the library, adopting the raw descriptors the kernel installed into `OwnedFd`s.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The kernel's limit of descriptors in one SCM_RIGHTS message (SCM_MAX_FD). The receive
/// buffer has room for that many, so the kernel never truncates (and drops) a message's
/// descriptors; callers cap what they keep and close the rest.
const SCM_MAX_FD: usize = 253;

/// Sends `bytes` with `fds` attached to their first byte; returns how many bytes went
/// (the descriptors went if that is more than zero). Never raises SIGPIPE.
pub fn send(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> nix::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let mut flags = MsgFlags::MSG_NOSIGNAL;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, flags, None)
}

/// Receives into `buf`; returns the byte count (0: the peer closed) and the descriptors
/// that came with these bytes (close-on-exec).
pub fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    nonblocking: bool,
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` into this process for this
                // message (SCM_RIGHTS); no other object refers to it, so adopting it into
                // exactly one OwnedFd gives it a single owner that closes it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn descriptors_travel_with_the_first_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            send(a.as_fd(), b"hi", &[file.as_fd(), file.as_fd()], false).unwrap(),
            2
        );
        assert_eq!(send(a.as_fd(), b"!", &[], false).unwrap(), 1);
        let mut buf = [0u8; 1];
        let (n, fds) = recv(b.as_fd(), &mut buf, false).unwrap();
        assert_eq!((n, fds.len()), (1, 2));
        let (n, fds) = recv(b.as_fd(), &mut buf, false).unwrap();
        assert_eq!((n, fds.len(), buf[0]), (1, 0, b'i'));
        drop(a);
        let (n, _) = recv(b.as_fd(), &mut buf, false).unwrap();
        assert_eq!(n, 1);
        let (n, _) = recv(b.as_fd(), &mut buf, true).unwrap();
        assert_eq!(n, 0);
    }
}

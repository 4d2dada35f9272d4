//! Bytes plus descriptors over a Unix socket (`SCM_RIGHTS`).
//!
//! [`send`] lends descriptors to the kernel, which installs duplicates in the
//! receiver; [`recv`] hands them back as [`OwnedFd`]s, so whatever the caller
//! does not keep is closed on drop. Received descriptors are created
//! close-on-exec (`MSG_CMSG_CLOEXEC`), so a child started meanwhile does not
//! inherit them by accident. At most [`MAX_FDS`] travel in one message; the
//! receiver states how many it accepts, and the kernel closes any surplus
//! (reported as [`Received::fds_truncated`]).
//!
//! ```
//! use multiproc_core::scm;
//! use std::os::fd::AsFd;
//!
//! let (a, b) = scm::stream_pair()?;
//! let (x, _y) = scm::stream_pair()?;
//! scm::send(&a, b"one fd", &[x.as_fd()])?;
//!
//! let mut buf = [0u8; 16];
//! let got = scm::recv(&b, &mut buf, 4)?;
//! assert_eq!(&buf[..got.len], b"one fd");
//! assert_eq!(got.fds.len(), 1);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//!  - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html), `SCM_RIGHTS`
//!  - [sendmsg(2)](https://man7.org/linux/man-pages/man2/sendmsg.2.html),
//!    [recvmsg(2)](https://man7.org/linux/man-pages/man2/recvmsg.2.html)

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Most descriptors one message carries: the kernel's `SCM_MAX_FD`.
pub const MAX_FDS: usize = 253;

/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`: two connected sockets.
///
/// # Errors
///
/// The kernel's error (e.g. `EMFILE`).
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// `sendmsg` of `bytes` with `fds` attached; returns the bytes sent, which
/// may be fewer than given (a stream socket takes what fits).
///
/// Descriptors travel with the first byte sent. The call never raises
/// `SIGPIPE` (`MSG_NOSIGNAL`): a closed peer is `EPIPE`. `EINTR` is retried.
///
/// # Errors
///
/// `InvalidInput` for more than [`MAX_FDS`] descriptors or for descriptors
/// without bytes (the kernel would drop them); the kernel's error otherwise.
pub fn send(socket: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors exceed the {MAX_FDS} one message can carry",
                fds.len()
            ),
        ));
    }
    if !fds.is_empty() && bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors need at least one byte to travel with",
        ));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
            debug_assert!(pushed, "control buffer sized by cmsg_space");
        }
        match rustix::net::sendmsg(
            &socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(Errno::INTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// [`send`] until every byte is out; descriptors go with the first chunk.
/// On a socket a caller made non-blocking, `WouldBlock` is waited out
/// ([`wait_writable`]): the message is never left half-sent.
///
/// # Errors
///
/// As for [`send`], but for `WouldBlock`.
pub fn send_all(socket: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut first = Some(fds);
    let mut sent = 0;
    while sent < bytes.len() || first.is_some() {
        match send(&socket, &bytes[sent..], first.unwrap_or(&[])) {
            Ok(n) => {
                sent += n;
                first = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(&socket)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `poll(POLLOUT)` until a write to `fd` will not block (also on hang-up or
/// error, which the write then reports); `EINTR` is retried. For writers on
/// a descriptor a caller made non-blocking.
///
/// # Errors
///
/// The kernel's error from `poll`.
///
/// # References
///  - [poll(2)](https://man7.org/linux/man-pages/man2/poll.2.html)
pub fn wait_writable(fd: impl AsFd) -> io::Result<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut polls = [PollFd::new(&fd, PollFlags::OUT)];
    loop {
        match poll(&mut polls, None) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// What [`recv`] got.
#[derive(Debug)]
#[non_exhaustive]
pub struct Received {
    /// Bytes written to the buffer; 0 means the peer closed.
    pub len: usize,
    /// Descriptors that arrived, owned (close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// More descriptors were sent than the caller accepted; the kernel closed
    /// the surplus.
    pub fds_truncated: bool,
}

/// `recvmsg` into `buf`, accepting up to `max_fds` descriptors
/// (`MSG_CMSG_CLOEXEC`). `EINTR` is retried.
///
/// Descriptors beyond `max_fds` are closed, never leaked: the kernel closes
/// those that do not fit the control buffer, and this function closes any it
/// rounded up to fit.
///
/// # Errors
///
/// The kernel's error (`WouldBlock` on a non-blocking socket with nothing to
/// read).
pub fn recv(socket: impl AsFd, buf: &mut [u8], max_fds: usize) -> io::Result<Received> {
    let max_fds = max_fds.min(MAX_FDS);
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max_fds))];
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match rustix::net::recvmsg(
            &socket,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(Errno::INTR) => continue,
            other => other?,
        };
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        let mut fds_truncated = msg.flags.contains(ReturnFlags::CTRUNC);
        if fds.len() > max_fds {
            fds.truncate(max_fds);
            fds_truncated = true;
        }
        return Ok(Received {
            len: msg.bytes,
            fds,
            fds_truncated,
        });
    }
}

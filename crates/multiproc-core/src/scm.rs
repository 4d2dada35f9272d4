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
//! # Vectored forms
//!
//! [`send_vectored`], [`send_all_vectored`] and [`recv_vectored`] gather
//! from and scatter into several buffers (a frame header and its payload,
//! say) in one system call. None of them allocates: the control buffer
//! lives on the stack, sized for [`MAX_FDS`] (about 1 KiB), and a message
//! without descriptors leaves [`Received::fds`] an empty, unallocated
//! vector. That is what a transport reading many small messages needs.
//! [`recv_split`] scatters a header into a buffer and what follows into
//! uninitialised memory (a vector's spare capacity): a large message is
//! read with its header in one call, without zeroing its buffer first.
//!
//! # References
//!  - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html), `SCM_RIGHTS`
//!  - [sendmsg(2)](https://man7.org/linux/man-pages/man2/sendmsg.2.html),
//!    [recvmsg(2)](https://man7.org/linux/man-pages/man2/recvmsg.2.html)

use raw::{recv_split_with, recv_vectored_with};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Most descriptors one message carries: the kernel's `SCM_MAX_FD`.
pub const MAX_FDS: usize = 253;

/// Bytes of a control buffer with room for [`MAX_FDS`] descriptors (and the
/// slack `rustix` needs to align it when sending).
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`: two connected sockets.
///
/// # Errors
///
/// The kernel's error (e.g. `EMFILE`).
///
/// # Examples
///
/// ```
/// use multiproc_core::scm;
///
/// let (a, b) = scm::stream_pair()?;
/// scm::send_all(&a, b"ping", &[])?;
/// let mut buf = [0u8; 4];
/// assert_eq!(scm::recv(&b, &mut buf, 0)?.len, 4);
/// assert_eq!(&buf, b"ping");
/// # Ok::<(), std::io::Error>(())
/// ```
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
///
/// # Examples
///
/// ```
/// use multiproc_core::scm;
/// use std::io::{Read, Write};
/// use std::os::fd::AsFd;
/// use std::os::unix::net::UnixStream;
///
/// // One process stands in for two here: `a` and `b` would be in different
/// // processes, and `x` would be a descriptor the receiver cannot open itself.
/// let (a, b) = scm::stream_pair()?;
/// let (x, y) = scm::stream_pair()?;
/// let sent = scm::send(&a, b"take this", &[x.as_fd()])?;
/// assert_eq!(sent, 9);
/// drop(x); // the receiver gets its own duplicate
///
/// let mut buf = [0u8; 16];
/// let got = scm::recv(&b, &mut buf, 1)?;
/// let mut x_again = UnixStream::from(got.fds.into_iter().next().unwrap());
/// x_again.write_all(b"!")?;
/// let mut byte = [0u8; 1];
/// UnixStream::from(y).read_exact(&mut byte)?;
/// assert_eq!(&byte, b"!");
///
/// // Descriptors need at least one byte to ride on.
/// assert!(scm::send(&a, b"", &[b.as_fd()]).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn send(socket: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    send_vectored(socket, &[IoSlice::new(bytes)], fds)
}

/// [`send`] gathering the bytes of several buffers, in order, into one
/// `sendmsg(MSG_NOSIGNAL)`; returns the bytes sent, which may be fewer than
/// given (a stream socket takes what fits). Nothing is allocated.
///
/// Descriptors travel with the first byte sent. With one buffer and no
/// descriptors it is a plain `send(2)`, the cheapest call. `EINTR` is
/// retried.
///
/// ```
/// use multiproc_core::scm;
/// use std::io::IoSlice;
/// use std::os::fd::AsFd;
///
/// let (a, b) = scm::stream_pair()?;
/// let (x, _y) = scm::stream_pair()?;
/// let parts = [IoSlice::new(b"head "), IoSlice::new(b"body")];
/// assert_eq!(scm::send_vectored(&a, &parts, &[x.as_fd()])?, 9);
///
/// let mut buf = [0u8; 16];
/// let got = scm::recv(&b, &mut buf, 1)?;
/// assert_eq!(&buf[..got.len], b"head body");
/// assert_eq!(got.fds.len(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `InvalidInput` for more than [`MAX_FDS`] descriptors or for descriptors
/// without bytes (the kernel would drop them); the kernel's error otherwise
/// (`WouldBlock` on a non-blocking socket that is full, `BrokenPipe` when
/// the peer is gone).
#[inline]
pub fn send_vectored(
    socket: impl AsFd,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.is_empty() {
        // No control message: the common case of a transport, kept cheap.
        loop {
            let result = match bufs {
                [one] => rustix::net::send(&socket, one, SendFlags::NOSIGNAL),
                _ => rustix::net::sendmsg(
                    &socket,
                    bufs,
                    &mut SendAncillaryBuffer::default(),
                    SendFlags::NOSIGNAL,
                ),
            };
            match result {
                Err(Errno::INTR) => {}
                other => return Ok(other?),
            }
        }
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors exceed the {MAX_FDS} one message can carry",
                fds.len()
            ),
        ));
    }
    if bufs.iter().all(|buf| buf.is_empty()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors need at least one byte to travel with",
        ));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    let space = &mut space[..rustix::cmsg_space!(ScmRights(fds.len()))];
    loop {
        let mut control = SendAncillaryBuffer::new(space);
        let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
        debug_assert!(pushed, "control buffer sized by cmsg_space");
        match rustix::net::sendmsg(&socket, bufs, &mut control, SendFlags::NOSIGNAL) {
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
///
/// # Examples
///
/// ```
/// use multiproc_core::scm;
/// use std::io::Read;
/// use std::os::unix::net::UnixStream;
///
/// let (a, b) = scm::stream_pair()?;
/// // Bigger than a socket buffer: a reader drains it meanwhile.
/// let reader = std::thread::spawn(move || {
///     let mut all = Vec::new();
///     UnixStream::from(b).read_to_end(&mut all).map(|_| all)
/// });
/// scm::send_all(&a, &vec![7u8; 1 << 20], &[])?;
/// drop(a);
/// assert_eq!(reader.join().unwrap()?.len(), 1 << 20);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn send_all(socket: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_all_vectored(socket, &mut [IoSlice::new(bytes)], fds)
}

/// [`send_vectored`] until every byte of `bufs` is out; descriptors go with
/// the first chunk. `bufs` is advanced past what was sent (as
/// [`IoSlice::advance_slices`] does), so its contents are unspecified
/// afterwards. On a socket a caller made non-blocking, `WouldBlock` is
/// waited out ([`wait_writable`]): the message is never left half-sent.
///
/// ```
/// use multiproc_core::scm;
/// use std::io::IoSlice;
///
/// let (a, b) = scm::stream_pair()?;
/// scm::send_all_vectored(&a, &mut [IoSlice::new(b"4 by"), IoSlice::new(b"tes")], &[])?;
/// let mut buf = [0u8; 7];
/// assert_eq!(scm::recv(&b, &mut buf, 0)?.len, 7);
/// assert_eq!(&buf, b"4 bytes");
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// As for [`send_vectored`], but for `WouldBlock`.
pub fn send_all_vectored(
    socket: impl AsFd,
    mut bufs: &mut [IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut first = Some(fds);
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() || first.is_some() {
        match send_vectored(&socket, bufs, first.unwrap_or(&[])) {
            Ok(n) => {
                IoSlice::advance_slices(&mut bufs, n);
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
///
/// # Examples
///
/// ```
/// use multiproc_core::scm;
///
/// let (a, _b) = scm::stream_pair()?;
/// rustix::io::ioctl_fionbio(&a, true)?; // non-blocking
/// scm::wait_writable(&a)?; // an empty socket buffer: returns at once
/// assert_eq!(scm::send(&a, b"ready", &[])?, 5);
/// # Ok::<(), std::io::Error>(())
/// ```
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

/// Raises `socket`'s send buffer so that `SO_SNDBUF` reads at least
/// `recorded`, leaving a larger one alone; returns what it read before
/// when it raised it, `None` when it was large enough. The kernel records
/// twice what is asked (for its own bookkeeping), so this asks for half of
/// `recorded`; it caps the request at `net.core.wmem_max`, so the buffer
/// may end up smaller on a machine that caps it lower.
/// [`set_send_buffer`] puts a size read before back.
///
/// # Errors
///
/// The kernel's error from `getsockopt` or `setsockopt`.
///
/// # Examples
///
/// ```
/// use multiproc_core::scm;
/// use rustix::net::sockopt::socket_send_buffer_size;
///
/// let (a, _b) = scm::stream_pair()?;
/// let before = socket_send_buffer_size(&a)?;
/// assert_eq!(scm::raise_send_buffer(&a, before)?, None); // large enough
/// assert_eq!(scm::raise_send_buffer(&a, 2 * before)?, Some(before));
/// assert!(socket_send_buffer_size(&a)? > before);
/// scm::set_send_buffer(&a, before)?;
/// assert_eq!(socket_send_buffer_size(&a)?, before);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # References
///  - [socket(7)](https://man7.org/linux/man-pages/man7/socket.7.html), `SO_SNDBUF`
pub fn raise_send_buffer(socket: impl AsFd, recorded: usize) -> io::Result<Option<usize>> {
    let before = rustix::net::sockopt::socket_send_buffer_size(&socket)?;
    if before >= recorded {
        return Ok(None);
    }
    set_send_buffer(&socket, recorded)?;
    Ok(Some(before))
}

/// Sets `socket`'s send buffer to `recorded`, a size `SO_SNDBUF` read
/// (asks for half: the kernel records twice what is asked).
///
/// # Errors
///
/// The kernel's error from `setsockopt`.
pub fn set_send_buffer(socket: impl AsFd, recorded: usize) -> io::Result<()> {
    rustix::net::sockopt::set_socket_send_buffer_size(&socket, recorded / 2)?;
    Ok(())
}

/// Bytes sent on stream socket `socket` that its peer has not read yet
/// (`ioctl(SIOCOUTQ)`): zero once the peer has taken everything written
/// through this end, by any process that holds it.
///
/// # Errors
///
/// The kernel's error from `ioctl` (`ENOTTY` or `EINVAL` for a descriptor
/// that is not a socket).
///
/// # Examples
///
/// ```
/// use multiproc_core::scm;
///
/// let (a, b) = scm::stream_pair()?;
/// assert_eq!(scm::unread_by_peer(&a)?, 0);
/// scm::send_all(&a, b"ping", &[])?;
/// assert!(scm::unread_by_peer(&a)? > 0);
/// let mut buf = [0u8; 4];
/// scm::recv(&b, &mut buf, 0)?;
/// assert_eq!(scm::unread_by_peer(&a)?, 0);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # References
///  - [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html), `SIOCOUTQ`
pub fn unread_by_peer(socket: impl AsFd) -> io::Result<usize> {
    raw::outq(socket.as_fd())
}

/// What [`recv`] and [`recv_vectored`] got.
///
/// # Examples
///
/// ```
/// use multiproc_core::scm;
/// use std::os::fd::AsFd;
///
/// let (a, b) = scm::stream_pair()?;
/// let (x, y) = scm::stream_pair()?;
/// scm::send(&a, b"two", &[x.as_fd(), y.as_fd()])?;
///
/// let mut buf = [0u8; 8];
/// let got = scm::recv(&b, &mut buf, 1)?; // accepts one descriptor only
/// assert_eq!(got.len, 3);
/// assert_eq!(got.fds.len(), 1);
/// assert!(got.fds_truncated); // the other was closed by the kernel
///
/// drop(a);
/// assert_eq!(scm::recv(&b, &mut buf, 0)?.len, 0); // the peer closed
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Received {
    /// Bytes written to the buffers; 0 means the peer closed.
    pub len: usize,
    /// Descriptors that arrived, owned (close-on-exec). Empty, and not
    /// allocated, when none came.
    pub fds: Vec<OwnedFd>,
    /// Descriptors were sent that did not arrive (`MSG_CTRUNC`): more than
    /// the caller accepted, or more than this process could take (the
    /// kernel installs none past the descriptor limit, `EMFILE`). The kernel
    /// closed them.
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
///
/// # Examples
///
/// ```
/// use multiproc_core::scm;
/// use std::os::fd::AsFd;
///
/// let (a, b) = scm::stream_pair()?;
/// let (x, _y) = scm::stream_pair()?;
/// scm::send(&a, b"fd", &[x.as_fd()])?;
///
/// let mut buf = [0u8; 8];
/// let got = scm::recv(&b, &mut buf, scm::MAX_FDS)?;
/// assert_eq!(&buf[..got.len], b"fd");
/// assert_eq!(got.fds.len(), 1);
/// assert!(!got.fds_truncated);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn recv(socket: impl AsFd, buf: &mut [u8], max_fds: usize) -> io::Result<Received> {
    recv_vectored(socket, &mut [IoSliceMut::new(buf)], max_fds)
}

/// [`recv`] scattering into several buffers, filled in order: one
/// `recvmsg(MSG_CMSG_CLOEXEC)` accepting up to `max_fds` descriptors
/// (at most [`MAX_FDS`]). `EINTR` is retried.
///
/// Nothing is allocated for a message without descriptors: the control
/// buffer is on the stack. Descriptors beyond `max_fds`, and those the
/// kernel could not install (this process at its descriptor limit), are
/// closed and reported as [`Received::fds_truncated`].
///
/// ```
/// use multiproc_core::scm;
/// use std::io::IoSliceMut;
/// use std::os::fd::AsFd;
///
/// let (a, b) = scm::stream_pair()?;
/// let (x, y) = scm::stream_pair()?;
/// scm::send(&a, b"headbody", &[x.as_fd(), y.as_fd()])?;
///
/// let (mut head, mut body) = ([0u8; 4], [0u8; 8]);
/// let got = scm::recv_vectored(&b, &mut [IoSliceMut::new(&mut head), IoSliceMut::new(&mut body)], 1)?;
/// assert_eq!((&head, &body[..got.len - 4]), (b"head", &b"body"[..]));
/// // Two were sent, one was accepted: the other was closed.
/// assert_eq!(got.fds.len(), 1);
/// assert!(got.fds_truncated);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// The kernel's error (`WouldBlock` on a non-blocking socket with nothing to
/// read).
#[inline]
pub fn recv_vectored(
    socket: impl AsFd,
    bufs: &mut [IoSliceMut<'_>],
    max_fds: usize,
) -> io::Result<Received> {
    recv_vectored_with(socket, bufs, max_fds, 0)
}

/// [`recv_vectored`] that never waits, whatever the socket's mode
/// (`MSG_DONTWAIT`): `WouldBlock` when nothing is there to read.
///
/// # Examples
///
/// ```
/// use multiproc_core::scm;
/// use std::io::IoSliceMut;
///
/// let (a, b) = scm::stream_pair()?;
/// let mut buf = [0u8; 4];
/// let err = scm::recv_vectored_nowait(&b, &mut [IoSliceMut::new(&mut buf)], 0).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
/// scm::send(&a, b"ping", &[])?;
/// assert_eq!(scm::recv_vectored_nowait(&b, &mut [IoSliceMut::new(&mut buf)], 0)?.len, 4);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// As for [`recv_vectored`], and `WouldBlock` when nothing is there.
#[inline]
pub fn recv_vectored_nowait(
    socket: impl AsFd,
    bufs: &mut [IoSliceMut<'_>],
    max_fds: usize,
) -> io::Result<Received> {
    recv_vectored_with(socket, bufs, max_fds, libc::MSG_DONTWAIT)
}

/// [`recv_vectored`] into `head` and then the uninitialised `tail`: one
/// `recvmsg(MSG_CMSG_CLOEXEC)` that places a frame's header in `head` and
/// its payload straight into a vector's spare capacity, with neither
/// zeroing nor a second system call. After `Ok(got)`, the first
/// `got.len.saturating_sub(head.len())` bytes of `tail` are initialised.
///
/// # Examples
///
/// ```
/// use multiproc_core::scm;
///
/// let (a, b) = scm::stream_pair()?;
/// scm::send(&a, b"headbody", &[])?;
/// let (mut head, mut body) = ([0u8; 4], Vec::<u8>::with_capacity(16));
/// let got = scm::recv_split(&b, &mut head, body.spare_capacity_mut(), 0)?;
/// // SAFETY: `recv_split` initialised this many bytes of the spare capacity.
/// unsafe { body.set_len(got.len - head.len()) };
/// assert_eq!((&head, &body[..]), (b"head", &b"body"[..]));
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// As for [`recv_vectored`].
#[inline]
pub fn recv_split(
    socket: impl AsFd,
    head: &mut [u8],
    tail: &mut [MaybeUninit<u8>],
    max_fds: usize,
) -> io::Result<Received> {
    recv_split_with(socket.as_fd(), head, tail, max_fds, 0)
}

/// [`recv_split`] that never waits (`MSG_DONTWAIT`): `WouldBlock` when
/// nothing is there to read.
///
/// # Errors
///
/// As for [`recv_split`], and `WouldBlock` when nothing is there.
#[inline]
pub fn recv_split_nowait(
    socket: impl AsFd,
    head: &mut [u8],
    tail: &mut [MaybeUninit<u8>],
    max_fds: usize,
) -> io::Result<Received> {
    recv_split_with(socket.as_fd(), head, tail, max_fds, libc::MSG_DONTWAIT)
}

/// The raw `recvmsg` and `ioctl`: the only unsafe code of this module,
/// kept here.
mod raw {
    #![allow(unsafe_code)]

    use super::{CONTROL_SPACE, MAX_FDS, Received};
    use libc::c_int;
    use std::io::{self, IoSliceMut};
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    /// `ioctl(SIOCOUTQ)`: the bytes the peer has not read.
    pub(super) fn outq(socket: BorrowedFd<'_>) -> io::Result<usize> {
        /// `SIOCOUTQ`, which shares `TIOCOUTQ`'s number on Linux.
        const SIOCOUTQ: rustix::ioctl::Opcode = 0x5411;
        // SAFETY: `SIOCOUTQ` reads no argument and writes one `int` through
        // it, which is what `Getter<_, c_int>` passes (a pointer to its own
        // `c_int`); the descriptor is borrowed for the call.
        let unread = unsafe {
            rustix::ioctl::ioctl(socket, rustix::ioctl::Getter::<SIOCOUTQ, c_int>::new())
        }?;
        Ok(usize::try_from(unread).unwrap_or(0))
    }

    #[inline]
    pub(super) fn recv_vectored_with(
        socket: impl AsFd,
        bufs: &mut [IoSliceMut<'_>],
        max_fds: usize,
        flags: c_int,
    ) -> io::Result<Received> {
        // SAFETY: `IoSliceMut` is guaranteed ABI-compatible with `iovec` on
        // Unix, and each entry describes a buffer this call borrows mutably.
        unsafe {
            recvmsg_iovecs(
                socket.as_fd(),
                bufs.as_mut_ptr().cast(),
                bufs.len(),
                max_fds,
                flags,
            )
        }
    }

    #[inline]
    pub(super) fn recv_split_with(
        socket: BorrowedFd<'_>,
        head: &mut [u8],
        tail: &mut [MaybeUninit<u8>],
        max_fds: usize,
        flags: c_int,
    ) -> io::Result<Received> {
        let mut iov = [
            libc::iovec {
                iov_base: head.as_mut_ptr().cast(),
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: tail.as_mut_ptr().cast(),
                iov_len: tail.len(),
            },
        ];
        // SAFETY: the two entries describe `head` and `tail`, borrowed mutably
        // for this call; the kernel only writes bytes into them, and writing
        // into `MaybeUninit` memory is always sound.
        unsafe { recvmsg_iovecs(socket, iov.as_mut_ptr(), iov.len(), max_fds, flags) }
    }

    const _: () = assert!(control_space(MAX_FDS) <= CONTROL_SPACE);

    /// A control buffer for [`MAX_FDS`] descriptors, aligned for `cmsghdr`.
    #[repr(C, align(8))]
    struct Control([MaybeUninit<u8>; CONTROL_SPACE]);

    /// The one `recvmsg` behind every receive of this module: into `iovlen`
    /// buffers at `iov`, with room for `max_fds` (at most [`MAX_FDS`])
    /// descriptors, `EINTR` retried.
    ///
    /// # Safety
    ///
    /// `iov` points to `iovlen` valid `iovec`s, each describing memory the
    /// caller lets the kernel write for the duration of the call.
    unsafe fn recvmsg_iovecs(
        socket: BorrowedFd<'_>,
        iov: *mut libc::iovec,
        iovlen: usize,
        max_fds: usize,
        flags: c_int,
    ) -> io::Result<Received> {
        let max_fds = max_fds.min(MAX_FDS);
        let mut control = Control([MaybeUninit::uninit(); CONTROL_SPACE]);
        // No buffer at all when no descriptor is accepted: the kernel then
        // closes any that came and reports `MSG_CTRUNC`.
        let (control_ptr, controllen) = if max_fds == 0 {
            (std::ptr::null_mut(), 0)
        } else {
            (control.0.as_mut_ptr().cast(), control_space(max_fds))
        };
        loop {
            // SAFETY: an all-zero `msghdr` is valid (null pointers, zero
            // lengths); the fields set below describe live buffers.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov;
            msg.msg_iovlen = iovlen;
            msg.msg_control = control_ptr;
            msg.msg_controllen = controllen;
            // SAFETY: `msg` describes the caller's buffers (this function's
            // contract) and `control`, which outlives the call and holds
            // `controllen <= CONTROL_SPACE` bytes.
            let n = unsafe {
                libc::recvmsg(socket.as_raw_fd(), &mut msg, flags | libc::MSG_CMSG_CLOEXEC)
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            // SAFETY: the kernel filled `msg.msg_controllen` bytes of
            // `control` with well-formed control messages.
            let mut fds = unsafe { take_fds(&msg) };
            let mut fds_truncated = msg.msg_flags & libc::MSG_CTRUNC != 0;
            if fds.len() > max_fds {
                // The control buffer rounds up to its alignment: close what
                // was not asked for.
                fds.truncate(max_fds);
                fds_truncated = true;
            }
            return Ok(Received {
                len: n as usize,
                fds,
                fds_truncated,
            });
        }
    }

    /// Bytes of control buffer for `fds` descriptors.
    pub(super) const fn control_space(fds: usize) -> usize {
        // SAFETY: `CMSG_SPACE` is arithmetic on its argument.
        unsafe { libc::CMSG_SPACE((fds * size_of::<c_int>()) as u32) as usize }
    }

    /// The descriptors of every `SCM_RIGHTS` message in `msg`'s control
    /// buffer, owned from here on.
    ///
    /// # Safety
    ///
    /// `msg` is the header of a `recvmsg` that succeeded: its control pointer
    /// and length describe the control messages the kernel wrote.
    unsafe fn take_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
        let mut fds = Vec::new();
        // SAFETY: (the three macros and the reads) the walk stays inside the
        // `msg_controllen` bytes the kernel filled, every header it visits is
        // one the kernel wrote (and aligned for `cmsghdr`), and an
        // `SCM_RIGHTS` message's data is `cmsg_len - CMSG_LEN(0)` bytes of
        // descriptors, which this process now owns.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                let header = &*cmsg;
                if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<c_int>();
                    let bytes =
                        (header.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                    for i in 0..bytes / size_of::<c_int>() {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        fds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Whether `fd` and `other` are the same open socket: what one end of
    /// a pair writes through `fd` arrives at the other end.
    fn same_socket(fd: &OwnedFd, peer: &OwnedFd) -> bool {
        send(fd, b"?", &[]).unwrap();
        let mut byte = [0u8; 1];
        recv(peer, &mut byte, 0).unwrap().len == 1 && byte == *b"?"
    }

    #[test]
    fn vectored_send_and_recv_carry_descriptors_with_the_bytes() {
        let (a, b) = stream_pair().unwrap();
        let pairs: Vec<_> = (0..3).map(|_| stream_pair().unwrap()).collect();
        let lent: Vec<_> = pairs.iter().map(|(x, _)| x.as_fd()).collect();
        let parts = [IoSlice::new(b"\0\0\0\x05"), IoSlice::new(b"hello")];
        assert_eq!(send_vectored(&a, &parts, &lent).unwrap(), 9);

        let (mut head, mut body) = ([0u8; 4], [0u8; 16]);
        let got = recv_vectored(
            &b,
            &mut [IoSliceMut::new(&mut head), IoSliceMut::new(&mut body)],
            MAX_FDS,
        )
        .unwrap();
        assert_eq!(got.len, 9);
        assert_eq!(&head, b"\0\0\0\x05");
        assert_eq!(&body[..5], b"hello");
        assert!(!got.fds_truncated);
        assert_eq!(got.fds.len(), 3);
        for (fd, (x, y)) in got.fds.iter().zip(&pairs) {
            assert_ne!(fd.as_raw_fd(), x.as_raw_fd(), "a new descriptor");
            assert!(same_socket(fd, y));
        }
        // Received descriptors are close-on-exec.
        let flags = rustix::io::fcntl_getfd(&got.fds[0]).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    #[allow(unsafe_code)]
    fn split_receives_fill_the_head_then_the_uninitialised_tail() {
        let (a, b) = stream_pair().unwrap();
        let pairs: Vec<_> = (0..2).map(|_| stream_pair().unwrap()).collect();
        let lent: Vec<_> = pairs.iter().map(|(x, _)| x.as_fd()).collect();
        send(&a, b"headpayload", &lent).unwrap();
        let mut head = [0u8; 4];
        let mut tail = Vec::<u8>::with_capacity(64);
        let got = recv_split(&b, &mut head, tail.spare_capacity_mut(), MAX_FDS).unwrap();
        assert_eq!(got.len, 11);
        // SAFETY: `recv_split` initialised `got.len - 4` bytes of the tail.
        unsafe { tail.set_len(got.len - 4) };
        assert_eq!((&head, &tail[..]), (b"head", &b"payload"[..]));
        assert_eq!((got.fds.len(), got.fds_truncated), (2, false));
        for (fd, (_, y)) in got.fds.iter().zip(&pairs) {
            assert!(same_socket(fd, y));
        }

        // Fewer bytes than the head: the tail stays untouched; descriptors
        // beyond what is accepted are closed and reported.
        send(&a, b"ab", &lent).unwrap();
        let mut head = [0u8; 4];
        let got = recv_split(&b, &mut head, &mut [MaybeUninit::uninit(); 8], 1).unwrap();
        assert_eq!((got.len, &head[..2]), (2, &b"ab"[..]));
        assert_eq!((got.fds.len(), got.fds_truncated), (1, true));

        let err = recv_split_nowait(&b, &mut head, &mut [], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn fewer_slots_than_descriptors_is_truncation() {
        for accepted in [0, 1, 2, 5] {
            let (a, b) = stream_pair().unwrap();
            let (x, _y) = stream_pair().unwrap();
            send(&a, b"six", &[x.as_fd(); 6]).unwrap();
            let mut buf = [0u8; 8];
            let got = recv_vectored(&b, &mut [IoSliceMut::new(&mut buf)], accepted).unwrap();
            assert_eq!(got.len, 3);
            assert_eq!(got.fds.len(), accepted, "accepted {accepted}");
            assert!(got.fds_truncated, "accepted {accepted}");
        }
        // Exactly as many slots as descriptors: no truncation.
        let (a, b) = stream_pair().unwrap();
        let (x, _y) = stream_pair().unwrap();
        send(&a, b"two", &[x.as_fd(); 2]).unwrap();
        let mut buf = [0u8; 8];
        let got = recv_vectored(&b, &mut [IoSliceMut::new(&mut buf)], 2).unwrap();
        assert_eq!((got.fds.len(), got.fds_truncated), (2, false));
    }

    #[test]
    fn a_message_without_descriptors_has_none_and_no_truncation() {
        let (a, b) = stream_pair().unwrap();
        send_vectored(&a, &[IoSlice::new(b"plain")], &[]).unwrap();
        let mut buf = [0u8; 8];
        let got = recv_vectored(&b, &mut [IoSliceMut::new(&mut buf)], MAX_FDS).unwrap();
        assert_eq!(got.len, 5);
        assert!(got.fds.is_empty() && !got.fds_truncated);
        assert_eq!(got.fds.capacity(), 0, "nothing allocated");
    }

    #[test]
    fn send_all_vectored_sends_every_byte_once_with_the_descriptors_first() {
        let (a, b) = stream_pair().unwrap();
        let (x, y) = stream_pair().unwrap();
        let head = [1u8; 3];
        let body: Vec<u8> = (0..1_000_000).map(|i| (i % 251) as u8).collect();
        let expected: Vec<u8> = head.iter().chain(&body).copied().collect();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut fds = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let got = recv(&b, &mut buf, MAX_FDS).unwrap();
                if got.len == 0 {
                    return (all, fds);
                }
                if !got.fds.is_empty() {
                    assert!(all.is_empty(), "descriptors came with the first byte");
                }
                fds.extend(got.fds);
                all.extend_from_slice(&buf[..got.len]);
            }
        });
        send_all_vectored(
            &a,
            &mut [IoSlice::new(&head), IoSlice::new(&[]), IoSlice::new(&body)],
            &[x.as_fd()],
        )
        .unwrap();
        drop(a);
        let (all, fds) = reader.join().unwrap();
        assert!(all == expected, "bytes differ");
        assert_eq!(fds.len(), 1);
        assert!(same_socket(&fds[0], &y));
    }

    #[test]
    fn descriptors_need_bytes_and_fit_one_message() {
        let (a, _b) = stream_pair().unwrap();
        let empty = [IoSlice::new(&[]), IoSlice::new(&[])];
        let err = send_vectored(&a, &empty, &[a.as_fd()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = send_all_vectored(&a, &mut [IoSlice::new(&[])], &[a.as_fd()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let too_many = vec![a.as_fd(); MAX_FDS + 1];
        let err = send_vectored(&a, &[IoSlice::new(b"x")], &too_many).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        // Nothing without descriptors is refused, not even nothing at all.
        assert_eq!(send_vectored(&a, &empty, &[]).unwrap(), 0);
    }

    #[test]
    fn a_closed_peer_is_broken_pipe_not_sigpipe() {
        let (a, b) = stream_pair().unwrap();
        drop(b);
        for parts in [
            &[IoSlice::new(b"x")][..],
            &[IoSlice::new(b"x"), IoSlice::new(b"y")],
        ] {
            let err = send_vectored(&a, parts, &[]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        }
        let err = send_vectored(&a, &[IoSlice::new(b"x")], &[a.as_fd()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}

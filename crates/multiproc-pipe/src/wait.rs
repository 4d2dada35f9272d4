//! Waiting on several connections (and other descriptors) at once.

use crate::{Connection, Listener};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// Something [`wait`] can watch for readability.
///
/// Implemented for [`Connection`] (which also counts messages it has already
/// read ahead), [`Listener`] (a client is waiting to be accepted), and plain
/// descriptors: [`BorrowedFd`] and [`OwnedFd`] — so anything [`AsFd`], such as
/// a child's stdout or a process's pidfd, joins in through `.as_fd()`.
pub trait Waitable {
    /// The descriptor to poll.
    fn wait_fd(&self) -> BorrowedFd<'_>;

    /// Whether the object is ready without polling (data already buffered).
    fn ready_now(&self) -> bool {
        false
    }
}

impl Waitable for Connection {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }

    fn ready_now(&self) -> bool {
        self.has_buffered()
    }
}

impl Waitable for Listener {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

impl Waitable for OwnedFd {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

impl<T: Waitable + ?Sized> Waitable for &T {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        (**self).wait_fd()
    }

    fn ready_now(&self) -> bool {
        (**self).ready_now()
    }
}

impl<T: Waitable + ?Sized> Waitable for &mut T {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        (**self).wait_fd()
    }

    fn ready_now(&self) -> bool {
        (**self).ready_now()
    }
}

impl<T: Waitable + ?Sized> Waitable for Box<T> {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        (**self).wait_fd()
    }

    fn ready_now(&self) -> bool {
        (**self).ready_now()
    }
}

/// `poll(2)` on `objects` until at least one is readable or `timeout` passes;
/// returns the indices of the ready ones, in order (Python's
/// `multiprocessing.connection.wait`).
///
/// "Readable" means a `recv` (or `accept`) will not block: a message or part
/// of one has arrived, or the peer closed (the `recv` then reports
/// [`Eof`](crate::RecvError::Eof)). `None` waits forever; an empty result
/// means the timeout passed. Interrupted polls are retried against the same
/// deadline.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::{Pipe, Waitable, wait};
/// use std::os::fd::AsFd;
/// use std::time::Duration;
///
/// let (mut a, a_peer) = Pipe::new()?;
/// let (b, b_peer) = Pipe::new()?;
/// let (pipe_rx, pipe_tx) = rustix::pipe::pipe()?;
///
/// // Nothing to read yet: the timeout passes.
/// let objects: [&dyn Waitable; 3] = [&a, &b, &pipe_rx.as_fd()];
/// assert!(wait(&objects, Some(Duration::from_millis(10)))?.is_empty());
///
/// a_peer.send_bytes(b"for a")?;
/// rustix::io::write(&pipe_tx, b"x")?;
/// assert_eq!(wait(&objects, None)?, vec![0, 2]);
/// assert_eq!(a.recv_bytes()?, b"for a");
///
/// // Connections of one type need no `dyn`.
/// drop(b_peer);
/// assert_eq!(wait(&[&a, &b], Some(Duration::ZERO))?, vec![1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// The kernel's error from `poll(2)`.
pub fn wait<W: Waitable>(objects: &[W], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let buffered: Vec<usize> = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| o.ready_now())
        .map(|(i, _)| i)
        .collect();
    // Objects with buffered data are ready now; still poll the others,
    // without waiting, so the answer lists everything that is ready.
    let timeout = if buffered.is_empty() {
        timeout
    } else {
        Some(Duration::ZERO)
    };
    let fds: Vec<BorrowedFd<'_>> = objects.iter().map(Waitable::wait_fd).collect();
    let ready = poll_readable(&fds, timeout)?;
    Ok((0..objects.len())
        .filter(|i| buffered.contains(i) || ready[*i])
        .collect())
}

/// `poll(2)` for `POLLIN` on `fds` with a deadline; returns which are ready
/// (readable, hung up or in error: a read will not block).
pub(crate) fn poll_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    let deadline = timeout.and_then(multiproc_core::time::deadline_after);
    let forever = timeout.is_none() || deadline.is_none();
    let mut polls: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    loop {
        let left = if forever {
            None
        } else {
            Some(multiproc_core::time::remaining(deadline).unwrap_or(Duration::ZERO))
        };
        // A duration too large for a timespec is as good as forever.
        let spec = left.and_then(|d| Timespec::try_from(d).ok());
        match rustix::event::poll(&mut polls, spec.as_ref()) {
            Ok(_) => break,
            Err(Errno::INTR) => {
                if !forever && deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(polls
        .iter()
        .map(|p| {
            p.revents()
                .intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL)
        })
        .collect())
}

/// Whether `fd` is readable now (`poll` without waiting): a look that
/// reads nothing.
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut polls = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match rustix::event::poll(&mut polls, Some(&Timespec::default())) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

//! The queue's futures on async-io, the reactor of smol and async-std: the
//! doorbell waits in an `Async`.

use async_io::{Async, Timer};
use multiproc_queue::Readiness;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::Reactor;

/// The async-io [`Reactor`] (smol, async-std).
#[derive(Debug)]
pub enum Smol {}

/// A [`Queue`](multiproc_queue::Queue) with async operations on smol (see
/// the [crate docs](crate)).
pub type Queue<T> = crate::AsyncQueue<T, Smol>;

/// A [`Connection`](multiproc_pipe::Connection) with async sends and
/// receives on smol (see [`AsyncConnection`](crate::AsyncConnection)).
pub type Connection = crate::AsyncConnection<Smol>;

/// Waits for `process` on smol (see [`process::join`](crate::process::join)).
///
/// # Errors
///
/// As [`Process::join`](multiproc_process::Process::join).
pub async fn join<T: serde::de::DeserializeOwned + Send>(
    process: &mut multiproc_process::Process<T>,
) -> Result<T, multiproc_process::JoinError> {
    crate::process::join::<Smol, T>(process).await
}

/// A doorbell as `Async` wants it.
#[derive(Debug)]
pub struct Bell(Arc<Readiness>);

impl AsFd for Bell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Reactor for Smol {
    type Registration = Async<Bell>;

    fn register(readiness: Arc<Readiness>) -> io::Result<Self::Registration> {
        Async::new(Bell(readiness))
    }

    async fn readable(fd: &Self::Registration) -> io::Result<()> {
        fd.readable().await?;
        fd.get_ref().0.drain()?;
        Ok(())
    }

    async fn sleep(duration: Duration) {
        Timer::after(duration).await;
    }

    type Io = Async<OwnedFd>;

    fn register_io(fd: OwnedFd) -> io::Result<Self::Io> {
        // The descriptor's mode is left alone (`Async::new` would set
        // `O_NONBLOCK`, which the connection decides itself).
        Async::new_nonblocking(fd)
    }

    async fn readable_with<T: Send>(
        io: &Self::Io,
        mut attempt: impl FnMut() -> io::Result<T> + Send,
    ) -> io::Result<T> {
        loop {
            // async-io re-arms its one-shot, level-triggered interest here:
            // a descriptor readable now completes at once.
            io.readable().await?;
            match attempt() {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
        }
    }

    async fn writable_with<T: Send>(
        io: &Self::Io,
        mut attempt: impl FnMut() -> io::Result<T> + Send,
    ) -> io::Result<T> {
        loop {
            io.writable().await?;
            match attempt() {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
        }
    }
}

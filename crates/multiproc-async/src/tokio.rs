//! The futures of the queue, the sync primitives, connections and processes on
//! tokio: doorbells and descriptors wait in an `AsyncFd`.
//!
//! The runtime needs its I/O driver, and its time driver for the waits that
//! meet a held lock (`Builder::enable_all`, or `#[tokio::main]`).
#![allow(unsafe_code)]

use multiproc_core::doorbell::Waiters;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::Reactor;

/// The tokio [`Reactor`].
#[derive(Debug)]
pub enum Tokio {}

/// A [`Queue`](multiproc_queue::Queue) with async operations on tokio (see
/// the [crate docs](crate)).
pub type Queue<T> = crate::AsyncQueue<T, Tokio>;

/// A [`JoinableQueue`](multiproc_queue::JoinableQueue) with async
/// operations on tokio (see [`AsyncJoinableQueue`](crate::AsyncJoinableQueue)).
pub type JoinableQueue<T> = crate::AsyncJoinableQueue<T, Tokio>;

/// A [`Lock`](multiproc_sync::Lock) with an async `acquire` (see
/// [`AsyncLock`](crate::AsyncLock)).
pub type Lock = crate::AsyncLock<Tokio>;

/// A [`Semaphore`](multiproc_sync::Semaphore) with an async `acquire` (see
/// [`AsyncSemaphore`](crate::AsyncSemaphore)).
pub type Semaphore = crate::AsyncSemaphore<Tokio>;

/// A [`BoundedSemaphore`](multiproc_sync::BoundedSemaphore) with an async
/// `acquire` (see [`AsyncSemaphore`](crate::AsyncSemaphore)).
pub type BoundedSemaphore = crate::AsyncSemaphore<Tokio, multiproc_sync::BoundedSemaphore>;

/// An [`Event`](multiproc_sync::Event) with an async `wait` (see
/// [`AsyncEvent`](crate::AsyncEvent)).
pub type Event = crate::AsyncEvent<Tokio>;

/// A [`Connection`](multiproc_pipe::Connection) with async sends and
/// receives on tokio (see [`AsyncConnection`](crate::AsyncConnection)).
pub type Connection = crate::AsyncConnection<Tokio>;

/// Waits for `process` on tokio (see [`process::join`](crate::process::join)).
///
/// # Errors
///
/// As [`Process::join`](multiproc_process::Process::join).
pub async fn join<T: serde::de::DeserializeOwned + Send>(
    process: &mut multiproc_process::Process<T>,
) -> Result<T, multiproc_process::JoinError> {
    crate::process::join::<Tokio, T>(process).await
}

/// A doorbell as `AsyncFd` wants it.
#[derive(Debug)]
pub struct Bell(Arc<Waiters>);

impl AsRawFd for Bell {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Reactor for Tokio {
    type Registration = AsyncFd<Bell>;

    fn register(waiters: Arc<Waiters>) -> io::Result<Self::Registration> {
        // Registering outside a runtime would panic.
        tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        // SAFETY: `Bell` owns (through its `Arc`) the `Waiters` whose
        // doorbell socket it returns: the descriptor stays open, the same
        // one, for as long as the `AsyncFd` holds the `Bell`.
        unsafe { AsyncFd::register_with_interest(Bell(waiters), Interest::READABLE) }
            .map_err(io::Error::from)
    }

    async fn readable(fd: &Self::Registration) -> io::Result<()> {
        let mut guard = fd.readable().await?;
        fd.get_ref().0.drain()?;
        // Only the readiness this guard saw: a ring after the drain
        // sets it again.
        guard.clear_ready();
        Ok(())
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }

    type Io = AsyncFd<OwnedFd>;

    fn register_io(fd: OwnedFd) -> io::Result<Self::Io> {
        // Registering outside a runtime would panic.
        tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        // SAFETY: the `AsyncFd` owns the descriptor: it stays open, the
        // same one, for as long as it is registered.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
            .map_err(io::Error::from)
    }

    fn readable_with<T: Send>(
        io: &Self::Io,
        mut attempt: impl FnMut() -> io::Result<T> + Send,
    ) -> impl Future<Output = io::Result<T>> + Send {
        // Readiness is cleared only when the attempt says `WouldBlock`.
        io.async_io(Interest::READABLE, move |_| attempt())
    }

    fn writable_with<T: Send>(
        io: &Self::Io,
        mut attempt: impl FnMut() -> io::Result<T> + Send,
    ) -> impl Future<Output = io::Result<T>> + Send {
        io.async_io(Interest::WRITABLE, move |_| attempt())
    }
}

//! The queue's and the sync primitives' futures on tokio: the doorbells wait in an `AsyncFd`.
//!
//! The runtime needs its I/O driver, and its time driver for the waits that
//! meet a held lock (`Builder::enable_all`, or `#[tokio::main]`).
#![allow(unsafe_code)]

use multiproc_core::doorbell::Waiters;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
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
}

//! The futures of the queue, the sync primitives, connections and processes on
//! async-io, the reactor of smol and async-std: doorbells and descriptors
//! wait in an `Async`.
//!
//! async-io's `readable()` ignores an event delivered in the reactor turn
//! during which the future registered (it cannot tell it from a stale one)
//! and registers again. If another task of the process drained the doorbell
//! in between, the ring that event stood for is gone and the waiter would
//! sleep on. So [`Smol::readable`] counts any wake-up of its registration
//! as readiness: the loop looks again, at worst for nothing.

use async_io::{Async, Timer};
use multiproc_core::doorbell::Waiters;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::Reactor;

/// The async-io [`Reactor`] (smol, async-std).
#[derive(Debug)]
pub enum Smol {}

/// A [`Queue`](multiproc_queue::Queue) with async operations on smol (see
/// the [crate docs](crate)).
pub type Queue<T> = crate::AsyncQueue<T, Smol>;

/// A [`JoinableQueue`](multiproc_queue::JoinableQueue) with async
/// operations on smol (see [`AsyncJoinableQueue`](crate::AsyncJoinableQueue)).
pub type JoinableQueue<T> = crate::AsyncJoinableQueue<T, Smol>;

/// A [`Lock`](multiproc_sync::Lock) with an async `acquire` (see
/// [`AsyncLock`](crate::AsyncLock)).
pub type Lock = crate::AsyncLock<Smol>;

/// A [`Semaphore`](multiproc_sync::Semaphore) with an async `acquire` (see
/// [`AsyncSemaphore`](crate::AsyncSemaphore)).
pub type Semaphore = crate::AsyncSemaphore<Smol>;

/// A [`BoundedSemaphore`](multiproc_sync::BoundedSemaphore) with an async
/// `acquire` (see [`AsyncSemaphore`](crate::AsyncSemaphore)).
pub type BoundedSemaphore = crate::AsyncSemaphore<Smol, multiproc_sync::BoundedSemaphore>;

/// An [`Event`](multiproc_sync::Event) with an async `wait` (see
/// [`AsyncEvent`](crate::AsyncEvent)).
pub type Event = crate::AsyncEvent<Smol>;

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
pub struct Bell(Arc<Waiters>);

impl AsFd for Bell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Reactor for Smol {
    type Registration = Async<Bell>;

    fn register(waiters: Arc<Waiters>) -> io::Result<Self::Registration> {
        Async::new(Bell(waiters))
    }

    async fn readable(fd: &Self::Registration) -> io::Result<()> {
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(Arc::clone(&woken));
        let mut ready = pin!(fd.readable());
        std::future::poll_fn(|cx| {
            *woken.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            // The reactor woke the registration: an event came after it.
            if woken.flag.swap(false, Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            ready.as_mut().poll(&mut Context::from_waker(&waker))
        })
        .await?;
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

/// The waker async-io's readiness future gets: notes that it was woken,
/// then wakes the task.
#[derive(Default)]
struct Woken {
    flag: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::SeqCst);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

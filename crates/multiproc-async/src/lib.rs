//! Async waiting for [multiproc]'s shared-memory queues, locks, semaphores
//! and events, on tokio and on smol (async-io), with no helper thread and
//! no system call on the fast path.
//!
//! An [`AsyncQueue`] wraps a [`Queue`]: its `get`, `put` (and the bytes
//! forms) try the queue's non-blocking operation first, and only when that
//! would block do they arm the queue's doorbell
//! ([`Queue::readiness`](multiproc_queue::Queue::readiness)) and wait for it
//! on the runtime's reactor. The other side may be a blocking or an async
//! user, in this process or another; it rings the doorbell only while some
//! async waiter is armed, so a queue nobody awaits costs what it cost
//! before.
//!
//! | runtime | feature | types |
//! |---|---|---|
//! | tokio (`AsyncFd`; timers need a runtime with time enabled) | `tokio` | `tokio::Queue`, `tokio::JoinableQueue`, `tokio::Lock`, `tokio::Semaphore`, `tokio::Event`, `tokio::Connection`, `tokio::join`, … |
//! | smol, async-std, anything on async-io (`Async`) | `smol` | `smol::Queue`, `smol::JoinableQueue`, `smol::Lock`, `smol::Semaphore`, `smol::Event`, `smol::Connection`, `smol::join`, … |
//!
//! The synchronization primitives of `multiproc-sync` have async forms too:
//! see [`AsyncLock`], [`AsyncSemaphore`] and [`AsyncEvent`] (and what is
//! left out, with the reasons, in their [module](mod@sync)).
//! Connections ([`AsyncConnection`]: `tokio::Connection`,
//! `smol::Connection`) send and receive without blocking, keeping partial
//! frames, and a child [`Process`](multiproc_process::Process) is awaited
//! through its exit descriptor ([`process::join`], `tokio::join`,
//! `smol::join`).
//!
//! Both features can be on at once; the crate has neither by default.
//! Another reactor (io_uring, glommio) implements [`Reactor`].
//!
//! ```
//! # #[cfg(feature = "tokio")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use multiproc_queue::Queue;
//!
//! let rt = ::tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let queue: Queue<String> = Queue::new()?;
//!     let inbox = multiproc_async::tokio::Queue::new(queue.clone())?;
//!     // A blocking producer (a thread here; another process just the same).
//!     let producer = std::thread::spawn(move || queue.put("hello".to_owned()));
//!     assert_eq!(inbox.get().await?, "hello");
//!     producer.join().unwrap()?;
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```
//!
//! # Performance
//!
//! `cargo bench -p multiproc-async --bench async_queue`, one run on 2
//! vCPUs with the machine otherwise idle (load 1.3–1.6), 8-byte messages
//! from a forked blocking partner:
//!
//! | | tokio | smol | blocking queue | tokio `UnixStream` |
//! |---|---|---|---|---|
//! | 1→1 throughput | 17.6 M/s | 16.4 M/s | 27.8 M/s | 1.13 M/s |
//! | round trip | 1.16 µs | 1.20 µs | 0.40 µs | 60.6 µs |
//!
//! So the async get runs at 0.63× (tokio) and 0.59× (smol) of the blocking
//! one and 15.5× a tokio `UnixStream` carrying the same messages, and its
//! round trip takes 0.019× the `UnixStream`'s: a waiter spins for 5 µs
//! before it arms the doorbell, so a partner that answers within that
//! costs no system call and no cross-CPU wake-up.
//!
//! # Cancellation
//!
//! A `get` future that is dropped has taken nothing: the item is taken in
//! the same poll that returns it. A `put` future that is dropped before it
//! completed has put nothing (the item drops with the future).
//!
//! # What a waiter learns of a dead peer
//!
//! A close ([`Queue::close`]) wakes every waiter, which then gets
//! `Closed`. A lock holder that died is taken over on the next attempt: a
//! waiter whose attempt met a held lock waits at most
//! [`Readiness::LIVENESS_SLICE`] before it tries again.
//!
//! [multiproc]: https://docs.rs/multiproc

use multiproc_core::doorbell::Waiters;
use multiproc_queue::{
    GetError, Interest, JoinableQueue, PutError, Queue, QueueError, Readiness, TryGetError,
    TryPutError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

mod pipe;
pub mod process;
pub mod sync;
mod wait;

#[cfg(feature = "smol")]
pub mod smol;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use multiproc_queue::Readiness as QueueReadiness;
pub use pipe::AsyncConnection;
pub use sync::{AcquireError, AsyncEvent, AsyncLock, AsyncSemaphore};

/// A reactor the waits run on: how to wait for a doorbell's readability,
/// how to sleep, and how to wait for a descriptor's readiness between
/// non-blocking attempts (connections, processes). The `tokio` and `smol`
/// features implement it; another runtime can too.
pub trait Reactor: Sized + Send + Sync + 'static {
    /// A doorbell registered with the reactor.
    type Registration: Send + Sync;

    /// Registers `waiters` (an `AsFd`: the doorbell of an object's
    /// readiness handle, [`Readiness::waiters`] or
    /// [`multiproc_sync::Readiness::waiters`]) for readability.
    ///
    /// # Errors
    ///
    /// The reactor's error (no runtime, out of descriptors).
    fn register(waiters: Arc<Waiters>) -> io::Result<Self::Registration>;

    /// Completes once the doorbell is readable, after draining it with
    /// [`Waiters::drain`] (and clearing the reactor's readiness, where it
    /// keeps one). Its first poll must register the waker.
    fn readable(registration: &Self::Registration) -> impl Future<Output = io::Result<()>> + Send;

    /// Completes after `duration`.
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send;

    /// A descriptor registered with the reactor for readability and
    /// writability (a connection's, a pidfd): see
    /// [`readable_with`](Self::readable_with).
    type Io: Send + Sync;

    /// Registers `fd`. It is left in the mode it has (the non-blocking
    /// attempts given to [`readable_with`](Self::readable_with) never
    /// block anyway).
    ///
    /// # Errors
    ///
    /// The reactor's error (no runtime, out of descriptors).
    fn register_io(fd: OwnedFd) -> io::Result<Self::Io>;

    /// Waits until the reactor has seen `io` readable, then calls
    /// `attempt`; while that fails with `WouldBlock`, forgets the readiness
    /// it saw and waits again. Waiting comes first: a caller whose data
    /// may already be buffered in user space checks that before. The
    /// result is returned in the poll that made the successful attempt, so
    /// a dropped future never drops one. Its first poll registers the
    /// waker.
    fn readable_with<T: Send>(
        io: &Self::Io,
        attempt: impl FnMut() -> io::Result<T> + Send,
    ) -> impl Future<Output = io::Result<T>> + Send;

    /// [`readable_with`](Self::readable_with) for writability.
    fn writable_with<T: Send>(
        io: &Self::Io,
        attempt: impl FnMut() -> io::Result<T> + Send,
    ) -> impl Future<Output = io::Result<T>> + Send;
}

/// A [`Queue`] whose blocking operations are futures on reactor `R` (see
/// the [crate docs](crate)). Share it among tasks (it is `Sync`; wrap it in
/// an `Arc`): all of them wait on one doorbell.
pub struct AsyncQueue<T, R: Reactor> {
    queue: Queue<T>,
    readiness: Readiness,
    registration: R::Registration,
}

impl<T, R: Reactor> std::fmt::Debug for AsyncQueue<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncQueue")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl<T, R: Reactor> AsyncQueue<T, R> {
    /// Wraps `queue`; must be called inside the runtime (the doorbell is
    /// registered with its reactor).
    ///
    /// # Errors
    ///
    /// [`QueueError::Doorbell`] when the doorbell cannot be made or
    /// registered (no runtime here, out of descriptors);
    /// [`QueueError::NoDoorbellSlot`] when every slot of the queue is taken.
    pub fn new(queue: Queue<T>) -> Result<Self, QueueError> {
        let readiness = queue.readiness()?;
        let registration =
            R::register(Arc::clone(readiness.waiters())).map_err(QueueError::Doorbell)?;
        Ok(Self {
            queue,
            readiness,
            registration,
        })
    }

    /// The queue, for its non-blocking and blocking operations.
    pub fn queue(&self) -> &Queue<T> {
        &self.queue
    }

    /// Waits until `attempt` gives `Some`, through the doorbell.
    async fn wait<V>(
        &self,
        interest: Interest,
        attempt: impl FnMut() -> Option<V>,
    ) -> Result<V, QueueError> {
        let bell = wait::Bell::<R> {
            waiters: self.readiness.waiters(),
            registration: &self.registration,
            liveness: Readiness::LIVENESS_SLICE,
        };
        wait::until(
            bell,
            || self.readiness.arm(interest),
            || self.readiness.contended(interest),
            attempt,
        )
        .await
        .map_err(QueueError::Doorbell)
    }

    /// Takes the next message as bytes, waiting for one.
    ///
    /// # Errors
    ///
    /// As [`Queue::get_bytes`].
    pub async fn get_bytes(&self) -> Result<Vec<u8>, GetError> {
        let mut outcome = None;
        let waited = self
            .wait(Interest::Get, || {
                outcome = Some(blocking_get(self.queue.try_get_bytes())?);
                Some(())
            })
            .await;
        finish_get(waited, outcome)
    }

    /// Puts `data` as one message, waiting for room.
    ///
    /// # Errors
    ///
    /// As [`Queue::put_bytes`]; the data is handed back.
    pub async fn put_bytes<'a>(&self, data: &'a [u8]) -> Result<(), PutError<&'a [u8]>> {
        let mut data = Some(data);
        let mut outcome = None;
        let waited = self
            .wait(Interest::Put, || {
                outcome = Some(blocking_put(
                    self.queue.try_put_bytes(data.take()?),
                    &mut data,
                )?);
                Some(())
            })
            .await;
        finish_put(waited, outcome, data)
    }
}

impl<T: Serialize + DeserializeOwned, R: Reactor> AsyncQueue<T, R> {
    /// Takes the next item, waiting for one.
    ///
    /// # Errors
    ///
    /// As [`Queue::get`]: `Closed` once the queue is closed and drained.
    pub async fn get(&self) -> Result<T, GetError> {
        let mut outcome = None;
        let waited = self
            .wait(Interest::Get, || {
                outcome = Some(blocking_get(self.queue.try_get())?);
                Some(())
            })
            .await;
        finish_get(waited, outcome)
    }

    /// Puts `item`, waiting for room.
    ///
    /// # Errors
    ///
    /// As [`Queue::put`]; the item is handed back.
    pub async fn put(&self, item: T) -> Result<(), PutError<T>> {
        let mut item = Some(item);
        let mut outcome = None;
        let waited = self
            .wait(Interest::Put, || {
                outcome = Some(blocking_put(self.queue.try_put(item.take()?), &mut item)?);
                Some(())
            })
            .await;
        finish_put(waited, outcome, item)
    }
}

/// The result of a get whose wait ended as `waited`, with the attempt's
/// `outcome` when the wait ended on one.
fn finish_get<V>(
    waited: Result<(), QueueError>,
    outcome: Option<Result<V, GetError>>,
) -> Result<V, GetError> {
    match (waited, outcome) {
        (_, Some(outcome)) => outcome,
        (Err(f), None) => Err(GetError::Failed(f)),
        (Ok(()), None) => unreachable!("a wait that went through ends with an outcome"),
    }
}

/// The result of a put whose wait ended as `waited`, with the attempt's
/// `outcome` when the wait ended on one, else the value still in `left`.
fn finish_put<V>(
    waited: Result<(), QueueError>,
    outcome: Option<Result<(), PutError<V>>>,
    left: Option<V>,
) -> Result<(), PutError<V>> {
    match (waited, outcome, left) {
        (_, Some(outcome), _) => outcome,
        (Err(f), None, Some(v)) => Err(PutError::Failed(v, f)),
        _ => unreachable!("a wait ends with an outcome, or fails with the value left"),
    }
}

/// A [`JoinableQueue`] whose blocking operations are futures on reactor
/// `R`: `get`, `put` and the rest through `Deref` to [`AsyncQueue`], and
/// [`join`](Self::join).
///
/// ```
/// # #[cfg(feature = "smol")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc_queue::JoinableQueue;
///
/// let jobs: JoinableQueue<u32> = JoinableQueue::new()?;
/// let worker = jobs.clone();
/// ::smol::block_on(async {
///     let jobs = multiproc_async::smol::JoinableQueue::new(jobs)?;
///     jobs.put(1).await?;
///     jobs.put(2).await?;
///     // A worker (another process, say) takes them and marks them done.
///     let done = std::thread::spawn(move || {
///         for _ in 0..2 {
///             worker.get().unwrap();
///             worker.task_done().unwrap();
///         }
///     });
///     jobs.join().await?;
///     assert_eq!(jobs.joinable().unfinished_tasks(), 0);
///     done.join().unwrap();
///     Ok(())
/// })
/// # }
/// # #[cfg(not(feature = "smol"))]
/// # fn main() {}
/// ```
pub struct AsyncJoinableQueue<T, R: Reactor> {
    inner: AsyncQueue<T, R>,
    joinable: JoinableQueue<T>,
}

impl<T, R: Reactor> std::fmt::Debug for AsyncJoinableQueue<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncJoinableQueue")
            .field("queue", &self.joinable)
            .finish_non_exhaustive()
    }
}

impl<T, R: Reactor> AsyncJoinableQueue<T, R> {
    /// Wraps `queue` (inside the runtime, as [`AsyncQueue::new`]).
    ///
    /// # Errors
    ///
    /// As [`AsyncQueue::new`].
    pub fn new(queue: JoinableQueue<T>) -> Result<Self, QueueError> {
        Ok(Self {
            inner: AsyncQueue::new((*queue).clone())?,
            joinable: queue,
        })
    }

    /// The queue, for `task_done` and the blocking operations.
    pub fn joinable(&self) -> &JoinableQueue<T> {
        &self.joinable
    }

    /// Waits until every item put so far was marked done
    /// ([`JoinableQueue::task_done`]), by any process.
    ///
    /// # Errors
    ///
    /// [`QueueError::Doorbell`] when the reactor fails to wait.
    pub async fn join(&self) -> Result<(), QueueError> {
        self.inner
            .wait(Interest::Join, || {
                (self.joinable.unfinished_tasks() == 0).then_some(())
            })
            .await
    }
}

impl<T, R: Reactor> std::ops::Deref for AsyncJoinableQueue<T, R> {
    type Target = AsyncQueue<T, R>;

    fn deref(&self) -> &AsyncQueue<T, R> {
        &self.inner
    }
}

/// A `try_get` outcome as a get's; `None` for `Empty`.
fn blocking_get<V>(tried: Result<V, TryGetError>) -> Option<Result<V, GetError>> {
    match tried {
        Ok(v) => Some(Ok(v)),
        Err(e) => GetError::try_from(e).ok().map(Err),
    }
}

/// A `try_put` outcome as a put's; `None` for `Full`, with the value put
/// back in `left`.
fn blocking_put<V>(
    tried: Result<(), TryPutError<V>>,
    left: &mut Option<V>,
) -> Option<Result<(), PutError<V>>> {
    match tried {
        Ok(()) => Some(Ok(())),
        Err(e) => match PutError::try_from(e) {
            Ok(e) => Some(Err(e)),
            Err(full) => {
                *left = Some(full.into_inner());
                None
            }
        },
    }
}

/// Polls `future` once: its first poll registers what it waits for.
async fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let mut future = Some(future);
    std::future::poll_fn(|cx| Poll::Ready(future.take().expect("polled once").poll(cx))).await
}

/// Runs `a` and `b` until either completes.
async fn race<A: Future<Output = ()>, B: Future<Output = ()>>(a: A, b: B) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

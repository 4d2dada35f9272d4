//! Async forms of `multiproc-sync`'s primitives: [`AsyncLock::acquire`],
//! [`AsyncSemaphore::acquire`] and [`AsyncEvent::wait`], generic over the
//! [`Reactor`] like [`AsyncQueue`](crate::AsyncQueue) (aliases:
//! `tokio::Lock`, `smol::Event`,
//! …).
//!
//! Each wraps a handle of the primitive (any process's: the other side may
//! be a blocking user or an async one, here or elsewhere) and its
//! [`Readiness`]. An operation tries the non-blocking form first, and only
//! when that would block arms the doorbell and waits for it on the
//! runtime's reactor. The primitive's notify path (unlock, release, `set`)
//! rings the doorbell only when it finds a waiter announced, so objects
//! nobody awaits cost what they cost before.
//!
//! ```
//! # #[cfg(feature = "tokio")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use multiproc_sync::Event;
//!
//! let rt = ::tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let event = Event::new()?;
//!     let ready = multiproc_async::tokio::Event::new(event.clone())?;
//!     // A blocking setter (a thread here; another process just the same).
//!     let setter = std::thread::spawn(move || event.set());
//!     ready.wait().await?;
//!     setter.join().unwrap();
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```
//!
//! # Dead lock holders
//!
//! A lock's holder that dies rings nobody. While the lock is held, an
//! awaiting acquire therefore looks again at least every
//! [`Readiness::LIVENESS_SLICE`] (the interval at which blocking acquirers
//! check the owner); the attempt that finds the owner dead takes the lock
//! over and returns [`AcquireError::OwnerDied`] with the guard, as
//! [`Lock::acquire`] returns [`OwnerDied`].
//!
//! # Cancellation
//!
//! A dropped `acquire` future holds nothing: the lock or unit is taken in
//! the same poll that returns it. A dropped `wait` future has no effect.
//!
//! # What is left out
//!
//! - `RLock`: its recursion is counted per thread, and a task is not a
//!   thread (two tasks of one thread would enter each other's lock).
//! - `Condition`: its `wait` releases the lock, registers for a wake token
//!   and takes the lock again; a cancelled async wait would have to hand
//!   a token it may already have been given to another waiter, and the
//!   lock is per thread (below). Await an [`AsyncEvent`] or an
//!   [`AsyncLock`] instead.
//! - `Barrier`: a waiting party is recorded by its thread, so that the
//!   others can tell when it dies and break the barrier; a task that is
//!   cancelled or moves between threads while it waits breaks that record.
//!   Its layout has no doorbells.
//!
//! A [`Lock`] acquired here is held by the thread that took it, as with the
//! blocking API: the [`LockGuard`] is not `Send`, so a task that holds it
//! across an `.await` runs on a current-thread runtime or a local set. The
//! holder counts as dead when that thread ends holding the lock.

use multiproc_core::doorbell::WaitersError;
use multiproc_sync::{
    BoundedSemaphore, Event, Lock, LockGuard, OwnerDied, Readiness, Semaphore, SemaphoreGuard,
    TryAcquireError, WouldBlock,
};
use std::fmt;
use std::io;
use std::sync::Arc;

use crate::Reactor;
use crate::wait::{self, Bell};

/// A primitive's readiness registered with reactor `R`.
struct Registered<R: Reactor> {
    readiness: Readiness,
    registration: R::Registration,
}

impl<R: Reactor> Registered<R> {
    fn new(readiness: Result<Readiness, WaitersError>) -> Result<Self, WaitersError> {
        let readiness = readiness?;
        let registration = R::register(Arc::clone(readiness.waiters()))?;
        Ok(Self {
            readiness,
            registration,
        })
    }

    /// Waits until `attempt` gives `Some`, through the doorbell.
    async fn until<V>(&self, attempt: impl FnMut() -> Option<V>) -> io::Result<V> {
        let bell = Bell::<R> {
            waiters: self.readiness.waiters(),
            registration: &self.registration,
            liveness: Readiness::LIVENESS_SLICE,
        };
        wait::until(
            bell,
            || self.readiness.arm(),
            || self.readiness.contended(),
            attempt,
        )
        .await
    }
}

/// Why [`AsyncLock::acquire`] returned without a clean guard.
///
/// ```
/// use multiproc_async::AcquireError;
///
/// let failed: AcquireError<()> = AcquireError::Failed(std::io::ErrorKind::Other.into());
/// assert!(failed.into_guard().is_none()); // not held
/// ```
#[derive(Debug)]
pub enum AcquireError<G> {
    /// Acquired, but the previous owner had died holding the lock: the
    /// lock is held, the guard is inside (as [`Lock::acquire`] reports it).
    OwnerDied(OwnerDied<G>),
    /// The reactor failed to wait (the runtime is shutting down); the lock
    /// is not held.
    Failed(io::Error),
}

impl<G> AcquireError<G> {
    /// The guard, if the lock was acquired (from a dead owner).
    pub fn into_guard(self) -> Option<G> {
        match self {
            Self::OwnerDied(died) => Some(died.into_inner()),
            Self::Failed(_) => None,
        }
    }
}

impl<G> fmt::Display for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnerDied(died) => died.fmt(f),
            Self::Failed(_) => f.write_str("waiting for the lock failed"),
        }
    }
}

impl<G: fmt::Debug> std::error::Error for AcquireError<G> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::OwnerDied(_) => None,
            Self::Failed(e) => Some(e),
        }
    }
}

/// A [`Lock`] whose `acquire` is a future on reactor `R` (see the
/// [module docs](self)). Share it among tasks (it is `Sync`): all of them
/// wait on one doorbell.
///
/// ```
/// # #[cfg(feature = "smol")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc_sync::Lock;
///
/// let lock = Lock::new()?;
/// let (held_tx, held) = std::sync::mpsc::channel();
/// let holder = std::thread::spawn({
///     let lock = lock.clone();
///     move || {
///         let guard = lock.acquire().unwrap(); // a blocking user
///         held_tx.send(()).unwrap();
///         std::thread::sleep(std::time::Duration::from_millis(20));
///         drop(guard);
///     }
/// });
/// held.recv()?;
/// smol::block_on(async {
///     let waiting = multiproc_async::smol::Lock::new(lock.clone())?;
///     let guard = waiting.acquire().await.expect("released by a live holder");
///     assert!(lock.is_owned());
///     drop(guard);
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })?;
/// holder.join().unwrap();
/// Ok(())
/// # }
/// # #[cfg(not(feature = "smol"))]
/// # fn main() {}
/// ```
pub struct AsyncLock<R: Reactor> {
    lock: Lock,
    bell: Registered<R>,
}

impl<R: Reactor> fmt::Debug for AsyncLock<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncLock")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl<R: Reactor> AsyncLock<R> {
    /// Wraps `lock`; must be called inside the runtime (the doorbell is
    /// registered with its reactor).
    ///
    /// # Errors
    ///
    /// [`WaitersError::Doorbell`] when the doorbell cannot be made or
    /// registered (no runtime here, out of descriptors);
    /// [`WaitersError::NoSlot`] when every doorbell slot of the lock is
    /// taken.
    pub fn new(lock: Lock) -> Result<Self, WaitersError> {
        Ok(Self {
            bell: Registered::new(lock.readiness())?,
            lock,
        })
    }

    /// The lock, for its non-blocking and blocking operations.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Acquires the lock, waiting as long as it takes (another task of
    /// this thread holding it counts as another holder: waited for, not a
    /// panic as in the blocking [`Lock::acquire`]).
    ///
    /// # Errors
    ///
    /// [`AcquireError::OwnerDied`] when the previous owner died holding the
    /// lock (the lock is then held, the guard is inside);
    /// [`AcquireError::Failed`] when the reactor failed to wait.
    pub async fn acquire(&self) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        let outcome = self
            .bell
            .until(|| match self.lock.try_acquire() {
                Ok(guard) => Some(Ok(guard)),
                Err(TryAcquireError::WouldBlock) => None,
                Err(TryAcquireError::OwnerDied(died)) => Some(Err(died)),
            })
            .await;
        match outcome {
            Ok(Ok(guard)) => Ok(guard),
            Ok(Err(died)) => Err(AcquireError::OwnerDied(died)),
            Err(e) => Err(AcquireError::Failed(e)),
        }
    }
}

/// The semaphores [`AsyncSemaphore`] wraps: [`Semaphore`] and
/// [`BoundedSemaphore`].
///
/// ```
/// use multiproc_async::sync::Units;
/// use multiproc_sync::BoundedSemaphore;
///
/// let sem = BoundedSemaphore::new(1)?;
/// let unit = sem.try_take()?;
/// assert!(sem.try_take().is_err());
/// drop(unit);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Units: Send + Sync + fmt::Debug + sealed::Sealed {
    /// Takes a unit if one is free.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`] when none is.
    fn try_take(&self) -> Result<SemaphoreGuard<'_>, WouldBlock>;

    /// The semaphore's readiness handle.
    ///
    /// # Errors
    ///
    /// As [`Semaphore::readiness`].
    fn readiness(&self) -> Result<Readiness, WaitersError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for multiproc_sync::Semaphore {}
    impl Sealed for multiproc_sync::BoundedSemaphore {}
}

impl Units for Semaphore {
    fn try_take(&self) -> Result<SemaphoreGuard<'_>, WouldBlock> {
        self.try_acquire()
    }
    fn readiness(&self) -> Result<Readiness, WaitersError> {
        Semaphore::readiness(self)
    }
}

impl Units for BoundedSemaphore {
    fn try_take(&self) -> Result<SemaphoreGuard<'_>, WouldBlock> {
        self.try_acquire()
    }
    fn readiness(&self) -> Result<Readiness, WaitersError> {
        BoundedSemaphore::readiness(self)
    }
}

/// A [`Semaphore`] (or, with `S =` [`BoundedSemaphore`], a bounded one)
/// whose `acquire` is a future on reactor `R` (see the
/// [module docs](self)).
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc_sync::Semaphore;
///
/// let rt = ::tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// rt.block_on(async {
///     let sem = Semaphore::new(0)?;
///     let units = multiproc_async::tokio::Semaphore::new(sem.clone())?;
///     let releaser = std::thread::spawn(move || sem.release());
///     let unit = units.acquire().await?;
///     releaser.join().unwrap()?;
///     drop(unit); // gives it back
///     assert_eq!(units.semaphore().get_value(), 1);
///     Ok(())
/// })
/// # }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
pub struct AsyncSemaphore<R: Reactor, S: Units = Semaphore> {
    semaphore: S,
    bell: Registered<R>,
}

impl<R: Reactor, S: Units> fmt::Debug for AsyncSemaphore<R, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSemaphore")
            .field("semaphore", &self.semaphore)
            .finish_non_exhaustive()
    }
}

impl<R: Reactor, S: Units> AsyncSemaphore<R, S> {
    /// Wraps `semaphore`; must be called inside the runtime.
    ///
    /// # Errors
    ///
    /// As [`AsyncLock::new`].
    pub fn new(semaphore: S) -> Result<Self, WaitersError> {
        Ok(Self {
            bell: Registered::new(semaphore.readiness())?,
            semaphore,
        })
    }

    /// The semaphore, for its other operations.
    pub fn semaphore(&self) -> &S {
        &self.semaphore
    }

    /// Takes a unit, waiting for one; the guard gives it back.
    ///
    /// # Errors
    ///
    /// The reactor's error when it fails to wait (no unit is taken).
    pub async fn acquire(&self) -> io::Result<SemaphoreGuard<'_>> {
        self.bell.until(|| self.semaphore.try_take().ok()).await
    }
}

/// An [`Event`] whose `wait` is a future on reactor `R` (see the
/// [module docs](self)). Share it among tasks: all of them wait on one
/// doorbell.
///
/// ```
/// # #[cfg(feature = "smol")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc_sync::Event;
///
/// let event = Event::new()?;
/// smol::block_on(async {
///     let ready = multiproc_async::smol::Event::new(event.clone())?;
///     ready.event().set(); // set already: the wait returns at once
///     ready.wait().await?;
///     Ok(())
/// })
/// # }
/// # #[cfg(not(feature = "smol"))]
/// # fn main() {}
/// ```
pub struct AsyncEvent<R: Reactor> {
    event: Event,
    bell: Registered<R>,
}

impl<R: Reactor> fmt::Debug for AsyncEvent<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncEvent")
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

impl<R: Reactor> AsyncEvent<R> {
    /// Wraps `event`; must be called inside the runtime.
    ///
    /// # Errors
    ///
    /// As [`AsyncLock::new`].
    pub fn new(event: Event) -> Result<Self, WaitersError> {
        Ok(Self {
            bell: Registered::new(event.readiness())?,
            event,
        })
    }

    /// The event, for `set`, `clear` and `is_set`.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// Waits until the flag is set: returns at once if it is, else once it
    /// has been set after the call (even if it was cleared again before
    /// this task ran, as [`Event::wait`]).
    ///
    /// # Errors
    ///
    /// The reactor's error when it fails to wait.
    pub async fn wait(&self) -> io::Result<()> {
        let mark = self.event.mark();
        self.bell
            .until(|| self.event.set_since(mark).then_some(()))
            .await
    }
}

//! [`Lock`]: a robust, process-shared, non-recursive lock.

use multiproc_core::time::{deadline_after, remaining};
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::error::{AcquireTimeoutError, NotOwner, OwnerDied, TryAcquireError};
use crate::ident;
use crate::layout::{LockLayout, LockWords};
use crate::raw_lock::{Acquired, NotAcquired};
use crate::ready::Readiness;
use crate::shared::Shared;

const MAGIC: [u8; 8] = *b"MPLOCK\0\0";

/// A lock shared between processes, like Python's
/// `multiprocessing.Lock`, that survives the death of its holder.
///
/// The lock lives in shared memory (an anonymous memfd by default); clones
/// are handles to the same lock, and a `Lock` sent to another process
/// (`Serialize`, its descriptor travels out of band) is the same lock
/// there. The owner is a thread: only the thread that acquired the lock may
/// release it, and a guard cannot leave its thread.
///
/// If the owner dies while holding the lock (a process killed by
/// `SIGKILL`, a thread that exits), the next acquirer gets
/// [`OwnerDied`] carrying its guard: repair what the lock protects, then
/// go on. Sleeping waiters notice the death within
/// [`OWNER_CHECK_INTERVAL`](crate::OWNER_CHECK_INTERVAL) plus a `/proc` read.
///
/// # Examples
///
/// ```
/// use multiproc_sync::Lock;
/// use std::time::Duration;
///
/// let lock = Lock::new()?;
/// {
///     let _guard = lock.lock().unwrap();
///     assert!(lock.is_locked());
///     // Another thread (or process) cannot take it now.
///     std::thread::scope(|s| {
///         s.spawn(|| assert!(lock.try_acquire().unwrap_err().is_would_block()));
///     });
/// }
/// assert!(!lock.is_locked());
/// assert!(lock.acquire_timeout(Duration::from_millis(1)).is_ok());
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
///
/// Beside other data in a segment of your own
/// ([`create_in`](Self::create_in), [`attach`](Self::attach)):
///
/// ```
/// use multiproc_core::Segment;
/// use multiproc_sync::Lock;
/// use std::sync::Arc;
///
/// let segment = Arc::new(Segment::anonymous(4096)?);
/// let lock = Lock::create_in(Arc::clone(&segment), 256)?;
/// let again = Lock::attach(segment, 256)?;
/// let guard = lock.acquire().unwrap();
/// assert!(again.is_locked());
/// drop(guard);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    shared: Shared<LockLayout>,
}

impl Lock {
    #[inline]
    fn words(&self) -> &LockWords {
        &self.shared.get().words
    }

    /// Acquires the lock, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] when the previous owner died holding the lock; the lock
    /// is then held, and the guard is inside the error.
    ///
    /// # Panics
    ///
    /// When the calling thread already holds the lock (it would wait for
    /// ever); use an [`RLock`](crate::RLock) for recursion.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Lock;
    ///
    /// let lock = Lock::new()?;
    /// let guard = lock.acquire().unwrap();
    /// assert!(lock.is_owned());
    /// drop(guard);
    /// assert!(!lock.is_owned());
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    #[inline]
    pub fn acquire(&self) -> Result<LockGuard<'_>, OwnerDied<LockGuard<'_>>> {
        match self.acquire_deadline(None) {
            Ok(guard) => Ok(guard),
            Err(AcquireTimeoutError::OwnerDied(died)) => Err(died),
            Err(AcquireTimeoutError::Timeout) => unreachable!("no deadline"),
        }
    }

    /// The RAII spelling of [`acquire`](Self::acquire): the lock is released
    /// when the guard drops.
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire).
    ///
    /// # Panics
    ///
    /// As for [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Lock;
    ///
    /// let lock = Lock::new()?;
    /// {
    ///     let _guard = lock.lock().unwrap_or_else(|died| died.into_inner());
    ///     assert!(lock.is_locked());
    /// }
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    #[doc(alias = "__enter__")]
    #[inline]
    pub fn lock(&self) -> Result<LockGuard<'_>, OwnerDied<LockGuard<'_>>> {
        self.acquire()
    }

    /// Acquires the lock if that needs no waiting (Python's
    /// `acquire(block=False)`). An owner found dead is taken over (one
    /// `/proc` read when the lock is busy); an owner that is dying at this
    /// very moment still counts as alive.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::WouldBlock`] when another live thread holds it, or
    /// the calling thread itself; [`TryAcquireError::OwnerDied`] as for
    /// [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Lock;
    ///
    /// let lock = Lock::new()?;
    /// let guard = lock.try_acquire().unwrap();
    /// assert!(lock.try_acquire().unwrap_err().is_would_block()); // not recursive
    /// drop(guard);
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<LockGuard<'_>, TryAcquireError<LockGuard<'_>>> {
        match self.words().try_lock(ident::me()) {
            Ok(Acquired::Clean) => Ok(self.guard()),
            Ok(Acquired::OwnerDied) => Err(OwnerDied::new(self.guard()).into()),
            Err(_) => Err(TryAcquireError::WouldBlock),
        }
    }

    /// Acquires the lock, waiting at most `timeout` (zero polls; durations
    /// too large for the clock wait for ever).
    ///
    /// # Errors
    ///
    /// [`AcquireTimeoutError::Timeout`] when the time ran out (also when the
    /// calling thread holds the lock itself: nobody else can release it, so
    /// the call sleeps out the timeout); [`AcquireTimeoutError::OwnerDied`]
    /// as for [`acquire`](Self::acquire).
    ///
    /// # Panics
    ///
    /// When the calling thread holds the lock and the timeout is too large
    /// to ever end.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Lock;
    /// use std::time::Duration;
    ///
    /// let lock = Lock::new()?;
    /// let guard = lock.acquire_timeout(Duration::ZERO).unwrap();
    /// drop(guard);
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<LockGuard<'_>, AcquireTimeoutError<LockGuard<'_>>> {
        self.acquire_deadline(deadline_after(timeout))
    }

    #[inline]
    fn acquire_deadline(
        &self,
        deadline: Option<Instant>,
    ) -> Result<LockGuard<'_>, AcquireTimeoutError<LockGuard<'_>>> {
        match self.words().lock(ident::me(), deadline) {
            Ok(Acquired::Clean) => Ok(self.guard()),
            Ok(Acquired::OwnerDied) => Err(OwnerDied::new(self.guard()).into()),
            Err(NotAcquired::Busy) => Err(AcquireTimeoutError::Timeout),
            Err(NotAcquired::Reentrant) => match remaining(deadline) {
                Some(left) => {
                    std::thread::sleep(left);
                    Err(AcquireTimeoutError::Timeout)
                }
                None => panic!("Lock::acquire: the calling thread already holds this lock"),
            },
        }
    }

    /// Releases a lock that the calling thread holds without a guard (see
    /// [`LockGuard::forget`]), like Python's `release()`.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] when the calling thread does not hold the lock; nothing
    /// changes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::{Lock, LockGuard, NotOwner};
    ///
    /// let lock = Lock::new()?;
    /// LockGuard::forget(lock.acquire().unwrap());
    /// assert!(lock.is_locked());
    /// assert_eq!(lock.release(), Ok(()));
    /// assert_eq!(lock.release(), Err(NotOwner));
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn release(&self) -> Result<(), NotOwner> {
        if self.shared.get().unlock_checked(ident::me()) {
            Ok(())
        } else {
            Err(NotOwner)
        }
    }

    /// Whether some thread holds the lock right now (a snapshot that may be
    /// stale by the time it is read; a dead owner counts until someone
    /// takes over).
    #[must_use]
    pub fn is_locked(&self) -> bool {
        self.words().is_locked()
    }

    /// A doorbell that unlocks ring while a waiter is
    /// [armed](Readiness::arm) and announced: what async acquirers wait on
    /// instead of the futex (see [`Readiness`]).
    ///
    /// # Errors
    ///
    /// As [`Waiters::new`](multiproc_core::doorbell::Waiters::new): no
    /// descriptor left, or every doorbell slot of the lock taken.
    ///
    /// ```
    /// use multiproc_sync::Lock;
    ///
    /// let lock = Lock::new()?;
    /// let ready = lock.readiness()?;
    /// let (held, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    /// let armed = ready.arm(); // until the end: the unlock must find it armed
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let guard = lock.acquire().unwrap();
    ///         held.wait();
    ///         release.wait();
    ///         drop(guard); // rings: a waiter announced itself
    ///     });
    ///     held.wait();
    ///     armed.announce();
    ///     assert!(lock.try_acquire().is_err());
    ///     assert!(ready.contended()); // held: wait at most LIVENESS_SLICE
    ///     release.wait();
    /// });
    /// assert_eq!(ready.drain()?, 1);
    /// drop(armed);
    /// assert!(lock.try_acquire().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn readiness(&self) -> Result<Readiness, multiproc_core::doorbell::WaitersError> {
        Readiness::new(crate::ready::Target::Lock(self.shared.clone()))
    }

    /// Whether the calling thread holds the lock.
    #[must_use]
    pub fn is_owned(&self) -> bool {
        self.words().held_by(ident::me())
    }

    #[inline]
    fn guard(&self) -> LockGuard<'_> {
        LockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.shared.same_as(&other.shared)
    }
}

fn init(layout: &LockLayout) {
    layout.words.init();
}

fn validate(_: &LockLayout) -> Result<(), &'static str> {
    // Every state is meaningful: a garbage owner is judged dead and taken
    // over by the next acquirer.
    Ok(())
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::fd::{AsFd, AsRawFd};
        f.debug_struct("Lock")
            .field("fd", &self.segment().as_fd().as_raw_fd())
            .field("offset", &self.shared.offset())
            .field("locked", &self.is_locked())
            .finish()
    }
}

crate::shared::shared_handle!(Lock, LockLayout, "unlocked lock", validate);

/// Proof that the calling thread holds a [`Lock`]; releases it on drop.
///
/// Not `Send`: the owner is a thread, and only it may release.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<multiproc_sync::LockGuard<'static>>();
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    _not_send: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    /// The lock this guard holds.
    #[must_use]
    pub fn lock(guard: &Self) -> &'a Lock {
        guard.lock
    }

    /// Keeps the lock held without a guard; release it later with
    /// [`Lock::release`] from the same thread (Python-style
    /// `acquire()`/`release()` pairs).
    pub fn forget(guard: Self) {
        std::mem::forget(guard);
    }

    /// Releases the lock, runs `f`, and acquires the lock again.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (holding `f`'s result) when an owner died holding the
    /// lock while `f` ran; the lock is held again either way.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::{Lock, LockGuard};
    ///
    /// let lock = Lock::new()?;
    /// let mut guard = lock.acquire().unwrap();
    /// let free = LockGuard::unlocked(&mut guard, || !lock.is_locked()).unwrap();
    /// assert!(free && lock.is_owned());
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn unlocked<R>(guard: &mut Self, f: impl FnOnce() -> R) -> Result<R, OwnerDied<R>> {
        let words = guard.lock.words();
        guard.lock.shared.get().unlock_held();
        let result = f();
        match words.lock(ident::me(), None) {
            Ok(Acquired::Clean) => Ok(result),
            Ok(Acquired::OwnerDied) => Err(OwnerDied::new(result)),
            Err(_) => unreachable!("the lock was released by this thread and no deadline is set"),
        }
    }

    /// Releases the lock for a `Condition` wait.
    pub(crate) fn release_for_wait(guard: Self) -> &'a Lock {
        let lock = guard.lock;
        std::mem::forget(guard);
        lock.shared.get().unlock_held();
        lock
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.shared.get().unlock_held();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

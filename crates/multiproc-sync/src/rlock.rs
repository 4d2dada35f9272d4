//! [`RLock`]: a robust, process-shared, recursive lock.

use multiproc_core::time::deadline_after;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{AcquireTimeoutError, NotOwner, OwnerDied, TryAcquireError};
use crate::ident;
use crate::layout::{LockLayout, LockWords};
use crate::raw_lock::{Acquired, NotAcquired};
use crate::shared::Shared;

const MAGIC: [u8; 8] = *b"MPRLOCK\0";

/// A recursive lock shared between processes, like Python's
/// `multiprocessing.RLock`: the owning thread may acquire it again, and it
/// is free once every acquire has been matched by a release.
///
/// The owner is a thread of a process (recursion is counted per owner).
/// Robust like [`Lock`](crate::Lock): when the owner dies holding it, the
/// next acquirer gets [`OwnerDied`] with a guard at depth 1, whatever depth
/// the dead owner had reached.
///
/// # Examples
///
/// ```
/// use multiproc_sync::RLock;
///
/// let lock = RLock::new()?;
/// let outer = lock.acquire().unwrap();
/// let inner = lock.acquire().unwrap(); // same thread: no deadlock
/// assert_eq!(lock.depth(), 2);
/// drop(inner);
/// assert!(lock.is_owned());
/// drop(outer);
/// assert!(!lock.is_locked());
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
///
/// A `Lock` is not an `RLock`: [`attach`](Self::attach) checks the header.
///
/// ```
/// use multiproc_sync::{Lock, RLock};
/// use std::sync::Arc;
///
/// let lock = Lock::new()?;
/// assert!(RLock::attach(Arc::clone(lock.segment()), 0).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    shared: Shared<LockLayout>,
}

impl RLock {
    #[inline]
    fn words(&self) -> &LockWords {
        &self.shared.get().words
    }

    /// Acquires the lock (again, if the calling thread holds it already),
    /// waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] when the previous owner died holding the lock; the lock
    /// is then held at depth 1, and the guard is inside the error.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::RLock;
    ///
    /// let lock = RLock::new()?;
    /// let a = lock.acquire().unwrap();
    /// let b = lock.lock().unwrap();
    /// assert_eq!(lock.depth(), 2);
    /// drop((a, b));
    /// assert_eq!(lock.depth(), 0);
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    #[inline]
    pub fn acquire(&self) -> Result<RLockGuard<'_>, OwnerDied<RLockGuard<'_>>> {
        match self.acquire_deadline(None) {
            Ok(guard) => Ok(guard),
            Err(AcquireTimeoutError::OwnerDied(died)) => Err(died),
            Err(AcquireTimeoutError::Timeout) => unreachable!("no deadline"),
        }
    }

    /// The RAII spelling of [`acquire`](Self::acquire).
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire).
    #[doc(alias = "__enter__")]
    #[inline]
    pub fn lock(&self) -> Result<RLockGuard<'_>, OwnerDied<RLockGuard<'_>>> {
        self.acquire()
    }

    /// Acquires the lock if that needs no waiting (always, for the owner).
    /// An owner found dead is taken over, as for [`Lock::try_acquire`](crate::Lock::try_acquire).
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::WouldBlock`] when another live thread holds it;
    /// [`TryAcquireError::OwnerDied`] as for [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::RLock;
    ///
    /// let lock = RLock::new()?;
    /// let _a = lock.try_acquire().unwrap();
    /// let _b = lock.try_acquire().unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert!(lock.try_acquire().unwrap_err().is_would_block()));
    /// });
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<RLockGuard<'_>, TryAcquireError<RLockGuard<'_>>> {
        let me = ident::me();
        let words = self.words();
        if words.held_by(me) {
            return Ok(self.enter_again());
        }
        match words.try_lock(me) {
            Ok(acquired) => self
                .entered(acquired, 1)
                .map_err(TryAcquireError::OwnerDied),
            Err(_) => Err(TryAcquireError::WouldBlock),
        }
    }

    /// Acquires the lock, waiting at most `timeout` (zero polls).
    ///
    /// # Errors
    ///
    /// [`AcquireTimeoutError::Timeout`] when the time ran out;
    /// [`AcquireTimeoutError::OwnerDied`] as for [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::RLock;
    /// use std::time::Duration;
    ///
    /// let lock = RLock::new()?;
    /// let _held = lock.acquire().unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let err = lock.acquire_timeout(Duration::from_millis(5)).unwrap_err();
    ///         assert!(err.is_timeout());
    ///     });
    /// });
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<RLockGuard<'_>, AcquireTimeoutError<RLockGuard<'_>>> {
        self.acquire_deadline(deadline_after(timeout))
    }

    #[inline]
    fn acquire_deadline(
        &self,
        deadline: Option<Instant>,
    ) -> Result<RLockGuard<'_>, AcquireTimeoutError<RLockGuard<'_>>> {
        let me = ident::me();
        let words = self.words();
        if words.held_by(me) {
            return Ok(self.enter_again());
        }
        match words.lock(me, deadline) {
            Ok(acquired) => self
                .entered(acquired, 1)
                .map_err(AcquireTimeoutError::OwnerDied),
            Err(NotAcquired::Busy) => Err(AcquireTimeoutError::Timeout),
            Err(NotAcquired::Reentrant) => unreachable!("ownership was checked first"),
        }
    }

    /// Bookkeeping after taking the state word: sets the depth.
    #[inline]
    fn entered(
        &self,
        acquired: Acquired,
        depth: u32,
    ) -> Result<RLockGuard<'_>, OwnerDied<RLockGuard<'_>>> {
        // Written only by the owner, while holding: the state word's
        // Acquire/Release orders it.
        self.words().count.store(depth, Ordering::Relaxed);
        match acquired {
            Acquired::Clean => Ok(self.guard()),
            Acquired::OwnerDied => Err(OwnerDied::new(self.guard())),
        }
    }

    #[inline]
    fn enter_again(&self) -> RLockGuard<'_> {
        let count = &self.words().count;
        let depth = count.load(Ordering::Relaxed);
        assert!(depth < u32::MAX, "RLock recursion depth overflow");
        count.store(depth + 1, Ordering::Relaxed);
        self.guard()
    }

    /// Releases one level of a lock the calling thread holds without a guard
    /// (see [`RLockGuard::forget`]); the lock is free once the depth is 0.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] when the calling thread does not hold the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::{NotOwner, RLock, RLockGuard};
    ///
    /// let lock = RLock::new()?;
    /// RLockGuard::forget(lock.acquire().unwrap());
    /// RLockGuard::forget(lock.acquire().unwrap());
    /// assert_eq!(lock.release(), Ok(()));
    /// assert!(lock.is_locked());
    /// assert_eq!(lock.release(), Ok(()));
    /// assert!(!lock.is_locked());
    /// assert_eq!(lock.release(), Err(NotOwner));
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn release(&self) -> Result<(), NotOwner> {
        if !self.words().held_by(ident::me()) {
            return Err(NotOwner);
        }
        self.release_one();
        Ok(())
    }

    #[inline]
    fn release_one(&self) {
        let words = self.words();
        let depth = words.count.load(Ordering::Relaxed);
        if depth <= 1 {
            words.count.store(0, Ordering::Relaxed);
            self.shared.get().unlock_held();
        } else {
            words.count.store(depth - 1, Ordering::Relaxed);
        }
    }

    /// Whether some thread holds the lock right now (a snapshot).
    #[must_use]
    pub fn is_locked(&self) -> bool {
        self.words().is_locked()
    }

    /// Whether the calling thread holds the lock.
    #[must_use]
    pub fn is_owned(&self) -> bool {
        self.words().held_by(ident::me())
    }

    /// How many times the calling thread holds the lock (0 when it does not).
    #[must_use]
    pub fn depth(&self) -> u32 {
        if self.is_owned() {
            self.words().count.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    #[inline]
    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.shared.same_as(&other.shared)
    }

    /// Releases every level (for a `Condition` wait); returns the depth.
    pub(crate) fn release_all_for_wait(guard: RLockGuard<'_>) -> u32 {
        let lock = guard.lock;
        std::mem::forget(guard);
        let words = lock.words();
        let depth = words.count.swap(0, Ordering::Relaxed).max(1);
        lock.shared.get().unlock_held();
        depth
    }

    /// Takes the lock again at `depth` after a `Condition` wait.
    pub(crate) fn reacquire_after_wait(
        &self,
        depth: u32,
    ) -> Result<RLockGuard<'_>, OwnerDied<RLockGuard<'_>>> {
        match self.words().lock(ident::me(), None) {
            Ok(acquired) => self.entered(acquired, depth),
            Err(_) => unreachable!("released by this thread, no deadline"),
        }
    }
}

fn init(layout: &LockLayout) {
    layout.words.init();
}

fn validate(_: &LockLayout) -> Result<(), &'static str> {
    // A garbage owner is judged dead and taken over; the depth is reset by
    // whoever takes the lock.
    Ok(())
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::fd::{AsFd, AsRawFd};
        f.debug_struct("RLock")
            .field("fd", &self.segment().as_fd().as_raw_fd())
            .field("offset", &self.shared.offset())
            .field("locked", &self.is_locked())
            .finish()
    }
}

crate::shared::shared_handle!(RLock, LockLayout, "unlocked recursive lock", validate);

/// One level of an [`RLock`] held by the calling thread; releases that
/// level on drop. Not `Send`.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<multiproc_sync::RLockGuard<'static>>();
/// ```
#[must_use = "the level is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RLockGuard<'a> {
    /// The lock this guard holds.
    #[must_use]
    pub fn lock(guard: &Self) -> &'a RLock {
        guard.lock
    }

    /// Keeps this level held without a guard; release it later with
    /// [`RLock::release`] from the same thread.
    pub fn forget(guard: Self) {
        std::mem::forget(guard);
    }
}

impl Drop for RLockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.release_one();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").finish_non_exhaustive()
    }
}

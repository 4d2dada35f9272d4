//! [`Condition`]: a process-shared condition variable over a [`Lock`] or an
//! [`RLock`].
//!
//! # How a wait works
//!
//! The condition's own words are a sequence futex `seq` and the
//! waiter/token word described in [`tokens`]. A waiter, still holding the
//! lock, registers (`W += 1`) and reads `seq`; then it releases the lock
//! (every level of an `RLock`) and sleeps while `seq` is unchanged. A
//! notifier turns up to `n` registrations into tokens and then bumps `seq`
//! (Release) and wakes that many sleepers. A waiter leaves only by taking a
//! token (or by withdrawing its registration at its deadline), then takes
//! the lock again.
//!
//! No wake-up is lost: the registration happens before the lock is
//! released, and a notify that follows it either bumps `seq` before the
//! waiter sleeps (the futex compare fails) or wakes it. `notify(n)` makes
//! exactly `min(n, waiters)` waiters return notified.
//!
//! A process that dies inside `wait` leaves its registration behind; a
//! later `notify_all` then hands it a token that the next waiter takes,
//! which looks like a spurious wake-up. Use [`Condition::wait_for`] with a
//! predicate, as with any condition variable.

use multiproc_core::futex;
use multiproc_core::time::deadline_after;
use multiproc_core::{Segment, SpinWait};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{AttachError, CreateError, OwnerDied, WaitTimeoutError};
use crate::layout::ConditionLayout;
use crate::lock::{Lock, LockGuard};
use crate::rlock::{RLock, RLockGuard};
use crate::shared::{Shared, Wire};

mod atomic {
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
}
pub(crate) mod tokens;

const MAGIC: [u8; 8] = *b"MPCOND\0\0";

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Lock {}
    impl Sealed for crate::RLock {}
}

/// A lock a [`Condition`] can work with: this crate's [`Lock`] and
/// [`RLock`]. Sealed.
pub trait ConditionLock: sealed::Sealed + Clone + Serialize + for<'de> Deserialize<'de> {
    /// The lock's guard.
    type Guard<'a>
    where
        Self: 'a;
    /// What a wait saves to restore the hold afterwards (the `RLock` depth).
    #[doc(hidden)]
    type Saved;

    /// Acquires the lock.
    #[doc(hidden)]
    fn acquire_lock(&self) -> Result<Self::Guard<'_>, OwnerDied<Self::Guard<'_>>>;
    /// The lock a guard holds.
    #[doc(hidden)]
    fn lock_of<'a>(guard: &Self::Guard<'a>) -> &'a Self
    where
        Self: 'a;
    /// Whether two handles are the same lock in the same mapping.
    #[doc(hidden)]
    fn same_lock(&self, other: &Self) -> bool;
    /// Releases the hold entirely.
    #[doc(hidden)]
    fn release_for_wait(guard: Self::Guard<'_>) -> Self::Saved;
    /// Restores the hold.
    #[doc(hidden)]
    fn reacquire(&self, saved: Self::Saved) -> Result<Self::Guard<'_>, OwnerDied<Self::Guard<'_>>>;
}

impl ConditionLock for Lock {
    type Guard<'a> = LockGuard<'a>;
    type Saved = ();

    fn acquire_lock(&self) -> Result<LockGuard<'_>, OwnerDied<LockGuard<'_>>> {
        self.acquire()
    }

    fn lock_of<'a>(guard: &LockGuard<'a>) -> &'a Self
    where
        Self: 'a,
    {
        LockGuard::lock(guard)
    }

    fn same_lock(&self, other: &Self) -> bool {
        self.same_as(other)
    }

    fn release_for_wait(guard: LockGuard<'_>) {
        LockGuard::release_for_wait(guard);
    }

    fn reacquire(&self, (): ()) -> Result<LockGuard<'_>, OwnerDied<LockGuard<'_>>> {
        self.acquire()
    }
}

impl ConditionLock for RLock {
    type Guard<'a> = RLockGuard<'a>;
    type Saved = u32;

    fn acquire_lock(&self) -> Result<RLockGuard<'_>, OwnerDied<RLockGuard<'_>>> {
        self.acquire()
    }

    fn lock_of<'a>(guard: &RLockGuard<'a>) -> &'a Self
    where
        Self: 'a,
    {
        RLockGuard::lock(guard)
    }

    fn same_lock(&self, other: &Self) -> bool {
        self.same_as(other)
    }

    fn release_for_wait(guard: RLockGuard<'_>) -> u32 {
        RLock::release_all_for_wait(guard)
    }

    fn reacquire(&self, depth: u32) -> Result<RLockGuard<'_>, OwnerDied<RLockGuard<'_>>> {
        self.reacquire_after_wait(depth)
    }
}

/// A condition variable shared between processes, like Python's
/// `multiprocessing.Condition`: waiters release the lock and sleep until a
/// notify, then hold the lock again.
///
/// The lock is a [`Lock`] or an [`RLock`] of this crate (by default a new
/// `RLock`, as in Python). A waiter of an `RLock` releases every level it
/// holds and gets them all back.
///
/// # Examples
///
/// ```
/// use multiproc_sync::{Condition, Lock, Semaphore};
///
/// let cond = Condition::with_lock(Lock::new()?)?;
/// let ready = Semaphore::new(0)?; // the "shared state" of this example
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         let _guard = cond.acquire().unwrap();
///         ready.release().unwrap();
///         cond.notify_all();
///     });
///     let guard = cond.acquire().unwrap();
///     let _guard = cond.wait_for(guard, || ready.get_value() > 0).unwrap();
/// });
/// assert_eq!(ready.get_value(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Condition<L: ConditionLock = RLock> {
    lock: L,
    shared: Shared<ConditionLayout>,
}

impl Condition<RLock> {
    /// A condition over a new [`RLock`], each in its own anonymous segment.
    ///
    /// # Errors
    ///
    /// [`CreateError::Segment`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Condition;
    ///
    /// let cond = Condition::new()?;
    /// let outer = cond.acquire().unwrap();
    /// let inner = cond.acquire().unwrap(); // an RLock: recursion is fine
    /// drop(inner);
    /// assert_eq!(cond.notify(1), 0); // nobody waits
    /// drop(outer);
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn new() -> Result<Self, CreateError> {
        Self::with_lock(RLock::new()?)
    }
}

impl<L: ConditionLock> Condition<L> {
    /// Bytes a condition's own words occupy in a segment (its lock is
    /// separate).
    pub const MEMORY_SIZE: usize = Shared::<ConditionLayout>::SIZE;

    /// A condition over `lock` (a handle to it: the caller may keep using
    /// clones of `lock` directly), its own words in a new anonymous segment.
    ///
    /// # Errors
    ///
    /// [`CreateError::Segment`].
    pub fn with_lock(lock: L) -> Result<Self, CreateError> {
        Ok(Self {
            lock,
            shared: Shared::create(MAGIC, init)?,
        })
    }

    /// A condition over `lock` with its own words at `offset` in `segment`.
    ///
    /// # Errors
    ///
    /// [`CreateError::Segment`] for a bad range.
    pub fn create_in(lock: L, segment: Arc<Segment>, offset: usize) -> Result<Self, CreateError> {
        Ok(Self {
            lock,
            shared: Shared::create_in(segment, offset, MAGIC, init)?,
        })
    }

    /// Attaches to the condition words at `offset` in `segment`, over `lock`.
    ///
    /// # Errors
    ///
    /// [`AttachError`] when there is no `Condition` there.
    pub fn attach(lock: L, segment: Arc<Segment>, offset: usize) -> Result<Self, AttachError> {
        Ok(Self {
            lock,
            shared: Shared::attach(segment, offset, MAGIC, |_| Ok(()))?,
        })
    }

    /// The lock (Python's `_lock`); clone it to use it elsewhere.
    #[must_use]
    pub fn get_lock(&self) -> &L {
        &self.lock
    }

    /// Acquires the lock.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] when the previous owner died holding it.
    pub fn acquire(&self) -> Result<L::Guard<'_>, OwnerDied<L::Guard<'_>>> {
        self.lock.acquire_lock()
    }

    /// The RAII spelling of [`acquire`](Self::acquire).
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire).
    #[doc(alias = "__enter__")]
    pub fn lock(&self) -> Result<L::Guard<'_>, OwnerDied<L::Guard<'_>>> {
        self.lock.acquire_lock()
    }

    /// Releases the lock, sleeps until notified, and takes the lock again.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (with the guard: the lock is held) when an owner died
    /// holding the lock while this thread waited for it.
    ///
    /// # Panics
    ///
    /// When `guard` belongs to another lock (or to another mapping of it)
    /// than this condition's.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Condition;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// let cond = Condition::new()?;
    /// let flag = AtomicBool::new(false);
    /// std::thread::scope(|s| {
    ///     let mut guard = cond.acquire().unwrap();
    ///     s.spawn(|| {
    ///         let _g = cond.acquire().unwrap();
    ///         flag.store(true, Ordering::Relaxed);
    ///         assert_eq!(cond.notify(1), 1);
    ///     });
    ///     while !flag.load(Ordering::Relaxed) {
    ///         guard = cond.wait(guard).unwrap();
    ///     }
    /// });
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn wait<'g>(&self, guard: L::Guard<'g>) -> Result<L::Guard<'g>, OwnerDied<L::Guard<'g>>> {
        self.wait_deadline(guard, None).map_err(|err| match err {
            WaitTimeoutError::OwnerDied(died) => died,
            WaitTimeoutError::Timeout(_) => unreachable!("no deadline"),
        })
    }

    /// [`wait`](Self::wait), for at most `timeout` (zero polls).
    ///
    /// # Errors
    ///
    /// [`WaitTimeoutError::Timeout`] when the time ran out first;
    /// [`WaitTimeoutError::OwnerDied`] as [`wait`](Self::wait)'s error. The
    /// lock is held again either way; the guard is inside.
    ///
    /// # Panics
    ///
    /// As for [`wait`](Self::wait).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Condition;
    /// use std::time::Duration;
    ///
    /// let cond = Condition::new()?;
    /// let guard = cond.acquire().unwrap();
    /// let err = cond.wait_timeout(guard, Duration::from_millis(5)).unwrap_err();
    /// assert!(err.is_timeout());
    /// let _guard = err.into_inner();
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn wait_timeout<'g>(
        &self,
        guard: L::Guard<'g>,
        timeout: Duration,
    ) -> Result<L::Guard<'g>, WaitTimeoutError<L::Guard<'g>>> {
        self.wait_deadline(guard, deadline_after(timeout))
    }

    /// Waits until `condition` returns `true` (it is checked first, and
    /// after every wake-up, with the lock held).
    ///
    /// # Errors
    ///
    /// As for [`wait`](Self::wait).
    ///
    /// # Panics
    ///
    /// As for [`wait`](Self::wait).
    pub fn wait_for<'g>(
        &self,
        mut guard: L::Guard<'g>,
        mut condition: impl FnMut() -> bool,
    ) -> Result<L::Guard<'g>, OwnerDied<L::Guard<'g>>> {
        while !condition() {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// [`wait_for`](Self::wait_for) for at most `timeout`: `Ok` once
    /// `condition` is true (Python returns `True`), a timeout error when the
    /// time ran out with it still false (Python returns `False`).
    ///
    /// # Errors
    ///
    /// [`WaitTimeoutError::Timeout`] when the time ran out with `condition`
    /// false; [`WaitTimeoutError::OwnerDied`] as [`wait`](Self::wait)'s
    /// error (check the condition again after the repair). The lock is held
    /// again either way; the guard is inside.
    ///
    /// # Panics
    ///
    /// As for [`wait`](Self::wait).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Condition;
    /// use std::time::Duration;
    ///
    /// let cond = Condition::new()?;
    /// let guard = cond.acquire().unwrap();
    /// let err = cond.wait_for_timeout(guard, Duration::from_millis(5), || false).unwrap_err();
    /// assert!(err.is_timeout());
    /// let guard = err.into_inner();
    /// assert!(cond.wait_for_timeout(guard, Duration::from_millis(5), || true).is_ok());
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn wait_for_timeout<'g>(
        &self,
        mut guard: L::Guard<'g>,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) -> Result<L::Guard<'g>, WaitTimeoutError<L::Guard<'g>>> {
        let deadline = deadline_after(timeout);
        loop {
            if condition() {
                return Ok(guard);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(WaitTimeoutError::Timeout(guard));
            }
            guard = match self.wait_deadline(guard, deadline) {
                Ok(guard) | Err(WaitTimeoutError::Timeout(guard)) => guard,
                Err(died) => return Err(died),
            };
        }
    }

    /// The one blocking core.
    fn wait_deadline<'g>(
        &self,
        guard: L::Guard<'g>,
        deadline: Option<Instant>,
    ) -> Result<L::Guard<'g>, WaitTimeoutError<L::Guard<'g>>> {
        let lock = L::lock_of(&guard);
        assert!(
            lock.same_lock(&self.lock),
            "Condition::wait: the guard belongs to another lock"
        );
        let layout = self.shared.get();
        tokens::register(&layout.tokens);
        // SYNC: pairs with the Release bump in `notify`.
        let seen = layout.seq.load(Ordering::Acquire);
        let saved = L::release_for_wait(guard);
        let timed_out = self.sleep(seen, deadline);
        match lock.reacquire(saved) {
            Ok(guard) if timed_out => Err(WaitTimeoutError::Timeout(guard)),
            Ok(guard) => Ok(guard),
            Err(died) => Err(WaitTimeoutError::OwnerDied(died)),
        }
    }

    /// Sleeps until a token is taken (returns `false`) or the deadline
    /// passes without one (returns `true`).
    #[cold]
    fn sleep(&self, mut seen: u32, deadline: Option<Instant>) -> bool {
        let layout = self.shared.get();
        let mut spin = SpinWait::new();
        loop {
            if tokens::try_consume(&layout.tokens) {
                return false;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return tokens::cancel(&layout.tokens) == tokens::Cancel::Withdrew;
            }
            // SYNC: pairs with the Release bump in `notify`: a new `seq`
            // means new tokens are visible to `try_consume`.
            let now = layout.seq.load(Ordering::Acquire);
            if now != seen {
                seen = now;
                continue;
            }
            if spin.spin() {
                continue;
            }
            // The futex compare is the re-check: a notify after the load
            // above changed `seq`, so the kernel returns at once.
            // Bounded (see `futex::RECHECK`): a notifier killed between
            // its bump and its wake must not strand this waiter.
            futex::wait(&layout.seq, seen, Some(futex::recheck_until(deadline)));
        }
    }

    /// Wakes up to `n` waiters; returns how many were notified. Call it
    /// holding the lock (as Python requires), so that a waiter about to
    /// wait cannot miss it.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Condition;
    ///
    /// let cond = Condition::new()?;
    /// let _guard = cond.acquire().unwrap();
    /// assert_eq!(cond.notify(3), 0);
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn notify(&self, n: u32) -> u32 {
        let layout = self.shared.get();
        let given = tokens::notify(&layout.tokens, n);
        if given > 0 {
            // SYNC: Release pairs with the Acquire loads of `seq` in `sleep`
            // and `wait_deadline`.
            layout.seq.fetch_add(1, Ordering::Release);
            futex::wake(&layout.seq, given);
        }
        given
    }

    /// Wakes every waiter; returns how many were notified.
    pub fn notify_all(&self) -> u32 {
        self.notify(u32::MAX)
    }

    /// The segment holding the condition's own words.
    #[must_use]
    pub fn segment(&self) -> &Arc<Segment> {
        self.shared.segment()
    }
}

fn init(layout: &ConditionLayout) {
    layout.seq.store(0, Ordering::Relaxed);
    layout.tokens.store(0, Ordering::Relaxed);
}

impl<L: ConditionLock> Clone for Condition<L> {
    fn clone(&self) -> Self {
        Self {
            lock: self.lock.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<L: ConditionLock + fmt::Debug> fmt::Debug for Condition<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::fd::{AsFd, AsRawFd};
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .field("fd", &self.segment().as_fd().as_raw_fd())
            .field("offset", &self.shared.offset())
            .finish()
    }
}

#[derive(Serialize)]
struct WireRef<'a, L> {
    lock: &'a L,
    words: &'a Shared<ConditionLayout>,
}

#[derive(Deserialize)]
struct WireOwned<L> {
    lock: L,
    words: Wire,
}

impl<L: ConditionLock> Serialize for Condition<L> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireRef {
            lock: &self.lock,
            words: &self.shared,
        }
        .serialize(serializer)
    }
}

impl<'de, L: ConditionLock> Deserialize<'de> for Condition<L> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireOwned::<L>::deserialize(deserializer)?;
        let shared = wire
            .words
            .attach(MAGIC, |_| Ok(()))
            .map_err(serde::de::Error::custom)?;
        Ok(Self {
            lock: wire.lock,
            shared,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_on_an_rlock_releases_every_level_and_restores_them() {
        let cond = Condition::new().unwrap();
        let outer = cond.acquire().unwrap();
        let inner = cond.acquire().unwrap();
        assert_eq!(cond.get_lock().depth(), 2);
        std::thread::scope(|s| {
            s.spawn(|| {
                // Only possible if the waiter released both levels.
                let _guard = cond.acquire().unwrap();
                assert_eq!(cond.notify(1), 1);
            });
            let inner = cond.wait_timeout(inner, Duration::from_secs(10)).unwrap();
            assert_eq!(cond.get_lock().depth(), 2);
            drop(inner);
        });
        assert_eq!(cond.get_lock().depth(), 1);
        drop(outer);
        assert!(!cond.get_lock().is_locked());
    }

    /// A notifier killed between its token hand-out and its wake (the
    /// state a SIGKILL there leaves) delays a sleeping waiter by at most
    /// [`futex::RECHECK`]; it must not strand it.
    #[test]
    fn a_notifier_killed_before_its_wake_strands_no_waiter() {
        use std::sync::mpsc;

        let cond = Condition::new().unwrap();
        let (waiting, about_to_wait) = mpsc::channel();
        let (done, finished) = mpsc::channel();
        let waiter = cond.clone();
        std::thread::spawn(move || {
            let guard = waiter.acquire().unwrap();
            waiting.send(()).unwrap();
            drop(waiter.wait(guard).unwrap());
            done.send(()).unwrap();
        });
        about_to_wait.recv().unwrap();
        // Taken once the waiter gave it up to wait.
        let guard = cond.acquire().unwrap();
        // Past its spin, asleep in the kernel.
        std::thread::sleep(Duration::from_millis(50));
        // `notify(1)` up to its wake, and no wake.
        let layout = cond.shared.get();
        assert_eq!(tokens::notify(&layout.tokens, 1), 1);
        layout.seq.fetch_add(1, Ordering::Release);
        drop(guard);
        assert!(
            finished
                .recv_timeout(futex::RECHECK + Duration::from_secs(2))
                .is_ok(),
            "the waiter slept on with a token for it"
        );
    }

    #[test]
    #[should_panic(expected = "another lock")]
    fn a_guard_of_another_lock_is_refused() {
        let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
        let other = Lock::new().unwrap();
        let guard = other.acquire().unwrap();
        let _ = cond.wait_timeout(guard, Duration::ZERO);
    }
}

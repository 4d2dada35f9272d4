//! [`Semaphore`] and [`BoundedSemaphore`]: process-shared counting
//! semaphores.
//!
//! # Words
//!
//! `value` is the futex word: the number of free units. `waiters` counts
//! threads that are about to sleep or sleep on it, so that `release` makes
//! a system call only when somebody may be asleep.
//!
//! | operation | what it does | ordering |
//! |---|---|---|
//! | take | CAS `value: v → v-1` for `v > 0` | Acquire (pairs with release) |
//! | release | CAS `value: v → v+1` for `v < bound`, then read `waiters`, wake one if non-zero | SeqCst RMW, SeqCst load |
//! | sleep | `waiters += 1` (SeqCst), re-check `value`, `futex_wait(value, 0)`, `waiters -= 1` | SeqCst |
//!
//! The SeqCst pair is a Dekker handshake: either the releaser sees the
//! waiter's increment and wakes, or the waiter's re-check (and the futex
//! compare, which the kernel does after the waiter's SeqCst increment) sees
//! the released unit. No wake-up is lost. (A waiter killed while asleep
//! leaves `waiters` raised; that only costs later releases a wake-up call.)
//! An async waiter (see `readiness`) counts itself in `waiters` while it is
//! armed, so a release that sees it also rings the semaphore's doorbells.
//!
//! # No owner
//!
//! A semaphore unit has no owner: a process that dies holding one does not
//! give it back, and nobody can tell. Use a [`Lock`](crate::Lock) when the
//! holder's death must be noticed.

use multiproc_core::futex::{self, WaitOutcome};
use multiproc_core::time::deadline_after;
use multiproc_core::{Segment, SpinWait};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{AttachError, CreateError, ReleaseError, Timeout, WouldBlock};
use crate::layout::SemaphoreLayout;
use crate::ready::{self, Readiness};
use crate::shared::Shared;

/// The largest value a semaphore can hold (`SEM_VALUE_MAX` on Linux).
pub(crate) const MAX_VALUE: u32 = i32::MAX as u32;

const MAGIC: [u8; 8] = *b"MPSEMA\0\0";
const BOUNDED_MAGIC: [u8; 8] = *b"MPBSEMA\0";

impl SemaphoreLayout {
    #[inline]
    fn try_take(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            // SYNC: Acquire pairs with the SeqCst (hence Release) CAS in
            // `give`: what the releaser did happens before our take.
            match self
                .value
                .compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// The one blocking core: spin, then register and sleep.
    #[cold]
    fn take_slow(&self, deadline: Option<Instant>) -> Result<(), Timeout> {
        let mut spin = SpinWait::new();
        while spin.spin() {
            if self.try_take() {
                return Ok(());
            }
        }
        // SYNC: SeqCst, the waiter half of the Dekker pair with `give`.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            if self.try_take() {
                break Ok(());
            }
            // Bounded (see `futex::RECHECK`): a giver killed between its
            // store and its wake must not strand this waiter.
            if futex::wait(&self.value, 0, Some(futex::recheck_until(deadline)))
                == WaitOutcome::TimedOut
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                break if self.try_take() {
                    Ok(())
                } else {
                    Err(Timeout)
                };
            }
        };
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        result
    }

    #[inline]
    fn take(&self, deadline: Option<Instant>) -> Result<(), Timeout> {
        if self.try_take() {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Timeout);
        }
        self.take_slow(deadline)
    }

    #[inline]
    fn give(&self) -> Result<(), ReleaseError> {
        let bound = self.bound.load(Ordering::Relaxed).min(MAX_VALUE);
        // SYNC: SeqCst: Release for the taker's Acquire, and the releaser
        // half of the Dekker pair with the `waiters` increment.
        self.value
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |v| {
                (v < bound).then_some(v + 1)
            })
            .map_err(|_| ReleaseError { bound })?;
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake_one(&self.value);
            // SYNC: after the load that read an async waiter's increment
            // (made after it armed): see `ready::ring`.
            ready::ring(&self.bells, ready::BELL);
        }
        Ok(())
    }
}

fn validate(layout: &SemaphoreLayout) -> Result<(), &'static str> {
    let bound = layout.bound.load(Ordering::Relaxed);
    if bound > MAX_VALUE {
        return Err("semaphore bound above MAX_VALUE");
    }
    if layout.value.load(Ordering::Relaxed) > bound {
        return Err("semaphore value above its bound");
    }
    Ok(())
}

fn make(bound: u32, initial: u32) -> Result<impl FnOnce(&SemaphoreLayout), CreateError> {
    if initial > MAX_VALUE {
        return Err(CreateError::InvalidArgument(
            "semaphore value above MAX_VALUE",
        ));
    }
    Ok(move |layout: &SemaphoreLayout| {
        layout.bound.store(bound, Ordering::Relaxed);
        layout.value.store(initial, Ordering::Relaxed);
        layout.waiters.store(0, Ordering::Relaxed);
    })
}

macro_rules! semaphore_common {
    ($ty:ident, $magic:expr) => {
        impl $ty {
            /// Bytes the semaphore occupies in a segment.
            pub const MEMORY_SIZE: usize = Shared::<SemaphoreLayout>::SIZE;

            /// Attaches to the semaphore at `offset` in `segment`, checking its
            /// header and that its value is within its bound.
            ///
            /// # Errors
            ///
            /// [`AttachError`] when there is no such semaphore there.
            pub fn attach(segment: Arc<Segment>, offset: usize) -> Result<Self, AttachError> {
                Ok(Self {
                    shared: Shared::attach(segment, offset, $magic, validate)?,
                })
            }

            /// The segment the semaphore lives in.
            #[must_use]
            pub fn segment(&self) -> &Arc<Segment> {
                self.shared.segment()
            }

            /// Takes a unit, waiting as long as it takes; the guard gives it
            /// back on drop (or keep it with [`SemaphoreGuard::forget`]).
            pub fn acquire(&self) -> SemaphoreGuard<'_> {
                let layout = self.shared.get();
                let taken = layout.take(None);
                debug_assert!(taken.is_ok());
                SemaphoreGuard { layout }
            }

            /// Takes a unit if one is free now (Python's `acquire(False)`).
            ///
            /// # Errors
            ///
            /// [`WouldBlock`] when the value is 0.
            pub fn try_acquire(&self) -> Result<SemaphoreGuard<'_>, WouldBlock> {
                let layout = self.shared.get();
                if layout.try_take() {
                    Ok(SemaphoreGuard { layout })
                } else {
                    Err(WouldBlock)
                }
            }

            /// Takes a unit, waiting at most `timeout` (zero polls; durations
            /// too large for the clock wait for ever).
            ///
            /// # Errors
            ///
            /// [`Timeout`] when no unit came free in time.
            pub fn acquire_timeout(
                &self,
                timeout: Duration,
            ) -> Result<SemaphoreGuard<'_>, Timeout> {
                let layout = self.shared.get();
                layout.take(deadline_after(timeout))?;
                Ok(SemaphoreGuard { layout })
            }

            /// A doorbell that releases ring while a waiter is
            /// [armed](Readiness::arm): what async acquirers wait on instead
            /// of the futex (see [`Readiness`]).
            ///
            /// # Errors
            ///
            /// As [`Waiters::new`](multiproc_core::doorbell::Waiters::new):
            /// no descriptor left, or every doorbell slot taken.
            ///
            /// ```
            #[doc = concat!("use multiproc_sync::", stringify!($ty), ";")]
            ///
            #[doc = concat!("let sem = ", stringify!($ty), "::new(1)?;")]
            /// let unit = sem.try_acquire()?;
            /// let ready = sem.readiness()?;
            /// let armed = ready.arm();
            /// armed.announce();
            /// assert!(sem.try_acquire().is_err()); // register with the event loop here
            /// drop(unit); // another process, say
            /// assert_eq!(ready.drain()?, 1);
            /// assert!(sem.try_acquire().is_ok());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn readiness(&self) -> Result<Readiness, multiproc_core::doorbell::WaitersError> {
                Readiness::new(ready::Target::Semaphore(self.shared.clone()))
            }

            /// The number of free units now (a snapshot; Python's `get_value`).
            #[must_use]
            pub fn get_value(&self) -> u32 {
                self.shared.get().value.load(Ordering::Relaxed)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                use std::os::fd::{AsFd, AsRawFd};
                f.debug_struct(stringify!($ty))
                    .field("fd", &self.segment().as_fd().as_raw_fd())
                    .field("offset", &self.shared.offset())
                    .field("value", &self.get_value())
                    .finish()
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.shared.serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Ok(Self {
                    shared: Shared::deserialize(deserializer, $magic, validate)?,
                })
            }
        }
    };
}

/// A counting semaphore shared between processes, like Python's
/// `multiprocessing.Semaphore`.
///
/// Units have no owner: anybody may [`release`](Self::release), and a
/// process that dies holding a unit does not give it back — nobody can
/// tell that it died. Use a [`Lock`](crate::Lock) when a holder's death
/// must be noticed.
///
/// # Examples
///
/// ```
/// use multiproc_sync::Semaphore;
/// use std::time::Duration;
///
/// let sem = Semaphore::new(2)?;
/// let a = sem.acquire();
/// let b = sem.try_acquire().unwrap();
/// assert_eq!(sem.get_value(), 0);
/// assert!(sem.try_acquire().is_err());
/// assert!(sem.acquire_timeout(Duration::from_millis(1)).is_err());
/// drop(a);
/// assert_eq!(sem.get_value(), 1);
/// drop(b);
/// sem.release()?; // ownerless: a plain signal
/// assert_eq!(sem.get_value(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    shared: Shared<SemaphoreLayout>,
}

impl Semaphore {
    /// The largest value a semaphore can hold (`SEM_VALUE_MAX` on Linux).
    pub const MAX_VALUE: u32 = MAX_VALUE;

    /// A semaphore holding `value` units, in its own anonymous segment.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] above [`MAX_VALUE`](Semaphore::MAX_VALUE);
    /// [`CreateError::Segment`].
    pub fn new(value: u32) -> Result<Self, CreateError> {
        Ok(Self {
            shared: Shared::create(MAGIC, make(MAX_VALUE, value)?)?,
        })
    }

    /// A semaphore holding `value` units at `offset` in `segment`.
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new), and bounds errors.
    pub fn create_in(
        segment: Arc<Segment>,
        offset: usize,
        value: u32,
    ) -> Result<Self, CreateError> {
        Ok(Self {
            shared: Shared::create_in(segment, offset, MAGIC, make(MAX_VALUE, value)?)?,
        })
    }

    /// Adds a unit, waking one waiter if any sleeps.
    ///
    /// # Errors
    ///
    /// [`ReleaseError`] when the value is already [`MAX_VALUE`](Semaphore::MAX_VALUE).
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.shared.get().give()
    }
}

semaphore_common!(Semaphore, MAGIC);

/// A semaphore whose value may not exceed its initial value, like Python's
/// `multiprocessing.BoundedSemaphore`: an extra `release` is an error
/// instead of a silent bug.
///
/// # Examples
///
/// ```
/// use multiproc_sync::{BoundedSemaphore, SemaphoreGuard};
///
/// let sem = BoundedSemaphore::new(1)?;
/// SemaphoreGuard::forget(sem.acquire());
/// assert_eq!(sem.get_value(), 0);
/// sem.release()?;
/// assert!(sem.release().is_err()); // would exceed the initial value
/// assert_eq!(sem.get_value(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    shared: Shared<SemaphoreLayout>,
}

impl BoundedSemaphore {
    /// A bounded semaphore holding `value` units, which is also its bound.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] above [`MAX_VALUE`](Semaphore::MAX_VALUE);
    /// [`CreateError::Segment`].
    pub fn new(value: u32) -> Result<Self, CreateError> {
        Ok(Self {
            shared: Shared::create(BOUNDED_MAGIC, make(value, value)?)?,
        })
    }

    /// A bounded semaphore at `offset` in `segment`.
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new), and bounds errors.
    pub fn create_in(
        segment: Arc<Segment>,
        offset: usize,
        value: u32,
    ) -> Result<Self, CreateError> {
        Ok(Self {
            shared: Shared::create_in(segment, offset, BOUNDED_MAGIC, make(value, value)?)?,
        })
    }

    /// Adds a unit back, waking one waiter if any sleeps.
    ///
    /// # Errors
    ///
    /// [`ReleaseError`] when the value is already at the initial value.
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.shared.get().give()
    }

    /// The bound (the initial value).
    #[must_use]
    pub fn bound(&self) -> u32 {
        self.shared.get().bound.load(Ordering::Relaxed)
    }
}

semaphore_common!(BoundedSemaphore, BOUNDED_MAGIC);

/// A unit taken from a [`Semaphore`] or [`BoundedSemaphore`]; gives it back
/// on drop. Units have no owner, so the guard may move between threads.
#[must_use = "the unit is given back as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct SemaphoreGuard<'a> {
    layout: &'a SemaphoreLayout,
}

impl SemaphoreGuard<'_> {
    /// Keeps the unit: the value stays lower until somebody calls
    /// `release` (Python-style `acquire()`/`release()` pairs).
    pub fn forget(guard: Self) {
        std::mem::forget(guard);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Cannot exceed the bound: this unit was taken and not yet returned,
        // unless somebody else over-released an unbounded semaphore to
        // MAX_VALUE meanwhile, in which case the unit is dropped.
        let _ = self.layout.give();
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A releaser killed between its store and its wake (the state a
    /// SIGKILL there leaves: a unit free, nobody woken) delays a sleeping
    /// acquirer by at most [`futex::RECHECK`]; it must not strand it.
    #[test]
    fn a_releaser_killed_before_its_wake_strands_no_acquirer() {
        let sem = Semaphore::new(0).unwrap();
        let waiter = Semaphore::attach(Arc::clone(sem.segment()), 0).unwrap();
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            SemaphoreGuard::forget(waiter.acquire());
            done.send(()).unwrap();
        });
        let layout = sem.shared.get();
        while layout.waiters.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Past its spin, asleep in the kernel.
        std::thread::sleep(Duration::from_millis(50));
        // `release` up to its wake, and no wake.
        layout.value.fetch_add(1, Ordering::SeqCst);
        assert!(
            finished
                .recv_timeout(futex::RECHECK + Duration::from_secs(2))
                .is_ok(),
            "the acquirer slept on with a unit free"
        );
    }
}

//! Readiness for async waiters: a descriptor to wait on instead of a futex,
//! for event loops (tokio, smol, io_uring). `multiproc-async` builds its
//! futures on this; it depends on no runtime.
//!
//! The protocol is on [`Readiness`].

use multiproc_core::doorbell::{BellBoard, Waiters, WaitersError};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::Duration;

use crate::layout::{EventLayout, LockLayout, SemaphoreLayout};
use crate::raw_lock::{OWNER_CHECK_INTERVAL, WAITERS};
use crate::shared::Shared;

/// The bell bit of an object's one futex word in its board.
pub(crate) const BELL: u32 = 1;

/// Rings the doorbells armed for `bell`: called by a notifier whose RMW or
/// `SeqCst` load of the futex word (or waiter count) found a waiter
/// announced.
#[cold]
pub(crate) fn ring(board: &BellBoard, bell: u32) {
    // SYNC: the notifier's access read the waiter's announce, a SeqCst RMW
    // made after the waiter armed its slot; this fence makes that arming
    // visible to the board's loads (the unlock's swap is only Release).
    fence(Ordering::SeqCst);
    board.ring(bell);
}

/// The object a [`Readiness`] belongs to.
pub(crate) enum Target {
    Lock(Shared<LockLayout>),
    Semaphore(Shared<SemaphoreLayout>),
    Event(Shared<EventLayout>),
}

impl Target {
    fn board(&self) -> &BellBoard {
        match self {
            Self::Lock(s) => &s.get().bells,
            Self::Semaphore(s) => &s.get().bells,
            Self::Event(s) => &s.get().bells,
        }
    }

    /// The count an armed waiter joins, for the objects that count them.
    fn waiter_count(&self) -> Option<&AtomicU32> {
        match self {
            Self::Lock(_) => None,
            Self::Semaphore(s) => Some(&s.get().waiters),
            Self::Event(s) => Some(&s.get().waiters),
        }
    }
}

/// An object's doorbell for this process's async waiters. `AsFd`:
/// register it with an event loop for readability; reactors register
/// [`waiters`](Self::waiters).
///
/// [`Lock::readiness`](crate::Lock::readiness),
/// [`Semaphore::readiness`](crate::Semaphore::readiness),
/// [`BoundedSemaphore::readiness`](crate::BoundedSemaphore::readiness) and
/// [`Event::readiness`](crate::Event::readiness) give a [`Readiness`]: core's
/// [`Waiters`] (a doorbell in a slot of the object's
/// [`BellBoard`], per-word arm counts, the drain epoch) for the object's one
/// futex word. A task whose attempt (`try_acquire`,
/// [`Event::set_since`](crate::Event::set_since)) failed
/// [`arm`](Readiness::arm)s it, then loops:
///
/// 1. `let epoch = readiness.epoch();`
/// 2. [`armed.announce()`](Armed::announce): become visible to the next
///    notifier as a sleeper would (a lock's `WAITERS` bit; semaphores and
///    events count the armed waiter in `waiters` from `arm` on), so that it
///    takes its slow path and rings the doorbell;
/// 3. try again; done if it went through (dropping the [`Armed`] guard
///    disarms);
/// 4. register with the event loop for the doorbell's readability; if it
///    is readable already, [`drain`](Readiness::drain) it and go to 1;
/// 5. if [`epoch`](Readiness::epoch) is no longer `epoch` (or is odd),
///    another task of this process drained meanwhile: go to 1;
/// 6. wait for readability, but while [`contended`](Readiness::contended)
///    (a lock is held) no longer than
///    [`LIVENESS_SLICE`](Readiness::LIVENESS_SLICE): a holder that dies
///    rings nobody, and the retry is what takes the lock over from it
///    (with `OwnerDied`, as the blocking `acquire` reports it); then
///    [`drain`](Readiness::drain) and go to 1.
///
/// This is the protocol of the queue's readiness (`multiproc_queue::Readiness`)
/// and of `multiproc_core::doorbell`, whose table shows why no ring is lost.
/// A notifier that finds nobody announced still makes no system call.
///
/// ```
/// use multiproc_sync::Semaphore;
///
/// let sem = Semaphore::new(0)?;
/// let ready = sem.readiness()?;
/// let armed = ready.arm(); // 0: this task waits for a unit
/// let epoch = ready.epoch(); // 1.
/// armed.announce(); // 2.
/// assert!(sem.try_acquire().is_err()); // 3.
/// assert!(!ready.contended()); // no lock: wait without a time limit
/// sem.release()?; // another process, say: it rings
/// assert_eq!(ready.drain()?, 1); // 4. the doorbell was readable
/// assert_ne!(ready.epoch(), epoch); // back to 1.
/// assert!(sem.try_acquire().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Readiness {
    target: Target,
    waiters: Arc<Waiters>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("waiters", &self.waiters)
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// How long a wait should last at most while a lock is held (see
    /// [`contended`](Self::contended)): the interval at which blocking
    /// acquirers look at the owner too.
    pub const LIVENESS_SLICE: Duration = OWNER_CHECK_INTERVAL;

    pub(crate) fn new(target: Target) -> Result<Self, WaitersError> {
        let waiters = Arc::new(Waiters::new(target.board())?);
        Ok(Self { target, waiters })
    }

    /// Announces a waiter: notifiers ring this doorbell from now on (for a
    /// lock: once [`Armed::announce`] has set its bit), until the guard
    /// drops.
    pub fn arm(&self) -> Armed<'_> {
        self.waiters.arm(self.target.board(), BELL);
        if let Some(count) = self.target.waiter_count() {
            // SYNC: SeqCst, the waiter half of the Dekker pair with the
            // notifier's load of the count; after the arming above.
            count.fetch_add(1, Ordering::SeqCst);
        }
        Armed { readiness: self }
    }

    /// The drain count: compare it before and after registering with the
    /// event loop (step 5 of the [protocol](Readiness)). Odd while a drain runs.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.waiters.epoch()
    }

    /// Reads every ring queued on the doorbell; returns how many.
    ///
    /// # Errors
    ///
    /// The OS error of reading the doorbell (none is expected).
    pub fn drain(&self) -> io::Result<usize> {
        self.waiters.drain()
    }

    /// The doorbell and its epoch, shared: what a reactor registers.
    #[must_use]
    pub fn waiters(&self) -> &Arc<Waiters> {
        &self.waiters
    }

    /// After an attempt failed: whether a lock is held (always `false` for
    /// semaphores and events). Then the wait should end after
    /// [`LIVENESS_SLICE`](Self::LIVENESS_SLICE) at most, so that the next
    /// attempt can find the holder dead and take the lock over.
    #[must_use]
    pub fn contended(&self) -> bool {
        match &self.target {
            Target::Lock(s) => s.get().words.is_locked(),
            Target::Semaphore(_) | Target::Event(_) => false,
        }
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.waiters.release(self.target.board());
    }
}

impl AsFd for Readiness {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.waiters.as_fd()
    }
}

impl AsRawFd for Readiness {
    fn as_raw_fd(&self) -> RawFd {
        self.waiters.as_raw_fd()
    }
}

/// An armed waiter (see [`Readiness::arm`]); disarms when dropped.
///
/// ```
/// use multiproc_sync::Event;
///
/// let event = Event::new()?;
/// let ready = event.readiness()?;
/// {
///     let armed = ready.arm();
///     armed.announce();
///     event.set(); // rings: a waiter is armed
/// }
/// assert_eq!(ready.drain()?, 1);
/// event.clear();
/// event.set(); // nobody armed: no ring, no system call
/// assert_eq!(ready.drain()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "dropping it disarms the waiter"]
pub struct Armed<'a> {
    readiness: &'a Readiness,
}

impl Armed<'_> {
    /// Step 2 of the [protocol](Readiness): makes the next notifier take its
    /// slow path and ring the doorbell. Call it before each re-check: an
    /// unlock clears a lock's bit.
    pub fn announce(&self) {
        match &self.readiness.target {
            Target::Lock(s) => {
                // SYNC: as a sleeper's `WAITERS` CAS (see `raw_lock`), but
                // also on an unlocked word (`0 | W` is a state acquirers
                // handle): the unlock's swap reads it and rings. SeqCst,
                // after the arming.
                s.get().words.state.fetch_or(WAITERS, Ordering::SeqCst);
            }
            // Counted in `waiters` since `arm`: the re-check that follows
            // is a SeqCst load.
            Target::Semaphore(_) | Target::Event(_) => fence(Ordering::SeqCst),
        }
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let target = &self.readiness.target;
        if let Some(count) = target.waiter_count() {
            count.fetch_sub(1, Ordering::SeqCst);
        }
        self.readiness.waiters.disarm(target.board(), BELL);
    }
}

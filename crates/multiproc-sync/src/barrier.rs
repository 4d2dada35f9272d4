//! [`Barrier`]: a process-shared barrier for a fixed number of parties.
//!
//! The algorithm is CPython's `threading.Barrier`, with its state in shared
//! memory under an internal robust lock and a sequence futex as the
//! condition variable:
//!
//! | `state` | meaning | left by |
//! |---|---|---|
//! | 0 filling | parties are arriving | the last arrival (→ draining), `abort` (→ broken), a timeout (→ broken), `reset` with waiters (→ resetting) |
//! | 1 draining | the barrier tripped; released waiters are leaving | the last one out (→ filling) |
//! | -1 resetting | `reset` broke the waiters; they are leaving | the last one out (→ filling) |
//! | -2 broken | aborted or timed out | `reset` (→ filling, or resetting while waiters remain) |
//!
//! Arrivals wait while the barrier drains or resets, so a waiter always
//! learns the outcome of its own round. If a process dies holding the
//! internal lock, the next process to take it breaks the barrier (its state
//! may be half-updated). A process that dies while waiting inside the
//! barrier is not detected: the others wait for it like for a slow party;
//! give [`Barrier::wait_timeout`] a bound when that can happen.

use multiproc_core::futex;
use multiproc_core::time::deadline_after;
use multiproc_core::{Segment, SpinWait};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{AttachError, BrokenBarrier, CreateError};
use crate::ident;
use crate::layout::BarrierLayout;
use crate::raw_lock::Acquired;
use crate::shared::Shared;

const MAGIC: [u8; 8] = *b"MPBARR\0\0";

const FILLING: i32 = 0;
const DRAINING: i32 = 1;
const RESETTING: i32 = -1;
const BROKEN: i32 = -2;

/// What [`Barrier::wait`] returns to each party of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult {
    index: u32,
    leader: bool,
}

impl BarrierWaitResult {
    /// The party's arrival index in its round, `0..parties` (Python's
    /// return value).
    #[must_use]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether this party arrived last and so tripped the barrier (exactly
    /// one per round).
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leader
    }
}

/// A barrier shared between processes, like Python's
/// `multiprocessing.Barrier`: each [`wait`](Self::wait) blocks until
/// `parties` callers are waiting, then all of them go on.
///
/// [`abort`](Self::abort) and timeouts break it: every waiter, now and
/// later, gets [`BrokenBarrier`] until [`reset`](Self::reset).
///
/// # Examples
///
/// ```
/// use multiproc_sync::Barrier;
///
/// let barrier = Barrier::new(3)?;
/// let leaders: usize = std::thread::scope(|s| {
///     let handles: Vec<_> = (0..3).map(|_| s.spawn(|| barrier.wait().unwrap())).collect();
///     handles.into_iter().map(|h| h.join().unwrap().is_leader() as usize).sum()
/// });
/// assert_eq!(leaders, 1);
/// assert_eq!(barrier.n_waiting(), 0);
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    shared: Shared<BarrierLayout>,
}

/// The internal lock, held.
struct Inner<'a> {
    layout: &'a BarrierLayout,
}

impl Barrier {
    /// Bytes a `Barrier` occupies in a segment.
    pub const MEMORY_SIZE: usize = Shared::<BarrierLayout>::SIZE;

    /// A barrier for `parties` parties in its own anonymous segment.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] for 0 parties;
    /// [`CreateError::Segment`].
    pub fn new(parties: u32) -> Result<Self, CreateError> {
        Ok(Self {
            shared: Shared::create(MAGIC, make(parties)?)?,
        })
    }

    /// A barrier for `parties` parties at `offset` in `segment`.
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new), and bounds errors.
    pub fn create_in(
        segment: Arc<Segment>,
        offset: usize,
        parties: u32,
    ) -> Result<Self, CreateError> {
        Ok(Self {
            shared: Shared::create_in(segment, offset, MAGIC, make(parties)?)?,
        })
    }

    /// Attaches to the barrier at `offset` in `segment`.
    ///
    /// # Errors
    ///
    /// [`AttachError`] when there is no `Barrier` there or its state is
    /// impossible.
    pub fn attach(segment: Arc<Segment>, offset: usize) -> Result<Self, AttachError> {
        Ok(Self {
            shared: Shared::attach(segment, offset, MAGIC, validate)?,
        })
    }

    /// The segment the barrier lives in.
    #[must_use]
    pub fn segment(&self) -> &Arc<Segment> {
        self.shared.segment()
    }

    /// The number of parties a round needs.
    #[must_use]
    pub fn parties(&self) -> u32 {
        self.shared.get().parties.load(Ordering::Relaxed)
    }

    /// Waits until every party has arrived.
    ///
    /// # Errors
    ///
    /// [`BrokenBarrier`] when the barrier is or becomes broken (aborted,
    /// another party timed out, reset while waiting).
    pub fn wait(&self) -> Result<BarrierWaitResult, BrokenBarrier> {
        self.wait_deadline(None)
    }

    /// Waits at most `timeout` for every party; a timeout breaks the
    /// barrier for everybody (as in Python).
    ///
    /// # Errors
    ///
    /// [`BrokenBarrier`], with [`timed_out`](BrokenBarrier::timed_out) set
    /// for the caller whose timeout broke it.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Barrier;
    /// use std::time::Duration;
    ///
    /// let barrier = Barrier::new(2)?;
    /// let err = barrier.wait_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert!(err.timed_out());
    /// assert!(barrier.broken());
    /// barrier.reset();
    /// assert!(!barrier.broken());
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult, BrokenBarrier> {
        self.wait_deadline(deadline_after(timeout))
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<BarrierWaitResult, BrokenBarrier> {
        let mut inner = self.enter();
        let broken = BrokenBarrier { timed_out: false };
        // Wait for the previous round to drain or reset.
        while matches!(inner.state(), DRAINING | RESETTING) {
            if inner.wait(deadline) {
                inner.break_barrier();
                return Err(BrokenBarrier { timed_out: true });
            }
        }
        if inner.state() == BROKEN {
            return Err(broken);
        }
        let layout = inner.layout;
        let index = layout.count.load(Ordering::Relaxed);
        layout.count.store(index + 1, Ordering::Relaxed);
        let parties = layout.parties.load(Ordering::Relaxed);
        let result = if index + 1 >= parties {
            layout.state.store(DRAINING, Ordering::Relaxed);
            inner.notify_all();
            Ok(BarrierWaitResult {
                index,
                leader: true,
            })
        } else {
            let mut timed_out = false;
            while inner.state() == FILLING {
                if inner.wait(deadline) {
                    if inner.state() == FILLING {
                        inner.break_barrier();
                        timed_out = true;
                    }
                    break;
                }
            }
            if inner.state() == DRAINING {
                Ok(BarrierWaitResult {
                    index,
                    leader: false,
                })
            } else {
                Err(BrokenBarrier { timed_out })
            }
        };
        // Leave; the last one out of a finished round refills the barrier.
        let count = layout.count.load(Ordering::Relaxed).saturating_sub(1);
        layout.count.store(count, Ordering::Relaxed);
        if count == 0 && matches!(inner.state(), DRAINING | RESETTING) {
            layout.state.store(FILLING, Ordering::Relaxed);
            inner.notify_all();
        }
        result
    }

    /// Breaks the barrier: current and future waiters get [`BrokenBarrier`]
    /// until [`reset`](Self::reset).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Barrier;
    ///
    /// let barrier = Barrier::new(2)?;
    /// barrier.abort();
    /// assert!(barrier.broken());
    /// assert!(barrier.wait().is_err());
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn abort(&self) {
        self.enter().break_barrier();
    }

    /// Returns the barrier to its initial, empty state; parties waiting now
    /// get [`BrokenBarrier`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Barrier;
    ///
    /// let barrier = Barrier::new(1)?;
    /// barrier.abort();
    /// barrier.reset();
    /// assert!(barrier.wait().unwrap().is_leader()); // one party: trips at once
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn reset(&self) {
        let inner = self.enter();
        let layout = inner.layout;
        if layout.count.load(Ordering::Relaxed) > 0 {
            if matches!(inner.state(), FILLING | BROKEN) {
                layout.state.store(RESETTING, Ordering::Relaxed);
            }
        } else {
            layout.state.store(FILLING, Ordering::Relaxed);
        }
        inner.notify_all();
    }

    /// Whether the barrier is broken.
    #[must_use]
    pub fn broken(&self) -> bool {
        self.enter().state() == BROKEN
    }

    /// How many parties wait in the current round.
    #[must_use]
    pub fn n_waiting(&self) -> u32 {
        let inner = self.enter();
        if inner.state() == FILLING {
            inner.layout.count.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Takes the internal lock; an owner that died holding it breaks the
    /// barrier.
    fn enter(&self) -> Inner<'_> {
        let layout = self.shared.get();
        let acquired = layout.lock.lock(ident::me(), None);
        let inner = Inner { layout };
        if acquired == Ok(Acquired::OwnerDied) {
            inner.break_barrier();
        }
        debug_assert!(acquired.is_ok(), "barrier lock is never held across calls");
        inner
    }
}

impl Inner<'_> {
    fn state(&self) -> i32 {
        self.layout.state.load(Ordering::Relaxed)
    }

    fn break_barrier(&self) {
        self.layout.state.store(BROKEN, Ordering::Relaxed);
        self.notify_all();
    }

    fn notify_all(&self) {
        // SYNC: Release pairs with the Acquire loads of `seq` in `wait`.
        self.layout.seq.fetch_add(1, Ordering::Release);
        // `sleepers` is raised under the lock we hold, so a waiter that
        // counted itself before we bumped `seq` is seen here.
        if self.layout.sleepers.load(Ordering::Relaxed) != 0 {
            futex::wake_all(&self.layout.seq);
        }
    }

    /// Releases the internal lock, waits for a notify (or the deadline),
    /// and takes the lock again; returns `true` on timeout.
    fn wait(&mut self, deadline: Option<Instant>) -> bool {
        let layout = self.layout;
        let seen = layout.seq.load(Ordering::Relaxed);
        layout.sleepers.fetch_add(1, Ordering::Relaxed);
        layout.lock.unlock_held();
        let mut spin = SpinWait::new();
        let timed_out = loop {
            // SYNC: pairs with the Release bump in `notify_all`.
            if layout.seq.load(Ordering::Acquire) != seen {
                break false;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break true;
            }
            if !spin.spin() {
                futex::wait(&layout.seq, seen, deadline);
            }
        };
        layout.sleepers.fetch_sub(1, Ordering::Relaxed);
        if layout.lock.lock(ident::me(), None) == Ok(Acquired::OwnerDied) {
            self.break_barrier();
        }
        timed_out
    }
}

impl Drop for Inner<'_> {
    fn drop(&mut self) {
        self.layout.lock.unlock_held();
    }
}

fn make(parties: u32) -> Result<impl FnOnce(&BarrierLayout), CreateError> {
    if parties == 0 {
        return Err(CreateError::InvalidArgument(
            "a barrier needs at least one party",
        ));
    }
    Ok(move |layout: &BarrierLayout| {
        layout.parties.store(parties, Ordering::Relaxed);
        layout.lock.init();
        layout.seq.store(0, Ordering::Relaxed);
        layout.sleepers.store(0, Ordering::Relaxed);
        layout.state.store(FILLING, Ordering::Relaxed);
        layout.count.store(0, Ordering::Relaxed);
    })
}

fn validate(layout: &BarrierLayout) -> Result<(), &'static str> {
    if layout.parties.load(Ordering::Relaxed) == 0 {
        return Err("barrier with zero parties");
    }
    if !matches!(
        layout.state.load(Ordering::Relaxed),
        FILLING | DRAINING | RESETTING | BROKEN
    ) {
        return Err("unknown barrier state");
    }
    Ok(())
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::fd::{AsFd, AsRawFd};
        f.debug_struct("Barrier")
            .field("fd", &self.segment().as_fd().as_raw_fd())
            .field("offset", &self.shared.offset())
            .field("parties", &self.parties())
            .finish()
    }
}

crate::shared::handle_serde!(Barrier, validate);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_breaks_current_waiters_then_the_barrier_works() {
        let barrier = Barrier::new(3).unwrap();
        std::thread::scope(|s| {
            let waiters: Vec<_> = (0..2)
                .map(|_| s.spawn(|| barrier.wait_timeout(Duration::from_secs(10))))
                .collect();
            let deadline = Instant::now() + Duration::from_secs(10);
            while barrier.n_waiting() < 2 {
                assert!(Instant::now() < deadline, "waiters never arrived");
                std::thread::yield_now();
            }
            barrier.reset();
            for waiter in waiters {
                let err = waiter.join().unwrap().unwrap_err();
                assert!(!err.timed_out());
            }
        });
        assert!(!barrier.broken());
        assert_eq!(barrier.n_waiting(), 0);
        let indices: Vec<u32> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|_| s.spawn(|| barrier.wait_timeout(Duration::from_secs(10)).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().index())
                .collect()
        });
        let mut sorted = indices.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2]);
    }
}

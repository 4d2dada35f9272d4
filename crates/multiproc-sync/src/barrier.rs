//! [`Barrier`]: a process-shared barrier for a fixed number of parties.
//!
//! The algorithm is CPython's `threading.Barrier`, with its state in shared
//! memory under an internal robust lock and a sequence futex as the
//! condition variable:
//!
//! | `state` | meaning | left by |
//! |---|---|---|
//! | 0 filling | parties are arriving | the last arrival (→ draining), `abort` (→ broken), a timeout (→ broken), a party found dead (→ party died), `reset` with waiters (→ resetting) |
//! | 1 draining | the barrier tripped; released waiters are leaving | the last one out, or the last dead one cleared out (→ filling) |
//! | -1 resetting | `reset` broke the waiters; they are leaving | the last one out, or the last dead one cleared out (→ filling) |
//! | -2 broken | aborted or timed out | `reset` (→ filling, or resetting while waiters remain) |
//! | -3 party died | broken because a party died inside the barrier | `reset` (→ filling, or resetting while waiters remain) |
//!
//! Arrivals wait while the barrier drains or resets, so a waiter always
//! learns the outcome of its own round.
//!
//! # Parties that die
//!
//! Every party that waits (all but the arrival that trips the barrier)
//! records its thread identity in a slot of the shared layout for as long as
//! it is inside [`Barrier::wait`]; `count` is the number of occupied slots.
//! A party that dies inside `wait` (its process is killed by `SIGKILL`, say)
//! does not count as arrived:
//!
//! - A waiter sleeps in slices of [`OWNER_CHECK_INTERVAL`]; when a slice
//!   ends it checks whether the next occupied slot's party still lives (each
//!   waiter watches one other, so a round costs one `/proc` read per waiter
//!   and slice). Unless the round already tripped, a dead party breaks the
//!   barrier with the "party died" reason
//!   ([`BrokenBarrier::is_party_died`]): its slot and count are cleared and
//!   every waiter wakes with that error, within about one interval of the
//!   death.
//! - The arrival that would trip the barrier first checks every waiting
//!   party (one `/proc` read each, under the internal lock); a dead one
//!   breaks the barrier the same way, and this arrival gets the error
//!   instead of passing. This check is what a round costs most: about
//!   10 µs per waiting party (on the 2-CPU test machine, rounds of 2, 4
//!   and 8 thread parties took 13, 45 and 125 µs with it, 1, 20 and 33 µs
//!   without; measured with a loop of barrier rounds between threads of one
//!   process, outside the benches: `cargo bench -p multiproc-sync --bench
//!   sync` has no barrier case).
//! - [`Barrier::reset`], [`Barrier::broken`] and [`Barrier::n_waiting`]
//!   check every waiting party too, so a dead one is never reported as
//!   waiting, `broken` says so as soon as a party has died, and `reset`
//!   leaves a barrier whose next round needs all `parties` live parties.
//! - A party that dies after its round tripped (while leaving) or during a
//!   reset is cleared out without breaking anything, so the round drains.
//!
//! If a process dies holding the internal lock, the next process to take it
//! breaks the barrier with the "party died" reason too (the state may be
//! half-updated; `count` is recomputed from the slots).
//!
//! The cross-process tests `barrier_party_killed_while_waiting_breaks_it_for_the_others`,
//! `barrier_party_killed_while_others_wait_wakes_every_live_waiter` and
//! `barrier_reset_after_a_party_died_makes_it_usable_again` SIGKILL a
//! waiting party and check each of these (the sleepers' error arrives under
//! 100 ms after the death).
//!
//! A barrier tracks at most [`Barrier::MAX_PARTIES`] parties, one slot each;
//! creating one with more is an error. Parties must live in the same pid
//! namespace (slots hold thread ids), as for the locks.

use multiproc_core::futex;
use multiproc_core::time::deadline_after;
use multiproc_core::{Segment, SpinWait};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{AttachError, BrokenBarrier, CreateError};
use crate::ident;
use crate::layout::{BARRIER_SLOTS, BarrierLayout, PartySlot};
use crate::raw_lock::{Acquired, OWNER_CHECK_INTERVAL};
use crate::shared::Shared;

const MAGIC: [u8; 8] = *b"MPBARR\0\0";

const FILLING: i32 = 0;
const DRAINING: i32 = 1;
const RESETTING: i32 = -1;
const BROKEN: i32 = -2;
const PARTY_DIED: i32 = -3;

// `MAX_PARTIES` is `BARRIER_SLOTS` as a u32.
const _: () = assert!(BARRIER_SLOTS <= u32::MAX as usize);

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
/// [`abort`](Self::abort), timeouts and a party that dies inside `wait`
/// break it: every waiter, now and later, gets [`BrokenBarrier`] until
/// [`reset`](Self::reset).
///
/// # Parties that die
///
/// A party killed while it waits (`SIGKILL`, say) does not count as
/// arrived. Waiters sleep in slices of [`OWNER_CHECK_INTERVAL`] and watch
/// each other's liveness; the arrival that would trip the barrier, `reset`,
/// `broken` and `n_waiting` check every waiting party. Finding a dead one
/// breaks the barrier with [`BrokenBarrier::is_party_died`] set: every live
/// waiter gets that error within about one interval of the death, and so
/// does every later caller until [`reset`](Self::reset), after which a
/// round needs all `parties` live parties again. A party that dies leaving
/// a round that already tripped is simply cleared out. The checks read
/// `/proc` (one read per waiting party, or per waiter and slice), so a
/// barrier has at most [`MAX_PARTIES`](Self::MAX_PARTIES) parties, one slot
/// each in shared memory.
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

/// Why [`Inner::wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Woke {
    /// `seq` moved: something changed.
    Notified,
    /// The deadline passed.
    TimedOut,
    /// A slice of [`OWNER_CHECK_INTERVAL`] passed: time to look for dead
    /// parties.
    SliceEnded,
}

impl Barrier {
    /// Bytes a `Barrier` occupies in a segment.
    pub const MEMORY_SIZE: usize = Shared::<BarrierLayout>::SIZE;

    /// The most parties a barrier can have: one slot each in its layout, so
    /// that a party that dies while waiting can be found.
    pub const MAX_PARTIES: u32 = BARRIER_SLOTS as u32;

    /// A barrier for `parties` parties in its own anonymous segment.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidArgument`] for 0 parties or more than
    /// [`MAX_PARTIES`](Self::MAX_PARTIES); [`CreateError::Segment`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::{Barrier, CreateError};
    ///
    /// assert!(Barrier::new(Barrier::MAX_PARTIES).is_ok());
    /// let err = Barrier::new(Barrier::MAX_PARTIES + 1).unwrap_err();
    /// assert!(matches!(err, CreateError::InvalidArgument(_)));
    /// assert_eq!(err.to_string(), "invalid argument: a barrier has at most 256 parties");
    /// ```
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
    /// another party timed out, reset while waiting, a party died inside
    /// it).
    pub fn wait(&self) -> Result<BarrierWaitResult, BrokenBarrier> {
        self.wait_deadline(None)
    }

    /// Waits at most `timeout` for every party; a timeout breaks the
    /// barrier for everybody (as in Python).
    ///
    /// # Errors
    ///
    /// [`BrokenBarrier`], with [`is_timeout`](BrokenBarrier::is_timeout) set
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
    /// assert!(err.is_timeout());
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
        // Wait for the previous round to drain or reset.
        while matches!(inner.state(), DRAINING | RESETTING) {
            match inner.wait(deadline) {
                Woke::TimedOut => {
                    inner.break_barrier(BROKEN);
                    return Err(BrokenBarrier {
                        timed_out: true,
                        party_died: false,
                    });
                }
                // A party that died on its way out would stall the drain.
                Woke::SliceEnded => inner.check_next(None),
                Woke::Notified => {}
            }
        }
        inner.broken_error()?;
        let layout = inner.layout;
        let parties = layout.parties.load(Ordering::Relaxed);
        let mut index = layout.count.load(Ordering::Relaxed);
        if index.saturating_add(1) >= parties {
            // This arrival trips the barrier: first make sure that every
            // party counted as arrived still lives (a dead one breaks it).
            inner.reap(None);
            inner.broken_error()?;
            index = layout.count.load(Ordering::Relaxed);
        }
        if index.saturating_add(1) >= parties {
            // Nobody left to drain (one party): fill again at once.
            let next = if index == 0 { FILLING } else { DRAINING };
            layout.state.store(next, Ordering::Relaxed);
            inner.notify_all();
            return Ok(BarrierWaitResult {
                index,
                leader: true,
            });
        }
        let Some(slot) = inner.register() else {
            // Only a corrupt layout has no free slot.
            inner.break_barrier(BROKEN);
            return Err(BrokenBarrier {
                timed_out: false,
                party_died: false,
            });
        };
        let mut timed_out = false;
        while inner.state() == FILLING {
            match inner.wait(deadline) {
                Woke::Notified => {}
                Woke::SliceEnded => inner.check_next(Some(slot)),
                Woke::TimedOut => {
                    if inner.state() == FILLING {
                        inner.break_barrier(BROKEN);
                        timed_out = true;
                    }
                    break;
                }
            }
        }
        let result = match inner.state() {
            DRAINING => Ok(BarrierWaitResult {
                index,
                leader: false,
            }),
            state => Err(BrokenBarrier {
                timed_out,
                party_died: state == PARTY_DIED,
            }),
        };
        inner.leave(slot);
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
        self.enter().break_barrier(BROKEN);
    }

    /// Returns the barrier to its initial, empty state; parties waiting now
    /// get [`BrokenBarrier`]. Parties that died inside
    /// [`wait`](Self::wait) are cleared out first (one `/proc` read per
    /// waiting party), so the next round needs all `parties` live parties.
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
        inner.reap(None);
        let layout = inner.layout;
        if layout.count.load(Ordering::Relaxed) > 0 {
            if matches!(inner.state(), FILLING | BROKEN | PARTY_DIED) {
                layout.state.store(RESETTING, Ordering::Relaxed);
            }
        } else {
            layout.state.store(FILLING, Ordering::Relaxed);
        }
        inner.notify_all();
    }

    /// Whether the barrier is broken. A party found dead inside
    /// [`wait`](Self::wait) (one `/proc` read per waiting party) breaks it
    /// first.
    #[must_use]
    pub fn broken(&self) -> bool {
        let inner = self.enter();
        inner.reap(None);
        matches!(inner.state(), BROKEN | PARTY_DIED)
    }

    /// How many parties wait in the current round; parties that died while
    /// waiting are not counted (finding one breaks the barrier, see
    /// [`broken`](Self::broken)).
    #[must_use]
    pub fn n_waiting(&self) -> u32 {
        let inner = self.enter();
        inner.reap(None);
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
            inner.owner_died();
        }
        debug_assert!(acquired.is_ok(), "barrier lock is never held across calls");
        inner
    }
}

impl Inner<'_> {
    fn state(&self) -> i32 {
        self.layout.state.load(Ordering::Relaxed)
    }

    /// The error for a broken barrier, `Err` when it is broken.
    fn broken_error(&self) -> Result<(), BrokenBarrier> {
        match self.state() {
            BROKEN => Err(BrokenBarrier {
                timed_out: false,
                party_died: false,
            }),
            PARTY_DIED => Err(BrokenBarrier {
                timed_out: false,
                party_died: true,
            }),
            _ => Ok(()),
        }
    }

    /// `BROKEN` or `PARTY_DIED`.
    fn break_barrier(&self, why: i32) {
        self.layout.state.store(why, Ordering::Relaxed);
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

    /// The slots parties of this barrier can use (all of them, unless the
    /// barrier has fewer parties).
    fn slots(&self) -> &[PartySlot] {
        let parties = self.layout.parties.load(Ordering::Relaxed);
        let limit = usize::try_from(parties).map_or(BARRIER_SLOTS, |p| p.min(BARRIER_SLOTS));
        self.layout.slots.split_at(limit).0
    }

    /// Records the calling thread in a free slot and counts it; the slot,
    /// or `None` when all are taken.
    fn register(&self) -> Option<usize> {
        let me = ident::me();
        let (index, slot) = self
            .slots()
            .iter()
            .enumerate()
            .find(|(_, slot)| slot.owner.load(Ordering::Relaxed) == 0)?;
        // SYNC: Relaxed, like `state` and `count`: slots are read and
        // written only under the internal lock, whose Acquire on lock pairs
        // with the Release on unlock of its previous owner.
        slot.tid.store(me.tid, Ordering::Relaxed);
        slot.owner.store(me.packed, Ordering::Relaxed);
        let count = self.layout.count.load(Ordering::Relaxed);
        self.layout
            .count
            .store(count.saturating_add(1), Ordering::Relaxed);
        Some(index)
    }

    /// Leaves `wait`: frees the caller's slot (unless it was cleared as
    /// dead meanwhile, then `count` no longer includes it); the last one
    /// out of a finished round refills the barrier.
    fn leave(&self, index: usize) {
        let me = ident::me();
        if let Some(slot) = self.slots().get(index)
            && slot.owner.load(Ordering::Relaxed) == me.packed
            && slot.tid.load(Ordering::Relaxed) == me.tid
        {
            clear(slot);
            let count = self.layout.count.load(Ordering::Relaxed);
            self.layout
                .count
                .store(count.saturating_sub(1), Ordering::Relaxed);
        }
        self.refill_if_drained();
    }

    /// A draining or resetting barrier with nobody left inside fills again.
    fn refill_if_drained(&self) {
        if self.layout.count.load(Ordering::Relaxed) == 0
            && matches!(self.state(), DRAINING | RESETTING)
        {
            self.layout.state.store(FILLING, Ordering::Relaxed);
            self.notify_all();
        }
    }

    /// A sleeper's check at the end of a slice: whether the party in the
    /// next occupied slot after `mine` (after the start, for a caller
    /// without a slot) still lives; if not, clears out every dead party.
    /// The waiters thus watch each other in a ring, one `/proc` read each.
    fn check_next(&self, mine: Option<usize>) {
        let slots = self.slots();
        let n = slots.len();
        let first = mine.map_or(0, |m| m + 1);
        let next = (0..n)
            .map(|k| (first + k) % n)
            .filter(|&i| Some(i) != mine)
            .find_map(|i| {
                slots
                    .get(i)
                    .filter(|s| s.owner.load(Ordering::Relaxed) != 0)
            });
        if next.is_some_and(|slot| !party_alive(slot)) {
            self.reap(mine);
        }
    }

    /// Clears out every party that died inside `wait` (`skip`: the
    /// caller's own slot, alive by definition) and recounts. A dead party
    /// breaks a filling barrier with the "party died" reason; one that died
    /// leaving a tripped or reset round just stops counting. Reads `/proc`
    /// once per occupied slot.
    fn reap(&self, skip: Option<usize>) {
        let mut died = false;
        for (i, slot) in self.slots().iter().enumerate() {
            if Some(i) != skip && slot.owner.load(Ordering::Relaxed) != 0 && !party_alive(slot) {
                clear(slot);
                died = true;
            }
        }
        self.recount();
        if died {
            if self.state() == FILLING {
                self.break_barrier(PARTY_DIED);
            } else {
                self.refill_if_drained();
            }
        }
    }

    /// The internal lock was taken over from a process that died holding
    /// it, in the middle of some barrier operation: `count` may be off, so
    /// it is recomputed from the slots, and the barrier breaks.
    fn owner_died(&self) {
        self.recount();
        self.break_barrier(PARTY_DIED);
    }

    /// `count` := the number of occupied slots.
    fn recount(&self) {
        let occupied = self
            .slots()
            .iter()
            .filter(|slot| slot.owner.load(Ordering::Relaxed) != 0)
            .count();
        let occupied = u32::try_from(occupied).unwrap_or(u32::MAX);
        self.layout.count.store(occupied, Ordering::Relaxed);
    }

    /// Releases the internal lock, waits for a notify, the deadline, or the
    /// end of a slice of [`OWNER_CHECK_INTERVAL`], and takes the lock
    /// again.
    fn wait(&mut self, deadline: Option<Instant>) -> Woke {
        let layout = self.layout;
        let seen = layout.seq.load(Ordering::Relaxed);
        layout.sleepers.fetch_add(1, Ordering::Relaxed);
        layout.lock.unlock_held();
        let slice_end = Instant::now() + OWNER_CHECK_INTERVAL;
        let until = match deadline {
            Some(d) if d < slice_end => d,
            _ => slice_end,
        };
        let mut spin = SpinWait::new();
        let woke = loop {
            // SYNC: pairs with the Release bump in `notify_all`.
            if layout.seq.load(Ordering::Acquire) != seen {
                break Woke::Notified;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Woke::TimedOut;
            }
            if spin.spin() {
                continue;
            }
            if Instant::now() >= slice_end {
                break Woke::SliceEnded;
            }
            futex::wait(&layout.seq, seen, Some(until));
        };
        layout.sleepers.fetch_sub(1, Ordering::Relaxed);
        if layout.lock.lock(ident::me(), None) == Ok(Acquired::OwnerDied) {
            self.owner_died();
        }
        woke
    }
}

impl Drop for Inner<'_> {
    fn drop(&mut self) {
        self.layout.lock.unlock_held();
    }
}

/// Whether the party recorded in `slot` (occupied) still runs. A slot with
/// no thread id is garbage, and garbage counts as dead.
fn party_alive(slot: &PartySlot) -> bool {
    let tid = slot.tid.load(Ordering::Relaxed);
    tid != 0 && ident::owner_alive(tid, slot.owner.load(Ordering::Relaxed))
}

fn clear(slot: &PartySlot) {
    slot.owner.store(0, Ordering::Relaxed);
    slot.tid.store(0, Ordering::Relaxed);
}

fn make(parties: u32) -> Result<impl FnOnce(&BarrierLayout), CreateError> {
    if parties == 0 {
        return Err(CreateError::InvalidArgument(
            "a barrier needs at least one party",
        ));
    }
    if parties > Barrier::MAX_PARTIES {
        return Err(CreateError::InvalidArgument(
            "a barrier has at most 256 parties",
        ));
    }
    Ok(move |layout: &BarrierLayout| {
        layout.parties.store(parties, Ordering::Relaxed);
        layout.lock.init();
        layout.seq.store(0, Ordering::Relaxed);
        layout.sleepers.store(0, Ordering::Relaxed);
        layout.state.store(FILLING, Ordering::Relaxed);
        layout.count.store(0, Ordering::Relaxed);
        for slot in &layout.slots {
            clear(slot);
            slot.reserved.store(0, Ordering::Relaxed);
        }
    })
}

fn validate(layout: &BarrierLayout) -> Result<(), &'static str> {
    let parties = layout.parties.load(Ordering::Relaxed);
    if parties == 0 {
        return Err("barrier with zero parties");
    }
    if parties > Barrier::MAX_PARTIES {
        return Err("barrier with more parties than it can track");
    }
    if !matches!(
        layout.state.load(Ordering::Relaxed),
        FILLING | DRAINING | RESETTING | BROKEN | PARTY_DIED
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

    /// The identity of a thread that has exited (and is seen dead).
    fn dead_thread() -> ident::Me {
        let dead = std::thread::spawn(ident::me).join().unwrap();
        // `join` may return a moment before the thread has finished exiting.
        let deadline = Instant::now() + Duration::from_secs(5);
        while ident::owner_alive(dead.tid, dead.packed) {
            assert!(Instant::now() < deadline, "exited thread still alive");
            std::thread::yield_now();
        }
        dead
    }

    /// Records `who` as a party waiting in slot `index`, as `wait` does.
    fn plant(barrier: &Barrier, index: usize, tid: u32, owner: u64) {
        let layout = barrier.shared.get();
        layout.slots[index].tid.store(tid, Ordering::Relaxed);
        layout.slots[index].owner.store(owner, Ordering::Relaxed);
        layout.count.fetch_add(1, Ordering::Relaxed);
    }

    #[test]
    fn a_dead_waiting_party_breaks_the_barrier_for_the_next_arrival() {
        let barrier = Barrier::new(2).unwrap();
        let dead = dead_thread();
        plant(&barrier, 0, dead.tid, dead.packed);
        let err = barrier.wait_timeout(Duration::from_secs(5)).unwrap_err();
        assert!(err.is_party_died() && !err.is_timeout(), "{err:?}");
        assert!(barrier.broken());
        assert_eq!(barrier.n_waiting(), 0);
        barrier.reset();
        std::thread::scope(|s| {
            let other = s.spawn(|| barrier.wait_timeout(Duration::from_secs(5)).unwrap());
            let mine = barrier.wait_timeout(Duration::from_secs(5)).unwrap();
            assert!(mine.is_leader() != other.join().unwrap().is_leader());
        });
    }

    #[test]
    fn a_sleeper_finds_a_party_that_died_while_it_slept() {
        let barrier = Barrier::new(3).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let sleeper = s.spawn(|| barrier.wait_timeout(Duration::from_secs(5)));
            while barrier.n_waiting() < 1 {
                std::thread::yield_now();
            }
            // A second party that registers, then dies without leaving.
            s.spawn(|| {
                let inner = barrier.enter();
                inner.register().unwrap();
                drop(inner);
                tx.send(()).unwrap();
            });
            rx.recv().unwrap();
            let start = Instant::now();
            let err = sleeper.join().unwrap().unwrap_err();
            assert!(err.is_party_died() && !err.is_timeout(), "{err:?}");
            assert!(start.elapsed() < Duration::from_secs(1));
        });
        assert_eq!(barrier.shared.get().count.load(Ordering::Relaxed), 0);
        barrier.reset();
        assert!(!barrier.broken());
    }

    #[test]
    fn a_party_that_died_leaving_a_tripped_round_does_not_stall_the_next() {
        let barrier = Barrier::new(2).unwrap();
        let dead = dead_thread();
        // Round tripped; the dead party never left.
        plant(&barrier, 1, dead.tid, dead.packed);
        let layout = barrier.shared.get();
        layout.state.store(DRAINING, Ordering::Relaxed);
        let start = Instant::now();
        std::thread::scope(|s| {
            let other = s.spawn(|| barrier.wait_timeout(Duration::from_secs(5)).unwrap());
            barrier.wait_timeout(Duration::from_secs(5)).unwrap();
            other.join().unwrap();
        });
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(!barrier.broken());
        assert_eq!(barrier.n_waiting(), 0);
    }

    #[test]
    fn garbage_slots_count_as_dead_and_never_panic() {
        let barrier = Barrier::new(4).unwrap();
        plant(&barrier, 0, 0, 0xDEAD_BEEF);
        plant(&barrier, 1, u32::MAX, u64::MAX);
        plant(&barrier, 2, (1 << 22) + 12345, 0xEEEE_EEEE_EEEE_EEEE);
        assert_eq!(barrier.n_waiting(), 0);
        assert!(barrier.broken());
        barrier.reset();
        assert!(!barrier.broken());
        // A corrupt party count and count word: no panic; the count is
        // recomputed from the slots (none taken), so the caller waits.
        let layout = barrier.shared.get();
        layout.parties.store(u32::MAX, Ordering::Relaxed);
        layout.count.store(u32::MAX, Ordering::Relaxed);
        assert!(
            barrier
                .wait_timeout(Duration::from_millis(20))
                .unwrap_err()
                .is_timeout()
        );
        barrier.reset();
        layout.parties.store(2, Ordering::Relaxed);
        layout.count.store(u32::MAX, Ordering::Relaxed);
        barrier.reset();
        assert!(
            barrier
                .wait_timeout(Duration::from_millis(20))
                .unwrap_err()
                .is_timeout()
        );
    }

    #[test]
    fn parties_are_bounded_by_the_slots() {
        assert_eq!(Barrier::MAX_PARTIES as usize, BARRIER_SLOTS);
        let barrier = Barrier::new(Barrier::MAX_PARTIES).unwrap();
        assert_eq!(barrier.parties(), 256);
        assert!(matches!(
            Barrier::new(Barrier::MAX_PARTIES + 1),
            Err(CreateError::InvalidArgument(
                "a barrier has at most 256 parties"
            ))
        ));
        barrier
            .shared
            .get()
            .parties
            .store(Barrier::MAX_PARTIES + 1, Ordering::Relaxed);
        assert!(matches!(
            Barrier::attach(Arc::clone(barrier.segment()), 0),
            Err(AttachError::Corrupt(_))
        ));
    }

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
                assert!(!err.is_timeout());
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

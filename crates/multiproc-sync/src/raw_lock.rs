//! The robust lock state machine behind [`Lock`](crate::Lock),
//! [`RLock`](crate::RLock) and the barrier's internal lock.
//!
//! # State word
//!
//! `state` is a futex word shared by every process that maps the lock:
//!
//! | bits | meaning |
//! |---|---|
//! | 0..=29 | kernel thread id of the owner; 0 = unlocked |
//! | 30 | always 0 |
//! | 31 | `WAITERS`: somebody may sleep on the word, so unlock must wake |
//!
//! | from | to | by | how |
//! |---|---|---|---|
//! | `0` | `me` | acquirer, fast path | CAS, Acquire |
//! | `0 \| W` | `me \| W` | acquirer that saw a sleeper's bit | CAS, Acquire |
//! | `owner \| w` | `owner \| W` | waiter, before sleeping | CAS, Relaxed |
//! | `owner \| w` | `0` | the owner, unlocking | swap, Release; wakes one if `W` was set |
//! | `dead \| w` | `me \| w` | a waiter that found the owner dead | CAS from the exact value it judged, Acquire |
//!
//! A waiter that sleeps always sets `WAITERS` first and sleeps on the value
//! with the bit (the futex compare is the re-check); a waiter that acquires
//! after sleeping keeps the bit set, because it cannot know whether others
//! still sleep (Drepper, "Futexes Are Tricky", mutex2). The price is at most
//! one unneeded wake per contended episode; an uncontended lock/unlock pair
//! is one CAS and one swap, no system call.
//!
//! # Owner record and death detection
//!
//! Right after taking the state word, the owner writes its identity
//! (thread id + thread start time) into `owner`. Sleepers sleep in slices of
//! [`OWNER_CHECK_INTERVAL`]; when a slice ends with the same owner still in
//! the state word, the sleeper reads `/proc/TID/stat` to see whether that
//! thread still runs (start time must match, zombies count as dead). If it
//! does not, the sleeper takes the word over with a CAS from the exact value
//! it judged; at most one process wins, and it gets `OwnerDied`. An owner
//! that dies between taking the word and writing its record is judged by
//! its thread id alone.
//!
//! Processes that share a lock must live in the same pid namespace, since
//! the state word holds thread ids; the segment header refuses an attach
//! from another one.

use multiproc_core::SpinWait;
use multiproc_core::futex::{self, WaitOutcome};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::ident::{self, Me};
use crate::layout::{LockLayout, LockWords};
use crate::ready;

/// Somebody may sleep on the state word.
pub(crate) const WAITERS: u32 = 1 << 31;
/// The owner's thread id (Linux thread ids are below 2²²).
pub(crate) const TID_MASK: u32 = (1 << 30) - 1;

/// How long a sleeper sleeps before it checks whether the owner still
/// lives. Bounds the time to detect a dead owner (plus one `/proc` read,
/// tens of microseconds); a sleeper wakes at most this often while a live
/// owner holds the lock.
pub const OWNER_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// How the lock was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Unlocked, or released by a live owner.
    Clean,
    /// Taken over from an owner that died holding it.
    OwnerDied,
}

/// Why the lock was not obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotAcquired {
    /// Held by another live thread (try) or until the deadline (timed).
    Busy,
    /// Held by the calling thread itself.
    Reentrant,
}

impl LockWords {
    /// Sets up an unlocked lock (creator, before publishing).
    pub(crate) fn init(&self) {
        self.state.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
    }

    /// Whether the calling thread holds the lock.
    #[inline]
    pub(crate) fn held_by(&self, me: Me) -> bool {
        self.state.load(Ordering::Relaxed) & TID_MASK == me.tid
            && self.owner.load(Ordering::Relaxed) == me.packed
    }

    /// Whether anybody holds the lock (a snapshot).
    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & TID_MASK != 0
    }

    #[inline]
    fn record(&self, me: Me) {
        // SYNC: pairs with the Acquire loads in `take_if_owner_dead`; the
        // record is advisory (re-validated there), the state word is what
        // orders the critical section.
        self.owner.store(me.packed, Ordering::Release);
    }

    /// Moves the word from `seen` (free) to `new` (ours) and records us as
    /// the owner; whether that worked.
    #[inline]
    fn claim(&self, seen: u32, new: u32, me: Me) -> bool {
        // SYNC: Acquire pairs with the Release swap in `unlock`: the
        // previous owner's critical section happens before ours.
        let claimed = self
            .state
            .compare_exchange(seen, new, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if claimed {
            self.record(me);
        }
        claimed
    }

    /// Takes the lock if that is possible without waiting; an owner found
    /// dead is taken over.
    #[inline]
    pub(crate) fn try_lock(&self, me: Me) -> Result<Acquired, NotAcquired> {
        if self.claim(0, me.tid, me) {
            Ok(Acquired::Clean)
        } else {
            self.try_lock_contended(me)
        }
    }

    #[cold]
    fn try_lock_contended(&self, me: Me) -> Result<Acquired, NotAcquired> {
        loop {
            let cur = self.state.load(Ordering::Relaxed);
            match cur & TID_MASK {
                0 => {
                    if self.claim(cur, me.tid | (cur & WAITERS), me) {
                        return Ok(Acquired::Clean);
                    }
                }
                tid if tid == me.tid && self.held_by(me) => return Err(NotAcquired::Reentrant),
                _ => {
                    return if self.take_if_owner_dead(cur, me) {
                        Ok(Acquired::OwnerDied)
                    } else {
                        Err(NotAcquired::Busy)
                    };
                }
            }
        }
    }

    /// Takes the lock, waiting until `deadline` (`None`: for ever).
    #[inline]
    pub(crate) fn lock(&self, me: Me, deadline: Option<Instant>) -> Result<Acquired, NotAcquired> {
        if self.claim(0, me.tid, me) {
            return Ok(Acquired::Clean);
        }
        self.lock_slow(me, deadline)
    }

    /// The one blocking core of every acquire: spin, then sleep in slices,
    /// checking the owner's life between slices.
    #[cold]
    fn lock_slow(&self, me: Me, deadline: Option<Instant>) -> Result<Acquired, NotAcquired> {
        // Spin while the owner is likely to release soon (a deadline that
        // has already passed makes this a poll).
        let mut spin = SpinWait::new();
        let mut spins: u32 = 0;
        loop {
            let cur = self.state.load(Ordering::Relaxed);
            let tid = cur & TID_MASK;
            if tid == 0 {
                if self.claim(cur, me.tid | (cur & WAITERS), me) {
                    return Ok(Acquired::Clean);
                }
                continue;
            }
            if tid == me.tid && self.held_by(me) {
                return Err(NotAcquired::Reentrant);
            }
            spins = spins.wrapping_add(1);
            if spins % 16 == 1 && deadline.is_some_and(|d| Instant::now() >= d) {
                return self.give_up(cur, me);
            }
            if !spin.spin() {
                break;
            }
        }
        // Sleep, in slices.
        loop {
            let cur = self.state.load(Ordering::Relaxed);
            if cur & TID_MASK == 0 {
                // We may have slept: others may still sleep, keep the bit.
                if self.claim(cur, me.tid | WAITERS, me) {
                    return Ok(Acquired::Clean);
                }
                continue;
            }
            if cur & WAITERS == 0
                && self
                    .state
                    .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return self.give_up(cur | WAITERS, me);
            }
            let slice_end = now + OWNER_CHECK_INTERVAL;
            let until = match deadline {
                Some(d) if d < slice_end => d,
                _ => slice_end,
            };
            // The futex compare re-checks the word: an unlock in between
            // makes this return at once.
            if futex::wait(&self.state, cur | WAITERS, Some(until)) == WaitOutcome::TimedOut
                && Instant::now() >= slice_end
                && self.take_if_owner_dead(cur | WAITERS, me)
            {
                return Ok(Acquired::OwnerDied);
            }
        }
    }

    /// The deadline passed with the word at `seen`: one last look at the
    /// owner, so that short timeouts also find a dead owner.
    #[cold]
    fn give_up(&self, seen: u32, me: Me) -> Result<Acquired, NotAcquired> {
        if self.take_if_owner_dead(seen, me) {
            Ok(Acquired::OwnerDied)
        } else {
            Err(NotAcquired::Busy)
        }
    }

    /// If the state word still holds `seen` and its owner is dead, takes the
    /// lock over; returns whether it did.
    #[cold]
    fn take_if_owner_dead(&self, seen: u32, me: Me) -> bool {
        let tid = seen & TID_MASK;
        // SYNC: pairs with the Release store in `record`.
        let record = self.owner.load(Ordering::Acquire);
        if self.state.load(Ordering::Relaxed) != seen || ident::owner_alive(tid, record) {
            return false;
        }
        // The owner is dead. Re-check that nobody took over meanwhile (the
        // record changes on every acquire), then claim the exact state seen.
        if self.owner.load(Ordering::Acquire) != record {
            return false;
        }
        // SYNC: Acquire, as for a normal acquire; the dead owner's writes
        // were made before it died and are visible through the shared pages.
        if self
            .state
            .compare_exchange(
                seen,
                me.tid | (seen & WAITERS),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.record(me);
            true
        } else {
            false
        }
    }

    /// Unlocks a lock the caller holds (its guard proves it); returns
    /// whether a waiter was announced (`WAITERS` was set, and one sleeper
    /// was woken).
    #[inline]
    pub(crate) fn unlock_held(&self) -> bool {
        // SYNC: Release pairs with the Acquire CASes of the next owner.
        let prev = self.state.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            futex::wake_one(&self.state);
            true
        } else {
            false
        }
    }

    /// Unlocks if the calling thread holds the lock; returns whether it did.
    #[cfg(test)]
    pub(crate) fn unlock_checked(&self, me: Me) -> bool {
        if !self.held_by(me) {
            return false;
        }
        self.unlock_held();
        true
    }
}

impl LockLayout {
    /// Unlocks a lock the caller holds, and rings the doorbells of async
    /// acquirers if one was announced (see `ready.rs`): with nobody
    /// announced, one swap, as before.
    #[inline]
    pub(crate) fn unlock_held(&self) {
        if self.words.unlock_held() {
            ready::ring(&self.bells, ready::BELL);
        }
    }

    /// Unlocks if the calling thread holds the lock; returns whether it did.
    pub(crate) fn unlock_checked(&self, me: Me) -> bool {
        if !self.words.held_by(me) {
            return false;
        }
        self.unlock_held();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, AtomicU64};

    fn words() -> LockWords {
        LockWords {
            state: AtomicU32::new(0),
            count: AtomicU32::new(0),
            owner: AtomicU64::new(0),
        }
    }

    #[test]
    fn lock_unlock_reentrant_and_busy() {
        let w = words();
        let me = ident::me();
        assert_eq!(w.try_lock(me), Ok(Acquired::Clean));
        assert!(w.held_by(me));
        assert_eq!(w.try_lock(me), Err(NotAcquired::Reentrant));
        assert_eq!(
            w.lock(me, Some(Instant::now())),
            Err(NotAcquired::Reentrant)
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                let other = ident::me();
                assert_eq!(w.try_lock(other), Err(NotAcquired::Busy));
                assert!(!w.unlock_checked(other));
                let start = Instant::now();
                let deadline = Some(start + Duration::from_millis(30));
                assert_eq!(w.lock(other, deadline), Err(NotAcquired::Busy));
                assert!(start.elapsed() >= Duration::from_millis(30));
            });
        });
        assert!(w.unlock_checked(me));
        assert!(!w.is_locked());
    }

    #[test]
    fn a_thread_that_exits_holding_the_lock_is_a_dead_owner() {
        let w = words();
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(w.try_lock(ident::me()), Ok(Acquired::Clean)));
        });
        let me = ident::me();
        // `join` returns when the kernel clears the thread id, a moment
        // before the thread has finished exiting: until then it counts as
        // alive.
        let deadline = Instant::now() + Duration::from_secs(5);
        let result = loop {
            match w.try_lock(me) {
                Err(NotAcquired::Busy) if Instant::now() < deadline => std::thread::yield_now(),
                other => break other,
            }
        };
        assert_eq!(result, Ok(Acquired::OwnerDied));
        assert!(w.held_by(me));
        w.unlock_held();
        assert_eq!(w.try_lock(me), Ok(Acquired::Clean));
    }

    #[test]
    fn sleeper_detects_a_dead_owner_within_a_few_intervals() {
        let w = words();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(w.try_lock(ident::me()), Ok(Acquired::Clean));
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            });
            rx.recv().unwrap();
            let result = w.lock(ident::me(), Some(Instant::now() + Duration::from_secs(5)));
            assert_eq!(result, Ok(Acquired::OwnerDied));
        });
    }
}

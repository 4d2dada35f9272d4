//! Taking and releasing the two robust locks of a queue (producer side,
//! consumer side) by their owner word: the fast CAS, the wait, the takeover
//! from a dead holder, and the unlock that may grant a bias instead.
//!
//! A lock is an `AtomicU64` owner word (the holding thread's packed
//! [`ThreadIdentity`](multiproc_core::ThreadIdentity), 0 = free) plus an
//! `AtomicU32` futex word whose bit 0 says "somebody sleeps". Because the
//! owner is a thread identity (thread id + start time), a waiter that has
//! slept for [`LIVENESS_SLICE`] without the owner changing asks the kernel
//! whether that thread still lives, and takes the lock over from a dead
//! one. A thread, not its process: a process whose main thread has exited
//! while another thread puts is alive, and its put is not cut short. The
//! caller then repairs what the dead holder left half done (see
//! `ring/producer.rs` and `ring/consumer.rs`).
//!
//! | owner word | meaning | who changes it |
//! |---|---|---|
//! | 0 | free | a locker, by CAS 0 → its identity (`Acquire`) |
//! | live identity | held | the holder, by a store of 0 (`Release`) |
//! | dead identity | held by a dead thread | a waiter, by CAS dead → its identity, after `is_alive()` said no; then it settles a bias left in place (`bias.rs`) |
//! | [`BIASED`] | biased to a thread (see `bias.rs`) | a waiter, by CAS → its identity, then it revokes the bias |

use multiproc_core::futex::{self, SpinWait, WaitOutcome};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::bias::{Hold, Revoke};
use crate::fence::asymmetric;
use crate::owner::{BIASED, LIVENESS_SLICE, Locked, RobustLock, me, owner_alive, thread_id};
use crate::wake::{notify, prepare_sleep, sleep_until};

impl RobustLock<'_> {
    /// One CAS: the uncontended fast path.
    #[inline]
    pub(crate) fn try_lock(&self, me: u64) -> bool {
        // SYNC: Acquire pairs with the Release store in `unlock` of the previous
        // holder: we see everything it wrote under the lock.
        self.owner
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock: by this thread's bias, else spins, then (if `sleep`)
    /// sleeps until `deadline`, revoking a bias and taking the lock over
    /// from a dead holder. `Err(())` when the deadline passed or, with
    /// `sleep == false`, the spin budget ran out.
    #[inline]
    pub(crate) fn lock(
        &self,
        me: u64,
        sleep: bool,
        deadline: Option<Instant>,
    ) -> Result<(Locked, Hold), ()> {
        if let Some(hold) = self.enter_biased(me) {
            return Ok((Locked::Clean, hold));
        }
        if self.try_lock(me) {
            return Ok((Locked::Clean, Hold::OWNER));
        }
        self.lock_slow(me, sleep, deadline)
            .map(|locked| (locked, Hold::OWNER))
    }

    #[cold]
    fn lock_slow(&self, me: u64, sleep: bool, deadline: Option<Instant>) -> Result<Locked, ()> {
        let mut spin = SpinWait::new();
        loop {
            let owner = self.owner.load(Ordering::Relaxed);
            if owner == 0 && self.try_lock(me) {
                return Ok(Locked::Clean);
            }
            if owner == BIASED {
                match self.revoke(me, sleep, deadline) {
                    Revoke::Taken(locked) => return Ok(locked),
                    Revoke::GaveBack => return Err(()),
                    Revoke::Raced => {}
                }
            }
            if !spin.spin() {
                break;
            }
        }
        // Ask the kernel about the holder only after a whole slice passed
        // without it letting go: `/proc` reads cost microseconds.
        let mut suspect = !sleep;
        let mut last_look = false;
        loop {
            let owner = self.owner.load(Ordering::Relaxed);
            if owner == BIASED {
                match self.revoke(me, sleep, deadline) {
                    Revoke::Taken(locked) => return Ok(locked),
                    Revoke::GaveBack => return Err(()),
                    Revoke::Raced => continue,
                }
            }
            if owner != 0 && std::mem::take(&mut suspect) && !owner_alive(owner) {
                // SYNC: Acquire, as in `try_lock`; a dead process's stores are
                // all visible (its exit went through the kernel, which we
                // just asked about it).
                if self
                    .owner
                    .compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    // It may have died revoking a bias: finish that first.
                    let _ = self.settle(sleep, deadline)?;
                    return Ok(Locked::Recovered);
                }
                continue;
            }
            if !sleep {
                return Err(());
            }
            let v = prepare_sleep(self.word.futex);
            // SYNC: re-check after `prepare_sleep`; pairs with the store +
            // `notify` in `unlock` and `grant`.
            let owner = self.owner.load(Ordering::SeqCst);
            if owner == 0 || owner == BIASED {
                if owner == 0 && self.try_lock(me) {
                    return Ok(Locked::Clean);
                }
                continue;
            }
            let slice = Instant::now() + LIVENESS_SLICE;
            let until = sleep_until(Some(match deadline {
                Some(d) if d < slice => d,
                _ => slice,
            }));
            let outcome = futex::wait(self.word.futex, v, until);
            if outcome == WaitOutcome::TimedOut && until.is_some_and(|u| Instant::now() >= u) {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    if self.try_lock(me) {
                        return Ok(Locked::Clean);
                    }
                    if std::mem::replace(&mut last_look, true) {
                        return Err(());
                    }
                    // One last look at the holder before giving up, so that
                    // waits no longer than a slice (timed operations, and
                    // the sealing takers of `close` and `wait_data`) find a
                    // dead holder too, instead of timing out on it for ever.
                }
                suspect = true;
            }
        }
    }

    /// Releases the lock and wakes sleepers, if any. A thread that took the
    /// owner word often enough in a row keeps the lock as its bias instead.
    #[inline]
    pub(crate) fn unlock(&self, hold: Hold) {
        if let Some(token) = hold.token() {
            self.leave_biased(token);
            return;
        }
        if asymmetric() {
            let (me, tid) = (me(), thread_id());
            if self.earned_bias(me, tid) && self.grant(me, tid) {
                return;
            }
        }
        // SYNC: Release for the next holder's Acquire CAS; then `notify`
        // (light fence + load), the fast half of the pair with
        // `prepare_sleep` + re-check in `lock_slow`.
        self.owner.store(0, Ordering::Release);
        notify(self.word);
    }
}

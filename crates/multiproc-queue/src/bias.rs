//! Biased locking: a thread that takes a queue lock over and over, with
//! nobody else asking for it, keeps it between operations and enters
//! without a locked instruction.
//!
//! Why: with one producer and one consumer each lock stays with one thread,
//! and its compare-and-swap was the largest single cost of a small message
//! on both sides. A locked instruction waits for the store buffer to drain,
//! and the buffer holds the last message's stores to lines the other side
//! has just read.
//!
//! # Protocol
//!
//! The lock's owner word reads [`BIASED`] while a thread holds the bias;
//! the [`Bias`] beside it names the thread's slot (`token`), and the
//! [`BiasSlot`] holds its process identity, its kernel thread id and a
//! `busy` counter that only that thread writes (odd = inside).
//!
//! | step | the biased thread | anyone else, to take the lock |
//! |---|---|---|
//! | 1 | stores `busy` odd | CAS owner `BIASED` → its identity (or a dead owner's identity → its own: a takeover) |
//! | 2 | compiler fence ([`light_fence`]) | sets [`REVOKING`] in `token`, keeping the slot number |
//! | 3 | loads `token`: still exactly its slot → inside; else stores `busy` even, gives its slot back, takes the lock the usual way | `membarrier` ([`revoke_fence`]) |
//! | 4 | … stores `busy` even (`Release`) to leave | waits until `busy` is even (`Acquire`), or the slot's thread is dead |
//! | 5 | | clears `token`: only now is the lock its own |
//!
//! Steps 1–3 on both sides are a store-then-load pair. The `membarrier`
//! runs a full barrier on every CPU that runs a registered process, so
//! either the revoker sees the odd `busy` and waits, or the biased thread
//! sees that the token is no longer its own and backs off: never both
//! inside.
//!
//! Steps 2–5 are what `settle` does, and every new holder of the owner word
//! runs it, whether it took the word from `BIASED` or from a dead owner.
//! Because the slot stays named in `token` until step 5, a holder that dies
//! anywhere between steps 1 and 5 leaves its successor the same slot to
//! wait for: the successor repeats steps 2–5 (setting a bit already set and
//! fencing again are harmless). An earlier version cleared the token at
//! step 2; a revoker killed while waiting then left a successor nothing to
//! wait for, and it entered beside the biased thread (the
//! `killed_revoker_*` tests in `tests/biased.rs`, and the seeded bug of the
//! model in `tests/loom.rs`, show it).
//!
//! # Grants
//!
//! A thread that takes the lock the usual way [`grant_after`](Bias::grant_after)
//! times in a row (64 at first) is granted the bias when it unlocks: it
//! gets a slot (its own from before, a free one, or one whose process
//! died), and the owner word becomes [`BIASED`] instead of 0. A revocation
//! that comes before the biased thread has entered that many times doubles
//! the threshold (up to 65 536); a later one halves it. So two producers
//! that take turns stop being granted, and the cost of a revocation (one
//! `membarrier`) is spread over at least as many operations as the streak
//! that earned the bias. A thread whose process is not registered with
//! `membarrier` is never granted: its light fence would be a full one.
//!
//! # Why a slot per thread
//!
//! Only the slot's thread ever writes its `busy`. A biased thread can be
//! preempted between checking its slot and storing `busy`; if the bias
//! moved on meanwhile, that late store must not land on the new holder's
//! word. A slot stays with its thread until the thread itself sees it lost
//! the bias (or its process dies), so a late store lands on its own slot.
//! Threads that never come back keep their slot until their process ends;
//! with all [`BIAS_SLOTS`](crate::layout::BIAS_SLOTS) taken, no more biases are granted and the lock
//! works the usual way.
//!
//! # Crashes
//!
//! Who is dead is decided per thread ([`multiproc_core::owner`]): slots and
//! the owner word hold thread identities.
//!
//! - A biased thread dead inside: the revoker finds `busy` odd for a whole
//!   [`LIVENESS_SLICE`], asks whether the slot's thread lives, frees the slot
//!   and reports `Recovered`, so the ring repairs as for a dead owner.
//! - A biased thread that died between operations is revoked like a live
//!   one (its `busy` is even); its slot is handed out again later.
//! - A revoker (or a time-limited taker giving the lock back) that dies
//!   anywhere leaves its own identity in the owner word or `BIASED`: the next
//!   waiter takes over and settles again, as above.
//! - A thread that dies granting itself the bias, after storing the token
//!   but before the owner word, is a dead owner whose token names a slot
//!   nobody is inside by: its successor's wait ends at once.
//!
//! # Time-limited takers
//!
//! A `try_` or timed operation that revokes and then finds the biased
//! thread inside for longer than it may wait gives the lock back as it
//! found it: token restored (without [`REVOKING`]), owner [`BIASED`]. Had
//! the biased thread meanwhile seen the revoking token and given its slot
//! up, the restored token names a free slot: harmless, since slots are
//! handed out only by whoever holds the owner word, and the next taker
//! revokes it at once.

use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use multiproc_core::futex::{self, SpinWait};

use crate::fence::{kernel_has_membarrier, light_fence};
use crate::layout::{Bias, BiasSlot};
use crate::owner::{BIASED, LIVENESS_SLICE, Locked, RobustLock, owner_alive, thread_id};
use crate::wake::{notify, prepare_sleep, sleep_until};

/// Set in [`Bias::token`] beside the slot number while a new holder of the
/// owner word waits for the biased thread to step out (see `settle`).
pub(crate) const REVOKING: u32 = 1 << 31;

/// Consecutive takes by one thread that earn it the bias, at first.
const GRANT_AFTER: u32 = 64;
/// The most the threshold grows to after early revocations.
const GRANT_AFTER_MAX: u32 = 1 << 16;

/// Set in a process's environment to a number `n` (at least 1), makes its
/// threads earn a bias after `n` takes in a row, always, with no doubling
/// after early revocations: a diagnostic, and how the chaos test makes
/// biases change hands all the time.
pub(crate) const BIAS_AFTER_ENV: &str = "MULTIPROC_BIAS_AFTER";

/// [`BIAS_AFTER_ENV`] as read once per process: 0 = not read yet,
/// `u32::MAX` = not set.
static FIXED_THRESHOLD: AtomicU32 = AtomicU32::new(0);

#[inline]
fn fixed_threshold() -> Option<u32> {
    let n = match FIXED_THRESHOLD.load(Ordering::Relaxed) {
        0 => read_fixed_threshold(),
        n => n,
    };
    (n != u32::MAX).then_some(n)
}

/// Out of line and cold: the environment lookup runs once per process and
/// has no place in the code of `unlock`, which every put and get runs.
#[cold]
#[inline(never)]
fn read_fixed_threshold() -> u32 {
    let n = std::env::var(BIAS_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(u32::MAX, |v| v.clamp(1, GRANT_AFTER_MAX));
    FIXED_THRESHOLD.store(n, Ordering::Relaxed);
    n
}

/// Without `membarrier`, how long a revoker waits after clearing the token
/// before it trusts an even `busy` (see [`revoke_fence`]).
const REVOKE_GRACE: Duration = Duration::from_millis(10);

/// How a lock is held, which decides how it is given back: through the
/// owner word (0) or by the bias of slot `token - 1` (`token`).
///
/// One word, not an enum with fields: guards holding it are returned
/// through memory, and a wide load of narrow fields just stored waits for
/// the store buffer to drain (a failed store-to-load forward), which costs
/// as much as the locked instruction the bias saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hold(u32);

impl Hold {
    /// Held through the owner word.
    pub(crate) const OWNER: Self = Self(0);

    /// The bias token, if held by the bias.
    #[inline]
    pub(crate) fn token(self) -> Option<u32> {
        (self.0 != 0).then_some(self.0)
    }
}

/// What came of [`RobustLock::revoke`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Revoke {
    /// Someone else took the owner word from [`BIASED`] first: look again.
    Raced,
    /// The lock is ours: `Recovered` when the biased thread died inside.
    Taken(Locked),
    /// The wait for the biased thread to step out ran out: the lock went
    /// back to the bias.
    GaveBack,
}

/// A bias grant recorded in the process: `tid << 32 | token`.
const fn grant_word(tid: u32, token: u32) -> u64 {
    ((tid as u64) << 32) | token as u64
}

impl Bias {
    fn slot(&self, token: u32) -> Option<&BiasSlot> {
        self.slots.get((token as usize).wrapping_sub(1))
    }

    /// After a revocation, or a grant that found no slot: waits half as
    /// long for the next grant when the last bias lasted (`lasted`), twice
    /// as long when it did not.
    fn adapt(&self, lasted: bool) {
        let threshold = self.threshold();
        let next = if lasted {
            (threshold / 2).max(GRANT_AFTER)
        } else {
            threshold.saturating_mul(2).min(GRANT_AFTER_MAX)
        };
        self.grant_after.store(next, Ordering::Relaxed);
    }

    fn threshold(&self) -> u32 {
        if let Some(fixed) = fixed_threshold() {
            return fixed;
        }
        match self.grant_after.load(Ordering::Relaxed) {
            0 => GRANT_AFTER,
            n => n.clamp(GRANT_AFTER, GRANT_AFTER_MAX),
        }
    }
}

/// Clears a revoked bias for good: a full barrier on every CPU running a
/// registered process (`MEMBARRIER_CMD_GLOBAL_EXPEDITED`; issuing it needs
/// no registration of the caller). Without it (a seccomp filter that
/// refuses the call in this process while the biased one has it, or
/// [`NO_MEMBARRIER_ENV`](crate::fence::NO_MEMBARRIER_ENV), which is how the tests
/// cover this), the revoker waits [`REVOKE_GRACE`] instead: a CPU drains its
/// store buffer in far less while it runs, and at once when it switches
/// tasks.
///
/// # References
///  - [membarrier(2)](https://man7.org/linux/man-pages/man2/membarrier.2.html)
fn revoke_fence() {
    fence(Ordering::SeqCst);
    let fenced = kernel_has_membarrier()
        && rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited).is_ok();
    if !fenced {
        std::thread::sleep(REVOKE_GRACE);
        fence(Ordering::SeqCst);
    }
}

impl RobustLock<'_> {
    /// Enters by this thread's bias, if it has one: no locked instruction.
    #[inline]
    pub(crate) fn enter_biased(&self, me: u64) -> Option<Hold> {
        let grant = self.mine.load(Ordering::Relaxed);
        if grant == 0 {
            return None;
        }
        let (tid, token) = ((grant >> 32) as u32, grant as u32);
        if tid != thread_id() {
            return None;
        }
        let slot = self.bias.slot(token)?;
        // Our slot still (it stays ours until we give it up or die), and
        // not entered already by an operation this thread has open.
        if slot.owner.load(Ordering::Relaxed) != me || slot.tid.load(Ordering::Relaxed) != tid {
            return None;
        }
        let idle = slot.busy.load(Ordering::Relaxed);
        if idle & 1 != 0 {
            return None;
        }
        let busy = idle.wrapping_add(1);
        slot.busy.store(busy, Ordering::Relaxed);
        // SYNC: store-then-load pair with the token clear + `revoke_fence` +
        // `busy` load in `revoke`: one side sees the other (module docs).
        light_fence();
        if self.bias.token.load(Ordering::Acquire) == token {
            return Some(Hold(token));
        }
        self.lost_bias(slot, busy, grant);
        None
    }

    /// The bias went to someone else while this thread was away: step out
    /// and give the slot back.
    #[cold]
    fn lost_bias(&self, slot: &BiasSlot, busy: u32, grant: u64) {
        // SYNC: Release, for a revoker waiting on `busy` (Acquire).
        slot.busy.store(busy.wrapping_add(1), Ordering::Release);
        notify(self.word);
        // Ours alone until this store; whoever hands it out next holds the
        // owner word and reads it free.
        slot.owner.store(0, Ordering::Release);
        let _ = self
            .mine
            .compare_exchange(grant, 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Leaves an operation entered by the bias.
    #[inline]
    pub(crate) fn leave_biased(&self, token: u32) {
        if let Some(slot) = self.bias.slot(token) {
            // Only this thread writes `busy`: the load sees its own store.
            let busy = slot.busy.load(Ordering::Relaxed);
            // SYNC: Release pairs with the revoker's Acquire load of `busy`:
            // it sees everything written inside.
            slot.busy.store(busy.wrapping_add(1), Ordering::Release);
        }
        notify(self.word);
    }

    /// Counts one more take by this thread; whether it has now earned the
    /// bias. Called by the owner-word holder as it unlocks.
    #[inline]
    pub(crate) fn earned_bias(&self, me: u64, tid: u32) -> bool {
        let b = self.bias;
        let streak = if b.streak_owner.load(Ordering::Relaxed) == me
            && b.streak_tid.load(Ordering::Relaxed) == tid
        {
            b.streak.load(Ordering::Relaxed).saturating_add(1)
        } else {
            b.streak_owner.store(me, Ordering::Relaxed);
            b.streak_tid.store(tid, Ordering::Relaxed);
            1
        };
        b.streak.store(streak, Ordering::Relaxed);
        streak >= b.threshold()
    }

    /// Unlocks by biasing the lock to this thread; `false` when no slot is
    /// free (the lock stays held: the caller unlocks it the usual way).
    #[cold]
    pub(crate) fn grant(&self, me: u64, tid: u32) -> bool {
        let b = self.bias;
        let owned = |s: &BiasSlot| {
            s.owner.load(Ordering::Relaxed) == me && s.tid.load(Ordering::Relaxed) == tid
        };
        let free = |s: &BiasSlot| s.owner.load(Ordering::Acquire) == 0;
        let index = b
            .slots
            .iter()
            .position(owned)
            .or_else(|| b.slots.iter().position(free))
            .or_else(|| {
                b.slots
                    .iter()
                    .position(|s| !owner_alive(s.owner.load(Ordering::Relaxed)))
            });
        let Some(index) = index else {
            // Every slot is with a live thread: look again after a longer
            // streak, not on every unlock.
            b.streak.store(0, Ordering::Relaxed);
            b.adapt(false);
            return false;
        };
        let slot = &b.slots[index];
        if !owned(slot) {
            // A free slot, or a dead thread's: nobody else writes it now.
            slot.busy.store(0, Ordering::Relaxed);
            slot.tid.store(tid, Ordering::Relaxed);
            slot.owner.store(me, Ordering::Relaxed);
        }
        let token = index as u32 + 1;
        b.granted_at
            .store(slot.busy.load(Ordering::Relaxed), Ordering::Relaxed);
        b.streak.store(0, Ordering::Relaxed);
        self.mine.store(grant_word(tid, token), Ordering::Relaxed);
        b.token.store(token, Ordering::Relaxed);
        // SYNC: Release: whoever takes the owner word from BIASED (Acquire)
        // sees the token, the slot and everything written under the lock.
        self.owner.store(BIASED, Ordering::Release);
        notify(self.word);
        true
    }

    /// Takes the lock from its bias: takes the owner word, then waits for
    /// the biased thread as [`settle`](Self::settle) does.
    pub(crate) fn revoke(&self, me: u64, sleep: bool, deadline: Option<Instant>) -> Revoke {
        // SYNC: Acquire pairs with the Release store of BIASED in `grant`.
        if self
            .owner
            .compare_exchange(BIASED, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Revoke::Raced;
        }
        match self.settle(sleep, deadline) {
            Ok(true) => Revoke::Taken(Locked::Recovered),
            Ok(false) => Revoke::Taken(Locked::Clean),
            Err(()) => Revoke::GaveBack,
        }
    }

    /// Run by a new holder of the owner word that took it from [`BIASED`]
    /// or from a dead owner (which may have died revoking, or granting):
    /// closes a bias left in place and waits for its thread to step out.
    /// `Ok(true)` when that thread died inside; `Err(())` when the wait ran
    /// out, with the lock given back to the bias.
    ///
    /// The token keeps naming the slot, with [`REVOKING`] set, until the
    /// wait is over: a holder that dies anywhere in here leaves the next one
    /// the slot to wait for, so a takeover can never enter beside a biased
    /// thread that is still inside.
    pub(crate) fn settle(&self, sleep: bool, deadline: Option<Instant>) -> Result<bool, ()> {
        let b = self.bias;
        let token = b.token.load(Ordering::Acquire) & !REVOKING;
        if token == 0 {
            return Ok(false);
        }
        let Some(slot) = b.slot(token) else {
            // A corrupt token: nobody can be inside by it.
            b.token.store(0, Ordering::Relaxed);
            return Ok(false);
        };
        // SYNC: store-then-load pair with `enter_biased` (module docs): the
        // biased thread either sees this value, which is not its token, or
        // its odd `busy` is visible to `wait_out` after the fence.
        b.token.store(token | REVOKING, Ordering::Relaxed);
        revoke_fence();
        match self.wait_out(slot, sleep, deadline) {
            Ok(recovered) => {
                // A dead thread's slot was just reset: nothing to count.
                if !recovered {
                    let entries = slot
                        .busy
                        .load(Ordering::Relaxed)
                        .wrapping_sub(b.granted_at.load(Ordering::Relaxed))
                        / 2;
                    b.adapt(entries >= b.threshold());
                }
                // Only now: nobody is inside by the slot, and nobody can
                // enter by it (the token is not theirs).
                b.token.store(0, Ordering::Relaxed);
                Ok(recovered)
            }
            Err(()) => {
                b.token.store(token, Ordering::Relaxed);
                // SYNC: Release, as in `grant`.
                self.owner.store(BIASED, Ordering::Release);
                notify(self.word);
                Err(())
            }
        }
    }

    /// Waits until `slot`'s thread is not inside; `Ok(true)` when it died
    /// inside (its slot is freed).
    fn wait_out(
        &self,
        slot: &BiasSlot,
        sleep: bool,
        deadline: Option<Instant>,
    ) -> Result<bool, ()> {
        // SYNC: Acquire pairs with the Release `busy` store of `leave_biased`.
        let out = || slot.busy.load(Ordering::Acquire) & 1 == 0;
        let mut spin = SpinWait::new();
        loop {
            if out() {
                return Ok(false);
            }
            if !spin.spin() {
                break;
            }
        }
        if !sleep {
            return Err(());
        }
        // Ask the kernel about the thread only after a whole slice passed
        // with it inside: `/proc` reads cost microseconds.
        let mut slice_end = Instant::now() + LIVENESS_SLICE;
        loop {
            let v = prepare_sleep(self.word.futex);
            // SYNC: re-check after `prepare_sleep`; pairs with the `busy`
            // store + `notify` in `leave_biased`.
            if out() {
                return Ok(false);
            }
            let until = sleep_until(Some(deadline.map_or(slice_end, |d| d.min(slice_end))));
            futex::wait(self.word.futex, v, until);
            if out() {
                return Ok(false);
            }
            let now = Instant::now();
            let expired = deadline.is_some_and(|d| now >= d);
            // At the deadline too: a wait no longer than a slice (timed
            // operations, `close`, and consumers sealing a close) must also
            // find a thread that died inside, or it gives up on it for ever.
            if now >= slice_end || expired {
                // SYNC: Acquire pairs with the Release store of 0 in
                // `lost_bias`, which comes after the thread's even `busy`:
                // a slot given back is a thread that left, not a dead one
                // (the model in `tests/loom.rs` found a live thread
                // "recovered" from when this read 0 as dead).
                let owner = slot.owner.load(Ordering::Acquire);
                if owner == 0 {
                    return Ok(false);
                }
                if !owner_alive(owner) {
                    // Dead inside: nobody writes the slot any more.
                    slot.busy.store(0, Ordering::Relaxed);
                    slot.owner.store(0, Ordering::Release);
                    return Ok(true);
                }
                slice_end = now + LIVENESS_SLICE;
            }
            if expired {
                return Err(());
            }
        }
    }

    /// Whether a thread is inside now, by the owner word or by a bias (for
    /// waiters deciding whether the other side is in the middle of an
    /// operation).
    pub(crate) fn in_use(&self) -> bool {
        let owner = self.owner.load(Ordering::Relaxed);
        (owner != 0 && owner != BIASED)
            || self
                .bias
                .slots
                .iter()
                .any(|s| s.busy.load(Ordering::Relaxed) & 1 != 0)
    }

    /// Whether the process `who` is inside now, by the owner word or by a
    /// bias. SYNC: a `false` synchronizes with its unlock or its leaving
    /// (Acquire loads, `SeqCst`).
    pub(crate) fn held_by(&self, who: u64) -> bool {
        self.owner.load(Ordering::SeqCst) == who
            || self.bias.slots.iter().any(|s| {
                s.busy.load(Ordering::SeqCst) & 1 != 0 && s.owner.load(Ordering::SeqCst) == who
            })
    }
}

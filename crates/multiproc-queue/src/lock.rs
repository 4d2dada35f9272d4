//! The two robust locks of a queue (producer side, consumer side) and the
//! futex notification helpers.
//!
//! A lock is an `AtomicU64` owner word (the holder's packed
//! [`ProcessIdentity`], 0 = free) plus an `AtomicU32` futex word whose bit 0
//! says "somebody sleeps". Because the owner is a process identity (pid +
//! start time), a waiter that has slept for [`LIVENESS_SLICE`] without the
//! owner changing asks the kernel whether the owner still lives, and takes
//! the lock over from a dead one. The caller then repairs what the dead
//! holder left half done (see `ring.rs`).
//!
//! | owner word | meaning | who changes it |
//! |---|---|---|
//! | 0 | free | a locker, by CAS 0 → its identity (`Acquire`) |
//! | live identity | held | the holder, by swap → 0 (`SeqCst`) |
//! | dead identity | held by a dead process | a waiter, by CAS dead → its identity, after `is_alive()` said no |
//!
//! The only module-level unsafe is the `pthread_atfork` registration that
//! keeps the cached identity right in forked children.
#![allow(unsafe_code)]

use multiproc_core::ProcessIdentity;
use multiproc_core::futex::{self, SpinWait, WaitOutcome};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a waiter sleeps before it checks whether the process it waits
/// on is still alive. A dead owner is noticed within this time; a live one
/// costs its waiters one `/proc` read per slice (a few µs).
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(20);

/// This process's packed identity, 0 until first read; cleared in forked
/// children by the `pthread_atfork` handler.
static ME: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn forget_identity_in_child() {
    // Async-signal-safe: one atomic store.
    ME.store(0, Ordering::Relaxed);
}

/// This process's identity, packed (never 0). Costs one load after the first
/// call; `getpid` is a real system call and too slow for the hot path.
#[inline]
pub(crate) fn me() -> u64 {
    let cached = ME.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    me_slow()
}

#[cold]
fn me_slow() -> u64 {
    ATFORK.call_once(|| {
        // SAFETY: registers a child handler that only performs an atomic
        // store (async-signal-safe, no allocation, no locks); the handler is
        // a plain `extern "C" fn` that lives for the whole program.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_identity_in_child)) };
        debug_assert_eq!(rc, 0, "pthread_atfork failed");
    });
    let packed = ProcessIdentity::current().to_u64();
    ME.store(packed, Ordering::Relaxed);
    packed
}

/// Whether the process packed in `owner` still runs. An unpackable (corrupt)
/// value counts as dead, so its lock can be taken over.
pub(crate) fn owner_alive(owner: u64) -> bool {
    ProcessIdentity::from_u64(owner).is_some_and(|id| id.is_alive())
}

/// Wakes every sleeper on `word` if bit 0 says there are any. Called after
/// the change the sleepers wait for, with that change made `SeqCst` (or
/// followed by a `SeqCst` operation), so the Dekker pair with
/// [`prepare_sleep`] cannot both miss.
#[inline]
pub(crate) fn notify(word: &AtomicU32) {
    // SYNC: pairs with the SeqCst `fetch_or` in `prepare_sleep`: either the
    // sleeper's re-check sees our change, or we see its bit here.
    let v = word.load(Ordering::SeqCst);
    if v & 1 != 0 {
        notify_slow(word, v);
    }
}

#[cold]
fn notify_slow(word: &AtomicU32, v: u32) {
    // v + 1 clears bit 0 and bumps the sequence. A failed CAS means another
    // waker already bumped it (and woke everybody).
    if word
        .compare_exchange(v, v.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed)
        .is_ok()
    {
        futex::wake_all(word);
    }
}

/// Bumps `word` and wakes everybody, unconditionally (close).
pub(crate) fn notify_all(word: &AtomicU32) {
    word.fetch_add(2, Ordering::SeqCst);
    futex::wake_all(word);
}

/// Registers a sleeper on `word`; returns the value to pass to
/// [`futex::wait`] after re-checking the condition.
#[inline]
pub(crate) fn prepare_sleep(word: &AtomicU32) -> u32 {
    // SYNC: pairs with the SeqCst load in `notify`.
    word.fetch_or(1, Ordering::SeqCst) | 1
}

/// Outcome of taking a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Taken from a free lock.
    Clean,
    /// Taken over from a dead holder.
    Recovered,
}

/// A robust lock over two words in the segment; see the module docs.
pub(crate) struct RobustLock<'a> {
    pub owner: &'a AtomicU64,
    pub word: &'a AtomicU32,
}

impl RobustLock<'_> {
    /// One CAS: the uncontended fast path.
    #[inline]
    pub(crate) fn try_lock(&self, me: u64) -> bool {
        // SYNC: Acquire pairs with the SeqCst swap in `unlock` of the previous
        // holder: we see everything it wrote under the lock.
        self.owner
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock: spins, then (if `sleep`) sleeps until `deadline`,
    /// taking it over from a dead holder. `Err(())` when the deadline passed
    /// or, with `sleep == false`, the spin budget ran out.
    #[inline]
    pub(crate) fn lock(
        &self,
        me: u64,
        sleep: bool,
        deadline: Option<Instant>,
    ) -> Result<Locked, ()> {
        if self.try_lock(me) {
            return Ok(Locked::Clean);
        }
        self.lock_slow(me, sleep, deadline)
    }

    #[cold]
    fn lock_slow(&self, me: u64, sleep: bool, deadline: Option<Instant>) -> Result<Locked, ()> {
        let mut spin = SpinWait::new();
        loop {
            let owner = self.owner.load(Ordering::Relaxed);
            if owner == 0 && self.try_lock(me) {
                return Ok(Locked::Clean);
            }
            if !spin.spin() {
                break;
            }
        }
        // Ask the kernel about the holder only after a whole slice passed
        // without it letting go: `/proc` reads cost microseconds.
        let mut suspect = !sleep;
        loop {
            let owner = self.owner.load(Ordering::Relaxed);
            if owner != 0 && std::mem::take(&mut suspect) && !owner_alive(owner) {
                // SYNC: Acquire, as in `try_lock`; a dead process's stores are
                // all visible (its exit went through the kernel, which we
                // just asked about it).
                if self
                    .owner
                    .compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(Locked::Recovered);
                }
                continue;
            }
            if !sleep {
                return Err(());
            }
            let v = prepare_sleep(self.word);
            // SYNC: SeqCst re-check after registering, pairs with the SeqCst
            // swap in `unlock`.
            let owner = self.owner.load(Ordering::SeqCst);
            if owner == 0 {
                if self.try_lock(me) {
                    return Ok(Locked::Clean);
                }
                continue;
            }
            let slice = Instant::now() + LIVENESS_SLICE;
            let until = match deadline {
                Some(d) if d < slice => Some(d),
                _ => Some(slice),
            };
            let outcome = futex::wait(self.word, v, until);
            if outcome == WaitOutcome::TimedOut {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return if self.try_lock(me) {
                        Ok(Locked::Clean)
                    } else {
                        Err(())
                    };
                }
                suspect = true;
            }
        }
    }

    /// Releases the lock and wakes sleepers, if any.
    #[inline]
    pub(crate) fn unlock(&self) {
        // SYNC: SeqCst swap: Release for the next holder's Acquire CAS, and
        // the first half of the Dekker pair with `prepare_sleep` + SeqCst
        // re-check in `lock_slow`.
        self.owner.swap(0, Ordering::SeqCst);
        notify(self.word);
    }
}

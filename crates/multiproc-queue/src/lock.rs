//! The two robust locks of a queue (producer side, consumer side) and the
//! futex notification helpers.
//!
//! A lock is an `AtomicU64` owner word (the holding thread's packed
//! [`ThreadIdentity`], 0 = free) plus an `AtomicU32` futex word whose bit 0
//! says "somebody sleeps". Because the owner is a thread identity (thread
//! id + start time), a waiter that has slept for [`LIVENESS_SLICE`] without
//! the owner changing asks the kernel whether that thread still lives, and
//! takes the lock over from a dead one. A thread, not its process: a process
//! whose main thread has exited while another thread puts is alive, and its
//! put is not cut short. The caller then repairs what the dead
//! holder left half done (see `ring.rs`).
//!
//! | owner word | meaning | who changes it |
//! |---|---|---|
//! | 0 | free | a locker, by CAS 0 → its identity (`Acquire`) |
//! | live identity | held | the holder, by a store of 0 (`Release`) |
//! | dead identity | held by a dead thread | a waiter, by CAS dead → its identity, after `is_alive()` said no; then it settles a bias left in place (`bias.rs`) |
//! | [`BIASED`] | biased to a thread (see `bias.rs`) | a waiter, by CAS → its identity, then it revokes the bias |
//!
//! The only module-level unsafe is the `pthread_atfork` registration that
//! keeps the fence mode right in forked children.
#![allow(unsafe_code)]

pub(crate) use crate::bias::BIASED;
use crate::bias::{Hold, thread_id};
use crate::layout::Bias;
use multiproc_core::ThreadIdentity;
use multiproc_core::futex::{self, SpinWait, WaitOutcome};
use std::sync::Once;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering, compiler_fence, fence};
use std::time::{Duration, Instant};

/// How long a waiter sleeps before it checks whether the thread it waits
/// on is still alive. A dead owner is noticed within this time; a live one
/// costs its waiters one `/proc` read per slice (a few µs).
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(20);

static ATFORK: Once = Once::new();

/// How this process's fast paths order a store before a load (see
/// [`light_fence`]): not decided yet (0), by the sleepers' `membarrier`
/// ([`ASYMMETRIC`]), or by a full fence of their own ([`SYMMETRIC`]).
/// Per process: reset in forked children, which register again.
static FAST_MODE: AtomicU8 = AtomicU8::new(0);
const ASYMMETRIC: u8 = 1;
const SYMMETRIC: u8 = 2;

/// Set (to anything) in a process's environment, makes it ignore
/// `membarrier(2)`: its fast paths use full fences, its sleepers re-check
/// every millisecond, and it revokes biases by waiting (see `bias.rs`).
pub(crate) const NO_MEMBARRIER_ENV: &str = "MULTIPROC_NO_MEMBARRIER";

/// Whether this process can issue `MEMBARRIER_CMD_GLOBAL_EXPEDITED`
/// (1 = yes, 2 = no, 0 = not asked yet).
static HEAVY: AtomicU8 = AtomicU8::new(0);

extern "C" fn forget_fences_in_child() {
    // Async-signal-safe: an atomic store only. (The identity caches are
    // forgotten by `multiproc_core::owner`'s own handler.)
    FAST_MODE.store(0, Ordering::Relaxed);
}

/// The calling thread's identity, packed (never 0): what the owner word,
/// bias slots and fragment records hold. A lock is held by a thread, and
/// only that thread's death leaves it half done; see
/// [`multiproc_core::owner`] for the one rule for "dead". One thread-local
/// load after the first call.
#[inline]
pub(crate) fn me() -> u64 {
    if FAST_MODE.load(Ordering::Relaxed) == 0 {
        prepare_fences();
    }
    ThreadIdentity::current().to_u64()
}

/// First use in this process (or in a forked child): decide how the fast
/// paths fence.
#[cold]
fn prepare_fences() {
    register_atfork();
    if FAST_MODE.load(Ordering::Relaxed) == 0 {
        register_fences(Threads::Count);
    }
}

/// Keeps the per-process fence mode right in forked children, which are
/// not registered with `membarrier`.
fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: as `multiproc_core::process::at_fork_child` requires, the
        // handler only performs an atomic store (async-signal-safe, no
        // allocation, no locks) and cannot panic.
        let registered = unsafe { multiproc_core::process::at_fork_child(forget_fences_in_child) };
        debug_assert!(registered.is_ok(), "pthread_atfork failed");
    });
}

/// What [`register_fences`] may assume about the process's threads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Threads {
    /// Look: register at once if there is one thread, else in the
    /// background.
    Count,
    /// Register at once, whatever it costs (immediate while the process is
    /// single-threaded).
    Wait,
}

/// Whether the kernel offers `MEMBARRIER_CMD_GLOBAL_EXPEDITED` to this
/// process; asked once per executable image (forked children inherit the
/// answer, which cannot differ for them).
pub(crate) fn kernel_has_membarrier() -> bool {
    if HEAVY.load(Ordering::Relaxed) == 0 {
        use rustix::thread::{MembarrierCommand, membarrier_query};
        // A diagnostic switch (and what the tests use to cover the
        // fallback): behave as if the kernel had no `membarrier`.
        let query = if std::env::var_os(NO_MEMBARRIER_ENV).is_some() {
            rustix::thread::MembarrierQuery::empty()
        } else {
            membarrier_query()
        };
        let usable = query.contains_command(MembarrierCommand::GlobalExpedited)
            && query.contains_command(MembarrierCommand::RegisterGlobalExpedited);
        HEAVY.store(if usable { 1 } else { 2 }, Ordering::Relaxed);
    }
    HEAVY.load(Ordering::Relaxed) == 1
}

/// `membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)`: lets sleepers in
/// other processes run a memory barrier on our CPUs, so our fast paths need
/// none (see [`light_fence`]).
///
/// # References
///  - [membarrier(2)](https://man7.org/linux/man-pages/man2/membarrier.2.html)
fn register_fences(threads: Threads) {
    use rustix::thread::{MembarrierCommand, membarrier};
    // Full fences until registration is done: that is correct at any time.
    FAST_MODE.store(SYMMETRIC, Ordering::SeqCst);
    if !kernel_has_membarrier() {
        return;
    }
    // Registering a single-threaded process is immediate; one that already
    // runs several threads waits for an RCU grace period (about 16 ms
    // measured here, outside the benches: no bench times the
    // registration). The fast paths must not wait for that: then a thread
    // registers while they use full fences, and switches them to the light
    // fence once the kernel has the process registered. (Children started
    // by multiproc with descriptors in their arguments register before they
    // start any thread: see `prepare_process`.)
    let register = || {
        if membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok() {
            FAST_MODE.store(ASYMMETRIC, Ordering::SeqCst);
        }
    };
    if threads == Threads::Wait
        || std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
        || std::thread::Builder::new()
            .name("multiproc-membarrier".into())
            .spawn(register)
            .is_err()
    {
        register();
    }
}

/// See [`crate::prepare_process`].
pub(crate) fn prepare_process() {
    register_atfork();
    if FAST_MODE.load(Ordering::Relaxed) == 0 {
        register_fences(Threads::Wait);
    }
}

/// Whether this process's light fence is only a compiler fence (it is
/// registered with `membarrier`).
#[inline]
pub(crate) fn asymmetric() -> bool {
    FAST_MODE.load(Ordering::Relaxed) == ASYMMETRIC
}

/// The fast half of a store-then-load (Dekker) pair: between a waker's
/// store of the condition and its load of the futex word.
///
/// In a process registered with `membarrier` this is only a compiler
/// fence: a sleeper calls [`heavy_fence`] between its own store and load,
/// which runs a full barrier on every CPU running a registered process, so
/// either the waker's store is visible to the sleeper's re-check or the
/// sleeper's store is visible to the waker's load. That keeps locked
/// instructions (which wait for the store buffer to drain, and so for the
/// cache line the other process just read) off the per-message path.
/// Elsewhere it is a full fence.
#[inline]
pub(crate) fn light_fence() {
    if asymmetric() {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The slow half of a store-then-load pair, run by a waiter between
/// announcing itself and re-checking; see [`light_fence`].
///
/// # References
///  - [membarrier(2)](https://man7.org/linux/man-pages/man2/membarrier.2.html)
pub(crate) fn heavy_fence() {
    fence(Ordering::SeqCst);
    if kernel_has_membarrier()
        && rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited).is_err()
    {
        // Refused although announced (a seccomp filter, say): from now on
        // this process's sleepers re-check every millisecond instead.
        HEAVY.store(2, Ordering::Relaxed);
    }
}

/// How long a sleeper may sleep before re-checking its condition by itself:
/// forever normally; a short slice in a process that cannot issue
/// `membarrier` (for example under a seccomp filter), where a waker that
/// relies on it could otherwise be missed.
pub(crate) fn recheck_slice() -> Option<Duration> {
    (HEAVY.load(Ordering::Relaxed) != 1).then_some(Duration::from_millis(1))
}

/// How long a waiter naps (see [`nap`]) before it announces its sleep.
const NAP_PHASE: Duration = Duration::from_millis(1);
/// One nap: a timed sleep nobody has to end.
const NAP: Duration = Duration::from_micros(20);

/// Waits, between spinning and an announced sleep, in short timed sleeps
/// that nobody has to wake, while `busy` holds (the other side is in the
/// middle of an operation that will end the wait); returns `true` once
/// `ready` holds, `false` when `busy` stops holding first, or after
/// [`NAP_PHASE`] or at `deadline`. `word` is the futex word the waiter would
/// announce itself on; a change of it ends a nap early.
///
/// Why: announcing a sleep costs the sleeper a `membarrier` (an interrupt
/// on every CPU running a queue user, the partner's among them) and the
/// partner a `futex_wake`. A partner that copies a large message takes
/// longer than the spin but not long: it would pay both once per message
/// (measured: a third of the throughput of 1 MiB messages). A partner that
/// is not in the middle of anything may be gone for long; for that one the
/// announced sleep wakes sooner than a nap would end.
pub(crate) fn nap(
    word: &AtomicU32,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> bool,
    mut busy: impl FnMut() -> bool,
) -> bool {
    let end = Instant::now() + NAP_PHASE;
    let end = deadline.map_or(end, |d| d.min(end));
    loop {
        let v = word.load(Ordering::Relaxed);
        if ready() {
            return true;
        }
        let now = Instant::now();
        if now >= end || !busy() {
            return false;
        }
        futex::wait(word, v, Some((now + NAP).min(end)));
    }
}

/// `deadline`, shortened to [`recheck_slice`] from now when that applies.
pub(crate) fn sleep_until(deadline: Option<Instant>) -> Option<Instant> {
    match recheck_slice() {
        Some(slice) => {
            let soon = Instant::now() + slice;
            Some(deadline.map_or(soon, |d| d.min(soon)))
        }
        None => deadline,
    }
}

/// Whether the thread packed in `owner` still runs. An unpackable (corrupt)
/// value counts as dead, so its lock can be taken over.
pub(crate) fn owner_alive(owner: u64) -> bool {
    ThreadIdentity::from_u64(owner).is_some_and(|id| id.is_alive())
}

/// Wakes every sleeper on `word` if bit 0 says there are any. Called right
/// after the store that makes the sleepers' condition true; the
/// [`light_fence`] here and the [`heavy_fence`] in [`prepare_sleep`] make
/// sure the two sides cannot both miss each other.
#[inline]
pub(crate) fn notify(word: &AtomicU32) {
    light_fence();
    // SYNC: pairs with the `fetch_or` + `heavy_fence` in `prepare_sleep`:
    // either the sleeper's re-check sees our store, or we see its bit here.
    let v = word.load(Ordering::Relaxed);
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
/// [`futex::wait`] after re-checking the condition (which the caller must
/// do after this returns).
pub(crate) fn prepare_sleep(word: &AtomicU32) -> u32 {
    // SYNC: pairs with the `light_fence` + load in `notify`.
    let v = word.fetch_or(1, Ordering::SeqCst) | 1;
    heavy_fence();
    v
}

/// Outcome of taking a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Taken from a free lock.
    Clean,
    /// Taken over from a dead holder.
    Recovered,
}

/// A robust lock over words in the segment, with its bias; see the module
/// docs and `bias.rs`.
pub(crate) struct RobustLock<'a> {
    pub owner: &'a AtomicU64,
    pub word: &'a AtomicU32,
    pub bias: &'a Bias,
    /// This process's record of a bias granted to one of its threads
    /// (`tid << 32 | token`, 0 = none); per process, never shared.
    pub mine: &'a AtomicU64,
}

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
            if owner == BIASED
                && let Some(taken) = self.revoke(me, sleep, deadline)
            {
                return taken;
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
                    Some(taken) => return taken,
                    None => continue,
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
            let v = prepare_sleep(self.word);
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
            let outcome = futex::wait(self.word, v, until);
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

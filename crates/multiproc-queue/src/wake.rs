//! Sleeping and waking on the futex words of a queue without a lost
//! wake-up: a waker pays a load, a sleeper announces itself and re-checks
//! (see [`notify`] and [`prepare_sleep`]), and a waiter whose partner is
//! busy naps without announcing itself ([`nap`]).

use multiproc_core::doorbell::BellBoard;
use multiproc_core::futex;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::fence::{heavy_fence, light_fence, recheck_slice};

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
    busy: impl FnMut() -> bool,
) -> bool {
    // The word is read before each look at `ready`, so that a change
    // after the look ends the nap that follows.
    let seen = Cell::new(0);
    while_busy(
        deadline,
        || {
            seen.set(word.load(Ordering::Relaxed));
            ready()
        },
        busy,
        |end| {
            futex::wait(word, seen.get(), Some((Instant::now() + NAP).min(end)));
        },
    )
}

/// Spins while `busy` holds, for at most [`NAP_PHASE`] or until
/// `deadline`; returns `true` once `ready` holds, `false` when `busy` stops
/// holding or the time is up.
///
/// For a waiter that must answer the end of its partner's operation at
/// once rather than a [`NAP`] later, and whose partner runs on another CPU
/// (see [`partner_elsewhere`]): it pays with its own CPU meanwhile, and
/// yields none of it, since a yield to another task of this CPU can cost
/// a whole time slice.
pub(crate) fn spin_while(
    deadline: Option<Instant>,
    ready: impl FnMut() -> bool,
    busy: impl FnMut() -> bool,
) -> bool {
    while_busy(deadline, ready, busy, |_| std::hint::spin_loop())
}

/// What [`nap`] and [`spin_while`] share: until [`NAP_PHASE`] from now or
/// `deadline`, whichever comes first, and while `busy` holds, `pause`s
/// (given that end) between looks at `ready`.
fn while_busy(
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> bool,
    mut busy: impl FnMut() -> bool,
    mut pause: impl FnMut(Instant),
) -> bool {
    let end = Instant::now() + NAP_PHASE;
    let end = deadline.map_or(end, |d| d.min(end));
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= end || !busy() {
            return false;
        }
        pause(end);
    }
}

/// Records in `hint` the CPU this thread runs on (+ 1), for a partner's
/// [`partner_elsewhere`]; stores only a change.
pub(crate) fn note_cpu(hint: &AtomicU32) {
    let cpu = futex::current_cpu().wrapping_add(1);
    if hint.load(Ordering::Relaxed) != cpu {
        hint.store(cpu, Ordering::Relaxed);
    }
}

/// Whether the partner that last wrote `hint` (see [`note_cpu`]) ran on
/// another CPU than this thread runs on now: then spinning sees it finish
/// and takes nothing from it. A hint only (either may have moved since);
/// a wrong answer costs time, never correctness.
pub(crate) fn partner_elsewhere(hint: &AtomicU32) -> bool {
    let cpu = hint.load(Ordering::Relaxed);
    cpu != 0 && cpu != futex::current_cpu().wrapping_add(1)
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

/// Which doorbells of the queue's [`BellBoard`] a notify on a word rings:
/// one bit per futex word (see `ready.rs`).
pub(crate) mod bell {
    /// [`WaitLine::data`](crate::layout::WaitLine::data).
    pub(crate) const DATA: u32 = 1;
    /// [`WaitLine::space`](crate::layout::WaitLine::space).
    pub(crate) const SPACE: u32 = 2;
    /// [`JoinLine::join`](crate::layout::JoinLine::join).
    pub(crate) const JOIN: u32 = 4;
    /// [`WaitLine::prod_lock`](crate::layout::WaitLine::prod_lock).
    pub(crate) const PROD_LOCK: u32 = 8;
    /// [`WaitLine::cons_lock`](crate::layout::WaitLine::cons_lock).
    pub(crate) const CONS_LOCK: u32 = 16;
}

/// A futex word of the queue with the doorbells that wait on it: what a
/// notifier needs.
#[derive(Clone, Copy)]
pub(crate) struct Word<'a> {
    pub futex: &'a AtomicU32,
    pub bells: &'a BellBoard,
    /// The word's bit in [`bell`].
    pub bell: u32,
}

/// Wakes every sleeper on `word` if bit 0 says there are any, and rings
/// the doorbells armed for it. Called right after the store that makes the
/// sleepers' condition true; the [`light_fence`] here and the
/// [`heavy_fence`] in [`prepare_sleep`] make sure the two sides cannot both
/// miss each other. Async waiters set bit 0 as sleepers do (see `ready.rs`),
/// so with none of either this is one load.
#[inline]
pub(crate) fn notify(word: Word<'_>) {
    light_fence();
    // SYNC: pairs with the `fetch_or` + `heavy_fence` in `prepare_sleep`:
    // either the sleeper's re-check sees our store, or we see its bit here.
    let v = word.futex.load(Ordering::Relaxed);
    if v & 1 != 0 {
        notify_slow(word.futex, word.bells, word.bell, v);
    }
}

/// Takes the word's parts one by one: a `Word` passed by value goes
/// through memory, and copying it out of a lock just built on the stack
/// (its `u32` stored narrow, read back in a wide load) would stall every
/// `notify`, taken or not, on a failed store-to-load forward.
#[cold]
fn notify_slow(futex: &AtomicU32, bells: &BellBoard, bell: u32, v: u32) {
    // v + 1 clears bit 0 and bumps the sequence. A failed CAS means another
    // waker already bumped it (and woke everybody, doorbells included).
    if futex
        .compare_exchange(v, v.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed)
        .is_ok()
    {
        futex::wake_all(futex);
        // SYNC: after the CAS, which read the waiter's `prepare_sleep` RMW
        // (or a later one): its arming, before that RMW, is visible here.
        bells.ring(bell);
    }
}

/// Bumps `word` and wakes everybody, unconditionally (close).
pub(crate) fn notify_all(word: Word<'_>) {
    word.futex.fetch_add(2, Ordering::SeqCst);
    futex::wake_all(word.futex);
    word.bells.ring(word.bell);
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

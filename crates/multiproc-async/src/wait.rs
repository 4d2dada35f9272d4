//! The wait loop every future of the crate runs: the readiness protocol
//! (`multiproc_queue::Readiness`, `multiproc_sync::Readiness`), step by
//! step, over a [`Reactor`].

use multiproc_core::doorbell::Waiters;
use multiproc_core::futex::RECHECK;
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// How long a waiter spins before it arms the doorbell.
const SPIN: Duration = Duration::from_micros(5);
/// Pause instructions between two attempts while spinning.
const SPINS_PER_LOOK: u32 = 32;

use crate::{Reactor, poll_once, race};

/// An armed waiter of some object: how it announces itself (step 2).
pub(crate) trait Announce {
    /// What an announcement needs to know of where its round began.
    type Round;

    /// Step 1: where this round begins.
    fn round(&self) -> Self::Round;

    /// Sets the "someone sleeps" marks; with `lock`, the lock's too.
    fn announce(&self, lock: bool, round: &Self::Round);
}

impl Announce for multiproc_queue::Armed<'_> {
    /// Announcements are shared among the tasks of a process (see
    /// `multiproc_queue::Armed::announce`).
    type Round = multiproc_queue::Round;

    fn round(&self) -> multiproc_queue::Round {
        multiproc_queue::Armed::round(self)
    }

    fn announce(&self, lock: bool, round: &multiproc_queue::Round) {
        multiproc_queue::Armed::announce(self, lock, round);
    }
}

impl Announce for multiproc_sync::Armed<'_> {
    /// Each announcement is a few atomic operations: nothing to share.
    type Round = ();

    fn round(&self) {}

    fn announce(&self, _lock: bool, (): &()) {
        multiproc_sync::Armed::announce(self);
    }
}

/// What a wait loop waits on: the object's doorbell (`waiters`, registered
/// as `registration`), how to arm a waiter and how to tell that a lock is
/// in the way (`contended`; then a wait lasts at most `liveness`).
pub(crate) struct Bell<'a, R: Reactor> {
    pub waiters: &'a Waiters,
    pub registration: &'a R::Registration,
    pub liveness: Duration,
}

/// Calls `attempt` until it gives `Some`, waiting on the doorbell between
/// attempts. The first attempts are made before anything is armed,
/// spinning for a few microseconds: an object that is ready, or becomes
/// ready that soon, costs no system call.
///
/// # Errors
///
/// The reactor's error when it fails to wait.
pub(crate) async fn until<R: Reactor, A: Announce, V>(
    bell: Bell<'_, R>,
    arm: impl FnOnce() -> A,
    contended: impl Fn() -> bool,
    mut attempt: impl FnMut() -> Option<V>,
) -> io::Result<V> {
    if let Some(v) = attempt() {
        return Ok(v);
    }
    // As a blocking waiter does: a partner that answers within the spin
    // (a few microseconds) costs no doorbell, no system call on either
    // side, and no cross-CPU wake-up (tens of microseconds on an idle
    // machine). Bounded in time, never yielding the thread: the executor's
    // other tasks wait meanwhile.
    let spin_end = Instant::now() + SPIN;
    while Instant::now() < spin_end {
        for _ in 0..SPINS_PER_LOOK {
            std::hint::spin_loop();
        }
        if let Some(v) = attempt() {
            return Ok(v);
        }
    }
    // Step numbers are those of the `Readiness` docs.
    let armed = arm();
    let mut lock = contended();
    loop {
        // 1.
        let epoch = bell.waiters.epoch();
        let round = armed.round();
        // 2.
        armed.announce(lock, &round);
        // 3.
        if let Some(v) = attempt() {
            return Ok(v);
        }
        let now_contended = contended();
        if now_contended && !lock {
            lock = true;
            continue;
        }
        lock = now_contended;
        // 4. Registers the waker; a doorbell readable already was drained.
        let mut readable = pin!(R::readable(bell.registration));
        if let Poll::Ready(drained) = poll_once(readable.as_mut()).await {
            drained?;
            continue;
        }
        // 5. A drain by another task of this process since step 1 (or
        // running now) may have read the ring meant for this one.
        if bell.waiters.epoch() != epoch || epoch % 2 == 1 {
            continue;
        }
        // 6. Bounded: by the liveness slice while a lock is in the way (its
        // holder may die), else by `futex::RECHECK` (a notifier killed
        // between clearing the "someone sleeps" bit and its ring leaves
        // nobody to ring; found by the queue's `tests/loom_ready.rs`).
        let limit = if lock { bell.liveness } else { RECHECK };
        let mut outcome = Ok(());
        race(async { outcome = readable.await }, R::sleep(limit)).await;
        outcome?;
    }
}

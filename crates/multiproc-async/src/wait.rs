//! The wait loop every future of the crate runs: the protocol of
//! `multiproc_queue::Readiness`, step by step, over a [`Reactor`].

use multiproc_queue::{Interest, QueueError, Readiness};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// How long a waiter spins before it arms the doorbell.
const SPIN: Duration = Duration::from_micros(5);
/// Pause instructions between two attempts while spinning.
const SPINS_PER_LOOK: u32 = 32;

use crate::{Reactor, poll_once, race};

/// Calls `attempt` until it gives `Some`, waiting on `readiness`'s doorbell
/// (registered as `registration`) between attempts. The first attempts are
/// made before anything is armed, spinning for a few microseconds: a queue
/// that is ready, or becomes ready that soon, costs no system call.
///
/// # Errors
///
/// [`QueueError::Doorbell`] when the reactor fails to wait.
pub(crate) async fn until<R: Reactor, V>(
    readiness: &Readiness,
    registration: &R::Registration,
    interest: Interest,
    mut attempt: impl FnMut() -> Option<V>,
) -> Result<V, QueueError> {
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
    let armed = readiness.arm(interest);
    let mut lock = readiness.contended(interest);
    loop {
        // 1.
        let round = readiness.round();
        // 2.
        armed.announce(lock, &round);
        // 3.
        if let Some(v) = attempt() {
            return Ok(v);
        }
        let contended = readiness.contended(interest);
        if contended && !lock {
            lock = true;
            continue;
        }
        lock = contended;
        // 4. Registers the waker; a doorbell readable already was drained.
        let mut readable = pin!(R::readable(registration));
        if let Poll::Ready(drained) = poll_once(readable.as_mut()).await {
            drained.map_err(QueueError::Doorbell)?;
            continue;
        }
        // 5. A drain by another task of this process since step 1 (or
        // running now) may have read the ring meant for this one.
        if readiness.drained_since(&round) {
            continue;
        }
        // 6.
        if lock {
            let mut outcome = Ok(());
            race(
                async { outcome = readable.await },
                R::sleep(Readiness::LIVENESS_SLICE),
            )
            .await;
            outcome.map_err(QueueError::Doorbell)?;
        } else {
            readable.await.map_err(QueueError::Doorbell)?;
        }
    }
}

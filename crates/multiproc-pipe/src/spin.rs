//! How long a blocking receive on a socket retries non-blocking calls
//! before it sleeps in the kernel, learned from the waits before it.
//!
//! Sleeping costs the wake-up: a few µs when the peer shares this CPU
//! (the switch to it is what lets it go on), 20–80 µs on a virtual machine
//! when it runs on another, idle CPU, where a peer that keeps pace has the
//! next message ready (or room made) within a few µs. Spinning pays only
//! in the second case, and there it removes the wake-up. So a call that
//! would block retries for its budget, and the outcome sets the next
//! budget: success while spinning keeps (or grows) it, a spin that ran out
//! halves it, down to none. A peer on this CPU runs only when this side
//! yields (it does so on its first retry and every few after), and a yield
//! that took microseconds gave the CPU away: a success after one counts as
//! a spin that ran out, so there the budget is gone after a few waits;
//! then one wait in [`PROBE_EVERY`] spins, to notice when the peer has
//! moved to another CPU. Without a budget a call goes straight to the
//! blocking system call: nothing is added.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

/// Spin-loop hints between two tries of a spinning call.
const SPINS_PER_TRY: u32 = 32;
/// Every this many tries, a yield instead of the hints.
const YIELD_EVERY: u32 = 4;
/// A yield that took this long ran another task: the CPU is shared, and
/// a success after it counts as a spin that ran out.
const GAVE_AWAY: Duration = Duration::from_micros(3);

/// The first budget of a connection.
const START: Duration = Duration::from_micros(20);
/// The longest budget: about the cross-CPU wake-up it saves.
const MAX: Duration = Duration::from_micros(50);
/// A budget below this is none.
const MIN: Duration = Duration::from_micros(1);
/// Without a budget, one wait in this many spins for [`PROBE`].
const PROBE_EVERY: u32 = 256;
/// A probe's budget: as long as the longest budget, so that a probe can
/// see a peer that sleeps too through its wake-up (both sides without a
/// budget would otherwise stay so).
const PROBE: Duration = MAX;

/// A connection's spin budget for one direction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpinBudget {
    budget: Duration,
    /// Waits without a budget since the last probe.
    unprobed: u32,
}

impl Default for SpinBudget {
    fn default() -> Self {
        Self {
            budget: START,
            unprobed: 0,
        }
    }
}

impl SpinBudget {
    /// How long the wait that starts now spins, if at all.
    pub(crate) fn budget(&mut self) -> Option<Duration> {
        if !self.budget.is_zero() {
            return Some(self.budget);
        }
        self.unprobed += 1;
        if self.unprobed >= PROBE_EVERY {
            self.unprobed = 0;
            Some(PROBE)
        } else {
            None
        }
    }

    /// Data came after `waited` of spinning: the next wait spins at least
    /// twice that.
    pub(crate) fn hit(&mut self, waited: Duration) {
        self.budget = self.budget.max(waited * 2).clamp(MIN, MAX);
    }

    /// The spin ran out; the wait sleeps.
    pub(crate) fn miss(&mut self) {
        self.budget /= 2;
        if self.budget < MIN {
            self.budget = Duration::ZERO;
        }
    }
}

/// Runs `nowait` (a call that never blocks) until it does not say
/// `WouldBlock`, for `budget`'s current budget, and updates the budget;
/// `None` when there is no budget (`nowait` was not called) or it ran
/// out: the caller then makes the blocking call.
pub(crate) fn spin<T>(
    budget: &Cell<SpinBudget>,
    mut nowait: impl FnMut() -> io::Result<T>,
) -> Option<io::Result<T>> {
    let mut state = budget.get();
    let outcome = state.budget().and_then(|limit| {
        let start = Instant::now();
        let mut tries = 0u32;
        // A yield that gave the CPU away: the peer (or another task) shares
        // this CPU, where sleeping hands over as fast as spinning does.
        let mut shared = false;
        loop {
            if tries > 0 {
                // The first retry yields already: a peer on this CPU then
                // answers at once, not when the scheduler preempts the spin.
                if tries % YIELD_EVERY == 1 {
                    let before = Instant::now();
                    std::thread::yield_now();
                    shared |= before.elapsed() >= GAVE_AWAY;
                } else {
                    for _ in 0..SPINS_PER_TRY {
                        std::hint::spin_loop();
                    }
                }
            }
            tries += 1;
            match nowait() {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if start.elapsed() >= limit {
                        state.miss();
                        return None;
                    }
                }
                done => {
                    if shared {
                        state.miss();
                    } else {
                        state.hit(start.elapsed());
                    }
                    return Some(done);
                }
            }
        }
    });
    budget.set(state);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_take_the_budget_away_and_probes_bring_it_back() {
        let mut spin = SpinBudget::default();
        assert_eq!(spin.budget(), Some(START));
        for _ in 0..6 {
            spin.miss();
        }
        let probes = (0..PROBE_EVERY * 2)
            .filter(|_| spin.budget().is_some())
            .count();
        assert_eq!(probes, 2, "only probes spin without a budget");
        spin.hit(Duration::from_micros(3));
        assert_eq!(spin.budget(), Some(Duration::from_micros(6)));
        spin.hit(Duration::from_millis(1));
        assert_eq!(spin.budget(), Some(MAX), "capped");
    }
}

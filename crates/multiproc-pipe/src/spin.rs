//! How long a blocking receive on a socket retries non-blocking calls
//! before it sleeps in the kernel, learned from the waits before it. A
//! blocking send that finds its lane full (see `lane.rs`) waits for room
//! by the same rules, with a budget of its own, before it sends through
//! the socket.
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
//! moved to another CPU.
//!
//! Without a budget a call yields once and tries once more before the
//! blocking system call ([`SpinBudget::yielded`]). A peer on this CPU then
//! runs at once, a sender until the socket is full, an echo until it has
//! answered, and this side finds the data without having slept. Sleeping
//! instead can settle a pair on one CPU into each `send` waking the
//! receiver and handing it the CPU for the few messages there are, in about
//! half of the pairs (in the compare demo's Pipe table, 8 B on one CPU:
//! 0.58-0.62 M msg/s in five runs before this yield, 0.70 after). When the
//! yield ran another task and no data came, that task is not the peer, and
//! the calls go straight to sleep, where the data's arrival can wake this
//! side, until a probe finds the CPU shared again; the same after a yield
//! that lasted a whole time slice. After [`STRIKES`] such yields, for good.
//!
//! A wait also tells whether the peer shares this CPU
//! ([`SpinBudget::cpu_shared`]): what it waited for came after yields that
//! gave the CPU away. The lane's window (see `lane.rs`, "Pieces") is on
//! only then, and its own short wait, [`yield_for`], keeps the answer up
//! to date.

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

/// Whether a yield that took `took` may have run the peer: it gave the
/// CPU away ([`GAVE_AWAY`]), and not for a whole time slice ([`SLICE`]).
fn ran_the_peer(took: Duration) -> bool {
    (GAVE_AWAY..SLICE).contains(&took)
}

/// The first budget of a connection.
const START: Duration = Duration::from_micros(20);
/// The longest budget: about the cross-CPU wake-up it saves.
const MAX: Duration = Duration::from_micros(50);
/// A budget below this is none.
const MIN: Duration = Duration::from_micros(1);
/// A yield that took this long let another task run a whole time slice
/// (0.75 ms at least, by default): longer than a peer needs to fill a
/// socket or answer, and not worth waiting through on every receive.
const SLICE: Duration = Duration::from_millis(1);
/// Yields that ran another task to no use before a connection stops
/// yielding first.
const STRIKES: u8 = 3;
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
    /// Without a budget, yield once before sleeping.
    yield_first: bool,
    /// Yields that ran another task to no use (see [`Self::yielded`]).
    strikes: u8,
    /// The last wait that ended with data (or room) ended after yields
    /// that gave the CPU away: the peer shares this CPU.
    cpu_shared: bool,
}

impl Default for SpinBudget {
    fn default() -> Self {
        Self {
            budget: START,
            unprobed: 0,
            yield_first: true,
            strikes: 0,
            cpu_shared: false,
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
        self.cpu_shared = false;
    }

    /// Whether the last wait that ended with data (or room) ended after
    /// yields that gave the CPU away (see [`Self::shared`]): the peer
    /// runs on this CPU.
    pub(crate) fn cpu_shared(&self) -> bool {
        self.cpu_shared
    }

    /// The spin ran out; the wait sleeps.
    pub(crate) fn miss(&mut self) {
        self.budget /= 2;
        if self.budget < MIN {
            self.budget = Duration::ZERO;
        }
    }

    /// Whether a wait without a budget yields once first.
    pub(crate) fn yields_first(&self) -> bool {
        self.budget.is_zero() && self.yield_first
    }

    /// A wait without a budget yielded for `took` and then `found` data
    /// (or not). Another task ran (`took` at least [`GAVE_AWAY`]) and
    /// brought nothing: not the peer, so later waits sleep at once. A yield
    /// of a whole [`SLICE`] is not worth repeating either. Each such yield
    /// is a strike; after [`STRIKES`] the connection stops yielding first
    /// for good, so a task that hogs this CPU costs it a few time slices
    /// at most.
    pub(crate) fn yielded(&mut self, took: Duration, found: bool) {
        if found {
            self.cpu_shared = ran_the_peer(took);
        }
        if took >= SLICE || (!found && took >= GAVE_AWAY) {
            self.yield_first = false;
            self.strikes = self.strikes.saturating_add(1);
        }
    }

    /// A spin's yields handed the CPU over, the longest for `gave_away`,
    /// and data came after them: the CPU is shared, so the budget shrinks.
    /// If the yield was shorter than a time slice, what ran may have been
    /// the peer, and waits without a budget yield first again (unless
    /// yielding first has failed [`STRIKES`] times).
    pub(crate) fn shared(&mut self, gave_away: Duration) {
        self.miss();
        self.cpu_shared = ran_the_peer(gave_away);
        if gave_away < SLICE && self.strikes < STRIKES {
            self.yield_first = true;
        }
    }
}

/// Yields a receive (or a room wait) may take for a peer on this CPU to
/// move, in [`yield_for`].
const YIELDS_FOR_PEER: u32 = 8;

/// Yields, up to [`YIELDS_FOR_PEER`] times, running `nowait` after each
/// until it does not say `WouldBlock`: for a peer on this CPU to move
/// (the lane's window, see `lane.rs`). Records in `budget` whether the CPU
/// is still shared: the call succeeded after a yield that gave the CPU
/// away; not when it succeeded after a yield that came straight back (the
/// peer moved on another CPU) or never did. `None` when it never did.
pub(crate) fn yield_for<T>(
    budget: &Cell<SpinBudget>,
    mut nowait: impl FnMut() -> io::Result<T>,
) -> Option<io::Result<T>> {
    let mut state = budget.get();
    let mut outcome = None;
    for _ in 0..YIELDS_FOR_PEER {
        let before = Instant::now();
        std::thread::yield_now();
        let took = before.elapsed();
        match nowait() {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            done => {
                state.cpu_shared = ran_the_peer(took);
                outcome = Some(done);
                break;
            }
        }
    }
    if outcome.is_none() {
        state.cpu_shared = false;
    }
    budget.set(state);
    outcome
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
    if state.yields_first() {
        let before = Instant::now();
        std::thread::yield_now();
        let took = before.elapsed();
        let outcome = match nowait() {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => None,
            done => Some(done),
        };
        state.yielded(took, outcome.is_some());
        if outcome.is_some() {
            budget.set(state);
            return outcome;
        }
    }
    let outcome = state.budget().and_then(|limit| {
        let start = Instant::now();
        let mut tries = 0u32;
        // The longest yield that gave the CPU away: the peer (or another
        // task) shares this CPU, where sleeping hands over as fast as
        // spinning does.
        let mut gave_away = Duration::ZERO;
        loop {
            if tries > 0 {
                // The first retry yields already: a peer on this CPU then
                // answers at once, not when the scheduler preempts the spin.
                if tries % YIELD_EVERY == 1 {
                    let before = Instant::now();
                    std::thread::yield_now();
                    let took = before.elapsed();
                    if took >= GAVE_AWAY {
                        gave_away = gave_away.max(took);
                    }
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
                    if !gave_away.is_zero() {
                        state.shared(gave_away);
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

    #[test]
    fn the_cpu_counts_as_shared_after_yields_that_ran_the_peer() {
        let mut spin = SpinBudget::default();
        assert!(!spin.cpu_shared());
        spin.shared(Duration::from_micros(20));
        assert!(
            spin.cpu_shared(),
            "room came after yields that gave the CPU away"
        );
        spin.hit(Duration::from_micros(2));
        assert!(!spin.cpu_shared(), "room came while spinning");
        spin.shared(SLICE);
        assert!(
            !spin.cpu_shared(),
            "a whole time slice went to some other task"
        );
        spin.yielded(Duration::from_micros(40), true);
        assert!(spin.cpu_shared());
        spin.yielded(Duration::from_micros(40), false);
        assert!(
            spin.cpu_shared(),
            "a yield that found nothing tells nothing"
        );
        spin.yielded(Duration::from_nanos(300), true);
        assert!(
            !spin.cpu_shared(),
            "nothing else ran, and the room was there"
        );
    }

    #[test]
    fn yielding_for_the_peer_stops_at_success_or_after_a_few_yields() {
        let budget = Cell::new(SpinBudget::default());
        let mut calls = 0;
        let got = yield_for(&budget, || {
            calls += 1;
            if calls < 3 {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got.map(Result::unwrap), Some(3));
        let mut calls = 0u32;
        let got: Option<io::Result<()>> = yield_for(&budget, || {
            calls += 1;
            Err(io::ErrorKind::WouldBlock.into())
        });
        assert!(got.is_none());
        assert_eq!(calls, YIELDS_FOR_PEER);
        assert!(!budget.get().cpu_shared(), "the peer never moved");
    }

    #[test]
    fn waits_without_a_budget_yield_first_until_another_task_takes_the_yield() {
        let mut spin = SpinBudget::default();
        assert!(!spin.yields_first(), "a budget spins instead");
        for _ in 0..6 {
            spin.miss();
        }
        assert!(spin.yields_first());
        // Nobody else to run, or the peer ran and answered: keep yielding.
        spin.yielded(Duration::from_micros(1), false);
        spin.yielded(Duration::from_micros(300), true);
        assert!(spin.yields_first());
        // Another task ran and nothing came: sleep at once from now on.
        spin.yielded(Duration::from_micros(40), false);
        assert!(!spin.yields_first());
        // A spin that waited a whole time slice for its data proves nothing.
        spin.shared(SLICE);
        assert!(!spin.yields_first());
        // One whose yield came back sooner finds the peer on this CPU.
        spin.shared(Duration::from_micros(20));
        assert!(spin.yields_first());
        // A whole time slice went to another task: not worth it either.
        spin.yielded(SLICE, true);
        assert!(!spin.yields_first());
        // The third such yield ends yielding first for good.
        spin.shared(Duration::from_micros(20));
        spin.yielded(Duration::from_micros(40), false);
        spin.shared(Duration::from_micros(20));
        assert!(!spin.yields_first(), "three strikes");
    }
}

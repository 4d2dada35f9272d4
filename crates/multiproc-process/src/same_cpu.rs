//! Starting a forked child on the CPU its parent runs on, when the parent
//! is about to sleep until the child is done: always in
//! [`ProcessBuilder::run`](crate::ProcessBuilder::run), and in
//! [`ProcessBuilder::start`](crate::ProcessBuilder::start) when the thread's
//! habit says so.
//!
//! The kernel places a new process on the idlest CPU it finds. Often that
//! CPU is asleep, and waking it takes longer than a short child's whole
//! life, above all on virtual machines, where a sleeping virtual CPU first
//! has to be scheduled again by the host. So for the moment of `fork` the
//! forking thread narrows its CPU mask to the CPU it is on: the child
//! inherits that mask and starts there, and both give the mask back at once.
//! From then on the child is placed like any other task; only its first run
//! is on the parent's CPU, where the parent is about to wait for it.
//!
//! Measured on a 2-vCPU virtual machine, start + join of a no-op Fork child
//! in a loop: about 135 µs without this, about 95 µs with it, against 100 to
//! 115 µs for a bare `fork` + `waitpid` in the same program (a one-off
//! loop, pinned and unpinned builds). The bench for the same comparison is
//! `cargo bench -p multiproc-process --bench process -- process_start_join`
//! (`fork_run` pinned, `fork` unpinned at the time, `bare_fork_waitpid`):
//! 112–117, 154–159 and 117–122 µs in three runs then.
//!
//! It costs a parent that goes on working instead: it shares its CPU with
//! the child until the scheduler moves one of them, up to a scheduler tick
//! later. Two children burning 5 ms each, started one after the other and
//! then joined, took 8.0 ms per pair pinned against 5.3 ms unpinned; a child
//! burning 20 ms beside a parent doing the same, 23.8 against 20.6 ms
//! (measured with one-off timing loops of those two patterns, pinned and
//! unpinned builds; no bench in the repository runs them).
//!
//! So [`ProcessBuilder::start`](crate::ProcessBuilder::start) pins only
//! when this thread's last Fork child was joined at once ([`JoinHabit`]):
//! no other start in between, and `join` called within [`AT_ONCE`] of
//! `start` returning, less than waking an idle CPU costs. A thread that
//! starts children in batches, or works before it joins, gets the kernel's
//! placement; a wrong guess costs one child's first run. Measured with the
//! guess, in the same one-off loops: the start + join loop as pinned (about
//! 100 µs; `process_start_join/fork` in the bench above gave 101–109 µs),
//! the batches and the working parent as unpinned (5.3 and 20.5 ms).

use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// A `join` this soon after its `start` counts as waiting at once.
pub(crate) const AT_ONCE: Duration = Duration::from_micros(50);

/// What this thread did with the Fork children it started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JoinHabit {
    /// The last child started and not joined yet, and when `start` returned.
    pending: Option<(Pid, Instant)>,
    /// Whether the last child started was joined at once.
    at_once: bool,
}

impl JoinHabit {
    /// Nothing seen yet: children get the kernel's placement.
    const NEW: Self = Self {
        pending: None,
        at_once: false,
    };

    /// Whether the next child should start on this CPU.
    pub(crate) fn expects_join(&self) -> bool {
        self.at_once
    }

    /// `start` returned `pid` at `now`. A child still pending means
    /// children are started in batches.
    pub(crate) fn started(&mut self, pid: Pid, now: Instant) {
        if self.pending.is_some() {
            self.at_once = false;
        }
        self.pending = Some((pid, now));
    }

    /// `join` of `pid` began at `now`.
    pub(crate) fn joining(&mut self, pid: Pid, now: Instant) {
        match self.pending.take() {
            Some((last, at)) if last == pid => {
                self.at_once = now.saturating_duration_since(at) <= AT_ONCE;
            }
            // Joining an older child: a batch.
            Some(_) => self.at_once = false,
            // Joined before (a join after a timeout), or not ours to judge.
            None => {}
        }
    }
}

thread_local! {
    static HABIT: Cell<JoinHabit> = const {
        Cell::new(JoinHabit::NEW)
    };
}

/// Runs `f` on this thread's [`JoinHabit`].
pub(crate) fn habit<T>(f: impl FnOnce(&mut JoinHabit) -> T) -> T {
    HABIT.with(|cell| {
        let mut habit = cell.get();
        let out = f(&mut habit);
        cell.set(habit);
        out
    })
}

/// The calling thread's CPU mask, narrowed to its current CPU until
/// [`restore`](Self::restore).
pub(crate) struct PinnedHere {
    mask: CpuSet,
}

impl PinnedHere {
    /// Narrows the calling thread's mask to the CPU it runs on. `None` when
    /// there is nothing to narrow (a one-CPU mask) or the system refuses;
    /// the fork then goes ahead unpinned.
    pub(crate) fn now() -> Option<Self> {
        let mask = sched_getaffinity(None).ok()?;
        if mask.count() <= 1 {
            return None;
        }
        let mut here = CpuSet::new();
        here.set(sched_getcpu());
        sched_setaffinity(None, &here).ok()?;
        Some(Self { mask })
    }

    /// Gives the calling thread its mask back: run in both the parent and
    /// the child after `fork`.
    pub(crate) fn restore(&self) {
        if sched_setaffinity(None, &self.mask).is_err() {
            // The allowed CPUs changed meanwhile (a cpuset update) and the
            // old mask holds none of them: ask for every CPU, which the
            // kernel cuts down to the allowed ones, rather than stay pinned.
            let mut every = CpuSet::new();
            for cpu in 0..CpuSet::MAX_CPU {
                every.set(cpu);
            }
            let _ = sched_setaffinity(None, &every);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n).unwrap()
    }

    /// A fresh habit after one child joined right after its start.
    fn joined_at_once(t: Instant) -> JoinHabit {
        let mut h = JoinHabit::NEW;
        assert!(!h.expects_join());
        h.started(pid(1), t);
        h.joining(pid(1), t + Duration::from_micros(5));
        assert!(h.expects_join());
        h
    }

    #[test]
    fn a_join_right_after_its_start_predicts_the_next() {
        let t = Instant::now();
        let mut h = joined_at_once(t);
        // Working first, then joining: no longer.
        h.started(pid(11), t);
        h.joining(pid(11), t + Duration::from_millis(2));
        assert!(!h.expects_join());
    }

    #[test]
    fn batches_are_not_pinned() {
        let t = Instant::now();
        // start, start, join, join
        let mut h = joined_at_once(t);
        h.started(pid(2), t);
        h.started(pid(3), t);
        assert!(!h.expects_join());
        h.joining(pid(2), t);
        h.joining(pid(3), t);
        assert!(!h.expects_join());
        // Joining an older child while a newer one is pending.
        let mut h = joined_at_once(t);
        h.started(pid(5), t);
        h.joining(pid(3), t);
        assert!(!h.expects_join());
    }

    #[test]
    fn a_second_join_of_the_same_child_changes_nothing() {
        let t = Instant::now();
        let mut h = joined_at_once(t);
        h.joining(pid(1), t + Duration::from_secs(1));
        assert!(h.expects_join());
    }
}

//! Starting a forked child on the CPU its parent runs on, for
//! [`ProcessBuilder::run`](crate::ProcessBuilder::run), whose caller sleeps
//! until the child is done.
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
//! 115 µs for a bare `fork` + `waitpid` in the same program.
//!
//! Not for [`ProcessBuilder::start`](crate::ProcessBuilder::start): a
//! parent that goes on working shares its CPU with the child until the
//! scheduler moves one of them. Two children burning 5 ms each, started one
//! after the other and then joined, took 8.0 ms per pair pinned against
//! 5.3 ms unpinned.

use rustix::thread::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};

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

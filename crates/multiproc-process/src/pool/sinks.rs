//! The sinks of the tasks in flight, by task id.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::report::{Inbox, Kept};
use super::result::TaskError;
use crate::target::panic_message;

/// A chunk's outcome: its encoded `Vec<Result<R, String>>`, or why the
/// whole chunk failed.
pub(super) type Outcome<'a> = Result<&'a [u8], TaskError>;

/// What a task's outcome is delivered to.
pub(super) enum Sink {
    /// A task of its own (`apply_async`, `imap`).
    Once(Box<dyn FnOnce(Outcome<'_>) + Send>),
    /// Chunk `n` of a job whose chunks all go to one [`Parts`] (`map`): one
    /// reference count per chunk, not an allocation.
    Part(Arc<dyn Parts>, usize),
}

/// The receiver of a job's chunks (see [`Sink::Part`]).
pub(super) trait Parts: Send + Sync {
    /// Chunk `n` has its outcome.
    fn part_done(&self, n: usize, outcome: Outcome<'_>);
}

impl Sink {
    fn deliver(self, outcome: Outcome<'_>) {
        match self {
            Self::Once(f) => f(outcome),
            Self::Part(parts, n) => parts.part_done(n, outcome),
        }
    }
}

/// An outcome the result thread has and has not delivered yet: a report
/// in its [`Inbox`], or a failure.
pub(super) type Ready = (Sink, Result<Kept, TaskError>);

/// Sinks by task id. Ids are handed out one after another and tasks mostly
/// finish in about that order, so the sinks sit in a ring indexed by
/// `id - first`: no hashing, and neighbouring tasks share cache lines (a
/// hash table of 100 000 sinks spent most of its time in cache misses).
#[derive(Default)]
pub(super) struct Sinks {
    /// Id of `slots[0]`.
    first: u64,
    slots: VecDeque<Option<Sink>>,
    live: usize,
}

impl Sinks {
    /// Adds the sink of task `id`, which must be the next id after the last
    /// one inserted.
    pub(super) fn insert(&mut self, id: u64, sink: Sink) {
        if self.slots.is_empty() {
            self.first = id;
        }
        debug_assert_eq!(id, self.first + self.slots.len() as u64, "ids out of order");
        self.slots.push_back(Some(sink));
        self.live += 1;
    }

    /// Takes the sink of task `id`, if it is still there.
    pub(super) fn remove(&mut self, id: u64) -> Option<Sink> {
        let index = usize::try_from(id.checked_sub(self.first)?).ok()?;
        let sink = self.slots.get_mut(index)?.take()?;
        self.live -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.first += 1;
        }
        Some(sink)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Takes every sink.
    pub(super) fn take_all(&mut self) -> Vec<Sink> {
        self.live = 0;
        self.slots.drain(..).flatten().collect()
    }
}

pub(super) fn run_sinks(failed: Vec<(Sink, TaskError)>) {
    for (sink, error) in failed {
        run_sink(sink, Err(error));
    }
}

/// Delivers an outcome. A sink that panics (its callbacks are guarded
/// already; this is for anything else, like a value's `Deserialize`) must
/// not take the result thread down with it: the panic hook has reported
/// it, and the next sink runs.
pub(super) fn run_sink(sink: Sink, outcome: Outcome<'_>) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| sink.deliver(outcome))) {
        eprintln!(
            "multiproc-process: delivering a pool result panicked ({}); the pool goes on",
            panic_message(&*panic)
        );
    }
}

/// Delivers the outcomes in `ready`, whose reports are in `inbox`.
#[inline]
pub(super) fn run_ready(ready: &mut Vec<Ready>, inbox: &Inbox) {
    for (sink, outcome) in ready.drain(..) {
        run_sink(sink, outcome.map(|at| inbox.payload(at)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> Sink {
        Sink::Once(Box::new(|_| {}))
    }

    #[test]
    fn removes_in_any_order_and_shrinks_from_the_front() {
        let mut sinks = Sinks::default();
        for id in 10..15 {
            sinks.insert(id, sink());
        }
        assert!(sinks.remove(12).is_some());
        assert!(sinks.remove(12).is_none(), "taken once");
        assert!(sinks.remove(9).is_none() && sinks.remove(15).is_none());
        assert!(sinks.remove(10).is_some());
        assert_eq!(sinks.first, 11);
        assert!(sinks.remove(11).is_some());
        assert_eq!(sinks.first, 13, "12 was gone already");
        sinks.insert(15, sink());
        assert_eq!(sinks.take_all().len(), 3);
        assert!(sinks.is_empty());
        sinks.insert(40, sink());
        assert!(sinks.remove(40).is_some() && sinks.is_empty());
    }
}

//! [`IMap`]: the lazy `imap`, which submits chunks as the consumer takes
//! results, with a bounded number in flight.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::mpsc;

use super::gather::chunk_items;
use super::result::TaskError;
use super::sinks::Sink;
use super::supervisor::{PREFETCH, Shared};
use super::task::Call;

/// The iterator of [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered).
pub struct IMap<'p, A, R, I> {
    shared: &'p Shared,
    call: Call,
    input: I,
    chunksize: usize,
    ordered: bool,
    exhausted: bool,
    /// Iterated on the pool's result thread with nothing to hand out: it
    /// yielded [`TaskError::WouldDeadlock`] and ends.
    stuck: bool,
    submitted: usize,
    received: usize,
    /// Chunks handed to the consumer; `submitted - taken` bounds memory.
    taken: usize,
    next_index: usize,
    window: usize,
    results: mpsc::Receiver<(usize, Vec<Result<R, TaskError>>)>,
    sender: mpsc::Sender<(usize, Vec<Result<R, TaskError>>)>,
    parked: BTreeMap<usize, Vec<Result<R, TaskError>>>,
    current: std::vec::IntoIter<Result<R, TaskError>>,
    _args: std::marker::PhantomData<fn(A)>,
}

impl<'p, A, R, I> IMap<'p, A, R, I>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    /// `chunksize` `None` is 1.
    pub(super) fn new(
        shared: &'p Shared,
        call: Call,
        input: I,
        chunksize: Option<usize>,
        ordered: bool,
    ) -> Self {
        let (sender, results) = mpsc::channel();
        Self {
            shared,
            call,
            input,
            chunksize: chunksize.unwrap_or(1).max(1),
            ordered,
            exhausted: false,
            stuck: false,
            submitted: 0,
            received: 0,
            taken: 0,
            next_index: 0,
            // Enough chunks to keep every worker's prefetch full, and a few
            // finished ones waiting for the consumer.
            window: shared.config.processes * (PREFETCH + 2),
            results,
            sender,
            parked: BTreeMap::new(),
            current: Vec::new().into_iter(),
            _args: std::marker::PhantomData,
        }
    }

    fn top_up(&mut self) {
        while !self.exhausted && self.submitted - self.taken < self.window {
            let chunk: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.exhausted = true;
                break;
            }
            let index = self.submitted;
            let len = chunk.len();
            let sender = self.sender.clone();
            let sink: Sink = Box::new(move |outcome| {
                let items = chunk_items::<R>(outcome, len)
                    .unwrap_or_else(|e| (0..len).map(|_| Err(e.clone())).collect());
                let _ = sender.send((index, items));
            });
            self.shared.submit(self.call, &chunk, sink);
            self.submitted += 1;
        }
    }
}

impl<A, R, I> Iterator for IMap<'_, A, R, I>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        // On the result thread nothing more can arrive while we wait, so
        // nothing more is submitted either.
        let on_result_thread = self.shared.on_result_thread();
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if self.stuck {
                return None;
            }
            if !on_result_thread {
                self.top_up();
            }
            if self.ordered
                && let Some(items) = self.parked.remove(&self.next_index)
            {
                self.next_index += 1;
                self.taken += 1;
                self.current = items.into_iter();
                continue;
            }
            if self.received == self.submitted && (self.exhausted || !on_result_thread) {
                return None;
            }
            let next = if on_result_thread {
                self.results.try_recv().ok()
            } else {
                self.results.recv().ok()
            };
            let Some((index, items)) = next else {
                if on_result_thread {
                    self.stuck = true;
                    return Some(Err(TaskError::WouldDeadlock));
                }
                return None;
            };
            self.received += 1;
            if self.ordered {
                self.parked.insert(index, items);
            } else {
                self.taken += 1;
                self.current = items.into_iter();
            }
        }
    }
}

impl<A, R, I> fmt::Debug for IMap<'_, A, R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap")
            .field("ordered", &self.ordered)
            .field("in_flight", &(self.submitted - self.taken))
            .finish()
    }
}

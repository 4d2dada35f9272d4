//! Submitting tasks: each chunk is encoded by the thread that submits it,
//! then queued and dispatched in batches under the pool's lock.

use serde::Serialize;

use super::result::{TaskError, TransportError};
use super::sinks::{Sink, run_sink, run_sinks};
use super::supervisor::Shared;
use super::task::{Call, Message, Task};

/// Most chunks `map` encodes before it queues them (under one lock).
const SUBMIT_BATCH: usize = 256;

/// Tasks a submitting thread hands a worker ahead, at most: enough that an
/// idle worker starts at once. The result thread tops workers up to
/// [`PREFETCH`](super::PREFETCH) as their reports come in; were submitters
/// to do that too, the workers' records would move between the two
/// threads' caches all the time (measured: dispatch from both took a
/// tenth of the result thread's time with `map` at chunk size 1).
const SUBMIT_AHEAD: usize = 16;

impl Shared {
    /// Encodes one chunk and queues it; a failure lands in the sink at once.
    pub(super) fn submit<A: Serialize>(&self, call: Call, chunk: &[A], sink: Sink) {
        self.submit_all(call, std::iter::once((chunk, sink)));
    }

    /// [`submit`](Self::submit) for many chunks, queued in batches of
    /// [`SUBMIT_BATCH`] under one lock each: the result thread contends for
    /// that lock with every report, and workers start on the first batch
    /// while the rest are still being encoded.
    pub(super) fn submit_all<'a, A: Serialize + 'a>(
        &self,
        call: Call,
        chunks: impl IntoIterator<Item = (&'a [A], Sink)>,
    ) {
        let mut chunks = chunks.into_iter().peekable();
        let mut encoded = Vec::new();
        while chunks.peek().is_some() {
            for (chunk, sink) in chunks.by_ref().take(SUBMIT_BATCH) {
                match Task::encode(call, chunk) {
                    Ok(message) => encoded.push((message, sink)),
                    Err(e) => run_sink(
                        sink,
                        Err(TaskError::Transport(TransportError::caused(
                            "encoding the task",
                            e,
                        ))),
                    ),
                }
            }
            self.submit_encoded(encoded.drain(..));
        }
    }

    /// Queues encoded chunks and dispatches them, under one lock.
    pub(super) fn submit_encoded(&self, encoded: impl Iterator<Item = (Message, Sink)>) {
        let mut state = self.lock();
        let refused = if state.terminated {
            Some(TaskError::Terminated)
        } else if state.closed {
            Some(TaskError::Closed)
        } else {
            state.broken.clone().map(TaskError::InitializerFailed)
        };
        if let Some(why) = refused {
            drop(state);
            for (_, sink) in encoded {
                run_sink(sink, Err(why.clone()));
            }
            return;
        }
        for (message, sink) in encoded {
            let id = state.next_id;
            state.next_id += 1;
            state.sinks.insert(id, sink);
            state.pending.push_back(Task::new(id, message));
        }
        let failed = self.dispatch(&mut state, SUBMIT_AHEAD);
        drop(state);
        run_sinks(failed);
    }
}

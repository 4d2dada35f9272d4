//! Collects the chunk results of a `map` into one `Vec`, in item order.

use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};

use super::result::Slot;
use super::result::{TaskError, TransportError};
use super::sinks::{Outcome, Parts};

/// The results of one `map` so far. Each chunk's values go straight to
/// their final places as the chunk arrives, so the last chunk's arrival
/// only has to unwrap them: no per-chunk vectors to join and free at the
/// end, on the pool's result thread.
pub(super) struct Gather<R> {
    values: Vec<Option<R>>,
    left: usize,
    /// The first error to arrive (Python's `map` raises that one).
    error: Option<TaskError>,
    slot: Arc<Slot<Vec<R>>>,
}

impl<R> Gather<R> {
    /// Waits for `chunks` chunks covering `items` items; the outcome goes
    /// to `slot`.
    pub(super) fn new(items: usize, chunks: usize, slot: Arc<Slot<Vec<R>>>) -> Self {
        Self {
            values: std::iter::repeat_with(|| None).take(items).collect(),
            left: chunks,
            error: None,
            slot,
        }
    }

    /// Takes the outcome of the chunk of `len` items starting at item
    /// `start`; the last chunk to arrive sets the slot.
    pub(super) fn chunk_done(
        &mut self,
        start: usize,
        len: usize,
        results: Result<Vec<Result<R, TaskError>>, TaskError>,
    ) {
        match results {
            Ok(results) if results.len() == len => {
                for (place, result) in self.values[start..start + len].iter_mut().zip(results) {
                    match result {
                        Ok(value) => *place = Some(value),
                        Err(e) => {
                            self.error.get_or_insert(e);
                        }
                    }
                }
            }
            Ok(results) => {
                self.error
                    .get_or_insert(TaskError::Transport(TransportError::message(format!(
                        "a chunk of {len} items returned {} results",
                        results.len()
                    ))));
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self.left -= 1;
        if self.left == 0 {
            let values = std::mem::take(&mut self.values);
            let outcome = match self.error.take() {
                Some(e) => Err(e),
                None => values
                    .into_iter()
                    .collect::<Option<Vec<R>>>()
                    .ok_or_else(|| {
                        TaskError::Transport(TransportError::message(
                            "a chunk's results never arrived",
                        ))
                    }),
            };
            self.slot.set(outcome);
        }
    }
}

/// The chunks of one `map`, delivered to its [`Gather`]: chunk `n` holds
/// the items from `n * chunksize`.
pub(super) struct MapParts<R> {
    gather: Mutex<Gather<R>>,
    chunksize: usize,
    items: usize,
}

impl<R> MapParts<R> {
    /// `items` items in chunks of `chunksize` (at least 1); the outcome
    /// goes to `slot`.
    pub(super) fn new(items: usize, chunksize: usize, slot: Arc<Slot<Vec<R>>>) -> Self {
        let chunksize = chunksize.max(1);
        Self {
            gather: Mutex::new(Gather::new(items, items.div_ceil(chunksize), slot)),
            chunksize,
            items,
        }
    }
}

impl<R: DeserializeOwned + Send> Parts for MapParts<R> {
    fn part_done(&self, n: usize, outcome: Outcome<'_>) {
        let start = n.saturating_mul(self.chunksize).min(self.items);
        let len = self.chunksize.min(self.items - start);
        let results = chunk_items::<R>(outcome, len);
        let mut gather = self.gather.lock().unwrap_or_else(|e| e.into_inner());
        gather.chunk_done(start, len, results);
    }
}

/// Decodes a chunk's outcome into one result per item.
pub(super) fn chunk_items<R: DeserializeOwned>(
    outcome: Outcome<'_>,
    len: usize,
) -> Result<Vec<Result<R, TaskError>>, TaskError> {
    match outcome {
        Err(e) => Ok((0..len).map(|_| Err(e.clone())).collect()),
        Ok(bytes) => multiproc_core::codec::decode::<Vec<Result<R, String>>>(bytes)
            .map(|items| {
                items
                    .into_iter()
                    .map(|r| r.map_err(TaskError::Panicked))
                    .collect()
            })
            .map_err(|e| TaskError::Transport(TransportError::caused("decoding the results", e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::result::AsyncResult;

    fn gather(items: usize, chunks: usize) -> (Gather<u32>, AsyncResult<Vec<u32>>) {
        let slot = Slot::new(0);
        (
            Gather::new(items, chunks, Arc::clone(&slot)),
            AsyncResult::new(slot),
        )
    }

    #[test]
    fn chunks_land_in_item_order_whatever_order_they_arrive_in() {
        let (mut g, result) = gather(5, 3);
        g.chunk_done(4, 1, Ok(vec![Ok(4)]));
        assert!(!result.ready());
        g.chunk_done(0, 2, Ok(vec![Ok(0), Ok(1)]));
        g.chunk_done(2, 2, Ok(vec![Ok(2), Ok(3)]));
        assert_eq!(result.get(), Ok(vec![0, 1, 2, 3, 4]));
    }

    #[test]
    fn the_first_error_to_arrive_wins() {
        let (mut g, result) = gather(4, 2);
        g.chunk_done(
            2,
            2,
            Ok(vec![Ok(2), Err(TaskError::Panicked("late".into()))]),
        );
        g.chunk_done(0, 2, Err(TaskError::Panicked("early".into())));
        assert_eq!(result.get(), Err(TaskError::Panicked("late".into())));
    }

    #[test]
    fn a_chunk_with_the_wrong_number_of_results_is_an_error() {
        let (mut g, result) = gather(3, 1);
        g.chunk_done(0, 3, Ok(vec![Ok(0), Ok(1)]));
        assert!(matches!(result.get(), Err(TaskError::Transport(_))));
    }
}

//! How many operations make one timed batch.
//!
//! Standalone (no other part of the harness), so that `tests/bench_batch.rs`
//! can test it.

use std::time::Duration;

/// How many operations take about `batch`: runs `first` once as a warm-up,
/// then `first`, four times more while a run takes less than a quarter of
/// `batch`, and scales the last count to `batch`, from the faster of two
/// runs of it. The first error ends it.
///
/// Why the warm-up and the second run: every later batch of the cell uses
/// this count, and each batch pays a fixed cost besides its operations
/// (starting the partners' round, their first wake-ups). A fresh pair's
/// first run also pays for what happens once (new memory touched, caches
/// cold), and any run may meet a hiccup of the host; scaled from such a
/// run, the count came out a tenth of what it should, and every batch of
/// the cell then measured mostly the fixed cost (1 MiB flows at 4–5 GB/s
/// instead of 12, in one cell of a table, all its rounds).
pub fn calibrate<E>(
    mut run: impl FnMut(u64) -> Result<Duration, E>,
    first: u64,
    batch: Duration,
) -> Result<u64, E> {
    let mut n = first.max(1);
    run(n)?;
    loop {
        let took = run(n)?;
        if took >= batch / 4 || n >= 1 << 40 {
            let took = took.min(run(n)?);
            let scale = batch.as_secs_f64() / took.as_secs_f64().max(1e-9);
            return Ok(((n as f64 * scale) as u64).max(1));
        }
        n = n.saturating_mul(4);
    }
}

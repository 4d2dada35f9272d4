//! The bench harness's batch sizing (`benches/common/batch.rs`).

#[path = "../benches/common/batch.rs"]
mod batch;

use std::convert::Infallible;
use std::time::Duration;

/// A simulated transport: each operation takes `per_op`, each run a fixed
/// `per_run` more, and the first run of `hiccup_at` operations takes
/// `hiccup` more.
fn runs(
    per_op: Duration,
    per_run: Duration,
    hiccup_at: u64,
    hiccup: Duration,
) -> impl FnMut(u64) -> Result<Duration, Infallible> {
    let mut hit = false;
    move |n| {
        let extra = if n == hiccup_at && !hit {
            hit = true;
            hiccup
        } else {
            Duration::ZERO
        };
        Ok(per_op * n as u32 + per_run + extra)
    }
}

const PER_OP: Duration = Duration::from_micros(80);
const PER_RUN: Duration = Duration::from_micros(500);
const BATCH: Duration = Duration::from_millis(75);

/// The count a batch of `BATCH` really holds.
fn ideal() -> u64 {
    ((BATCH - PER_RUN).as_nanos() / PER_OP.as_nanos()) as u64
}

#[test]
fn a_steady_transport_gets_a_batch_of_the_wanted_length() {
    let n = batch::calibrate(runs(PER_OP, PER_RUN, 0, Duration::ZERO), 4, BATCH).unwrap();
    assert!(
        n.abs_diff(ideal()) <= ideal() / 10,
        "{n} against {}",
        ideal()
    );
}

#[test]
fn a_slow_first_run_of_a_fresh_pair_does_not_shrink_the_batch() {
    // The first run (of 4 messages) pays 30 ms once.
    let slow = Duration::from_millis(30);
    let n = batch::calibrate(runs(PER_OP, PER_RUN, 4, slow), 4, BATCH).unwrap();
    assert!(n >= ideal() / 2, "{n} against {}", ideal());
}

#[test]
fn a_hiccup_in_the_run_that_is_scaled_does_not_shrink_the_batch() {
    // Runs of 4, 16, 64 take less than a quarter of the batch, the run of
    // 256 more: it is the one scaled, and it meets a hiccup of 200 ms.
    let slow = Duration::from_millis(200);
    let n = batch::calibrate(runs(PER_OP, PER_RUN, 256, slow), 4, BATCH).unwrap();
    assert!(n >= ideal() / 2, "{n} against {}", ideal());
}

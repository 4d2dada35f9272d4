//! Processes with arguments, `join` and timing: four children each sleep a
//! little and add up a range, concurrently, and hand their value back
//! through `join`.
//!
//! The Python it mirrors:
//!
//! ```python
//! from multiprocessing import Process, current_process
//! import os, time
//!
//! def work(n, delay):
//!     time.sleep(delay)
//!     print(current_process().name, os.getpid(), sum(range(n + 1)))
//!
//! if __name__ == "__main__":
//!     start = time.perf_counter()
//!     ns = [10, 100, 1000, 10000]
//!     ps = [Process(target=work, args=(n, 0.2), name=f"worker-{i}") for i, n in enumerate(ns)]
//!     for p in ps: p.start()
//!     for p in ps: p.join()
//!     print(time.perf_counter() - start)
//! ```
//!
//! Differences: a target is a `fn(A) -> R` taking one (tuple) argument, and
//! `join` returns what it returned — no queue needed to get a result back.
//!
//! Run: `cargo run --example processes`

use multiproc::prelude::*;
use std::time::{Duration, Instant};

const DELAY: Duration = Duration::from_millis(200);

/// Sleeps, then sums `1..=n`; returns who did it and the sum.
fn work((n, delay): (u64, Duration)) -> (String, u32, u64) {
    std::thread::sleep(delay);
    let me = multiproc::current_process();
    (me.name, me.pid, (1..=n).sum())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let inputs = [10u64, 100, 1_000, 10_000];
    let start = Instant::now();
    let mut children = Vec::new();
    for (i, &n) in inputs.iter().enumerate() {
        let child = Process::new(work, (n, DELAY))
            .name(format!("worker-{i}"))
            .start()?;
        println!(
            "started {} (pid {}) with n = {n}",
            child.name(),
            child.pid()
        );
        children.push(child);
    }
    for (child, &n) in children.iter_mut().zip(&inputs) {
        let (name, pid, sum) = child.join()?;
        assert_eq!(sum, n * (n + 1) / 2);
        println!(
            "{name} (pid {pid}): sum(1..={n}) = {sum}, exitcode {:?}",
            child.exitcode()
        );
    }
    let elapsed = start.elapsed();
    let sequential = DELAY * inputs.len() as u32;
    println!(
        "{} processes joined in {elapsed:?} (one after another: at least {sequential:?})",
        inputs.len()
    );
    Ok(())
}

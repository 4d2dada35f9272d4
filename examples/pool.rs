//! A [`Pool`] of worker processes: `apply` (blocks for one result) versus
//! `apply_async` with a callback (returns at once; the callback runs when the
//! result arrives), an error callback for a task that panics, and `map`.
//!
//! The Python it mirrors:
//!
//! ```python
//! with Pool(2, initializer=quiet) as pool:
//!     print(pool.apply(square, (7,)))
//!     results = []
//!     handles = [pool.apply_async(square, (n,), callback=results.append) for n in range(5)]
//!     for h in handles: h.wait()
//!     pool.apply_async(fail, (0,), error_callback=print).wait()
//!     print(pool.map(square, range(10)))
//! ```
//!
//! Callbacks run on the pool's result thread, so they must be `Send`; here
//! they push into an `Arc<Mutex<Vec<_>>>`.
//!
//! Run: `cargo run --example pool`
//!
//! [`Pool`]: multiproc::Pool

use multiproc::Pool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn square(n: u64) -> u64 {
    n * n
}

fn slow_square(n: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50));
    n * n
}

/// Runs once in each worker before its first task (Python's `initializer`).
fn quiet(_: ()) {
    // A task's panic comes back to the pool as an error; the default hook
    // would also print it (and a backtrace) on the worker's stderr.
    std::panic::set_hook(Box::new(|_| {}));
}

fn fail(n: u64) -> u64 {
    assert!(n != 0, "no square for zero today");
    n
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder()
        .processes(2)
        .initializer(quiet, ())
        .build()?;
    println!(
        "pool of {} workers: {:?}",
        pool.processes(),
        pool.worker_pids()
    );

    // apply: one call, waits for its value.
    let start = Instant::now();
    let seven = pool.apply(slow_square, 7)?;
    println!(
        "apply(slow_square, 7) = {seven} after {:?}",
        start.elapsed()
    );
    assert_eq!(seven, 49);

    // apply_async: returns at once; the callback sees each value.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let handles: Vec<_> = (0..5)
        .map(|n| {
            let seen = Arc::clone(&seen);
            pool.apply_async_with(
                slow_square,
                n,
                move |value| seen.lock().unwrap().push(*value),
                |err| eprintln!("unexpected: {err}"),
            )
        })
        .collect();
    println!(
        "apply_async x5 returned after {:?}, ready: {}",
        start.elapsed(),
        handles.iter().filter(|h| h.ready()).count()
    );
    let values = handles
        .into_iter()
        .map(|h| h.get())
        .collect::<Result<Vec<_>, _>>()?;
    let mut by_callback = seen.lock().unwrap().clone();
    by_callback.sort_unstable();
    println!(
        "apply_async values {values:?}, callback saw {by_callback:?} after {:?}",
        start.elapsed()
    );
    assert_eq!(values, [0, 1, 4, 9, 16]);
    assert_eq!(by_callback, values);

    // error_callback: a panic in the worker comes back as an error.
    let failed = Arc::new(Mutex::new(None));
    let sink = Arc::clone(&failed);
    let handle = pool.apply_async_with(
        fail,
        0,
        |_| {},
        move |err| *sink.lock().unwrap() = Some(err.to_string()),
    );
    handle.wait();
    println!(
        "apply_async(fail, 0): successful {:?}, error_callback got {:?}",
        handle.successful(),
        failed.lock().unwrap().as_deref().unwrap_or("nothing")
    );
    assert_eq!(handle.successful(), Some(false));

    // map: in order, split into chunks across the workers.
    let squares = pool.map(square, 0..10, None)?;
    println!("map(square, 0..10) = {squares:?}");
    assert_eq!(squares, (0..10u64).map(|n| n * n).collect::<Vec<_>>());

    pool.close();
    pool.join();
    println!("pool closed and joined");
    Ok(())
}

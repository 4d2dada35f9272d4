//! A shared [`Value`] counter and a shared [`Array`] updated by several
//! processes, each read-modify-write under the value's own lock.
//!
//! The Python it mirrors:
//!
//! ```python
//! def work(i, counter, per_worker):
//!     for _ in range(1000):
//!         with counter.get_lock():
//!             counter.value += 1
//!         with per_worker.get_lock():
//!             per_worker[i] += 1
//!
//! counter = Value("Q", 0)
//! per_worker = Array("Q", 4)
//! ps = [Process(target=work, args=(i, counter, per_worker)) for i in range(4)]
//! ```
//!
//! As in Python, `counter.set(counter.get()? + 1)` alone would take the lock
//! twice and lose updates in between; holding `get_lock()` (a recursive
//! lock) across the read and the write makes it one step. `lock()` gives a
//! guard with its own `get`/`set` for the same.
//!
//! Run: `cargo run --example shared_counter`

use multiproc::prelude::*;

const WORKERS: usize = 4;
const INCREMENTS: u64 = 1000;

fn work((i, counter, per_worker): (usize, Value<u64>, Array<u64>)) {
    for _ in 0..INCREMENTS {
        {
            // with counter.get_lock(): counter.value += 1
            let _held = counter
                .get_lock()
                .acquire()
                .unwrap_or_else(|died| died.into_inner());
            counter.set(counter.get().unwrap() + 1).unwrap();
        }
        let guard = per_worker.lock().unwrap_or_else(|died| died.into_inner());
        guard.set(i, guard.get(i).unwrap() + 1).unwrap();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counter = Value::new(0u64)?;
    let per_worker = Array::filled(0u64, WORKERS)?;
    let mut children = (0..WORKERS)
        .map(|i| Process::new(work, (i, counter.clone(), per_worker.clone())).start())
        .collect::<Result<Vec<_>, _>>()?;
    for child in &mut children {
        child.join()?;
    }
    let total = counter.get()?;
    let per = per_worker.to_vec()?;
    println!("{WORKERS} processes x {INCREMENTS} locked increments: counter = {total}");
    println!("per worker: {per:?}");
    assert_eq!(total, WORKERS as u64 * INCREMENTS);
    assert_eq!(per, vec![INCREMENTS; WORKERS]);
    Ok(())
}

//! Producer/consumer with a [`JoinableQueue`] and daemon consumers: the
//! producer puts jobs, consumers that loop forever call `task_done` for
//! each, and `join` on the queue returns once every job is done. The
//! consumers, still blocked in `get`, are daemons: they are stopped when
//! the program exits.
//!
//! The Python it mirrors:
//!
//! ```python
//! def consumer(jobs, results):
//!     while True:
//!         n = jobs.get()
//!         results.put((n, n * n))
//!         jobs.task_done()
//!
//! jobs, results = JoinableQueue(), Queue()
//! for _ in range(2):
//!     Process(target=consumer, args=(jobs, results), daemon=True).start()
//! for n in range(20):
//!     jobs.put(n)
//! jobs.join()
//! ```
//!
//! Run: `cargo run --example producer_consumer`
//!
//! [`JoinableQueue`]: multiproc::JoinableQueue

use multiproc::prelude::*;
use multiproc::{JoinableQueue, Queue};

const JOBS: u64 = 20;
const CONSUMERS: usize = 2;

/// Never returns: it serves jobs until the program exits.
fn consumer((jobs, results): (JoinableQueue<u64>, Queue<(String, u64, u64)>)) {
    let me = multiproc::current_process().name;
    loop {
        let n = jobs.get().expect("the job queue stays open");
        results
            .put((me.clone(), n, n * n))
            .expect("the result queue stays open");
        jobs.task_done().expect("one task_done per get");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = JoinableQueue::new()?;
    let results = Queue::new()?;
    for i in 0..CONSUMERS {
        Process::new(consumer, (jobs.clone(), results.clone()))
            .name(format!("consumer-{i}"))
            .daemon(true)
            .start()?;
    }
    for n in 0..JOBS {
        jobs.put(n)?;
    }
    println!("producer put {JOBS} jobs");

    jobs.join();
    println!(
        "jobs.join() returned: {} unfinished tasks",
        jobs.unfinished_tasks()
    );

    let mut done: Vec<(String, u64, u64)> =
        (0..JOBS).map(|_| results.get()).collect::<Result<_, _>>()?;
    done.sort_by_key(|&(_, n, _)| n);
    for (who, n, square) in &done {
        assert_eq!(*square, n * n);
        println!("{who}: {n}^2 = {square}");
    }
    assert_eq!(done.len() as u64, JOBS);
    // `Process` handles were dropped above; the daemons still run, blocked
    // in `get`, and are terminated at exit.
    println!(
        "{} results; {} daemon consumers still waiting for work, stopped at exit",
        done.len(),
        multiproc::active_children()
            .iter()
            .filter(|c| c.daemon)
            .count()
    );
    Ok(())
}

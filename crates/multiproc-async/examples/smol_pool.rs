//! A smol program that feeds worker processes through an async queue and
//! awaits their results, then awaits a `Pool` task the same way.
//!
//! Run: `cargo run -p multiproc-async --example smol_pool`

use multiproc_process::{Pool, Process};
use multiproc_queue::Queue;
use std::error::Error;

/// What a worker process runs: squares jobs until the queue is closed and
/// drained.
fn worker((jobs, results): (Queue<u64>, Queue<(u64, u64)>)) -> u64 {
    let mut done = 0;
    while let Ok(n) = jobs.get() {
        results.put((n, n * n)).expect("results queue");
        done += 1;
    }
    done
}

/// Runs both to completion, concurrently; the first error wins.
async fn both<A, B, E>(
    a: impl std::future::Future<Output = Result<A, E>>,
    b: impl std::future::Future<Output = Result<B, E>>,
) -> Result<(A, B), E> {
    let (a, b) = smol::future::zip(a, b).await;
    Ok((a?, b?))
}

fn cube(n: u64) -> u64 {
    n * n * n
}

const JOBS: u64 = 1000;

fn main() -> Result<(), Box<dyn Error>> {
    let jobs: Queue<u64> = Queue::with_capacity(64)?;
    let results: Queue<(u64, u64)> = Queue::new()?;
    // Processes first: a process that already runs threads cannot fork.
    let mut workers = (0..2)
        .map(|_| Process::new(worker, (jobs.clone(), results.clone())).start())
        .collect::<Result<Vec<_>, _>>()?;
    let pool = Pool::new(2)?;

    let total = smol::block_on(async {
        let inbox = multiproc_async::smol::Queue::new(results)?;
        let outbox = multiproc_async::smol::Queue::new(jobs.clone())?;
        // The "server": hands out jobs as the bounded queue makes room,
        // while another task collects results as they come.
        let feed = async {
            for n in 0..JOBS {
                outbox.put(n).await?;
            }
            jobs.close();
            Ok::<_, Box<dyn Error>>(())
        };
        let collect = async {
            let mut total = 0;
            for _ in 0..JOBS {
                let (n, square) = inbox.get().await?;
                assert_eq!(square, n * n);
                total += square;
            }
            Ok::<_, Box<dyn Error>>(total)
        };
        let ((), total) = both(feed, collect).await?;
        // A pool's pending result is a future too.
        assert_eq!(pool.apply_async(cube, 3).await?, 27);
        Ok::<_, Box<dyn Error>>(total)
    })?;
    let done: u64 = workers
        .iter_mut()
        .map(|w| w.join())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .sum();
    assert_eq!(done, JOBS);
    assert_eq!(total, (0..JOBS).map(|n| n * n).sum::<u64>());
    println!("{JOBS} jobs squared by 2 worker processes, sum {total}; a pool task cubed 3");
    Ok(())
}

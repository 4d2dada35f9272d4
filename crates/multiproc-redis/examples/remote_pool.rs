//! A remote pool end to end: this program is both the caller and, started
//! with `--worker`, a worker. Here it starts its two workers itself, as
//! child processes on this machine; on several machines, run
//! `remote_pool --worker URL` on each instead.
//!
//! ```text
//! redis-server --port 6379 &
//! cargo run -p multiproc-redis --example remote_pool -- redis://127.0.0.1:6379/0
//! ```

use multiproc_redis::RemotePool;
use std::process::{Command, Stdio};

/// The task: any `fn(A) -> R` of this program, `A` and `R` serde types.
fn word_lengths(text: String) -> Vec<usize> {
    text.split_whitespace().map(str::len).collect()
}

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (worker, url) = match args.as_slice() {
        [flag, url] if flag == "--worker" => (true, url.clone()),
        [url] => (false, url.clone()),
        [] => (false, "redis://127.0.0.1:6379/0".to_owned()),
        _ => return Err("usage: remote_pool [--worker] [URL]".into()),
    };
    // Both sides name the pool alike (a pid keeps runs apart here).
    let name = format!(
        "example-{}",
        if worker {
            std::env::var("REMOTE_POOL_EXAMPLE").unwrap_or_default()
        } else {
            std::process::id().to_string()
        }
    );
    if worker {
        // Runs tasks until the caller closes the pool.
        RemotePool::builder(&url, &name).serve()?;
        return Ok(());
    }
    let workers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .args(["--worker", &url])
                .env("REMOTE_POOL_EXAMPLE", std::process::id().to_string())
                .stdin(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let pool = RemotePool::open(&url, &name)?;
    let squares = pool.map(square, 1..=10, None)?;
    println!("squares: {squares:?}");
    let lengths = pool.apply(word_lengths, "a remote pool of workers".to_owned())?;
    println!("word lengths: {lengths:?}");
    let total: u64 = pool
        .imap_unordered(square, 1..=1000, Some(100))
        .sum::<Result<u64, _>>()?;
    println!("sum of squares to 1000: {total}");
    pool.close()?;
    for mut w in workers {
        println!("worker exited: {}", w.wait()?);
    }
    pool.destroy()?;
    Ok(())
}

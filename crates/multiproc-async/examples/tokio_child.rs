//! A tokio task that talks to a child process over a `Connection` and
//! awaits the child's exit, without blocking a runtime thread.
//!
//! Run: `cargo run -p multiproc-async --example tokio_child`

use multiproc_pipe::{Connection, Pipe};
use multiproc_process::Process;
use std::error::Error;

/// The child: answers each number with its square until the parent says 0,
/// then returns how many it answered.
fn squarer(mut conn: Connection) -> u64 {
    let mut answered = 0;
    loop {
        let n: u64 = conn.recv().expect("a number");
        if n == 0 {
            return answered;
        }
        conn.send(&(n * n)).expect("the parent is there");
        answered += 1;
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let (ours, theirs) = Pipe::new()?;
    // Started before the runtime: a process that already runs threads
    // cannot fork.
    let mut child = Process::new(squarer, theirs).start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answered = rt.block_on(async {
        let mut conn = multiproc_async::tokio::Connection::new(ours)?;
        for n in 1..=100u64 {
            conn.send(&n).await?;
            let square: u64 = conn.recv().await?;
            assert_eq!(square, n * n);
        }
        conn.send(&0u64).await?;
        // The child's exit, through its exit descriptor: no thread waits.
        let answered = multiproc_async::tokio::join(&mut child).await?;
        Ok::<_, Box<dyn Error>>(answered)
    })?;
    assert_eq!(answered, 100);
    println!(
        "the child answered {answered} requests and exited with code {:?}",
        child.exitcode()
    );
    Ok(())
}

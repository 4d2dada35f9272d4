//! A daemon child dies with its parent. A (non-daemon) middle process starts
//! a daemon grandchild that would sleep for a minute, reports its pid, and
//! then ends — once by returning normally, once by being `SIGKILL`ed. Both
//! times the daemon is gone right after.
//!
//! The Python it mirrors:
//!
//! ```python
//! def sleeper():
//!     time.sleep(60)
//!
//! def middle(conn):
//!     d = Process(target=sleeper, daemon=True); d.start()
//!     conn.send(d.pid)
//!     conn.recv()   # wait for the go-ahead (or to be killed)
//!     # returning terminates daemonic children (atexit in the child)
//! ```
//!
//! Python only terminates daemons when their parent exits normally; a
//! parent killed by `SIGKILL` leaves them running, orphaned. Here a daemon
//! watches its parent and dies with it however it ends.
//!
//! Run: `cargo run --example daemon`

use multiproc::os::ProcessIdentity;
use multiproc::prelude::*;
use std::time::{Duration, Instant};

fn sleeper(_: ()) {
    std::thread::sleep(Duration::from_secs(60));
}

/// Starts a daemon, reports its identity, and returns when the parent says
/// so (unless it is killed first).
fn middle(mut conn: Connection) {
    let daemon = Process::new(sleeper, ())
        .name("daemon")
        .daemon(true)
        .start()
        .expect("daemon starts");
    let id = ProcessIdentity::of(daemon.pid()).expect("daemon is running");
    conn.send(&id.to_u64()).expect("parent listens");
    // Returning at once could stop the daemon before the parent has looked
    // at it.
    let _ = conn.recv_bytes();
}

/// Waits up to two seconds for the process to be gone.
fn gone_soon(daemon: &ProcessIdentity) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if !daemon.is_alive() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn run(kill_middle: bool) -> Result<(), Box<dyn std::error::Error>> {
    let (mut ours, theirs) = Pipe::new()?;
    let mut mid = Process::new(middle, theirs).name("middle").start()?;
    let daemon = ProcessIdentity::from_u64(ours.recv()?).ok_or("bad identity")?;
    println!(
        "middle (pid {}) started a daemon (pid {}), alive: {}",
        mid.pid(),
        daemon.pid(),
        daemon.is_alive()
    );
    assert!(daemon.is_alive());
    if kill_middle {
        mid.kill()?;
        let err = mid.join().unwrap_err();
        println!("middle: {err} (exitcode {:?})", mid.exitcode());
    } else {
        ours.send_bytes(b"return now")?;
        mid.join()?;
        println!("middle: returned (exitcode {:?})", mid.exitcode());
    }
    match gone_soon(&daemon) {
        Some(after) => println!(
            "daemon (pid {}) is gone {after:?} after its parent ended, alive: false",
            daemon.pid()
        ),
        None => return Err(format!("daemon {} outlived its parent", daemon.pid()).into()),
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("-- parent returns normally");
    run(false)?;
    println!("-- parent is killed with SIGKILL");
    run(true)?;
    Ok(())
}

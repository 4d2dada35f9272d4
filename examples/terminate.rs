//! `terminate`, `is_alive` and `exitcode`: a child that would run forever is
//! stopped with `SIGTERM`, and its exit code says so (`-15`, as in Python).
//!
//! The Python it mirrors:
//!
//! ```python
//! p = Process(target=time.sleep, args=(1000,))
//! print(p, p.is_alive())      # not started
//! p.start(); print(p, p.is_alive())
//! p.terminate(); time.sleep(0.1); print(p, p.is_alive())
//! p.join(); print(p, p.is_alive(), p.exitcode)   # ... False -15
//! ```
//!
//! `join` here returns the target's value, so joining a terminated process
//! is an error naming the signal; `exitcode` is Python's (minus the signal).
//!
//! Run: `cargo run --example terminate`

use multiproc::prelude::*;
use std::time::Duration;

fn forever(_: ()) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut p = Process::new(forever, ()).name("sleeper").start()?;
    println!(
        "started: {} pid {}, is_alive {}, exitcode {:?}",
        p.name(),
        p.pid(),
        p.is_alive(),
        p.exitcode()
    );
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);

    // A join with a timeout leaves a running process running.
    let err = p.join_timeout(Duration::from_millis(100)).unwrap_err();
    assert!(err.is_timeout());
    println!("join_timeout(100ms): {err}; is_alive {}", p.is_alive());

    p.terminate()?;
    let err = p.join().unwrap_err();
    println!("terminated: join -> {err}");
    println!("is_alive {}, exitcode {:?}", p.is_alive(), p.exitcode());
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(-15));
    Ok(())
}

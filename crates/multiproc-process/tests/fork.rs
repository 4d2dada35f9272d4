//! The process suite under `StartMethod::Fork`, in the standard harness.
//!
//! Fork copies only the forking thread; the harness runs tests on several
//! threads, so each test here holds one lock while it forks, keeping the
//! other test threads idle (and off the allocator and our own locks).
mod common;
use multiproc_process::StartMethod;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn fork() -> StartMethod {
    // Leak the guard into the test's thread-local so it lasts the test.
    thread_local!(static GUARD: std::cell::RefCell<Option<std::sync::MutexGuard<'static, ()>>> = const { std::cell::RefCell::new(None) });
    GUARD.with(|g| {
        if g.borrow().is_none() {
            *g.borrow_mut() = Some(ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()));
        }
    });
    StartMethod::Fork
}

suite!(fork());

fn nap(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

fn cube(x: u64) -> u64 {
    x * x * x
}

/// Forks `count` children running `target(i)` while `busy` runs without
/// pause on another thread (until told to stop; it returns how much work it
/// did, which must be some), each child joined within `limit`. Returns the
/// first child that hung, with the error, if any; `check` sees every value.
fn fork_while_busy<R, T>(
    count: u64,
    limit: std::time::Duration,
    target: fn(u64) -> R,
    check: impl Fn(u64, R),
    busy: impl Fn() -> T + Send + 'static,
) -> Option<(u64, String)>
where
    R: serde::Serialize + serde::de::DeserializeOwned,
    T: Default + std::ops::AddAssign + PartialOrd + Send + 'static,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let method = fork();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let mut done = T::default();
            while !stop.load(Ordering::Relaxed) {
                done += busy();
            }
            done
        }
    });
    let mut hung = None;
    for i in 0..count {
        let mut p = multiproc_process::Process::new(target, i)
            .start_method(method)
            .start()
            .unwrap();
        match p.join_timeout(limit) {
            Ok(v) => check(i, v),
            Err(e) => {
                let _ = p.kill();
                let _ = p.join();
                hung = Some((i, e.to_string()));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        worker.join().unwrap() > T::default(),
        "the busy thread did nothing"
    );
    hung
}

/// Fork copies only the forking thread: a lock of the library's that
/// another thread holds at that instant stays held for ever in the child.
/// Here one thread asks `current_process()` (the library's record of this
/// process) and `active_children()` (its registry of children) without
/// pause while the test forks children; every child must run its target
/// and report back.
#[test]
fn forking_while_another_thread_asks_current_process_never_hangs() {
    let method = fork();
    let _shared = common::shared();
    // A child that stays registered, so a forked child has the parent's
    // registry to forget.
    let mut sleeper = multiproc_process::Process::new(nap, 60_000u64)
        .start_method(method)
        .start()
        .unwrap();
    let hung = fork_while_busy(
        300,
        std::time::Duration::from_secs(5),
        cube,
        |i, v| assert_eq!(v, i * i * i),
        || {
            u64::from(multiproc_process::current_process().pid != 0)
                + multiproc_process::active_children().len() as u64
        },
    );
    sleeper.kill().unwrap();
    let _ = sleeper.join();
    assert_eq!(hung, None, "a fork child hung (start number, error)");
}

/// A forked child that starts a child of its own through a fork server:
/// its grandchild's value, or why it failed.
fn start_through_a_server(x: u64) -> Result<u64, String> {
    multiproc_process::Process::new(cube, x)
        .start_method(StartMethod::ForkServer)
        .start()
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|e| e.to_string())
}

/// The same for the record of fork servers: another thread starts children
/// through this process's server without pause (holding that record while
/// it talks to the server) while the test forks children that start
/// children through a server of their own.
#[test]
fn forking_while_another_thread_uses_the_fork_server_never_hangs() {
    let _shared = common::shared();
    let hung = fork_while_busy(
        40,
        std::time::Duration::from_secs(10),
        start_through_a_server,
        |i, v| assert_eq!(v, Ok(i * i * i)),
        || {
            let mut p = multiproc_process::Process::new(cube, 2)
                .start_method(StartMethod::ForkServer)
                .start()
                .unwrap();
            assert_eq!(p.join().unwrap(), 8);
            1u64
        },
    );
    assert_eq!(hung, None, "a fork child hung (start number, error)");
}

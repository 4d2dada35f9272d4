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

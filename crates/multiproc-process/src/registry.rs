//! The children this process started and has not reaped: for
//! [`active_children`](crate::active_children) and for what happens at exit.
//!
//! At exit (returning from `main` or `std::process::exit`), as in Python,
//! daemon children are terminated (`SIGTERM`) and the others are waited for.

use rustix::process::Signal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

use crate::child::ChildState;
use crate::info::ProcessInfo;

/// The live children, and whether there may be any: that flag lets a
/// forked child skip the lock (a write, so a copy-on-write fault) when there
/// is nothing to forget. One aligned static keeps both on one page, so a
/// parent that registers a child it just forked takes one fault, not two.
#[repr(align(64))]
struct Registry {
    children: Mutex<Vec<Arc<ChildState>>>,
    any: AtomicBool,
}

static REGISTRY: Registry = Registry {
    children: Mutex::new(Vec::new()),
    any: AtomicBool::new(false),
};
static AT_EXIT: Once = Once::new();

/// Whether the exit handler sees to the children: see
/// [`crate::set_finish_children_at_exit`].
static FINISH_AT_EXIT: AtomicBool = AtomicBool::new(true);

/// See [`crate::set_finish_children_at_exit`].
pub(crate) fn set_finish_at_exit(enabled: bool) {
    FINISH_AT_EXIT.store(enabled, Ordering::Relaxed);
}

pub(crate) fn add(child: Arc<ChildState>) {
    if FINISH_AT_EXIT.load(Ordering::Relaxed) {
        register_at_exit();
    }
    let mut children = REGISTRY.children.lock().unwrap_or_else(|e| e.into_inner());
    children.push(child);
    REGISTRY.any.store(true, Ordering::Relaxed);
}

/// Registers the exit handler, once per process image.
fn register_at_exit() {
    AT_EXIT.call_once(|| {
        // `at_exit` does not panic (it uses `try_lock` and ignores errors).
        // Should the C library have no room for it, children are still
        // seen to by their `Process` handles; only the exit-time sweep is
        // missing.
        let _ = multiproc_core::process::at_exit(at_exit);
    });
}

pub(crate) fn remove(pid: rustix::process::Pid) {
    let mut children = REGISTRY.children.lock().unwrap_or_else(|e| e.into_inner());
    children.retain(|c| c.pid != pid);
    REGISTRY.any.store(!children.is_empty(), Ordering::Relaxed);
}

/// Holds the registry across a `fork` (drop the guard right after, in both
/// processes): then no other thread of the parent holds it at that instant,
/// so in the child, where only the forking thread exists, it is free for
/// [`forget_inherited`].
pub(crate) fn hold_across_fork() -> MutexGuard<'static, Vec<Arc<ChildState>>> {
    REGISTRY.children.lock().unwrap_or_else(|e| e.into_inner())
}

/// In a freshly forked child: the parent's children are not ours. Their
/// records are leaked rather than dropped: freeing them would only write to
/// pages this copy of the process shares with its parent (each write a
/// copy-on-write fault), for memory that goes away at exit anyway.
pub(crate) fn forget_inherited() {
    // Single-threaded here (just forked): nobody else changes `any`.
    if !REGISTRY.any.load(Ordering::Relaxed) {
        return;
    }
    REGISTRY.any.store(false, Ordering::Relaxed);
    let mut children = REGISTRY.children.lock().unwrap_or_else(|e| e.into_inner());
    if !children.is_empty() {
        std::mem::forget(std::mem::take(&mut *children));
    }
}

/// The children still running, as [`crate::active_children`] reports
/// them; finished ones are reaped on the way.
pub(crate) fn live_children() -> Vec<ProcessInfo> {
    let mut children = REGISTRY.children.lock().unwrap_or_else(|e| e.into_inner());
    children.retain(|c| matches!(c.try_status(), Ok(None)));
    REGISTRY.any.store(!children.is_empty(), Ordering::Relaxed);
    children
        .iter()
        .map(|c| ProcessInfo {
            name: c.name.clone(),
            pid: c.pid.as_raw_nonzero().get() as u32,
            daemon: c.daemon,
        })
        .collect()
}

extern "C" fn at_exit() {
    if FINISH_AT_EXIT.load(Ordering::Relaxed) {
        finish_children();
    }
}

/// What exit does about the children still running: daemons get `SIGTERM`,
/// then every child is waited for.
pub(crate) fn finish_children() {
    // Without children, not even the lock: in a forked child that would be
    // one more page written (a copy-on-write fault) on its way out.
    if !REGISTRY.any.load(Ordering::Relaxed) {
        return;
    }
    let Ok(children) = REGISTRY.children.try_lock() else {
        return;
    };
    for child in children.iter().filter(|c| c.daemon) {
        let _ = child.signal(Signal::TERM);
    }
    for child in children.iter() {
        let _ = child.wait_status(None);
    }
}

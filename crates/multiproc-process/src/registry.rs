//! The children this process started and has not reaped: for
//! [`active_children`] and for what happens at exit.
//!
//! At exit (returning from `main` or `std::process::exit`), as in Python,
//! daemon children are terminated (`SIGTERM`) and the others are waited for.
#![allow(unsafe_code)]

use rustix::process::Signal;
use std::sync::{Arc, Mutex, Once};

use crate::ProcessInfo;
use crate::child::ChildState;

static CHILDREN: Mutex<Vec<Arc<ChildState>>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

pub(crate) fn add(child: Arc<ChildState>) {
    AT_EXIT.call_once(|| {
        // SAFETY: `at_exit` is an `extern "C" fn()` that does not unwind
        // (it catches nothing that could panic: it uses `try_lock` and
        // ignores errors).
        unsafe { libc::atexit(at_exit) };
    });
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child);
}

pub(crate) fn remove(pid: rustix::process::Pid) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|c| c.pid != pid);
}

/// In a freshly forked child: the parent's children are not ours.
pub(crate) fn forget_inherited() {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// The children still running (Python's `active_children()`); finished ones
/// are reaped on the way, as in Python.
///
/// # Examples
///
/// ```
/// assert!(multiproc_process::active_children().is_empty());
/// ```
#[must_use]
pub fn active_children() -> Vec<ProcessInfo> {
    let mut children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    children.retain(|c| matches!(c.try_status(), Ok(None)));
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
    let Ok(children) = CHILDREN.try_lock() else {
        return;
    };
    for child in children.iter().filter(|c| c.daemon) {
        let _ = child.signal(Signal::TERM);
    }
    for child in children.iter() {
        let _ = child.wait_status(None);
    }
}

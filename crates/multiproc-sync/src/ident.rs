//! Who the calling thread is, as lock owners record it: the kernel thread
//! id plus the thread's start time, packed like a
//! [`ProcessIdentity`] (for the main thread the two coincide).
//!
//! A thread id alone is reused by the kernel after the thread is gone; the
//! start time (`/proc/TID/stat` field 22) is what lets survivors tell a dead
//! owner from a new thread that happens to have the same id.
//!
//! The identity is read from `/proc` once per thread and cached in a
//! thread-local. A forked child would inherit the forking thread's cache
//! with the parent's id, so a `pthread_atfork` child handler clears it.
//!
//! # Safety
//!
//! The only `unsafe` is the `pthread_atfork` registration; the handler it
//! registers touches one `const`-initialised thread-local `Cell` (no
//! allocation, no locks), which is safe in a freshly forked child.
#![allow(unsafe_code)]

use multiproc_core::ProcessIdentity;
use std::cell::Cell;
use std::sync::Once;

thread_local! {
    /// The packed identity of this thread, or 0 before the first use.
    static ME: Cell<u64> = const { Cell::new(0) };
}

static ATFORK: Once = Once::new();

/// The calling thread as a lock owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Me {
    /// Kernel thread id (what the lock's state word holds).
    pub(crate) tid: u32,
    /// Thread id plus start time, packed (what the owner word holds).
    pub(crate) packed: u64,
}

/// The calling thread's identity (cached).
///
/// # Panics
///
/// When `/proc` is not mounted: multiproc needs it.
#[inline]
pub(crate) fn me() -> Me {
    let packed = ME.with(Cell::get);
    if packed != 0 {
        return Me {
            tid: (packed & PID_MASK) as u32,
            packed,
        };
    }
    me_slow()
}

/// Bits of a packed identity holding the id (see `ProcessIdentity`).
const PID_MASK: u64 = (1 << 22) - 1;

#[cold]
fn me_slow() -> Me {
    ATFORK.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with no
        // preconditions; see the module docs for why the handler is safe in
        // a forked child.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_after_fork)) };
        debug_assert_eq!(rc, 0, "pthread_atfork failed");
    });
    let tid = rustix::thread::gettid()
        .as_raw_nonzero()
        .get()
        .unsigned_abs();
    let id = ProcessIdentity::of(tid).expect("/proc/TID/stat is readable");
    let packed = id.to_u64();
    ME.with(|me| me.set(packed));
    debug_assert_eq!((packed & PID_MASK) as u32, tid);
    Me { tid, packed }
}

extern "C" fn forget_after_fork() {
    ME.with(|me| me.set(0));
}

/// Whether the thread that recorded `packed` (or, when that record does not
/// belong to `tid`, the thread `tid` itself) still runs. Reads `/proc`.
pub(crate) fn owner_alive(tid: u32, packed: u64) -> bool {
    let alive = match ProcessIdentity::from_u64(packed) {
        Some(id) if id.pid() == tid => id.is_alive(),
        // The owner took the state word but died (or is about to write its
        // record) before recording itself: judge by the id alone.
        _ => ProcessIdentity::of(tid).is_ok_and(|id| id.is_alive()),
    };
    alive || hidden_but_present(tid)
}

/// `/proc` said "no such thread"; make sure it is not merely hidden from
/// us (`/proc` mounted with `hidepid`, owner of another user) before
/// declaring the owner dead: `kill(tid, 0)` fails with `ESRCH` only for a
/// thread that does not exist.
fn hidden_but_present(tid: u32) -> bool {
    if std::path::Path::new(&format!("/proc/{tid}")).exists() {
        // Visible, and judged dead above: a zombie, or a reused id.
        return false;
    }
    let Some(pid) = i32::try_from(tid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_per_thread_and_alive() {
        let main = me();
        assert!(owner_alive(main.tid, main.packed));
        let other = std::thread::spawn(me).join().unwrap();
        assert_ne!(main.tid, other.tid);
        // The thread has exited (`join` may return a moment before it has
        // finished exiting): its record is dead.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while owner_alive(other.tid, other.packed) {
            assert!(
                std::time::Instant::now() < deadline,
                "exited thread still alive"
            );
            std::thread::yield_now();
        }
        assert_eq!(me(), main);
    }
}

//! Who the calling thread is, as lock owners record it, and whether a
//! recorded owner still lives: the state word's thread id plus the
//! [`ThreadIdentity`] (thread id + start time) of `multiproc-core`, whose
//! rule for "dead" every multiproc crate shares.

use multiproc_core::ThreadIdentity;
use multiproc_core::owner::thread_exists;

/// The calling thread as a lock owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Me {
    /// Kernel thread id (what the lock's state word holds).
    pub(crate) tid: u32,
    /// Thread id plus start time, packed (what the owner word holds).
    pub(crate) packed: u64,
}

/// The calling thread's identity (cached by `multiproc-core`, forgotten in
/// a forked child).
///
/// # Panics
///
/// When `/proc` is not mounted: multiproc needs it.
#[inline]
pub(crate) fn me() -> Me {
    let id = ThreadIdentity::current();
    Me {
        tid: id.tid(),
        packed: id.to_u64(),
    }
}

/// Whether the thread that recorded `packed` (or, when that record does not
/// belong to `tid`, the thread `tid` itself) still runs. Reads `/proc`.
pub(crate) fn owner_alive(tid: u32, packed: u64) -> bool {
    match ThreadIdentity::from_u64(packed) {
        Some(id) if id.tid() == tid => id.is_alive(),
        // The owner took the state word but died (or is about to write its
        // record) before recording itself: judge by the id alone.
        _ => thread_exists(tid),
    }
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

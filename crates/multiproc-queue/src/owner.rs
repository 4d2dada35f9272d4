//! Who holds a queue lock: the words a lock is made of ([`RobustLock`]),
//! what its owner word holds (0, a thread identity from [`me`], or
//! [`BIASED`]), how a lock was taken ([`Locked`]), and when a holder
//! counts as dead ([`LIVENESS_SLICE`], [`owner_alive`]). Taking and
//! releasing it by the owner word is `lock.rs`, by a bias `bias.rs`; both
//! build on this.

use multiproc_core::ThreadIdentity;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::fence;
use crate::layout::Bias;
use crate::wake::Word;

/// How long a waiter sleeps before it checks whether the thread it waits
/// on is still alive. A dead owner is noticed within this time; a live one
/// costs its waiters one `/proc` read per slice (a few µs).
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(20);

/// The owner word of a lock biased to a thread; that thread is named by the
/// lock's [`Bias`], not here. Never a packed thread identity (the start
/// time it would hold is impossible).
pub(crate) const BIASED: u64 = u64::MAX;

/// The calling thread's identity, packed (never 0): what the owner word,
/// bias slots and fragment records hold. A lock is held by a thread, and
/// only that thread's death leaves it half done; see
/// [`multiproc_core::owner`] for the one rule for "dead". One thread-local
/// load after the first call.
#[inline]
pub(crate) fn me() -> u64 {
    fence::prepare();
    ThreadIdentity::current().to_u64()
}

/// This thread's kernel thread id (from the cached [`ThreadIdentity`],
/// which a forked child forgets).
#[inline]
pub(crate) fn thread_id() -> u32 {
    multiproc_core::ThreadIdentity::current().tid()
}

/// Whether the thread packed in `owner` still runs. An unpackable (corrupt)
/// value counts as dead, so its lock can be taken over.
pub(crate) fn owner_alive(owner: u64) -> bool {
    ThreadIdentity::from_u64(owner).is_some_and(|id| id.is_alive())
}

/// Outcome of taking a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Taken from a free lock.
    Clean,
    /// Taken over from a dead holder.
    Recovered,
}

// Its methods are in `lock.rs` and `bias.rs`; rustc compiles them all in
// the codegen unit of this module, the one that defines the type, so the
// owner-word path and the bias inline into each other (see the note on
// the lock holders in `ring/mod.rs`).

/// A robust lock over words in the segment, with its bias; see `lock.rs`
/// and `bias.rs`.
pub(crate) struct RobustLock<'a> {
    pub owner: &'a AtomicU64,
    pub word: Word<'a>,
    pub bias: &'a Bias,
    /// This process's record of a bias granted to one of its threads
    /// (`tid << 32 | token`, 0 = none); per process, never shared.
    pub mine: &'a AtomicU64,
}

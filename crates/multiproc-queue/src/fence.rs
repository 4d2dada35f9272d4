//! How this process orders a store before a load on the queues' fast
//! paths: its `membarrier(2)` registration, the light fence a waker or a
//! biased thread passes, and the heavy fence a sleeper or a revoker passes
//! (see [`light_fence`]).
//!
//! The only module-level unsafe is the fork-handler registration (through
//! core's `at_fork_child`) that keeps the fence mode right in forked
//! children.
#![allow(unsafe_code)]

use std::sync::Once;
use std::sync::atomic::{AtomicU8, Ordering, compiler_fence, fence};
use std::time::Duration;

use crate::error::SetMembarrierError;

static ATFORK: Once = Once::new();

/// How this process's fast paths order a store before a load (see
/// [`light_fence`]): not decided yet (0), by the sleepers' `membarrier`
/// ([`ASYMMETRIC`]), or by a full fence of their own ([`SYMMETRIC`]).
/// Per process: reset in forked children, which register again.
static FAST_MODE: AtomicU8 = AtomicU8::new(0);
const ASYMMETRIC: u8 = 1;
const SYMMETRIC: u8 = 2;

/// Set (to anything) in a process's environment, makes it ignore
/// `membarrier(2)`: its fast paths use full fences, its sleepers re-check
/// every millisecond, and it revokes biases by waiting (see `bias.rs`).
/// [`set_membarrier`](crate::set_membarrier) is the same choice made in code.
pub const NO_MEMBARRIER_ENV: &str = "MULTIPROC_NO_MEMBARRIER";

/// Whether this process can issue `MEMBARRIER_CMD_GLOBAL_EXPEDITED`
/// (1 = yes, 2 = no, 0 = not asked yet).
static HEAVY: AtomicU8 = AtomicU8::new(0);

extern "C" fn forget_fences_in_child() {
    // Async-signal-safe: an atomic store only. (The identity caches are
    // forgotten by `multiproc_core::owner`'s own handler.)
    FAST_MODE.store(0, Ordering::Relaxed);
}

/// Decides how the fast paths fence, on the first call in this process
/// (or in a forked child); one relaxed load after that.
#[inline]
pub(crate) fn prepare() {
    if FAST_MODE.load(Ordering::Relaxed) == 0 {
        prepare_fences();
    }
}

/// First use in this process (or in a forked child): decide how the fast
/// paths fence.
#[cold]
fn prepare_fences() {
    if kernel_has_membarrier() {
        register_atfork();
    }
    if FAST_MODE.load(Ordering::Relaxed) == 0 {
        register_fences(Threads::Count);
    }
}

/// Keeps the per-process fence mode right in forked children, which are
/// not registered with `membarrier`. Only a process that uses `membarrier`
/// needs it: without, the full fences it keeps are right in a child too.
fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: as `multiproc_core::process::at_fork_child` requires, the
        // handler only performs an atomic store (async-signal-safe, no
        // allocation, no locks) and cannot panic.
        let registered = unsafe { multiproc_core::process::at_fork_child(forget_fences_in_child) };
        debug_assert!(registered.is_ok(), "pthread_atfork failed");
    });
}

/// What [`register_fences`] may assume about the process's threads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Threads {
    /// Look: register at once if there is one thread, else in the
    /// background.
    Count,
    /// Register at once, whatever it costs (immediate while the process is
    /// single-threaded).
    Wait,
}

/// Whether the kernel offers `MEMBARRIER_CMD_GLOBAL_EXPEDITED` to this
/// process; asked once per executable image (forked children inherit the
/// answer, which cannot differ for them).
pub(crate) fn kernel_has_membarrier() -> bool {
    if HEAVY.load(Ordering::Relaxed) == 0 {
        // The environment's choice ([`NO_MEMBARRIER_ENV`]): behave as if the
        // kernel had no `membarrier`. A racing `set_membarrier` that got
        // there first wins.
        let usable = std::env::var_os(NO_MEMBARRIER_ENV).is_none() && kernel_offers_membarrier();
        let _ = HEAVY.compare_exchange(
            0,
            if usable { 1 } else { 2 },
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    HEAVY.load(Ordering::Relaxed) == 1
}

/// `membarrier(MEMBARRIER_CMD_QUERY)`: whether the kernel offers the two
/// commands the queues use.
fn kernel_offers_membarrier() -> bool {
    use rustix::thread::{MembarrierCommand, membarrier_query};
    let query = membarrier_query();
    query.contains_command(MembarrierCommand::GlobalExpedited)
        && query.contains_command(MembarrierCommand::RegisterGlobalExpedited)
}

/// See [`crate::set_membarrier`].
pub(crate) fn set_membarrier(enabled: bool) -> Result<(), SetMembarrierError> {
    let wanted = if enabled && kernel_offers_membarrier() {
        1
    } else {
        2
    };
    match HEAVY.compare_exchange(0, wanted, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => Ok(()),
        Err(now) if now == wanted => Ok(()),
        Err(now) => Err(SetMembarrierError { in_use: now == 1 }),
    }
}

/// `membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)`: lets sleepers in
/// other processes run a memory barrier on our CPUs, so our fast paths need
/// none (see [`light_fence`]).
///
/// # References
///  - [membarrier(2)](https://man7.org/linux/man-pages/man2/membarrier.2.html)
fn register_fences(threads: Threads) {
    use rustix::thread::{MembarrierCommand, membarrier};
    // Full fences until registration is done: that is correct at any time.
    FAST_MODE.store(SYMMETRIC, Ordering::SeqCst);
    if !kernel_has_membarrier() {
        return;
    }
    // Registering a single-threaded process is immediate; one that already
    // runs several threads waits for an RCU grace period (about 16 ms
    // measured here, outside the benches: no bench times the
    // registration). The fast paths must not wait for that: then a thread
    // registers while they use full fences, and switches them to the light
    // fence once the kernel has the process registered. (Children started
    // by multiproc with descriptors in their arguments register before they
    // start any thread: see `prepare_process`.)
    let register = || {
        if membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok() {
            FAST_MODE.store(ASYMMETRIC, Ordering::SeqCst);
        }
    };
    if threads == Threads::Wait
        || std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
        || std::thread::Builder::new()
            .name("multiproc-membarrier".into())
            .spawn(register)
            .is_err()
    {
        register();
    }
}

/// See [`crate::prepare_process`].
pub(crate) fn prepare_process() {
    if kernel_has_membarrier() {
        register_atfork();
    }
    if FAST_MODE.load(Ordering::Relaxed) == 0 {
        register_fences(Threads::Wait);
    }
}

/// Whether this process's light fence is only a compiler fence (it is
/// registered with `membarrier`).
#[inline]
pub(crate) fn asymmetric() -> bool {
    FAST_MODE.load(Ordering::Relaxed) == ASYMMETRIC
}

/// The fast half of a store-then-load (Dekker) pair: between a waker's
/// store of the condition and its load of the futex word.
///
/// In a process registered with `membarrier` this is only a compiler
/// fence: a sleeper calls [`heavy_fence`] between its own store and load,
/// which runs a full barrier on every CPU running a registered process, so
/// either the waker's store is visible to the sleeper's re-check or the
/// sleeper's store is visible to the waker's load. That keeps locked
/// instructions (which wait for the store buffer to drain, and so for the
/// cache line the other process just read) off the per-message path.
/// Elsewhere it is a full fence.
#[inline]
pub(crate) fn light_fence() {
    if asymmetric() {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The slow half of a store-then-load pair, run by a waiter between
/// announcing itself and re-checking; see [`light_fence`].
///
/// # References
///  - [membarrier(2)](https://man7.org/linux/man-pages/man2/membarrier.2.html)
pub(crate) fn heavy_fence() {
    fence(Ordering::SeqCst);
    if kernel_has_membarrier()
        && rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited).is_err()
    {
        // Refused although announced (a seccomp filter, say): from now on
        // this process's sleepers re-check every millisecond instead.
        HEAVY.store(2, Ordering::Relaxed);
    }
}

/// How long a sleeper may sleep before re-checking its condition by itself:
/// [`futex::RECHECK`](multiproc_core::futex::RECHECK) normally (a waker
/// killed between clearing the "someone sleeps" bit and its wake would
/// otherwise strand it); a short slice in a process that cannot issue
/// `membarrier` (for example under a seccomp filter), where a waker that
/// relies on it could otherwise be missed.
pub(crate) fn recheck_slice() -> Option<Duration> {
    Some(if HEAVY.load(Ordering::Relaxed) == 1 {
        multiproc_core::futex::RECHECK
    } else {
        Duration::from_millis(1)
    })
}

//! Process-shared synchronisation for [multiproc]: [`Lock`], [`RLock`],
//! [`Semaphore`], [`BoundedSemaphore`], [`Event`], [`Condition`] and
//! [`Barrier`], living in shared memory and usable from any process that
//! holds them, like Python's `multiprocessing` primitives — and a `Lock`
//! whose holder is killed does not deadlock everybody else.
//!
//! | Python `multiprocessing` | here |
//! |---|---|
//! | `Lock()`, `acquire(block, timeout)`, `release()`, `with lock:` | [`Lock::new`], [`acquire`](Lock::acquire) / [`try_acquire`](Lock::try_acquire) / [`acquire_timeout`](Lock::acquire_timeout), [`release`](Lock::release), [`lock`](Lock::lock) → guard |
//! | `RLock()` | [`RLock`], same methods, recursion counted per thread |
//! | `Semaphore(n)`, `BoundedSemaphore(n)`, `get_value()` | [`Semaphore`], [`BoundedSemaphore`], [`get_value`](Semaphore::get_value) |
//! | `Event()`: `set`, `clear`, `is_set`, `wait([timeout])` | [`Event`]: same, [`wait_timeout`](Event::wait_timeout) |
//! | `Condition([lock])`: `wait`, `wait_for`, `notify(n)`, `notify_all` | [`Condition::new`] / [`Condition::with_lock`], same names plus `_timeout` forms |
//! | `Barrier(parties)`: `wait`, `abort`, `reset`, `broken`, `n_waiting` | [`Barrier`], same names |
//!
//! # Hello, lock
//!
//! Every primitive lives in an anonymous shared-memory segment (a memfd: it
//! has no name and cannot leak). Clones are handles to the same object.
//!
//! ```
//! use multiproc_sync::Lock;
//!
//! let lock = Lock::new()?;
//! let handle = lock.clone(); // the same lock
//! {
//!     let _guard = lock.lock().unwrap();
//!     assert!(handle.is_locked());
//! }
//! assert!(!handle.is_locked());
//! # Ok::<(), multiproc_sync::CreateError>(())
//! ```
//!
//! # Sharing with other processes
//!
//! Every type is `Serialize + Deserialize` through multiproc's handle
//! mechanism: the segment's descriptor goes into the out-of-band table that
//! a Unix-socket transport ships with `SCM_RIGHTS`, and the receiver
//! attaches to the same object, checking its header (type, layout version,
//! size) first.
//!
//! ```
//! use multiproc_core::codec;
//! use multiproc_sync::Event;
//!
//! let event = Event::new()?;
//! let (bytes, fds) = codec::encode_with_fds(&event)?;
//! // ... bytes and fds cross a socket with multiproc_core::scm ...
//! let there: Event = codec::decode_with_fds(&bytes, fds)?;
//! there.set();
//! assert!(event.is_set());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Three ways to block
//!
//! Every blocking operation comes as `op()` (wait as long as it takes),
//! `try_op()` (never wait) and `op_timeout(d)` (wait at most `d`; zero
//! polls, durations too large for the clock wait for ever). All three share
//! one slow path per primitive: spin briefly
//! ([`SPIN_LIMIT`](multiproc_core::futex::SPIN_LIMIT)), then sleep on a
//! shared futex with a `CLOCK_MONOTONIC` deadline. Uncontended
//! operations are a single atomic instruction each — no system call.
//!
//! ```
//! use multiproc_sync::Semaphore;
//! use std::time::Duration;
//!
//! let sem = Semaphore::new(1)?;
//! let unit = sem.acquire();
//! assert!(sem.try_acquire().is_err());
//! assert!(sem.acquire_timeout(Duration::from_millis(2)).is_err());
//! drop(unit);
//! assert!(sem.try_acquire().is_ok());
//! # Ok::<(), multiproc_sync::CreateError>(())
//! ```
//!
//! # Robust locks: surviving a dead owner
//!
//! A [`Lock`] or [`RLock`] has an owner, a thread. If the owner dies while
//! holding it (its process is killed by `SIGKILL`, say), the next acquirer
//! gets [`OwnerDied`], which carries the guard, exactly like
//! [`std::sync::PoisonError`]: the lock is held, the protected data may be
//! half-updated, repair it and go on. Later acquirers see a healthy lock.
//!
//! ```
//! use multiproc_sync::Lock;
//!
//! let lock = Lock::new()?;
//! // A thread that exits while holding the lock is a dead owner too.
//! std::thread::scope(|s| {
//!     s.spawn(|| std::mem::forget(lock.acquire().unwrap()));
//! });
//! let guard = match lock.acquire() {
//!     Ok(_) => unreachable!("the owner died holding the lock"),
//!     Err(died) => died.into_inner(), // repair here
//! };
//! drop(guard);
//! assert!(lock.acquire().is_ok()); // healthy again
//! # Ok::<(), multiproc_sync::CreateError>(())
//! ```
//!
//! Because the owner is known, releasing a lock one does not hold is an
//! error ([`NotOwner`]); use a [`Semaphore`] for ownerless signalling.
//! Semaphores have no owner: a process that dies holding a unit does not
//! give it back.
//!
//! ## Why owner records and not glibc robust mutexes
//!
//! Two designs give robust process-shared locks on Linux. glibc's robust
//! `pthread_mutex_t` (`PTHREAD_MUTEX_ROBUST`, `EOWNERDEAD`) detects death
//! instantly through the kernel's robust list — but that list is threaded
//! through the mutexes themselves: a locked `pthread_mutex_t` in the shared
//! segment holds *pointers* into its owner's address space, which glibc
//! follows on unlock. A corrupt or hostile segment could then turn into
//! memory corruption in the owner, which this crate's layout contract
//! ("no pointers in shared memory; a corrupt segment is an error, never
//! UB") rules out. It also keeps the lock opaque, so spinning and waiter
//! tracking are glibc's, not ours.
//!
//! So the locks here are a futex word holding the owner's thread id, plus
//! an owner record (thread id + thread start time, so a reused id is not
//! mistaken for the dead owner). Waiters sleep in slices of
//! [`OWNER_CHECK_INTERVAL`]; when a slice ends with the same owner, they
//! check in `/proc` whether it still runs (zombies count as dead) and, if
//! not, one of them takes the lock over. A dead owner is thus noticed
//! within about that interval (the cross-process tests measure it and
//! require under 100 ms), every state is valid, and the uncontended path is
//! one CAS to lock and one swap to unlock.
//!
//! Who is dead is decided by `multiproc-core`'s one rule
//! ([`multiproc_core::owner`]), which the queue's locks use too.
//!
//! Limits of the scheme: processes that share a lock must see the same
//! thread ids, i.e. live in the same pid namespace (attaching an object
//! made in another one is refused with
//! [`HeaderError::ForeignPidNamespace`](multiproc_core::HeaderError::ForeignPidNamespace)
//! rather than mistake a live owner for a dead one); `/proc` must be mounted
//! (each thread reads its own start time once; an owner hidden by
//! `hidepid` is confirmed with `kill(tid, 0)` before it is declared dead);
//! and an owner that is in the middle of exiting still counts as alive for
//! the moment it takes the kernel to finish the exit.
//!
//! # Condition variables and barriers
//!
//! ```
//! use multiproc_sync::{Barrier, Condition};
//!
//! let cond = Condition::new()?; // over its own RLock, as in Python
//! let guard = cond.acquire().unwrap();
//! assert_eq!(cond.notify_all(), 0); // nobody waits yet
//! drop(guard);
//!
//! let barrier = Barrier::new(1)?;
//! assert!(barrier.wait().unwrap().is_leader());
//! barrier.abort();
//! assert!(barrier.wait().is_err());
//! barrier.reset();
//! assert!(barrier.wait().is_ok());
//! # Ok::<(), multiproc_sync::CreateError>(())
//! ```
//!
//! # Async waiting
//!
//! [`Lock`], [`Semaphore`], [`BoundedSemaphore`] and [`Event`] give a
//! [`Readiness`] (`readiness()`): a doorbell descriptor an event loop can
//! wait on, rung by unlock, release and `set` when they find an async
//! waiter announced (a notify that finds nobody stays one load, no system
//! call). `multiproc-async` builds its tokio and smol futures on it.
//!
//! # Memory layout
//!
//! Each object is `MEMORY_SIZE` bytes (1152 for locks, semaphores and
//! events, which carry the doorbell table of async waiters (see
//! [`Readiness`]) and are 64-byte aligned; 128 for a condition's own words;
//! a [`Barrier`] is 4224, with a
//! slot per waiting party so that a party that dies inside
//! [`wait`](Barrier::wait) breaks it for the others instead of counting as
//! arrived), starts with the core
//! [`Header`](multiproc_core::Header) and is made of atomics only; the
//! tables are in the source (`layout.rs`). `create_in` and `attach` place
//! objects inside segments of their own making (a `Value` keeping its lock
//! beside its data, for instance).
//!
//! # Verification
//!
//! The waiter/token word of [`Condition`] is modelled with loom:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p multiproc-sync --test loom --release
//! ```
//!
//! [multiproc]: https://docs.rs/multiproc
//!
//! # Using this crate alone
//!
//! A program that depends on `multiproc-sync` only (no `multiproc-core`, no
//! `libc`, no `unsafe`) hands a lock, event or any other primitive to a child it starts with
//! [`std::process::Command`] through [`inherit`] (re-exported from
//! `multiproc-core`): [`inherit::pass`] puts the handle and its descriptors
//! into the command, [`inherit::take`] in the child gets the same object
//! back. Primitives placed in a segment of your own attach with
//! `attach(Arc<Segment>, offset)` ([`Segment`] is re-exported too). A child made by `fork` (no `exec`) needs nothing: the
//! handles it inherited with the parent's memory work as they are.
//!
//! ```
//! use multiproc_sync::{inherit, Event};
//! use std::process::Command;
//!
//! // Parent: make the object, give it to the child under a key, spawn.
//! let ready = Event::new()?;
//! ready.set();
//! let mut cmd = Command::new("true"); // the worker program
//! inherit::pass(&mut cmd, "shared", &ready)?;
//! let mut child = cmd.spawn()?;
//! drop(cmd); // the parent's spare copies of the descriptors close here
//! assert!(child.wait()?.success());
//!
//! // The worker's `main`:
//! fn worker() -> Result<(), Box<dyn std::error::Error>> {
//!     let ready: Event = inherit::take("shared")?;
//!     assert!(ready.is_set());
//!     Ok(())
//! }
//! # let _ = worker;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `tests/cross_process.rs` runs this recipe with a real child
//! (`sync_shared_with_a_command_child_through_inherit`).
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

mod barrier;
mod condition;
mod error;
mod event;
mod ident;
mod layout;
mod lock;
mod raw_lock;
mod ready;
mod rlock;
mod semaphore;
mod shared;

pub use barrier::{Barrier, BarrierWaitResult};
pub use condition::{Condition, ConditionLock};
pub use error::{
    AcquireTimeoutError, AttachError, BrokenBarrier, CreateError, NotOwner, OwnerDied,
    ReleaseError, Timeout, TryAcquireError, WaitTimeoutError, WouldBlock,
};
pub use event::{Event, EventMark};
pub use lock::{Lock, LockGuard};
/// The shared-memory segment objects of this crate live in.
pub use multiproc_core::Segment;
/// Handing objects to children started with `std::process::Command`:
/// see [Using this crate alone](crate#using-this-crate-alone).
pub use multiproc_core::inherit;
pub use raw_lock::OWNER_CHECK_INTERVAL;
pub use ready::{Armed, Readiness};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};

#[cfg(test)]
mod static_checks {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<Lock>();
        send_sync::<RLock>();
        send_sync::<Semaphore>();
        send_sync::<BoundedSemaphore>();
        send_sync::<Event>();
        send_sync::<Condition>();
        send_sync::<Condition<Lock>>();
        send_sync::<Barrier>();
        send_sync::<SemaphoreGuard<'static>>();
    }
}

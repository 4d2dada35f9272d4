//! Process-wide calls that rustix does not offer: `fork`, `_exit`,
//! `atexit`, `pthread_atfork` and the `SIGPIPE` disposition.
//!
//! They are libc calls (rustix has them only in its experimental,
//! unstable-named `runtime` module, meant for libc implementations), made
//! here once so that the other crates reach the OS through this crate.
//! [`fork`] carries the one statement of what a caller must guarantee in
//! the child; every call site refers to it.
//!
//! ```
//! use multiproc_core::process::{self, Forked};
//! use rustix::process::{WaitOptions, waitpid};
//!
//! // SAFETY: the child only calls `exit_now`, which is async-signal-safe
//! // (see the contract of `fork`).
//! match unsafe { process::fork() }? {
//!     Forked::Child => process::exit_now(7),
//!     Forked::Parent(pid) => {
//!         let (_, status) = waitpid(Some(pid), WaitOptions::empty())?.unwrap();
//!         assert_eq!(status.exit_status(), Some(7));
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # References
//!  - [fork(2)](https://man7.org/linux/man-pages/man2/fork.2.html),
//!    [signal-safety(7)](https://man7.org/linux/man-pages/man7/signal-safety.7.html)
//!  - [_exit(2)](https://man7.org/linux/man-pages/man2/_exit.2.html),
//!    [atexit(3)](https://man7.org/linux/man-pages/man3/atexit.3.html),
//!    [pthread_atfork(3)](https://man7.org/linux/man-pages/man3/pthread_atfork.3.html)
//!  - [sigaction(2)](https://man7.org/linux/man-pages/man2/sigaction.2.html),
//!    [pipe(7)](https://man7.org/linux/man-pages/man7/pipe.7.html)
#![allow(unsafe_code)]

use rustix::process::Pid;
use std::io;

/// Which side of a [`fork`] this is.
///
/// # Examples
///
/// ```
/// use multiproc_core::process::{self, Forked};
/// use rustix::process::{WaitOptions, waitpid};
///
/// // SAFETY: the child only calls `exit_now`, which is async-signal-safe.
/// let side = unsafe { process::fork() }?;
/// if side == Forked::Child {
///     process::exit_now(0);
/// }
/// let Forked::Parent(pid) = side else { unreachable!() };
/// let (_, status) = waitpid(Some(pid), WaitOptions::empty())?.unwrap();
/// assert_eq!(status.exit_status(), Some(0));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forked {
    /// The new process.
    Child,
    /// The calling process; the child has this pid.
    Parent(Pid),
}

/// `fork(2)`: a new process, a copy of this one, that continues from here
/// with one thread. Handlers registered with [`at_fork_child`] (and with
/// `pthread_atfork` by anyone) run in the child before this returns there.
///
/// # Safety
///
/// The child starts with a copy of the caller's memory and a single
/// thread, the caller's. Every other thread of the parent vanished in the
/// middle of whatever it was doing: memory it was changing may be
/// half-written, and locks it held (the allocator's, standard output's, any
/// `Mutex`) stay held for ever. So the caller guarantees, for the child
/// until it calls `exec` or ends:
///
/// - If the process may run other threads at the instant of the fork, the
///   child performs only async-signal-safe operations
///   ([signal-safety(7)]: system calls, atomics; no allocation, no locks,
///   no formatted output, no panicking) — except on state that the caller
///   made consistent by holding its lock across the fork (taken before,
///   released in both processes after), since no other thread can have
///   held it then. glibc's `fork` does that for its allocator, so with
///   glibc the child may also allocate; a caller relying on this says so.
/// - If the process is single-threaded at the fork (a freshly executed
///   helper, say), there are no such threads and the child may do
///   anything the parent could.
///
/// And, not for memory safety but for every call site alike: the child's
/// memory holds the parent's objects, and their destructors and exit
/// handlers act on things the two share (named segments they unlink,
/// buffered output they flush, files they remove). The child ends with
/// [`exit_now`] (or `exec`), not by returning from `main` or calling
/// `std::process::exit`, unless running them twice is meant.
///
/// # Errors
///
/// The kernel's error: `EAGAIN` (process limit), `ENOMEM`.
///
/// [signal-safety(7)]: https://man7.org/linux/man-pages/man7/signal-safety.7.html
///
/// # Examples
///
/// ```
/// use multiproc_core::process::{self, Forked};
/// use multiproc_core::scm;
/// use rustix::process::{WaitOptions, waitpid};
///
/// let (parent_end, child_end) = scm::stream_pair()?;
/// // SAFETY: between the fork and `exit_now` the child only makes system
/// // calls (`sendmsg`) on memory it owns and allocates nothing: all
/// // async-signal-safe, whatever other threads the parent has.
/// match unsafe { process::fork() }? {
///     Forked::Child => {
///         let ok = scm::send(&child_end, b"hello from the child", &[]).is_ok();
///         process::exit_now(if ok { 0 } else { 1 });
///     }
///     Forked::Parent(pid) => {
///         let mut buf = [0u8; 32];
///         let got = scm::recv(&parent_end, &mut buf, 0)?;
///         assert_eq!(&buf[..got.len], b"hello from the child");
///         let (_, status) = waitpid(Some(pid), WaitOptions::empty())?.unwrap();
///         assert_eq!(status.exit_status(), Some(0));
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: `fork` has no precondition in the parent; what the child may
    // do afterwards is the caller's contract, stated above.
    let pid = unsafe { libc::fork() };
    match pid {
        0 => Ok(Forked::Child),
        pid if pid > 0 => Ok(Forked::Parent(Pid::from_raw(pid).expect("a positive pid"))),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `_exit(2)`: ends the process at once with `code`, running no
/// destructor, no exit handler ([`at_exit`], `atexit`) and flushing no
/// buffered output. What a forked child ends with (see [`fork`]).
/// Async-signal-safe.
///
/// ```no_run
/// print!("never flushed");
/// multiproc_core::process::exit_now(3);
/// ```
#[doc(alias = "_exit")]
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes any status and never returns; ending the
    // process without running destructors leaks, which is safe.
    unsafe { libc::_exit(code) }
}

/// `atexit(3)`: runs `handler` when the process ends through `exit` (which
/// `std::process::exit` and a return from `main` call), after any handler
/// registered later. Not on [`exit_now`], not on a signal.
///
/// The handler may run while other threads still do; a panic in it aborts
/// the process (it is an `extern "C" fn`). Handlers cannot be removed.
///
/// ```
/// extern "C" fn goodbye() {
///     // Runs at exit; keep it short and do not rely on other threads.
/// }
///
/// multiproc_core::process::at_exit(goodbye)?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `OutOfMemory` when the C library cannot record another handler.
#[doc(alias = "atexit")]
pub fn at_exit(handler: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `handler` is a function that lives as long as the program;
    // it cannot unwind into C (a panic in an `extern "C" fn` aborts).
    if unsafe { libc::atexit(handler) } == 0 {
        Ok(())
    } else {
        Err(io::ErrorKind::OutOfMemory.into())
    }
}

/// `pthread_atfork(3)` with a child handler only: `handler` runs in the
/// child of every later `fork` (this crate's [`fork`], and any other call
/// of the C library's `fork` in the process), before `fork` returns there.
/// For caches that must be forgotten in a new process (its ids differ).
/// Handlers cannot be removed; register once (behind a
/// [`Once`](std::sync::Once)).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static CACHED_PID: AtomicU32 = AtomicU32::new(0);
///
/// extern "C" fn forget_pid() {
///     CACHED_PID.store(0, Ordering::Relaxed); // async-signal-safe
/// }
///
/// // SAFETY: `forget_pid` only stores to an atomic.
/// unsafe { multiproc_core::process::at_fork_child(forget_pid)? };
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Safety
///
/// The handler runs in a child forked from a process that may have had
/// other threads, which vanished there mid-operation: it must be
/// async-signal-safe, as the child code of [`fork`] in a multithreaded
/// process must (atomics and plain thread-local memory; no allocation, no
/// locks), and must not panic.
///
/// # Errors
///
/// `ENOMEM` when the C library cannot record another handler.
#[doc(alias = "pthread_atfork")]
pub unsafe fn at_fork_child(handler: extern "C" fn()) -> io::Result<()> {
    // SAFETY: registers a function that lives as long as the program; the
    // caller guarantees it is fit to run in a forked child (see above).
    match unsafe { libc::pthread_atfork(None, None, Some(handler)) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Sets `SIGPIPE` to "ignore" if it is at its default action (which ends
/// the process); a handler or an "ignore" the program installed is left
/// alone. Returns whether it changed the action.
///
/// A write to a pipe whose reader is gone raises `SIGPIPE` (sockets have
/// `MSG_NOSIGNAL` instead, see [`scm::send`](crate::scm::send)); with the
/// signal ignored, the write fails with `EPIPE`. The Rust runtime (and
/// CPython) already ignore `SIGPIPE` before `main`, so in such a program
/// this changes nothing; it matters in a host that restored the default,
/// such as a C program embedding Rust code.
///
/// Of the ways around `SIGPIPE` on pipes, this is the one that costs
/// nothing per write. Blocking the signal around every write and consuming
/// a pending one with `sigtimedwait` needs three extra system calls per
/// write, and would still let another thread's plain `write` die.
///
/// ```
/// // A Rust program ignores SIGPIPE already: nothing to change.
/// assert!(!multiproc_core::process::ignore_sigpipe_if_default()?);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// The kernel's error (none expected for a valid signal number).
pub fn ignore_sigpipe_if_default() -> io::Result<bool> {
    // SAFETY: an all-zero `sigaction` is a valid value of the C struct
    // (handler SIG_DFL, empty mask, no flags); it is only written to.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only queries; `old` is a valid, writable struct.
    if unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if old.sa_sigaction != libc::SIG_DFL {
        return Ok(false);
    }
    // SAFETY: as above, a zeroed struct is valid; we then set the handler to
    // SIG_IGN, which needs no function and no flags.
    let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
    ignore.sa_sigaction = libc::SIG_IGN;
    // SAFETY: `ignore` is fully initialised and outlives the call; a null
    // `oldact` is allowed.
    if unsafe { libc::sigaction(libc::SIGPIPE, &ignore, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

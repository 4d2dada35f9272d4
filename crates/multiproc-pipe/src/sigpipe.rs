//! `SIGPIPE` must never kill a process for writing to a closed pipe.
//!
//! Sockets are written with `MSG_NOSIGNAL`, which turns a closed peer into
//! `EPIPE` for that one call. Pipes have no such flag: `write(2)` to a pipe
//! whose reader is gone raises `SIGPIPE`, and its default action ends the
//! process. Of the ways around that, we pick the one that costs nothing per
//! write: when a connection that writes to a pipe is created and `SIGPIPE`
//! is still at its default action, it is set to "ignore", so the write fails
//! with `EPIPE` instead. A handler or an "ignore" the program installed is
//! left alone. This is what the Rust runtime already does before `main`
//! (and what CPython does at start-up), so in a Rust or Python program it
//! changes nothing; it matters in a host that restored the default, such as
//! a C program embedding this crate.
//!
//! The alternative — blocking `SIGPIPE` around every write and consuming a
//! pending one with `sigtimedwait` — needs three extra system calls per
//! message, and would still let another thread's plain `write` die.
//!
//! # References
//!  - [pipe(7)](https://man7.org/linux/man-pages/man7/pipe.7.html), "I/O on pipes and FIFOs"
//!  - [sigaction(2)](https://man7.org/linux/man-pages/man2/sigaction.2.html)
#![allow(unsafe_code)]

use std::io;

/// `sigaction(SIGPIPE, …)`: sets `SIGPIPE` to `SIG_IGN` if it is `SIG_DFL`.
///
/// # Errors
///
/// The kernel's error (none expected for a valid signal number).
pub(crate) fn ignore_if_default() -> io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid value of the C struct
    // (handler SIG_DFL, empty mask, no flags); it is only written to.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only queries; `old` is a valid, writable struct.
    if unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if old.sa_sigaction != libc::SIG_DFL {
        return Ok(());
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
    Ok(())
}

//! Naming a `fn(A) -> R` so that another process running the same
//! executable can call it.
//!
//! A function pointer is an address, and addresses differ between processes
//! (ASLR). The distance from a fixed function ([`multiproc_core::fnref`]) to
//! the target is the same in every process that runs the same executable, so
//! that distance is what travels. The child refuses to turn a distance back
//! into a pointer unless its executable is the parent's very file
//! ([`ExeId`](crate::exe::ExeId)): a mismatch is an error, never a jump into garbage.
#![allow(unsafe_code)]

use multiproc_core::codec;
use multiproc_pipe::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::wire::{Outcome, Payload, send_returned};

pub(crate) use multiproc_core::fnref::{addr_at, offset_of, panic_message};

/// The child side of every start method, one instance per `(A, R)`:
/// decodes the arguments, calls the target, sends back its value or its
/// panic. Returns the exit code.
pub(crate) type Trampoline = unsafe fn(usize, Payload, &mut Connection) -> i32;

/// A [`Trampoline`]: calls the `fn(A) -> R` at address `target`.
///
/// # Safety
///
/// `target` must be the address of a `fn(A) -> R` in this process: the
/// [`addr_at`] of an [`offset_of`] taken from such a function in a process
/// running the same executable (the caller has compared [`ExeId`](crate::exe::ExeId)s, or this
/// process is a forked copy of that one).
pub(crate) unsafe fn trampoline<A: DeserializeOwned, R: Serialize>(
    target: usize,
    payload: Payload,
    conn: &mut Connection,
) -> i32 {
    let (bytes, fds) = payload.into_parts();
    // Without descriptors there is no table to install (a handle in the
    // arguments then fails to decode all the same).
    let args = if fds.is_empty() {
        codec::decode::<A>(&bytes)
    } else {
        codec::decode_with_fds::<A>(&bytes, fds)
    };
    let outcome = match args {
        Err(err) => Outcome::Bootstrap(format!("decoding the arguments failed: {err}")),
        Ok(args) => {
            // SAFETY: per this function's contract, `target` is a
            // `fn(A) -> R` in this process.
            let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(target) };
            match catch_unwind(AssertUnwindSafe(|| f(args))) {
                Ok(value) => return send_returned(conn, &value),
                Err(panic) => Outcome::Panicked(panic_message(&*panic)),
            }
        }
    };
    let code = outcome.exit_code();
    let _ = conn.send(&outcome);
    code
}

/// Turns a trampoline distance back into the function.
///
/// # Safety
///
/// `offset` must come from [`offset_of`] of a [`Trampoline`] in a process
/// running the same executable (the caller has compared [`ExeId`](crate::exe::ExeId)s).
pub(crate) unsafe fn trampoline_at(offset: i64) -> Trampoline {
    // SAFETY: per the contract, the address is a `Trampoline` in this image.
    unsafe { std::mem::transmute::<usize, Trampoline>(addr_at(offset)) }
}

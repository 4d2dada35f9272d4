//! What travels between the pool and its workers, and the type-erased
//! functions that run a chunk of tasks in a worker.
#![allow(unsafe_code)]

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::bootstrap::{ByteBuf, deserialize_bytes};
use crate::target::{addr_at, offset_of, panic_message};

/// A chunk of calls of one function: `args` is an encoded `Vec<A>`.
/// Cloned cheaply: the pool keeps each task it hands out until its report
/// arrives (to hand it to another worker should this one die).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) id: u64,
    pub(crate) runner: i64,
    pub(crate) target: i64,
    pub(crate) args: SharedBytes,
}

/// Immutable bytes behind an `Arc`, encoded as one serde byte string (as
/// [`ByteBuf`] is).
#[derive(Clone)]
pub(crate) struct SharedBytes(Arc<[u8]>);

impl From<Vec<u8>> for SharedBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes.into())
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Lent bytes go straight into the `Arc`: one allocation, one copy.
        deserialize_bytes(
            deserializer,
            |v| SharedBytes(Arc::from(v)),
            SharedBytes::from,
        )
    }
}

/// What a worker reports.
#[derive(Serialize, Deserialize)]
pub(crate) enum Report {
    /// Task `id` finished: an encoded `Vec<Result<R, String>>`, one entry
    /// per call, or why the chunk could not run at all.
    Done {
        id: u64,
        worker: u32,
        result: Result<ByteBuf, String>,
    },
    /// The initializer of `worker` failed; it exits.
    InitFailed { worker: u32, message: String },
}

/// Runs a chunk in a worker: decodes `Vec<A>`, calls the target on each
/// element (catching panics one by one), encodes the results.
pub(crate) type Runner = fn(usize, &[u8]) -> Result<Vec<u8>, String>;

fn run_chunk<A: DeserializeOwned, R: Serialize>(
    target: usize,
    args: &[u8],
) -> Result<Vec<u8>, String> {
    let items: Vec<A> = multiproc_core::codec::decode(args)
        .map_err(|e| format!("decoding the arguments failed: {e}"))?;
    // SAFETY: `target` is the address of a `fn(A) -> R` recorded next to
    // this very instance of `run_chunk` by the pool (`Call::new`), in a
    // worker whose executable was checked to be the pool's.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(target) };
    let results: Vec<Result<R, String>> = items
        .into_iter()
        .map(|a| catch_unwind(AssertUnwindSafe(|| f(a))).map_err(|p| panic_message(&*p)))
        .collect();
    multiproc_core::codec::encode(&results).map_err(|e| format!("encoding the results failed: {e}"))
}

fn run_chunk2<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    target: usize,
    args: &[u8],
) -> Result<Vec<u8>, String> {
    let items: Vec<(A, B)> = multiproc_core::codec::decode(args)
        .map_err(|e| format!("decoding the arguments failed: {e}"))?;
    // SAFETY: as in `run_chunk`, for a `fn(A, B) -> R` (`Call::new2`).
    let f = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(target) };
    let results: Vec<Result<R, String>> = items
        .into_iter()
        .map(|(a, b)| catch_unwind(AssertUnwindSafe(|| f(a, b))).map_err(|p| panic_message(&*p)))
        .collect();
    multiproc_core::codec::encode(&results).map_err(|e| format!("encoding the results failed: {e}"))
}

/// A target and the runner that knows its types, as offsets.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Call {
    pub(crate) runner: i64,
    pub(crate) target: i64,
}

impl Call {
    pub(crate) fn new<A: DeserializeOwned, R: Serialize>(f: fn(A) -> R) -> Self {
        Self {
            runner: offset_of(run_chunk::<A, R> as Runner as usize),
            target: offset_of(f as usize),
        }
    }

    pub(crate) fn new2<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
        f: fn(A, B) -> R,
    ) -> Self {
        Self {
            runner: offset_of(run_chunk2::<A, B, R> as Runner as usize),
            target: offset_of(f as usize),
        }
    }

    /// Runs the call on encoded arguments, in a worker.
    pub(crate) fn run(self, args: &[u8]) -> Result<Vec<u8>, String> {
        // SAFETY: `runner` is the offset of a `Runner` taken by `Call::new`
        // in the pool process, which runs the same executable as this
        // worker (checked at the worker's start).
        let runner = unsafe { std::mem::transmute::<usize, Runner>(addr_at(self.runner)) };
        runner(addr_at(self.target), args)
    }
}

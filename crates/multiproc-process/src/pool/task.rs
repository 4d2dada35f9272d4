//! What travels between the pool and its workers, and the type-erased
//! functions that run a chunk of tasks in a worker.
#![allow(unsafe_code)]

use multiproc_core::codec::{Codec, CodecError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::target::{addr_at, offset_of, panic_message};

/// A chunk of calls of one function, as the pool keeps it: its id and the
/// message a worker receives, encoded once when the chunk is submitted (so
/// handing it to a worker is a copy into the worker's queue, on the pool's
/// busiest thread). The pool keeps each task it hands out until its report
/// arrives, to hand it to another worker should this one die.
///
/// The message is a fixed header, then the arguments, an encoded `Vec<A>`:
///
/// | bytes | field |
/// |---|---|
/// | 0..8 | task id, little endian |
/// | 8..16 | runner offset ([`Call::runner`]) |
/// | 16..24 | target offset ([`Call::target`]) |
/// | 24.. | arguments |
pub(crate) struct Task {
    pub(crate) id: u64,
    pub(crate) message: Message,
}

/// Bytes of a task message before its arguments.
const HEADER: usize = 24;

/// Largest message kept inline in a [`Message`].
const INLINE: usize = 56;

/// A task message: inline when it is small, as most tasks of `map` with a
/// small chunk size are (no allocation on the submitting thread, and no
/// free of another thread's allocation on the result thread); else on the
/// heap.
pub(crate) enum Message {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Vec<u8>),
}

impl Message {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            Self::Inline { len, bytes } => &mut bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }
}

/// Marks a queue that carries task messages (as bytes, see [`Task`]).
pub(crate) enum TaskMessage {}

impl Task {
    /// Encodes the message for `call` over `chunk`, with its id still to
    /// be set by [`Task::new`] (ids are handed out under the pool's lock).
    pub(crate) fn encode<A: Serialize>(call: Call, chunk: &[A]) -> Result<Message, CodecError> {
        let mut header = [0u8; HEADER];
        header[8..16].copy_from_slice(&call.runner.to_le_bytes());
        header[16..].copy_from_slice(&call.target.to_le_bytes());
        let mut bytes = [0u8; INLINE];
        bytes[..HEADER].copy_from_slice(&header);
        match Codec::new().encode_into_slice(chunk, &mut bytes[HEADER..]) {
            Ok(n) => {
                if let Ok(len) = u8::try_from(HEADER + n) {
                    return Ok(Message::Inline { len, bytes });
                }
            }
            Err(e) if e.is_too_large() => {} // on the heap, then
            Err(e) => return Err(e),
        }
        let mut message = Vec::with_capacity(2 * INLINE);
        message.extend_from_slice(&header);
        Codec::new().encode_into(chunk, &mut message)?;
        Ok(Message::Heap(message))
    }

    /// The task with id `id` over a message from [`Task::encode`].
    pub(crate) fn new(id: u64, mut message: Message) -> Self {
        message.as_mut_slice()[..8].copy_from_slice(&id.to_le_bytes());
        Self { id, message }
    }
}

/// The `N` bytes at `at` of a fixed-size header (task header, report
/// trailer), for `from_le_bytes`. The caller has checked the length.
pub(super) fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    std::array::from_fn(|i| bytes[at + i])
}

/// A task message as a worker reads it.
pub(crate) struct Received<'a> {
    pub(crate) id: u64,
    pub(crate) call: Call,
    pub(crate) args: &'a [u8],
}

impl<'a> Received<'a> {
    /// Splits a message; `None` when it is shorter than the header.
    pub(crate) fn parse(message: &'a [u8]) -> Option<Self> {
        let (header, args) = message.split_at_checked(HEADER)?;
        Some(Self {
            id: u64::from_le_bytes(field(header, 0)),
            call: Call {
                runner: i64::from_le_bytes(field(header, 8)),
                target: i64::from_le_bytes(field(header, 16)),
            },
            args,
        })
    }
}

/// Runs a chunk in a worker: decodes `Vec<A>`, calls the target at the
/// address it is given on each element (catching panics one by one), and
/// encodes the results, a `Vec<Result<R, String>>`, into the buffer it is
/// given (cleared first; the worker reuses it for every task). One instance
/// per target type: [`run_chunk`], [`run_chunk2`].
pub(crate) type Runner = unsafe fn(usize, &[u8], &mut Vec<u8>) -> Result<(), String>;

/// Calls a function on each item as it is encoded, so a chunk's results
/// go straight into the report buffer: no vector of results in between.
/// Encodes exactly as the `Vec<Result<R, String>>` of those calls would.
struct Calls<I, F> {
    items: Cell<Option<I>>,
    len: usize,
    call: F,
}

impl<I, F, R> Serialize for Calls<I, F>
where
    I: Iterator,
    F: Fn(I::Item) -> R,
    R: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for item in self.items.take().into_iter().flatten() {
            let result: Result<R, String> = catch_unwind(AssertUnwindSafe(|| (self.call)(item)))
                .map_err(|p| panic_message(&*p));
            seq.serialize_element(&result)?;
        }
        seq.end()
    }
}

/// Runs `call` on each of `items` and encodes the results into `out`.
fn run_into<A, R>(items: Vec<A>, call: impl Fn(A) -> R, out: &mut Vec<u8>) -> Result<(), String>
where
    R: Serialize,
{
    out.clear();
    let calls = Calls {
        len: items.len(),
        items: Cell::new(Some(items.into_iter())),
        call,
    };
    Codec::new()
        .encode_into(&calls, out)
        .map(drop)
        .map_err(|e| format!("encoding the results failed: {e}"))
}

/// A [`Runner`]: calls the `fn(A) -> R` at address `target`.
///
/// # Safety
///
/// `target` must be the address of a `fn(A) -> R` in this process: the
/// [`addr_at`] of an [`offset_of`] taken from a function of exactly that
/// type in a process running the same executable (whose identity was
/// checked at the worker's start), or of which this process is a forked
/// copy.
unsafe fn run_chunk<A: DeserializeOwned, R: Serialize>(
    target: usize,
    args: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let items: Vec<A> = multiproc_core::codec::decode(args)
        .map_err(|e| format!("decoding the arguments failed: {e}"))?;
    // SAFETY: per this function's contract, `target` is a `fn(A) -> R` in
    // this process.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(target) };
    run_into(items, f, out)
}

/// A [`Runner`]: calls the `fn(A, B) -> R` at address `target` on each
/// decoded pair.
///
/// # Safety
///
/// As for [`run_chunk`], for a `fn(A, B) -> R`: `target` must be the
/// [`addr_at`] of an [`offset_of`] taken from a function of exactly that
/// type in a process running the same executable, or of which this process
/// is a forked copy.
unsafe fn run_chunk2<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    target: usize,
    args: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let items: Vec<(A, B)> = multiproc_core::codec::decode(args)
        .map_err(|e| format!("decoding the arguments failed: {e}"))?;
    // SAFETY: per this function's contract, `target` is a
    // `fn(A, B) -> R` in this process.
    let f = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(target) };
    run_into(items, |(a, b)| f(a, b), out)
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

    /// Runs the call on encoded arguments, in a worker; the encoded results
    /// go to `out`.
    ///
    /// # Safety
    ///
    /// `self` must have been made by [`Call::new`] or [`Call::new2`] (its
    /// offsets are the [`offset_of`] of a [`Runner`] instance and of a
    /// function of exactly the type that instance calls) in a process
    /// running the same executable as this one, or of which this process
    /// is a forked copy; then both addresses are those functions here.
    pub(crate) unsafe fn run(self, args: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        // SAFETY: per this function's contract, `runner` is the offset of a
        // `Runner` in this executable.
        let runner = unsafe { std::mem::transmute::<usize, Runner>(addr_at(self.runner)) };
        // SAFETY: per the contract, `target` is the offset of a function of
        // the type this runner instance calls (`Call::new` and
        // `Call::new2` record the two together).
        unsafe { runner(addr_at(self.target), args, out) }
    }
}

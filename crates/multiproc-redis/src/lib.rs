//! Queues and a pool over Redis Streams: the API of `multiproc-queue` and
//! of the local `Pool` between processes on any machines that reach one
//! Redis server (7.0 or newer).
//!
//! [`RemoteQueue<T>`] and [`RemoteJoinableQueue<T>`] have the local queues'
//! names and shapes — `put`/`try_put`/`put_timeout`,
//! `get`/`try_get`/`get_timeout`, `put_bytes`/`get_bytes`, `qsize`,
//! `close`, `task_done`/`join`/`join_timeout`, one small error type per
//! operation, failed puts handing the value back — and values go through
//! the workspace codec (`multiproc_core::codec`: serde + bincode).
//!
//! # Hello, remote queue
//!
//! ```no_run
//! use multiproc_redis::RemoteQueue;
//! use std::time::Duration;
//!
//! // In one process, on one machine:
//! let q: RemoteQueue<String> = RemoteQueue::open("redis://127.0.0.1:6379/0", "greetings")?;
//! q.put("hello".to_string())?;
//!
//! // In another process, anywhere:
//! let q: RemoteQueue<String> = RemoteQueue::open("redis://127.0.0.1:6379/0", "greetings")?;
//! assert_eq!(q.get_timeout(Duration::from_secs(5))?, "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A joinable queue acknowledges at `task_done` instead of at `get`:
//!
//! ```no_run
//! use multiproc_redis::RemoteJoinableQueue;
//!
//! let jobs: RemoteJoinableQueue<u64> =
//!     RemoteJoinableQueue::open("redis://127.0.0.1:6379/0", "jobs")?;
//! jobs.put(7)?;
//! // A worker, possibly in another process:
//! let n = jobs.get()?;
//! let _ = n * n; // the work
//! jobs.task_done()?;
//! // The producer:
//! jobs.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Local or remote queue
//!
//! Between processes of one machine, use `multiproc::Queue`: shared
//! memory, exactly once, tens of millions of small messages a second. Use
//! a remote queue when producers and consumers run on several machines,
//! come and go independently, or must not lose work when a consumer dies
//! (at least once, re-delivery, dead letters). Its speed is the server's
//! round trips: on a 2-CPU machine over loopback (1 producer process, 1
//! consumer process, `cargo bench -p multiproc-redis --bench remote`),
//!
//! | 1→1 | one by one | `read_ahead(64)` gets | batches of 64 ([`put_many`](RemoteQueue::put_many), [`get_many`](RemoteQueue::get_many)) | raw pipelined `XADD`/`XREADGROUP`/`XACK` |
//! |---|---|---|---|---|
//! | 8 B | 10–15 K msg/s | 16–17 K msg/s | 156–175 K msg/s (88–92 %) | 178–191 K msg/s |
//! | 64 KiB | 3.9–4.7 K msg/s | 5.8 K msg/s | 3.9–4.1 K msg/s | 6.0–6.3 K msg/s |
//!
//! so small messages want batches (or at least read-ahead on the
//! consumer side).
//!
//! # How it maps to streams
//!
//! A queue named `jobs` is the stream `PREFIX{jobs}:stream` (prefix
//! [`DEFAULT_PREFIX`] unless [set](RemoteQueueBuilder::prefix)), one
//! consumer group in it, and two more keys: `PREFIX{jobs}:dead` (the
//! dead-letter stream) and `PREFIX{jobs}:closed`. Every handle is one
//! consumer of the group, named `host-pid-counter-random`.
//!
//! | operation | commands (the multi-command steps are Lua scripts, atomic on the server) |
//! |---|---|
//! | `put`, `put_many` | `EXISTS closed`, `XLEN` + the batch's length against `maxsize`, `XADD stream * d PAYLOAD` per message: all or none |
//! | `get`, `get_many` | a bounded `XAUTOCLAIM` step (messages idle longer than [`min_idle`](RemoteQueueBuilder::min_idle)), with `XPENDING` for their delivery count, then `XREADGROUP … COUNT n >` for new messages; if none, `XREADGROUP … COUNT n BLOCK` for at most [`block`](RemoteQueueBuilder::block), and again (`n`: the batch asked, or [`read_ahead`](RemoteQueueBuilder::read_ahead)). Within `block` (at most a quarter of `min_idle`) of a take-over step, a get first tries a plain `XREADGROUP … COUNT n >`, and runs the step only when that finds nothing |
//! | acknowledgement (plain queue: inside `get`; joinable queue: `task_done`) | `XACK` and `XDEL` together: the stream holds exactly the messages not yet acknowledged |
//! | a message over [`max_deliveries`](RemoteQueueBuilder::max_deliveries) | instead of its next delivery: `XACK`, `XDEL`, `XADD dead * id … deliveries … reason deliveries d …` |
//! | `qsize`, `join` | `XLEN stream` |
//! | `close` | `SET closed 1` |
//!
//! # Delivery: at least once
//!
//! Every message put is delivered at least once, and may be delivered
//! more than once. A consumer that dies (or stalls longer than
//! `min_idle`) between taking a message (`XREADGROUP`) and acknowledging
//! it (`XACK`) leaves it pending in the group; after `min_idle`, a get of
//! any other handle takes it over (`XAUTOCLAIM`) and it is delivered
//! again. For the plain queue the acknowledgement is sent inside `get`,
//! before the message is returned, without waiting for its reply (the
//! next command on the connection reads it): the window is from the read
//! until that command reaches the server, and if the connection breaks
//! meanwhile the message may come again — it is never lost. For the
//! joinable queue the window lasts until `task_done`, so `min_idle` must
//! exceed the longest task.
//!
//! Messages a get takes in advance ([`read_ahead`](RemoteQueueBuilder::read_ahead))
//! are pending for that consumer and unacknowledged until a get hands
//! them out: a consumer killed holding them leaves them all to
//! be re-delivered after `min_idle`. One that waited half of `min_idle`
//! in the handle is given back to the group instead of handed out, so
//! that it cannot be taken over while this consumer still hands it out.
//! Make the work idempotent, or deduplicate. Nobody dying means exactly
//! once: one consumer group hands each new message to one consumer.
//!
//! Order is the stream's (put order, per server) for new messages; a
//! re-delivered message comes when it is taken over, after newer ones.
//!
//! # Batches
//!
//! [`put_many`](RemoteQueue::put_many) / [`put_many_bytes`](RemoteQueue::put_many_bytes)
//! (with `try_` and `_timeout` forms) put a slice of messages in one
//! script call: all of them or none, never split by another producer,
//! and the `maxsize` bound holds for the batch as a whole (a batch longer
//! than `maxsize` fails at once with [`RemoteError::OverMaxsize`]).
//! [`get_many`](RemoteQueue::get_many) / [`get_many_bytes`](RemoteQueue::get_many_bytes)
//! wait for one message, then take up to `max` in one round trip; each
//! message is delivered exactly as by a single get (plain queue:
//! acknowledged before it is returned; joinable: pending until its own
//! `task_done`, oldest first).
//!
//! ```no_run
//! use multiproc_redis::RemoteJoinableQueue;
//! use std::time::Duration;
//!
//! let jobs: RemoteJoinableQueue<u64> =
//!     RemoteJoinableQueue::open("redis://127.0.0.1:6379/0", "jobs")?;
//! jobs.put_many(&[1, 2, 3])?;
//! for job in jobs.get_many(64, Duration::from_secs(1))? {
//!     let _ = job * job; // the work
//!     jobs.task_done()?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Poison messages and dead letters
//!
//! A message whose consumers keep dying is delivered at most
//! `max_deliveries` times (default 5): when it is found idle again after
//! its last delivery, it moves to the dead-letter stream. So does a message
//! that does not decode as `T` (its `get` fails with
//! [`RemoteError::Codec`]), one with no payload field (written by another
//! program: [`RemoteError::Protocol`]) and one over the message limit
//! ([`RemoteError::TooLarge`]). Whoever inspects the dead letters
//! ([`RemoteQueue::take_dead_letter`], [`RemoteQueue::dead_letters`]) gets
//! a [`DeadLetter`]: the message's id, how many times it was delivered,
//! why it is there, and its payload (which [`DeadLetter::decode`] decodes).
//!
//! ```no_run
//! use multiproc_redis::{DeadReason, RemoteQueue};
//!
//! let q: RemoteQueue<String> = RemoteQueue::open("redis://127.0.0.1:6379/0", "jobs")?;
//! while let Some(letter) = q.take_dead_letter()? {
//!     if letter.reason() == DeadReason::TooManyDeliveries {
//!         let job: String = letter.decode()?;
//!         eprintln!("{job:?} killed its consumer {} times", letter.deliveries());
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Bounded capacity
//!
//! Redis has no back-pressure on `XADD`, so a [`maxsize`](RemoteQueueBuilder::maxsize)
//! is enforced by the put script: it adds only while `XLEN` of the stream
//! is below `maxsize`, and since acknowledged messages are deleted, that is
//! the number of messages put and not yet acknowledged — waiting ones, and
//! delivered ones not yet acknowledged (for the joinable queue: not yet
//! `task_done`), including those of a dead consumer until they are
//! re-delivered and acknowledged or dead-lettered. The check and the add
//! are one atomic step, so concurrent producers never exceed it. A full
//! `put` polls with back-off (1 ms doubling to 50 ms) until there is room;
//! `put_timeout` gives the value back in [`PutTimeoutError::Timeout`];
//! `try_put` in [`TryPutError::Full`]. Room is not reserved for waiting
//! producers in order: whichever polls first after a get takes it.
//!
//! ```no_run
//! use multiproc_redis::RemoteQueue;
//! use std::time::Duration;
//!
//! let q: RemoteQueue<u32> = RemoteQueue::builder("redis://127.0.0.1:6379/0", "small")
//!     .maxsize(1)
//!     .build()?;
//! q.put(1)?;
//! let err = q.put_timeout(2, Duration::from_millis(50)).unwrap_err();
//! assert!(err.is_timeout());
//! assert_eq!(err.into_inner(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # When the server goes away
//!
//! Every network wait has a bound: connecting ([`connect_timeout`](RemoteQueueBuilder::connect_timeout),
//! default 2 s), each reply ([`io_timeout`](RemoteQueueBuilder::io_timeout),
//! default 5 s, cut to the operation's deadline but not below 50 ms), and a
//! blocking get waits on the server [`block`](RemoteQueueBuilder::block) at
//! a time (default 1 s) before it checks again. A handle reconnects by
//! itself, with back-off from 5 ms to 500 ms:
//!
//! - an operation with a timeout fails by its deadline (plus at most
//!   50 ms) with [`RemoteError::Unavailable`] in its `Failed` variant;
//! - a blocking operation keeps reconnecting for
//!   [`retry_for`](RemoteQueueBuilder::retry_for) (default 5 s), then
//!   fails the same way; `try_` operations try once;
//! - a put whose command left but whose reply never came (the connection
//!   broke, or the reply timed out: a stalled server runs the command when
//!   it resumes) may or may not have added its message: it fails at once
//!   (not retried, which could add it twice), handing the value back;
//! - a get in the same situation may have taken a message it never saw: it
//!   stays pending and is re-delivered after `min_idle`.
//!
//! Once the server answers again (restarted on the same address) the
//! same handles work again; a server restarted empty gets the stream and
//! its consumer group made again by the first command that misses them.
//!
//! # Closing
//!
//! [`close`](RemoteQueue::close) is seen by every handle: puts fail with
//! `Closed`; gets deliver what is left, and fail with `Closed` once the
//! stream holds nothing unacknowledged. A blocked get notices within
//! `block`.
//!
//! # Errors
//!
//! One small type per operation, as in `multiproc-queue`: [`PutError`],
//! [`TryPutError`], [`PutTimeoutError`] (each handing the value back),
//! [`GetError`], [`TryGetError`], [`GetTimeoutError`], [`TaskDoneError`],
//! [`JoinTimeoutError`]. What is not full, empty, timed out or closed is a
//! [`RemoteError`] in a `Failed` variant: `Unavailable`, `Server`,
//! `Protocol`, `Codec`, `TooLarge`, `Url`, `InvalidConfig`, each with an
//! `is_*` predicate and the client's error as `source()`.
//!
//! # Async queues (features `tokio`, `smol`)
//!
//! With the feature `tokio` or `smol` (both off by default),
//! `AsyncRemoteQueue` and `AsyncRemoteJoinableQueue` (module `aio`) are
//! these queues with `async` operations — `put`, `put_bytes`,
//! `put_timeout`, `get`, `get_bytes`, `get_timeout`, `try_get`, `qsize`,
//! `close`, `task_done`, `join_timeout` — over redis's async connections,
//! without a thread per waiter. They use the same keys, entries, scripts
//! and error types, so blocking and async handles of one queue deliver to
//! each other, and they are built from the same builder:
//! `RemoteQueue::builder(url, name).build_async().await` (or
//! `build_async_joinable`). With both features on, the runtime is tokio's
//! when a tokio runtime is current, else smol's. Every wait is bounded as
//! described below; a get whose future is dropped loses no message (it
//! may come again after `min_idle`: at least once).
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use multiproc_redis::{AsyncRemoteQueue, RemoteQueue};
//!
//! let q: AsyncRemoteQueue<String> = RemoteQueue::builder("redis://127.0.0.1:6379/0", "greetings")
//!     .build_async()
//!     .await?;
//! q.put("hello".to_string()).await?;
//! assert_eq!(q.get().await?, "hello");
//! # Ok(())
//! # }
//! ```
//!
//! # Remote pool
//!
//! [`RemotePool`] is Python's `multiprocessing.Pool` with its workers on
//! other machines: `apply`, `apply_async`, `map`, `imap_unordered`. A
//! worker is the caller's own program, started in worker mode: its `main`
//! calls [`RemotePoolBuilder::serve`] (e.g. when given `--worker`), which
//! runs the pool's tasks until the pool is closed.
//!
//! ```no_run
//! use multiproc_redis::RemotePool;
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let url = "redis://127.0.0.1:6379/0";
//!     if std::env::args().any(|a| a == "--worker") {
//!         // On every worker machine: `my-program --worker`.
//!         RemotePool::builder(url, "squares").serve()?;
//!         return Ok(());
//!     }
//!     let pool = RemotePool::open(url, "squares")?;
//!     assert_eq!(pool.apply(square, 7)?, 49);
//!     assert_eq!(pool.map(square, 1..=4, Some(2))?, vec![1, 4, 9, 16]);
//!     let pending = pool.apply_async(square, 3);
//!     assert_eq!(pending.get()?, 9);
//!     pool.close()?; // the workers return from `serve` once drained
//!     Ok(())
//! }
//! ```
//!
//! How it works, and what it promises:
//!
//! - **Functions by build.** A task names its `fn(A) -> R` by its offset
//!   in the program, as local spawn does, with the caller's [`BuildId`]
//!   (a hash of the executable's bytes). A worker runs a task only if its
//!   own build is the same; otherwise it runs nothing, answers
//!   [`RemoteTaskError::OtherBuild`], and `serve` returns
//!   [`ServeError::OtherBuild`]. Deploy the same binary to every machine.
//! - **Tasks** are messages of a joinable queue named after the pool (a
//!   `map` chunk is one task). A worker acknowledges a task only after
//!   its reply is in the caller's reply queue; while a task runs, a
//!   heartbeat thread resets its idle time every quarter of
//!   [`min_idle`](RemotePoolBuilder::min_idle).
//! - **A worker that dies or stops mid-task** (SIGKILL, SIGSTOP, machine
//!   gone) stops its heartbeat: after `min_idle` another worker takes the
//!   task over and runs it. Tasks therefore run at least once; make them
//!   idempotent.
//! - **Exactly one result per task reaches the caller**, even when a task
//!   ran twice (a stopped worker resumed and replied late): the caller
//!   keeps one outcome per task and drops later replies
//!   ([`RemotePool::duplicate_replies`] counts them).
//! - **A task that kills its workers** is delivered at most
//!   [`max_deliveries`](RemotePoolBuilder::max_deliveries) times, then moves
//!   to the task queue's dead letters, and the caller's result fails with
//!   [`RemoteTaskError::Poisoned`] instead of looping.
//! - **The server away**: a submission fails after
//!   [`retry_for`](RemotePoolBuilder::retry_for) with
//!   [`RemoteTaskError::Failed`] (`is_unavailable`), and so do outstanding
//!   results when the caller cannot reach the server for longer; workers
//!   wait for the server and go on when it is back. A server back without
//!   its data (restarted without persistence) is noticed: every
//!   submission adds its task count to a counter on the server in the
//!   same atomic step, and a counter behind the caller's own count fails
//!   the outstanding tasks with [`RemoteTaskError::Lost`] rather than
//!   leaving them waiting.
//!
//! Each caller handle has one thread collecting its results, and its own
//! reply queue, removed when the handle is dropped and its results are in
//! (late replies for it are then turned away for an hour).
//!
//! A worker takes tasks in batches that grow (up to
//! [`prefetch`](RemotePoolBuilder::prefetch), default 64) while each
//! batch runs within 10 ms, replying and acknowledging a batch together;
//! once a task runs longer, the tasks waiting behind it are given back at
//! once for idle workers. With two local worker processes
//! (`cargo bench -p multiproc-redis --bench pool`), `map` at chunk size 1
//! ran 59 K tasks/s: 78 % of raw pipelined stream commands doing the same
//! exchange and 628× Python's RQ with two workers, in the same run.
//!
//! # Bounds on what is read
//!
//! Every read asks for at most the entries wanted (`COUNT n`: 1, the
//! `read_ahead`, or a `get_many`'s `max`, at most [`MAX_BATCH`]), checked
//! on the reply, and [`RemoteQueue::dead_letters`]
//! for at most the count given, checked on the reply; a message over
//! [`max_message`](RemoteQueueBuilder::max_message) (default 512 MiB) is
//! refused on put and dead-lettered on get, and the codec decodes under
//! that limit. No length or count read from the server sizes an allocation
//! in this crate.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(feature = "tokio", feature = "smol"))]
pub mod aio;
mod error;
mod link;
mod parse;
mod pool;
mod queue;
mod scripts;

#[cfg(any(feature = "tokio", feature = "smol"))]
pub use aio::{AsyncRemoteJoinableQueue, AsyncRemoteQueue};
pub use error::{
    GetError, GetTimeoutError, JoinTimeoutError, PutError, PutTimeoutError, RemoteError,
    TaskDoneError, TryGetError, TryPutError,
};
pub use multiproc_core::fnref::BuildId;
pub use pool::{
    RemoteAsyncResult, RemotePool, RemotePoolBuilder, RemoteTaskError, ServeError, TaskTimeoutError,
};
pub use queue::{
    DEFAULT_MAX_MESSAGE, DEFAULT_PREFIX, MAX_BATCH, MAX_MESSAGE_LIMIT, MAX_NAME_LEN,
    RemoteJoinableQueue, RemoteQueue, RemoteQueueBuilder,
};

use multiproc_core::CodecError;
use serde::de::DeserializeOwned;

/// Why a message is in the dead-letter stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadReason {
    /// It was delivered `max_deliveries` times and not acknowledged (its
    /// consumers died, or stalled past `min_idle`, every time).
    TooManyDeliveries,
    /// Its payload did not decode as the getter's `T`.
    Undecodable,
    /// The entry had no payload field (another program wrote it).
    Malformed,
    /// Its payload was over the getter's message limit.
    TooLarge,
}

impl DeadReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::TooManyDeliveries => "deliveries",
            Self::Undecodable => "codec",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
        }
    }

    pub(crate) fn parse(s: &[u8]) -> Option<Self> {
        Some(match s {
            b"deliveries" => Self::TooManyDeliveries,
            b"codec" => Self::Undecodable,
            b"malformed" => Self::Malformed,
            b"too_large" => Self::TooLarge,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TooManyDeliveries => "delivered too many times",
            Self::Undecodable => "payload does not decode",
            Self::Malformed => "entry has no payload",
            Self::TooLarge => "payload over the message limit",
        })
    }
}

/// A message taken out of the queue into its dead-letter stream, as
/// [`RemoteQueue::take_dead_letter`] and [`RemoteQueue::dead_letters`]
/// return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    id: String,
    deliveries: u64,
    reason: DeadReason,
    payload: Vec<u8>,
}

impl DeadLetter {
    /// The message's id in the queue's stream (`millis-seq`).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many times the message was delivered to a consumer.
    #[must_use]
    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }

    /// Why it is a dead letter.
    #[must_use]
    pub fn reason(&self) -> DeadReason {
        self.reason
    }

    /// The payload as it was put (empty for [`DeadReason::Malformed`]).
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload, owned.
    #[must_use]
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// The payload decoded with the workspace codec.
    ///
    /// # Errors
    ///
    /// When it is not a valid `T` (as for [`DeadReason::Undecodable`]).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        multiproc_core::codec::decode(&self.payload)
    }
}

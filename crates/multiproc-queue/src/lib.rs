//! Shared-memory queues between processes: [`Queue`], [`SimpleQueue`] and
//! [`JoinableQueue`], Python's `multiprocessing` queues without the feeder
//! thread, and safe against processes being killed at any instant.
//!
//! # Hello, queue
//!
//! A queue lives in an anonymous shared-memory segment (a memfd). Any
//! process that holds the handle puts and gets; values are encoded with the
//! codec of `multiproc_core` inside the call.
//!
//! ```
//! use multiproc_queue::Queue;
//!
//! let q = Queue::new()?;
//! q.put("hello".to_string())?;
//! q.put("world".to_string())?;
//! assert_eq!(q.qsize(), 2);
//! assert_eq!(q.get()?, "hello");
//! assert_eq!(q.get()?, "world");
//! assert!(q.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Three ways to block
//!
//! Every blocking operation comes as `op()` (waits), `try_op()` (never
//! sleeps) and `op_timeout(d)`. Errors are small per-operation types; failed
//! puts hand the value back.
//!
//! ```
//! use multiproc_queue::Queue;
//! use std::time::Duration;
//!
//! let q = Queue::with_capacity(1)?;
//! q.put(1u32)?;
//! let err = q.try_put(2).unwrap_err();
//! assert!(err.is_full());
//! assert_eq!(err.into_inner(), 2);
//! assert!(q.put_timeout(3, Duration::from_millis(5)).unwrap_err().is_timeout());
//! assert_eq!(q.get()?, 1);
//! assert!(q.try_get().unwrap_err().is_empty());
//! assert!(q.get_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Closing
//!
//! [`close`](Queue::close) is seen by every process: puts fail with
//! `Closed`, consumers drain what is left and then get `Closed`.
//!
//! ```
//! use multiproc_queue::Queue;
//!
//! let q = Queue::new()?;
//! q.put('x')?;
//! q.close();
//! assert!(q.put('y').unwrap_err().is_closed());
//! assert_eq!(q.get()?, 'x');
//! assert!(q.get().unwrap_err().is_closed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Bytes and zero copy
//!
//! [`put_bytes`](Queue::put_bytes)/[`get_bytes`](Queue::get_bytes) skip the
//! codec. [`put_with`](Queue::put_with) writes a message in place in the
//! shared ring and [`get_in_place`](Queue::get_in_place) reads it there.
//!
//! ```
//! use multiproc_queue::Queue;
//!
//! let q = Queue::<()>::new()?;
//! q.put_bytes(b"raw")?;
//! q.put_with(3, |buf| buf.copy_from_slice(b"abc")).map_err(|_| "closed")?;
//! assert_eq!(q.get_bytes()?, b"raw");
//! assert_eq!(&*q.get_in_place()?, b"abc");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Any size
//!
//! A message larger than half the ring (or than the whole ring) goes
//! through in fragments that no other message interleaves with:
//!
//! ```
//! use multiproc_queue::Queue;
//!
//! let q: Queue<Vec<u8>> = Queue::builder().ring_bytes(64 * 1024).build()?;
//! let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
//! let sender = {
//!     let q = q.clone();
//!     let big = big.clone();
//!     std::thread::spawn(move || q.put_bytes(&big).map_err(|e| e.to_string()))
//! };
//! assert_eq!(q.get_bytes()?, big);
//! sender.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Passing a queue to another process
//!
//! A queue is a handle: it serializes with its descriptor, which a Unix
//! socket carries (`multiproc_core::scm`), or a child inherits it and
//! [`attach`](Queue::attach)es. Dropping the last handle everywhere frees
//! the memory; nothing is ever left in `/dev/shm`.
//!
//! ```
//! use multiproc_core::codec;
//! use multiproc_queue::Queue;
//!
//! let q: Queue<u64> = Queue::new()?;
//! let (bytes, fds) = codec::encode_with_fds(&q)?;
//! // ... bytes and fds cross a socket ...
//! let there: Queue<u64> = codec::decode_with_fds(&bytes, fds)?;
//! there.put(42)?;
//! assert_eq!(q.get()?, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Joinable and simple queues
//!
//! ```
//! use multiproc_queue::{JoinableQueue, SimpleQueue};
//!
//! let jobs = JoinableQueue::new()?;
//! jobs.put(1u8)?;
//! jobs.get()?;
//! jobs.task_done()?;
//! jobs.join();
//!
//! let simple = SimpleQueue::new()?;
//! simple.put(2u8)?;
//! assert_eq!(simple.get()?, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Waiting from an event loop
//!
//! A futex is invisible to `epoll`. [`Queue::readiness`] gives a
//! [`Readiness`]: a doorbell descriptor for this process's async waiters,
//! entered in a table in the queue's segment, which a notifier rings only
//! when its futex word says someone waits. The `multiproc-async` crate
//! builds tokio and smol futures on it; the protocol that loses no
//! wake-up is in [`Readiness`]'s docs, for other event loops (io_uring).
//!
//! # Crash safety
//!
//! A producer or consumer killed at any instant — in the middle of a put, a
//! get, or a fragmented message — never lets a torn, partial or duplicated
//! message reach anybody, and never blocks the survivors for good: at most
//! the dead process's own message in flight is lost.
//!
//! How: messages are records in one shared byte ring. A put writes its
//! record beyond the tail and publishes it with a single store of the tail
//! word (message count and offset together); a get reads the record at the
//! head and frees it with a single store of the head word. Producers share a
//! lock, and so do consumers; each lock records its holder's thread
//! identity (thread id + start time), and a waiter that sleeps 20 ms without
//! progress asks the kernel whether that thread lives and takes the lock
//! over from a dead one (the rule for "dead" is `multiproc-core`'s, shared
//! with `multiproc-sync`). A thread that takes a lock often enough in a row
//! keeps it between operations (a biased lock: no locked instruction per
//! message), and whoever comes next takes it back, from a killed holder
//! too; whoever takes the lock over from a dead taker waits for the biased
//! thread just the same (`src/bias.rs` tables the handover, and a `loom`
//! model in `tests/loom.rs` checks it with a party that stops for ever at
//! every step). A killed writer has published nothing (or a whole
//! record); a killed reader has freed nothing (so the message stays for the
//! next reader) or everything. The two things that span several steps — a
//! message written in fragments, and a message lent out in place — are
//! recorded in a state word beside each lock, so the next holder finishes
//! the job: it publishes an `ABORT` for a half-written message, skips the
//! rest of a half-read one, and drops a lent one. The state machines are
//! tabled in the source (`src/ring/producer.rs`, `src/ring/consumer.rs`);
//! the cross-process tests kill producers and consumers at random points
//! and check every message.
//!
//! ## What survives which death
//!
//! "Killed" is SIGKILL at any instant; "stopped" is SIGSTOP. Tests are in
//! `tests/biased.rs` (B) and `tests/cross_process.rs` (C), all between real
//! processes.
//!
//! | who dies, where | what the survivors see | shown by |
//! |---|---|---|
//! | a producer between puts (biased or not) | nothing lost; its lock is taken over within about 20 ms | B `a_biased_producer_killed_between_puts_is_taken_over` |
//! | a producer inside a put | that put (never acknowledged) never appears; the others arrive whole, in order | B `a_biased_producer_killed_inside_a_put_loses_only_that_put` |
//! | a biased producer thread inside a put, found by operations that wait less than a liveness slice (timed puts, `close`) | found dead at their deadline; the queue goes on | B `a_biased_producer_killed_inside_is_found_by_puts_shorter_than_a_liveness_slice` |
//! | a producer holding its lock, and then a closer before it sealed the close | getters seal it themselves and get `Closed` | C `a_close_left_unsealed_by_a_killed_closer_behind_a_dead_producer_still_ends_gets` |
//! | a producer in the middle of a fragmented message | the partial message is dropped; the queue goes on | C `queue_keeps_working_after_a_producer_dies_mid_fragment` |
//! | a consumer holding a message (in place, or mid-fragment) | that one message goes with it; none is delivered twice | B `a_biased_consumer_killed_holding_a_message_loses_only_that_message`, C `consumer_dying_mid_fragment_loses_only_that_message` |
//! | a process taking a lock back from a biased thread that is inside, killed while it waits | the next taker waits for the biased thread too: no acknowledged put lost, no message delivered twice | B `killed_revoker_on_the_producer_side_never_lets_a_second_producer_in`, `killed_revoker_on_the_consumer_side_never_lets_a_second_consumer_in` |
//! | the main thread of a process (`pthread_exit`, as C hosts do) while another thread puts | nothing: the process lives, and so does its lock or bias | B `a_thread_putting_after_its_main_thread_exited_keeps_its_lock`, `a_biased_thread_putting_after_its_main_thread_exited_keeps_its_bias` |
//! | any producer or consumer process, at random instants, with biases granted on every take, revokers killed mid-revocation, processes stopped and resumed, guards held in place | no torn message, no duplicate, no acknowledged message lost beyond one per killed consumer thread; the survivors drain the queue | C `chaos_kills_never_tear_duplicate_or_hang`, `chaos_with_biases_changing_hands_all_the_time`, `chaos_with_large_records_taking_each_others_place` (records that fill the ring, producers waiting for readers; also with biases on every take), `chaos_forced_bias_with_kills_stops_and_killed_revokers` |
//!
//! What it does not do:
//!
//! - A put never reports success for a message it did not publish: a
//!   `put_with` runs its closure only once the put is sure to go through
//!   (so an error hands it back uncalled), and a message too large to fill
//!   in place is then committed past its timeout and a close (see
//!   [`Queue::put_with`]). The one exception: a segment found corrupt after
//!   the closure ran drops the message, and the next operation reports the
//!   corruption.
//! - A *stopped* holder is a live holder: the others wait for it (timed
//!   operations time out) and go on when it resumes.
//! - A consumer that dies between `get` and
//!   [`task_done`](JoinableQueue::task_done) leaves that task unfinished;
//!   [`JoinableQueue::join_timeout`] exists for that.
//! - The processes must share a pid namespace: a queue made in another one
//!   is refused on attach
//!   ([`HeaderError::ForeignPidNamespace`](multiproc_core::HeaderError::ForeignPidNamespace),
//!   B `a_queue_from_another_pid_namespace_is_refused_on_attach`), since
//!   its owner records would name other threads.
//!
//! # Performance
//!
//! No system call per message while both sides run: a waiter spins
//! briefly, then sleeps on a futex, and wakers call into the kernel only
//! when somebody sleeps, and once a lock is biased to its thread no
//! locked instruction either. On a 2-vCPU guest, one producer and one
//! consumer process move 31 M messages of 8 B per second with
//! `put_bytes`/`get_bytes`, 55–58 M with `get_bytes_into` (a reused
//! buffer), 30–32 M through a `Queue<u64>` (Python: 0.27 M), 1 MiB
//! messages at 17–19 GiB/s (Python: 0.55 GB/s), and a blocking round trip
//! over two queues takes 0.42–0.68 µs (Python: 106–129 µs). The figures
//! are those of `cargo bench -p multiproc-queue --bench queue --
//! 'queue_1to1/(bytes|bytes_into|typed)/8$|queue_1to1/bytes/1048576|round_trip/queue'`,
//! Python's those of `python3 benches/python_mp.py` (its `1to1` and `rtt`
//! cases with `Queue`). See `benches/queue.rs` and the README for the
//! scenarios and the references measured with them.
//!
//! One trade-off is made for throughput: a blocking get on a thread that
//! consumes alone (the consumer side is biased to it), whose last look
//! found the producers more than one message ahead, waits 600 ns once it
//! has caught up, before it looks again. Reading right behind a faster
//! producer would make both sides trade cache lines on every message (at
//! 8 B, a third of the rate). So the last message of a fast burst can
//! arrive up to 600 ns late (a 16-message burst and its reply measured
//! 2.1 µs a round instead of 2.0: `round_trip/burst16_paced` against
//! `round_trip/burst16_unpaced` in `cargo bench -p multiproc-queue --bench
//! queue`); a ping-pong, which never finds more than
//! one message waiting, never waits, and neither does a thread that also
//! produces (the producer side is biased to it as well: it would wait for
//! itself). [`QueueBuilder::pacing`] turns it off.
//!
//! # Using this crate alone
//!
//! A program that depends on `multiproc-queue` only (no `multiproc-core`, no
//! `libc`, no `unsafe`) hands a queue to a child it starts with
//! [`std::process::Command`] through [`inherit`] (re-exported from
//! `multiproc-core`): [`inherit::pass`] puts the handle and its descriptors
//! into the command, [`inherit::take`] in the child gets the same object
//! back. A queue inherited as a descriptor alone attaches with
//! [`Queue::attach`] on a [`Segment`] (also re-exported). A child made by `fork` (no `exec`) needs nothing: the
//! handles it inherited with the parent's memory work as they are.
//!
//! ```
//! use multiproc_queue::{inherit, Queue};
//! use std::process::Command;
//!
//! // Parent: make the object, give it to the child under a key, spawn.
//! let jobs: Queue<u64> = Queue::new()?;
//! jobs.put(7)?;
//! let mut cmd = Command::new("true"); // the worker program
//! inherit::pass(&mut cmd, "shared", &jobs)?;
//! let mut child = cmd.spawn()?;
//! drop(cmd); // the parent's spare copies of the descriptors close here
//! assert!(child.wait()?.success());
//!
//! // The worker's `main`:
//! fn worker() -> Result<(), Box<dyn std::error::Error>> {
//!     let jobs: Queue<u64> = inherit::take("shared")?;
//!     assert_eq!(jobs.get()?, 7);
//!     Ok(())
//! }
//! # let _ = worker;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `tests/cross_process.rs` runs this recipe with a real child
//! (`queue_shared_with_a_command_child_through_inherit`).
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

mod bias;
mod builder;
mod error;
mod fence;
mod in_place;
mod joinable;
mod layout;
mod limits;
mod lock;
mod owner;
mod queue;
mod ready;
mod ring;
mod simple;
mod wake;

pub use builder::QueueBuilder;
pub use error::{
    GetError, GetTimeoutError, PutError, PutTimeoutError, QueueError, SetMembarrierError,
    TaskDoneError, Timeout, TryGetError, TryPutError,
};
pub use fence::NO_MEMBARRIER_ENV;
pub use in_place::InPlace;
pub use joinable::JoinableQueue;
pub use limits::{DEFAULT_MAX_MESSAGE, DEFAULT_RING_BYTES, MAX_CAPACITY, MAX_MESSAGE_LIMIT};
/// The shared-memory segment objects of this crate live in.
pub use multiproc_core::Segment;
/// Handing objects to children started with `std::process::Command`:
/// see [Using this crate alone](crate#using-this-crate-alone).
pub use multiproc_core::inherit;
pub use queue::Queue;
pub use ready::{Armed, Interest, Readiness, Round};
pub use simple::SimpleQueue;

#[cfg(test)]
mod tests;

/// Prepares this process for queues now: the `membarrier(2)` registration
/// behind the queues' fence-free fast paths. Call it while the process is
/// single-threaded, where it is immediate (one system call); in a
/// multithreaded process it blocks for a kernel grace period (about 16 ms
/// where it was measured, outside the benches: no bench in the repository
/// times the registration).
/// Never required: the first queue operation does it otherwise, on a
/// background thread if the process runs threads already, with full fences
/// meanwhile. `multiproc-process` calls it in a child whose arguments carry
/// descriptors (queues among them), before the target runs.
///
/// # Examples
///
/// ```
/// // First thing in a program that will use queues:
/// multiproc_queue::prepare_process();
/// ```
pub fn prepare_process() {
    fence::prepare_process();
}

/// Chooses whether this process's queues use `membarrier(2)`; call it
/// before the first queue operation (or [`prepare_process`]). `true` is the
/// default (where the kernel offers the call); `false` is what setting
/// [`NO_MEMBARRIER_ENV`] (`MULTIPROC_NO_MEMBARRIER`) in the environment
/// does, and this call overrides the environment either way.
///
/// With `membarrier` (the default), the first queue operation registers the
/// process with `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` — on a
/// background thread named `multiproc-membarrier` if the process runs
/// threads already (see [`prepare_process`] to avoid the thread) — and a
/// `pthread_atfork` child handler, so that the fast paths need no fence
/// instruction: a sleeper runs `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, an
/// interrupt on every CPU that runs a registered process (this one or
/// another), instead. Hosts that count interrupts, run real-time threads
/// or filter system calls may prefer to turn it off; the queues stay
/// correct and the choice is per process (a process without it talks to
/// processes with it).
///
/// Without `membarrier`, every put and get passes a full fence, a sleeper
/// re-checks its condition every millisecond, a lock is never biased to a
/// thread, and taking a lock back from another process's biased thread
/// waits 10 ms. Measured on a 2-vCPU guest (two runs of each, alternating,
/// one after the other):
///
/// | bench | with | without | cost |
/// |---|---|---|---|
/// | `queue_1to1/bytes/8` (one producer and one consumer process, 8 B) | 34.2 ns, 27.1 ns a message | 49.1 ns, 49.0 ns | 1.4–1.8× the time per message |
/// | `round_trip/queue` (blocking ping-pong over two queues) | 508 ns, 372 ns | 431 ns, 405 ns | within the noise |
///
/// from `cargo bench -p multiproc-queue --bench queue --
/// 'round_trip/queue$|queue_1to1/bytes/8$'`, run once as it is and once
/// with `MULTIPROC_NO_MEMBARRIER=1` in the environment.
///
/// # Errors
///
/// [`SetMembarrierError`] when the decision was made already: a queue
/// operation (or [`prepare_process`]) ran in this process, or in the
/// process this one was forked from, or an earlier call chose otherwise.
/// Asking again for what was decided is not an error.
///
/// # Examples
///
/// ```
/// use multiproc_queue::{Queue, set_membarrier};
///
/// // First thing, before any queue is used in this process:
/// set_membarrier(false)?;
/// let q = Queue::new()?;
/// q.put(1u8)?;
/// assert_eq!(q.get()?, 1);
///
/// // Decided now: asking again is fine, changing it is too late.
/// set_membarrier(false)?;
/// if let Err(err) = set_membarrier(true) {
///     assert!(!err.in_use());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "MULTIPROC_NO_MEMBARRIER")]
pub fn set_membarrier(enabled: bool) -> Result<(), SetMembarrierError> {
    fence::set_membarrier(enabled)
}

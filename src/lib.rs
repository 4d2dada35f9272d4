//! Python's `multiprocessing`, done right in Rust: processes, queues, pipes,
//! locks, pools and shared data that work between real OS processes, fast,
//! and keep working when a process crashes.
//!
//! This facade re-exports the member crates — one dependency gives
//! everything, and each member crate is usable on its own too:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`os`] | `multiproc-core` | shared-memory segments, futexes, descriptor passing, handles, codec |
//! | [`sync`] | `multiproc-sync` | Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier |
//! | [`connection`] | `multiproc-pipe` | Pipe, Connection, Listener, Client, wait |
//! | [`shared`] | `multiproc-shm` | SharedMemory, ShareableList, Value, Array |
//! | [`queue`] | `multiproc-queue` | Queue, SimpleQueue, JoinableQueue |
//! | [`process`] | `multiproc-process` | Process, start methods, process info, Pool |
//! | `aio` (features `tokio`, `smol`, off by default) | `multiproc-async` | the queues' blocking operations as futures on tokio or smol, through a doorbell descriptor (no helper thread) |
//! | `redis` (feature `redis`, off by default) | `multiproc-redis` | RemoteQueue, RemoteJoinableQueue, RemotePool: the queues and a pool over Redis Streams, between machines; with `tokio` or `smol` on too, AsyncRemoteQueue and AsyncRemoteJoinableQueue |
//!
//! # Python → multiproc
//!
//! | Python `multiprocessing` | multiproc |
//! |---|---|
//! | `Process(target=f, args=a, name=, daemon=)`, `start()` | [`Process::new`]`(f, a).name(..).daemon(..).start_method(..).start()`; `.run()` starts and joins in one call |
//! | `join([timeout])`, `is_alive()`, `terminate()`, `kill()`, `exitcode`, `pid`, `name`, `daemon`, `sentinel`, `close()` | [`Process::join`] (returns the target's value), [`Process::join_timeout`], `is_alive`, `terminate`, `kill`, `exitcode`, `pid`, `name`, `daemon`, `sentinel`, `close` |
//! | `current_process()`, `parent_process()`, `active_children()`, `cpu_count()` | [`current_process`], [`parent_process`], [`active_children`], [`cpu_count`] |
//! | `set_start_method()`, `get_start_method()`, `get_context()` | [`set_start_method`], [`get_start_method`], [`get_context`] with [`StartMethod`] |
//! | `freeze_support()`, the `if __name__ == "__main__"` guard | not needed: children are recognised before `main` runs; [`init`] exists to be explicit |
//! | `Pipe(duplex)` | [`Pipe::new`] / [`Pipe::simplex`] → `(Connection, Connection)` |
//! | `Connection.send/recv/send_bytes/recv_bytes/recv_bytes_into/poll/fileno/close` | same names on [`Connection`] (`AsRawFd` for `fileno`); `send_pickle`/`recv_pickle` speak Python's pickles |
//! | `connection.wait`, `Listener`, `Client` | [`wait`], [`Listener::bind`]/[`Listener::accept`], [`Client::connect`] — same wire format and authkey handshake as CPython |
//! | `Lock`, `RLock` | [`Lock`], [`RLock`]: `acquire`/`try_acquire`/`acquire_timeout`/`release`/`lock()`; a dead holder gives the next one [`OwnerDied`] |
//! | `Semaphore`, `BoundedSemaphore`, `Event`, `Condition`, `Barrier` | [`Semaphore`], [`BoundedSemaphore`], [`Event`], [`Condition`], [`Barrier`] |
//! | `Value`, `Array`, `RawValue`, `RawArray` | [`Value`], [`Array`], [`RawValue`], [`RawArray`] for plain-data types ([`Plain`]); `v.value` is `v.get()?`/`v.set(x)?`, and `get_lock()` is recursive as in Python |
//! | `shared_memory.SharedMemory`, `ShareableList` | [`SharedMemory`], [`ShareableList`] — open Python's blocks and vice versa |
//! | `Queue(maxsize)`: `put`, `get`, `put_nowait`, `get_nowait`, `qsize`, `empty`, `full`, `close` | [`Queue::new`], [`Queue::with_capacity`]; `put`/`try_put`/`put_timeout`, `get`/`try_get`/`get_timeout`, `qsize`, `is_empty`, `is_full`, `close`; a process killed mid-put never tears a message |
//! | `SimpleQueue`, `JoinableQueue`: `task_done()`, `join()` | [`SimpleQueue`], [`JoinableQueue`] |
//! | `Queue.cancel_join_thread`, `join_thread` | not needed: there is no feeder thread, `put` is done when it returns |
//! | `Pool(processes, initializer, initargs, maxtasksperchild)` | [`Pool::new`], [`Pool::builder`] |
//! | `apply`, `apply_async(callback, error_callback)`, `map`, `map_async`, `imap`, `imap_unordered`, `starmap`, `starmap_async`, `close`, `join`, `terminate` | same names on [`Pool`] (`apply_async_with` takes the callbacks); [`AsyncResult`]: `get`, `get_timeout`, `wait`, `ready`, `successful`; a dead worker fails its task with [`TaskError::WorkerDied`] instead of hanging |
//! | `Manager`, proxies, `multiprocessing.dummy` | not provided: shared memory and handles replace proxies; threads are `std::thread` |
//! | `allow_connection_pickling`, `reduction` | not needed: every handle type is `Serialize` and crosses Unix sockets with its descriptors ([`os::SharedFd`]) |
//! | `log_to_stderr`, `get_logger` | not provided: use the `log`/`tracing` ecosystem |
//!
//! # Process-wide effects
//!
//! For hosts that embed these crates (async runtimes, C programs), every
//! effect the library has beyond the objects it hands out — on signals,
//! exit handlers, fork handlers, threads, helper processes and the
//! environment — with when it happens and how to turn it off or avoid it.
//! The library never writes the environment (no `set_var`/`remove_var`)
//! and installs no signal handler.
//!
//! | effect | when | why | how to turn it off or avoid it |
//! |---|---|---|---|
//! | `SIGPIPE` set to "ignore" if it is at its default action | creating a [`Connection`] that writes to a pipe ([`Pipe::simplex`], [`Connection::from_fd`] on a pipe) | a write to a pipe whose reader is gone must be an error, not the end of the process; sockets use `MSG_NOSIGNAL` and never raise it | [`connection::set_ignore_sigpipe`]`(false)` before the first such connection (writes to a dead pipe then raise `SIGPIPE` unless the host ignores it; the Rust runtime does); or use [`Pipe::new`] (sockets) |
//! | `membarrier(2)` registration of the process (`REGISTER_GLOBAL_EXPEDITED`), and a `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (an interrupt on every CPU running a registered process) by each queue waiter that goes to sleep | the first queue operation in a process (or [`queue::prepare_process`]); `multiproc-process` children whose arguments carry descriptors register before the target runs | lets the queues' fast paths run without fence instructions | [`queue::set_membarrier`]`(false)` before the first queue operation, or `MULTIPROC_NO_MEMBARRIER` ([`queue::NO_MEMBARRIER_ENV`]) in the environment; costs 1.4–1.8× the time per message at 8 B, not the round trip (figures on `set_membarrier`) |
//! | a thread named `multiproc-membarrier`, which registers and ends | the first queue operation, if the process already runs several threads (registering then waits for a kernel grace period) | keeps that wait off the operation | call [`queue::prepare_process`] while the process is single-threaded (immediate), or turn `membarrier` off as above |
//! | `pthread_atfork` child handlers (cannot be unregistered) | first use of a thread identity (locks, queues: `multiproc-core`'s `owner`), and the queues' first operation when they use `membarrier` | a forked child must forget its parent's cached thread identities and register for `membarrier` itself | nothing to turn off: they run only in a forked child, and only store to a few atomics; with `membarrier` off the queues register none |
//! | `atexit(3)` handler that sends `SIGTERM` to daemon children and waits for the others | registered when the first [`Process`] starts; runs at `exit` | Python's behaviour: children are seen to at exit | [`process::set_finish_children_at_exit`]`(false)`; or join/terminate the children before exiting, leaving it nothing to do |
//! | the fork server, a helper process re-executed from the program's executable | the first start with [`StartMethod::ForkServer`] (the default) | children forked from a single-threaded server are clean however many threads the parent runs | [`set_start_method`]`(`[`StartMethod::Spawn`]`)` (or `.start_method(..)` per process); the server leaves when its parent exits |
//! | the shared-memory tracker, a detached helper process (double fork, new session) | the first [`SharedMemory::create`] in a process | unlinks the names of a creator that died without doing so | [`SharedMemory::create_untracked`] (no tracker; a crashed creator's names are then the host's to reclaim), or the anonymous objects ([`Value`], [`Array`], queues, locks), which have no name |
//! | `PR_SET_PDEATHSIG` (`SIGKILL`) set in a daemon child, or a `multiproc-daemon-watch` thread in it when it was started from a thread other than the parent's main thread | a child started with `.daemon(true)`, in that child | daemon children die with their parent, even when it is `SIGKILL`ed | `.daemon(false)` (the default) |
//! | a `multiproc-pool` thread per [`Pool`] | [`Pool::new`] / [`Pool::builder`] | supervises the workers and dispatches tasks | use [`Process`] directly; the thread ends with the pool |
//! | a constructor that runs before `main` (`ctor`, in `.init_array`), reading `MULTIPROC_SPAWN_FD` and `MULTIPROC_FORKSERVER_FD` | at load, in every executable linking `multiproc-process` with its default `auto-init` feature | a re-executed child (Spawn, the fork server) takes over before `main`, so no set-up line is needed; an authenticated token makes a stray variable inert | build without the `auto-init` feature (`default-features = false`) and call [`init`] first thing in `main` |
//! | a Unix datagram socket (close-on-exec, non-blocking, unbound) kept open for the life of the process, used to ring other processes' doorbells | the first time an operation on a queue, lock, semaphore or event finds an async waiter armed on it (in any process) and rings it (`multiproc_core::doorbell::ring`) | one socket for every ring instead of one per ring | use no async waiters on the objects this process touches (nothing is created then) |
//! | an abstract-namespace Unix datagram socket per async readiness handle (`Queue::readiness`, and `multiproc-async`'s wrappers), named `multiproc/bell/<random>`; abstract names are per network namespace | while the handle lives | other processes ring it by its name, so objects work the same whichever way their handles travelled | don't create readiness handles (blocking use makes none); async waiters and the processes that notify them must share a network namespace |
//! | reads of the environment: `MULTIPROC_SHM_PREFIX` ([`os::segment::NAME_PREFIX_ENV`]), `MULTIPROC_NO_MEMBARRIER`, `MULTIPROC_BIAS_AFTER` (queue diagnostics), `MULTIPROC_INHERIT_<key>` | generating a shared-memory name; a queue's first operation; [`os::inherit::take`] | settings, and handing objects to a `Command` child | leave them unset; the library only reads them |
//!
//! # Example
//!
//! ```
//! use multiproc::prelude::*;
//!
//! fn worker((lock, counter): (Lock, RawValue<u64>)) -> u64 {
//!     for _ in 0..1000 {
//!         let _guard = lock.lock().unwrap_or_else(|died| died.into_inner());
//!         counter.set(counter.get() + 1);
//!     }
//!     counter.get()
//! }
//!
//! let lock = Lock::new()?;
//! let counter = RawValue::new(0u64)?;
//! let mut children = Vec::new();
//! for _ in 0..2 {
//!     // Clones are handles to the same lock and the same shared value.
//!     let args = (lock.clone(), counter.clone());
//!     children.push(Process::new(worker, args).start()?);
//! }
//! for child in &mut children {
//!     child.join()?;
//! }
//! assert_eq!(counter.get(), 2000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

/// Async queues on tokio or smol (`multiproc-async`): behind the `tokio`
/// and `smol` features, off by default.
#[cfg(any(feature = "tokio", feature = "smol"))]
pub use multiproc_async as aio;
pub use multiproc_core as os;
pub use multiproc_pipe as connection;
pub use multiproc_process as process;
pub use multiproc_queue as queue;
/// Queues over Redis Streams between machines (`multiproc-redis`): the
/// local queues' API, at-least-once, with re-delivery, dead letters and
/// bounded capacity. Behind the `redis` feature, off by default; with
/// `tokio` or `smol` on as well, the async remote queues too
/// (`AsyncRemoteQueue`, `AsyncRemoteJoinableQueue`).
#[cfg(feature = "redis")]
pub use multiproc_redis as redis;
pub use multiproc_shm as shared;
pub use multiproc_sync as sync;

pub use multiproc_core::{Segment, SharedFd};
pub use multiproc_pipe::{Address, Client, Connection, Listener, Pipe, wait};
pub use multiproc_process::{
    AsyncResult, Context, JoinError, JoinTimeoutError, Pool, Process, ProcessInfo, StartMethod,
    TaskError, active_children, cpu_count, current_process, get_context, get_start_method, init,
    parent_process, set_start_method,
};
pub use multiproc_queue::{JoinableQueue, Queue, SimpleQueue};
pub use multiproc_shm::{
    Array, Plain, RawArray, RawValue, ShareableList, ShareableValue, SharedMemory, Value,
};
pub use multiproc_sync::{
    Barrier, BoundedSemaphore, Condition, Event, Lock, OwnerDied, RLock, Semaphore,
};

/// serde, re-exported: arguments, results and queue items are serde types,
/// and with this a program's own types need no `serde` line of their own in
/// `Cargo.toml`. Tell the derive where serde lives:
///
/// ```
/// use multiproc::serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(crate = "multiproc::serde")]
/// struct Job {
///     id: u32,
/// }
///
/// let queue = multiproc::Queue::<Job>::new()?;
/// queue.put(Job { id: 3 })?;
/// assert_eq!(queue.get()?.id, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub use serde;

/// The names most programs use, for `use multiproc::prelude::*`.
pub mod prelude {
    pub use crate::{
        Array, Barrier, BoundedSemaphore, Condition, Connection, Event, JoinableQueue, Lock, Pipe,
        Pool, Process, Queue, RLock, RawArray, RawValue, Semaphore, SharedMemory, SimpleQueue,
        StartMethod, Value,
    };
}

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

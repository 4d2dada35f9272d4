//! [`Pool`]: Python's `multiprocessing.Pool`, minus its worst failure — a
//! worker that dies fails the task it was running and is replaced; nothing
//! hangs.
//!
//! # Design
//!
//! Every worker has its own task [`Queue`] (shared memory) and all report
//! into one. The pool hands each worker at most [`PREFETCH`] tasks, so it
//! always knows which tasks a worker holds, in order. A background thread
//! reads the reports, runs callbacks and checks the workers' pidfds every
//! [`CHECK_INTERVAL`].
//!
//! A task a worker has not started stays the pool's to move. A queue
//! delivers each message exactly once, and the pool can get from a
//! worker's queue too: a task the pool gets back is one the worker never
//! got. So:
//!
//! - When a worker has nothing left and nothing is pending while another
//!   has two tasks or more (one running, the rest queued behind it), the
//!   result thread takes half of the busy worker's list back out of its
//!   queue and hands those tasks out again, the idle worker first. A long
//!   task, or a stopped worker, holds up only itself. The take never waits:
//!   a worker stopped while holding its queue's lock keeps its tasks until
//!   a later round. Rounds come at most every [`STEAL_INTERVAL`], which
//!   bounds their cost where a worker runs dry all the time (tasks
//!   submitted one by one); while `map` has tasks pending, dispatch keeps
//!   every worker supplied and nothing is taken back before its last ones.
//! - When a worker dies, the pool first takes back whatever is left in its
//!   queue (taking the queue's lock over from the dead worker if need be):
//!   those tasks never started and go back to the pending list. A worker
//!   takes its next task only after reporting the last, and its reports
//!   are read first, so what remains of its list is the one task it was
//!   running: that one fails with [`TaskError::WorkerDied`], and a fresh
//!   worker takes the dead one's place. A worker killed between tasks fails
//!   none, even tasks handed to it after it died; one killed while taking a
//!   task out of its queue fails that task, which it got but never began.
//!
//! Callbacks and sinks run on the result thread under `catch_unwind`: a
//! panicking callback is counted and reported, its task's result is still
//! set, and the thread goes on. A thread-local marks the result thread, so
//! calls that would wait for a result there — which only that thread could
//! deliver — fail with [`TaskError::WouldDeadlock`] instead.
//!
//! Tasks are chunks of calls of one `fn(A) -> R`, named across processes
//! the way [`Process`](crate::Process) names its target.
//!
//! The result thread is what limits throughput with small tasks, so work
//! moves off it where it can: a task's message is encoded once, by the
//! thread that submits it (`task.rs`), and handing it to a worker is a copy;
//! a report is the worker's encoded results with a fixed trailer
//! (`report.rs`), read without decoding; `map` decodes each chunk outside
//! the pool's lock and puts its values straight into place (`gather.rs`).

mod gather;
mod report;
mod result;
mod sinks;
mod task;
mod worker;

pub use result::{AsyncResult, GetTimeoutError, TaskError, TransportError};

use multiproc_queue::Queue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bootstrap::ByteBuf;
use crate::child::signal_name;
use crate::target::panic_message;
use crate::{Process, StartMethod, get_start_method};
use gather::Gather;
use report::{Report, Reports};
use result::{Slot, mark_result_thread, on_result_thread};
use sinks::Sinks;
use task::{Call, Received, Task, TaskMessage};
use worker::{WorkerArgs, worker_main};

/// Tasks handed to one worker ahead of its results: enough that a worker
/// rarely waits for the pool to send its next task (measured: 8 instead of 2
/// lifts `map` with chunk size 1 from about 470 K to 680 K tasks/s on two
/// CPUs). Tasks a worker has not started are not bound to it: an idle
/// worker takes them over, and when a worker dies only the task it was
/// running is lost (see [`Pool`'s long tasks](Pool#long-tasks-and-stuck-workers)).
pub const PREFETCH: usize = 8;

/// Ring of a worker's task queue. At most [`PREFETCH`] tasks are in it, so
/// a small ring is enough, and it stays in the caches: the default 64 MiB
/// ring would have every task written to a line nobody touched for a long
/// while (and its pages zeroed by the kernel on first use). Larger tasks
/// still go through, in fragments.
const TASK_RING: usize = 256 << 10;

/// Ring of the report queue, which all workers share; see [`TASK_RING`].
const REPORT_RING: usize = 1 << 20;

/// Most chunks `map` encodes before it queues them (under one lock).
const SUBMIT_BATCH: usize = 256;

/// Most reports the result thread handles under one lock.
const REPORT_BATCH: usize = 64;

/// How often the result thread checks that every worker is alive when no
/// report arrives.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// Shortest time between two rounds of taking tasks back for idle workers
/// (see [Design](self#design)). A round costs the result thread a few
/// microseconds (the queue's lock taken from the worker its bias favours,
/// a fence on every CPU); where tasks come one by one and a worker runs dry
/// all the time, this bounds that cost to a small share of the thread. A
/// task stuck behind a long one waits a round longer at most.
const STEAL_INTERVAL: Duration = Duration::from_millis(1);

/// How long a closed pool waits for an idle worker to leave before killing it.
const WIND_DOWN_WAIT: Duration = Duration::from_secs(1);

/// How long `terminate` waits after `SIGTERM` before `SIGKILL`.
const TERMINATE_GRACE: Duration = Duration::from_millis(200);

/// Deaths of fresh workers in their initializer in a row, beyond one per
/// worker, after which the initializer counts as failed.
const INIT_DEATHS_BEYOND_WORKERS: u32 = 3;

/// Longest wait before replacing a worker that died in its initializer.
const MAX_RESPAWN_BACKOFF: Duration = Duration::from_secs(1);

/// What a task's outcome is delivered to: the encoded
/// `Vec<Result<R, String>>` of its chunk, or why the whole chunk failed.
type Sink = Box<dyn FnOnce(Result<Vec<u8>, TaskError>) + Send>;

struct Worker {
    process: Process<()>,
    tasks: Queue<TaskMessage>,
    /// Tasks handed over and not yet reported, oldest first (kept whole so
    /// unstarted ones can be handed to another worker).
    outstanding: VecDeque<Task>,
    assigned: u64,
    retiring: bool,
    /// Its initializer returned (always, without one).
    initialized: bool,
}

impl Worker {
    /// Whether the pool may hand this worker another task.
    fn has_room(&self, max_tasks: Option<u64>) -> bool {
        !self.retiring
            && self.outstanding.len() < PREFETCH
            && max_tasks.is_none_or(|k| self.assigned < k)
    }

    /// Takes up to `max` tasks back out of this worker's queue, oldest
    /// first, and off its list. A queue delivers each message once, so a
    /// message the pool gets is one the worker never got: the task has not
    /// started and can go anywhere. The rest of the list keeps the order in
    /// which the worker gets its tasks.
    ///
    /// A live worker may hold its queue's lock, for as long as it is
    /// stopped in there: `Live` never waits for it and takes nothing then.
    /// `Dead` takes the lock over from the dead worker, also when it died
    /// inside by the lock's bias, which a get that never waits gives up on.
    fn take_back(&mut self, max: usize, from: TakeBack) -> Vec<Task> {
        let mut back = Vec::new();
        while back.len() < max && !self.tasks.is_empty() {
            let message = match from {
                TakeBack::Live => self.tasks.try_get_in_place().ok(),
                // The deadline has passed already: one look, and one at the
                // holder of the lock.
                TakeBack::Dead => self.tasks.get_in_place_timeout(Duration::ZERO).ok(),
            };
            let Some(message) = message else {
                break;
            };
            let id = Received::parse(&message).map(|task| task.id);
            // Dropping the message takes it out of the queue.
            drop(message);
            // A task that is not on the list has had its outcome already
            // (the pool failed it with the initializer): dropped.
            let at = id.and_then(|id| self.outstanding.iter().position(|t| t.id == id));
            if let Some(task) = at.and_then(|at| self.outstanding.remove(at)) {
                self.assigned = self.assigned.saturating_sub(1);
                back.push(task);
            }
        }
        back
    }
}

/// Whose queue [`Worker::take_back`] empties.
#[derive(Clone, Copy)]
enum TakeBack {
    /// A worker that may be running, or stopped anywhere.
    Live,
    /// A worker that has exited.
    Dead,
}

#[derive(Default)]
struct State {
    next_id: u64,
    pending: VecDeque<Task>,
    sinks: Sinks,
    workers: Vec<Worker>,
    closed: bool,
    terminated: bool,
    broken: Option<String>,
    finished: bool,
    /// Workers that died in their initializer since one last got through it.
    init_deaths: u32,
    /// No worker is started before then (back-off after `init_deaths`).
    respawn_at: Option<Instant>,
}

impl State {
    /// Closes every worker's task queue: each leaves once it sees that.
    fn let_workers_go(&mut self) {
        for w in &mut self.workers {
            if !w.retiring {
                w.retiring = true;
                w.tasks.close();
            }
        }
    }
}

struct Config {
    processes: usize,
    init: Option<(Call, Vec<u8>)>,
    max_tasks: Option<u64>,
    method: StartMethod,
}

/// Hands out pool ids (0 is none).
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

struct Shared {
    /// This pool's id, to recognise its result thread.
    id: u64,
    /// Callbacks that panicked so far.
    callback_panics: Arc<AtomicU64>,
    state: Mutex<State>,
    finished: Condvar,
    reports: Reports,
    config: Config,
}

/// A configuration a pool cannot have.
fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

/// Configures a [`Pool`]; made by [`Pool::builder`].
#[must_use = "a builder does nothing until `build`"]
pub struct PoolBuilder {
    processes: Option<usize>,
    init: Option<io::Result<(Call, Vec<u8>)>>,
    max_tasks: Option<u64>,
    method: Option<StartMethod>,
}

impl PoolBuilder {
    /// Number of workers (default [`cpu_count`](crate::cpu_count)); at
    /// least one, or [`build`](Self::build) fails (as Python's `Pool(0)`
    /// raises `ValueError`).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `f(args)` in every worker before its first task; a panic there
    /// fails the pool's tasks with [`TaskError::InitializerFailed`] instead
    /// of restarting workers for ever.
    pub fn initializer<A: Serialize + DeserializeOwned>(mut self, f: fn(A), args: A) -> Self {
        self.init = Some(
            multiproc_core::codec::encode(&vec![args])
                .map(|bytes| (Call::new(f), bytes))
                .map_err(io::Error::from),
        );
        self
    }

    /// Replaces each worker after it ran `k` tasks (chunks); at least one,
    /// or [`build`](Self::build) fails (as in Python).
    pub fn maxtasksperchild(mut self, k: u64) -> Self {
        self.max_tasks = Some(k);
        self
    }

    /// Start method of the workers (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for zero processes or a `maxtasksperchild` of zero
    /// (Python's `ValueError`); the OS's error when a worker or a queue
    /// cannot be made.
    ///
    /// ```
    /// use multiproc_process::Pool;
    ///
    /// let err = Pool::new(0).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// assert_eq!(err.to_string(), "a pool needs at least one process");
    /// ```
    pub fn build(self) -> io::Result<Pool> {
        if self.processes == Some(0) {
            return Err(invalid("a pool needs at least one process"));
        }
        if self.max_tasks == Some(0) {
            return Err(invalid("maxtasksperchild must be at least 1"));
        }
        let config = Config {
            processes: self.processes.unwrap_or_else(crate::cpu_count),
            init: self.init.transpose()?,
            max_tasks: self.max_tasks,
            method: self.method.unwrap_or_else(get_start_method),
        };
        let shared = Arc::new(Shared {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            callback_panics: Arc::new(AtomicU64::new(0)),
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
            reports: Reports::new(REPORT_RING).map_err(io::Error::other)?,
            config,
        });
        let mut workers = Vec::with_capacity(shared.config.processes);
        for _ in 0..shared.config.processes {
            match shared.spawn_worker() {
                Ok(worker) => workers.push(worker),
                Err(e) => return Err(shared.abandon(workers, e)),
            }
        }
        shared.lock().workers = workers;
        let thread = {
            let runner = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("multiproc-pool".into())
                .spawn(move || runner.run())
        };
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                let workers = std::mem::take(&mut shared.lock().workers);
                return Err(shared.abandon(workers, e));
            }
        };
        Ok(Pool {
            shared,
            thread: Some(thread),
        })
    }
}

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Dropping a pool terminates it, like leaving Python's `with Pool() as p:`
/// block: running tasks are stopped and their results lost. Call
/// [`close`](Self::close) and [`join`](Self::join) first to let them finish.
///
/// # Long tasks and stuck workers
///
/// Each worker is handed up to [`PREFETCH`] tasks ahead, so that it rarely
/// waits for the pool. A task it has not started is still free to move:
/// when another worker runs out of work, it takes over tasks queued behind
/// a long one (or behind a worker that is stopped, or hung). A slow task
/// holds up only itself. When a worker dies, only the task it was running
/// fails ([`TaskError::WorkerDied`]); the others run elsewhere, once each.
///
/// ```
/// use multiproc_process::Pool;
/// use std::time::Duration;
///
/// fn nap(ms: u64) -> u64 {
///     std::thread::sleep(Duration::from_millis(ms));
///     ms
/// }
///
/// let pool = Pool::new(2)?;
/// let _long = pool.apply_async(nap, 2_000);
/// let short: Vec<_> = (0..6).map(|_| pool.apply_async(nap, 10)).collect();
/// // Some of these were handed to the worker running `_long`; the other
/// // worker runs them instead of leaving them to wait for it.
/// for s in short {
///     assert_eq!(s.get()?, 10);
/// }
/// // `_long` still runs: dropping the pool here stops it.
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Callbacks
///
/// The callbacks of [`apply_async_with`](Self::apply_async_with) run on the
/// pool's result thread, the thread that delivers every result.
///
/// - A callback that panics does not stop the pool. The panic is reported
///   once on stderr — the panic hook prints it as for any thread (by default
///   `thread 'multiproc-pool' panicked at …`), followed by one line from the
///   pool saying it went on — and counted in
///   [`callback_panics`](Self::callback_panics). The task's
///   [`AsyncResult`] still gets the task's own value or error, and later
///   results keep coming.
/// - A callback may submit work ([`apply_async`](Self::apply_async),
///   [`map_async`](Self::map_async), …), [`close`](Self::close),
///   [`terminate`](Self::terminate) or drop the pool. It cannot wait for a
///   result: that result could only be delivered by the thread the callback
///   is blocking. So on the result thread the calls that would wait fail at
///   once with [`TaskError::WouldDeadlock`] instead of hanging:
///   [`apply`](Self::apply), [`map`](Self::map), [`starmap`](Self::starmap)
///   (which then submit nothing), [`AsyncResult::get`] of a task that has
///   not finished, and [`IMap`] (one `WouldDeadlock` item, then the end).
///   [`join`](Self::join), [`AsyncResult::wait`] and
///   [`AsyncResult::wait_timeout`] return at once there. Other threads, and
///   other pools' results, are not affected.
///
/// ```
/// use multiproc_process::{Pool, TaskError};
/// use std::sync::{Arc, mpsc};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Arc::new(Pool::new(2)?);
/// let inner = Arc::clone(&pool);
/// let (tx, rx) = mpsc::channel();
/// let first = pool.apply_async_with(square, 3, move |_| {
///     // Waiting here would hang: it fails instead.
///     assert_eq!(inner.apply(square, 4), Err(TaskError::WouldDeadlock));
///     // Submitting works.
///     tx.send(inner.apply_async(square, 5)).unwrap();
///     panic!("a bug in the callback");
/// }, |_| {});
/// assert_eq!(first.get()?, 9); // the task's value, despite the panic
/// assert_eq!(rx.recv()?.get()?, 25);
/// assert_eq!(pool.callback_panics(), 1);
/// pool.close();
/// pool.join();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Examples
///
/// ```
/// use multiproc_process::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.apply(square, 7)?, 49);
/// assert_eq!(pool.map(square, 1..=4, None)?, vec![1, 4, 9, 16]);
/// let pending = pool.apply_async(square, 9);
/// assert_eq!(pending.get()?, 81);
/// pool.close();
/// pool.join();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `n` workers with the default start method.
    ///
    /// # Errors
    ///
    /// As for [`PoolBuilder::build`].
    pub fn new(n: usize) -> io::Result<Self> {
        Self::builder().processes(n).build()
    }

    /// A builder for a pool with an initializer, `maxtasksperchild` or a
    /// start method.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            processes: None,
            init: None,
            max_tasks: None,
            method: None,
        }
    }

    /// Number of workers the pool keeps.
    #[must_use]
    pub fn processes(&self) -> usize {
        self.shared.config.processes
    }

    /// Pids of the current workers.
    #[must_use]
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared
            .lock()
            .workers
            .iter()
            .filter(|w| !w.retiring)
            .map(|w| w.process.pid())
            .collect()
    }

    /// Runs `f(args)` in a worker and waits for the value.
    ///
    /// # Errors
    ///
    /// The task's [`TaskError`]; [`TaskError::WouldDeadlock`] from a
    /// callback (see [Callbacks](Self#callbacks)).
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R, TaskError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.refuse_on_result_thread()?;
        self.apply_async(f, args).get()
    }

    /// How many callbacks have panicked so far (each was also reported on
    /// stderr); see [Callbacks](Self#callbacks).
    #[must_use]
    pub fn callback_panics(&self) -> u64 {
        self.shared.callback_panics.load(Ordering::SeqCst)
    }

    /// Whether the calling thread is this pool's result thread.
    fn on_result_thread(&self) -> bool {
        on_result_thread(self.shared.id)
    }

    /// [`TaskError::WouldDeadlock`] on this pool's result thread.
    fn refuse_on_result_thread(&self) -> Result<(), TaskError> {
        if self.on_result_thread() {
            Err(TaskError::WouldDeadlock)
        } else {
            Ok(())
        }
    }

    /// Submits `f(args)`; the value comes through the [`AsyncResult`].
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> AsyncResult<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async_with(f, args, |_| {}, |_| {})
    }

    /// [`apply_async`](Self::apply_async) with callbacks, run exactly once
    /// on the pool's result thread: `callback` with the value, or
    /// `error_callback` with the error, before the [`AsyncResult`] is set.
    /// A callback that panics is reported and counted; the pool goes on
    /// (see [Callbacks](Self#callbacks)).
    pub fn apply_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        callback: impl FnOnce(&R) + Send + 'static,
        error_callback: impl FnOnce(&TaskError) + Send + 'static,
    ) -> AsyncResult<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let slot = Slot::new(self.shared.id);
        let sink_slot = Arc::clone(&slot);
        let panics = Arc::clone(&self.shared.callback_panics);
        let sink: Sink = Box::new(move |outcome| {
            let value = chunk_items::<R>(outcome, 1).and_then(|mut items| {
                items
                    .pop()
                    .unwrap_or(Err(TaskError::Transport(TransportError::message(
                        "empty chunk",
                    ))))
            });
            // The panic hook has printed the panic; the pool adds what
            // became of it (Python prints a callback's exception and goes
            // on too).
            let ran = catch_unwind(AssertUnwindSafe(|| match &value {
                Ok(v) => callback(v),
                Err(e) => error_callback(e),
            }));
            if ran.is_err() {
                let which = if value.is_ok() {
                    "callback"
                } else {
                    "error_callback"
                };
                let count = panics.fetch_add(1, Ordering::SeqCst) + 1;
                eprintln!(
                    "multiproc-process: a pool {which} panicked (callback panics so far: \
                     {count}); the task's result is delivered and the pool goes on"
                );
            }
            sink_slot.set(value);
        });
        self.submit(Call::new(f), std::slice::from_ref(&args), sink);
        AsyncResult::new(slot)
    }

    /// `f` over every item, in order (Python's `map`). `chunksize` `None`
    /// picks about four chunks per worker.
    ///
    /// # Errors
    ///
    /// The first item's [`TaskError`]; [`TaskError::WouldDeadlock`] from a
    /// callback (see [Callbacks](Self#callbacks)).
    pub fn map<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, TaskError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.refuse_on_result_thread()?;
        self.map_async(f, items, chunksize).get()
    }

    /// [`map`](Self::map) without waiting.
    pub fn map_async<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: Option<usize>,
    ) -> AsyncResult<Vec<R>>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        self.map_chunks(Call::new(f), &items, chunksize)
    }

    /// `f(a, b)` over pairs, in order (Python's `starmap` for two
    /// arguments; for more, take a tuple with [`map`](Self::map)).
    ///
    /// # Errors
    ///
    /// The first item's [`TaskError`]; [`TaskError::WouldDeadlock`] from a
    /// callback (see [Callbacks](Self#callbacks)).
    pub fn starmap<A, B, R, I>(
        &self,
        f: fn(A, B) -> R,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, TaskError>
    where
        I: IntoIterator<Item = (A, B)>,
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.refuse_on_result_thread()?;
        self.starmap_async(f, items, chunksize).get()
    }

    /// [`starmap`](Self::starmap) without waiting.
    pub fn starmap_async<A, B, R, I>(
        &self,
        f: fn(A, B) -> R,
        items: I,
        chunksize: Option<usize>,
    ) -> AsyncResult<Vec<R>>
    where
        I: IntoIterator<Item = (A, B)>,
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<(A, B)> = items.into_iter().collect();
        self.map_chunks(Call::new2(f), &items, chunksize)
    }

    fn map_chunks<A: Serialize, R>(
        &self,
        call: Call,
        items: &[A],
        chunksize: Option<usize>,
    ) -> AsyncResult<Vec<R>>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let slot = Slot::new(self.shared.id);
        let chunksize = chunksize
            .unwrap_or_else(|| auto_chunksize(items.len(), self.processes()))
            .max(1);
        let chunks: Vec<&[A]> = items.chunks(chunksize).collect();
        if chunks.is_empty() {
            slot.set(Ok(Vec::new()));
            return AsyncResult::new(slot);
        }
        let gather = Arc::new(Mutex::new(Gather::new(
            items.len(),
            chunks.len(),
            Arc::clone(&slot),
        )));
        let sinks = chunks.iter().enumerate().map(|(index, chunk)| {
            let gather = Arc::clone(&gather);
            let (start, len) = (index * chunksize, chunk.len());
            let sink: Sink = Box::new(move |outcome| {
                let results = chunk_items::<R>(outcome, len);
                let mut g = gather.lock().unwrap_or_else(|e| e.into_inner());
                g.chunk_done(start, len, results);
            });
            (*chunk, sink)
        });
        self.submit_all(call, sinks);
        AsyncResult::new(slot)
    }

    /// `f` over `items` lazily, in order (Python's `imap`): the input is
    /// consumed as workers need it, with a bounded number of chunks in
    /// flight, so endless inputs work. `chunksize` defaults to 1.
    pub fn imap<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: Option<usize>,
    ) -> IMap<'_, A, R, I::IntoIter>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        IMap::new(self, Call::new(f), items.into_iter(), chunksize, true)
    }

    /// [`imap`](Self::imap) yielding results as they finish, in any order
    /// (Python's `imap_unordered`).
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: Option<usize>,
    ) -> IMap<'_, A, R, I::IntoIter>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        IMap::new(self, Call::new(f), items.into_iter(), chunksize, false)
    }

    /// Encodes one chunk and queues it; a failure lands in the sink at once.
    fn submit<A: Serialize>(&self, call: Call, chunk: &[A], sink: Sink) {
        self.submit_all(call, std::iter::once((chunk, sink)));
    }

    /// [`submit`](Self::submit) for many chunks, queued in batches of
    /// [`SUBMIT_BATCH`] under one lock each: the result thread contends for
    /// that lock with every report, and workers start on the first batch
    /// while the rest are still being encoded.
    fn submit_all<'a, A: Serialize + 'a>(
        &self,
        call: Call,
        chunks: impl IntoIterator<Item = (&'a [A], Sink)>,
    ) {
        let mut chunks = chunks.into_iter().peekable();
        let mut encoded = Vec::new();
        while chunks.peek().is_some() {
            for (chunk, sink) in chunks.by_ref().take(SUBMIT_BATCH) {
                match Task::encode(call, chunk) {
                    Ok(message) => encoded.push((message, sink)),
                    Err(e) => run_sink(
                        sink,
                        Err(TaskError::Transport(TransportError::caused(
                            "encoding the task",
                            e,
                        ))),
                    ),
                }
            }
            self.submit_encoded(encoded.drain(..));
        }
    }

    /// Queues encoded chunks and dispatches them, under one lock.
    fn submit_encoded(&self, encoded: impl Iterator<Item = (Vec<u8>, Sink)>) {
        let mut state = self.shared.lock();
        let refused = if state.terminated {
            Some(TaskError::Terminated)
        } else if state.closed {
            Some(TaskError::Closed)
        } else {
            state.broken.clone().map(TaskError::InitializerFailed)
        };
        if let Some(why) = refused {
            drop(state);
            for (_, sink) in encoded {
                run_sink(sink, Err(why.clone()));
            }
            return;
        }
        for (message, sink) in encoded {
            let id = state.next_id;
            state.next_id += 1;
            state.sinks.insert(id, sink);
            state.pending.push_back(Task::new(id, message));
        }
        let failed = self.shared.dispatch(&mut state);
        drop(state);
        run_sinks(failed);
    }

    /// No more tasks (Python's `close`); running and queued ones finish.
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.closed = true;
        if state.sinks.is_empty() && state.pending.is_empty() {
            // Nothing left to run: the workers start leaving now, while the
            // result thread wakes up to collect them.
            state.let_workers_go();
        }
        drop(state);
        // Wake the result thread so it notices sooner.
        self.shared.reports.try_put(&Report::InitFailed {
            worker: 0,
            message: String::new(),
        });
    }

    /// Waits until the workers are gone, after [`close`](Self::close) or
    /// [`terminate`](Self::terminate) (Python's `join`); returns at once
    /// otherwise, as there would be nothing to wait for, and from a
    /// callback, as the pool's result thread it runs on is what finishes
    /// the pool (see [Callbacks](Self#callbacks)).
    pub fn join(&self) {
        if self.on_result_thread() {
            return;
        }
        let mut state = self.shared.lock();
        if !(state.closed || state.terminated) {
            return;
        }
        while !state.finished {
            state = self
                .shared
                .finished
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Stops the workers now (`SIGTERM`, then `SIGKILL` after a grace
    /// period); tasks not finished fail with [`TaskError::Terminated`].
    pub fn terminate(&self) {
        let (workers, sinks) = {
            let mut state = self.shared.lock();
            if state.terminated {
                return;
            }
            state.terminated = true;
            state.pending.clear();
            let sinks = state.sinks.take_all();
            (std::mem::take(&mut state.workers), sinks)
        };
        for worker in &workers {
            let _ = worker.process.terminate();
        }
        let deadline = Instant::now() + TERMINATE_GRACE;
        for mut worker in workers {
            let left = deadline.saturating_duration_since(Instant::now());
            if worker.process.join_timeout(left).is_err() && worker.process.is_alive() {
                let _ = worker.process.kill();
                let _ = worker.process.join();
            }
        }
        for sink in sinks {
            run_sink(sink, Err(TaskError::Terminated));
        }
        self.shared.reports.close();
        self.join();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
        if let Some(thread) = self.thread.take() {
            // Dropped by a callback, on the result thread itself: that
            // thread stops once the callback returns.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes())
            .finish()
    }
}

/// Python's default: about four chunks per worker.
fn auto_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(workers.max(1) * 4).max(1)
}

/// Decodes a chunk's outcome into one result per item.
fn chunk_items<R: DeserializeOwned>(
    outcome: Result<Vec<u8>, TaskError>,
    len: usize,
) -> Result<Vec<Result<R, TaskError>>, TaskError> {
    match outcome {
        Err(e) => Ok((0..len).map(|_| Err(e.clone())).collect()),
        Ok(bytes) => multiproc_core::codec::decode::<Vec<Result<R, String>>>(&bytes)
            .map(|items| {
                items
                    .into_iter()
                    .map(|r| r.map_err(TaskError::Panicked))
                    .collect()
            })
            .map_err(|e| TaskError::Transport(TransportError::caused("decoding the results", e))),
    }
}

fn run_sinks(failed: Vec<(Sink, TaskError)>) {
    for (sink, error) in failed {
        run_sink(sink, Err(error));
    }
}

/// Delivers an outcome. A sink that panics (its callbacks are guarded
/// already; this is for anything else, like a value's `Deserialize`) must
/// not take the result thread down with it: the panic hook has reported
/// it, and the next sink runs.
fn run_sink(sink: Sink, outcome: Result<Vec<u8>, TaskError>) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| sink(outcome))) {
        eprintln!(
            "multiproc-process: delivering a pool result panicked ({}); the pool goes on",
            panic_message(&*panic)
        );
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn_worker(&self) -> io::Result<Worker> {
        let tasks = Queue::builder()
            .ring_bytes(TASK_RING)
            .build()
            .map_err(io::Error::other)?;
        let args = WorkerArgs {
            tasks: tasks.clone(),
            reports: self.reports.clone(),
            init: self
                .config
                .init
                .as_ref()
                .map(|(call, bytes)| (*call, ByteBuf(bytes.clone()))),
        };
        let process = Process::new(worker_main, args)
            .name("PoolWorker")
            .daemon(true)
            .start_method(self.config.method)
            .start()?;
        Ok(Worker {
            process,
            tasks,
            outstanding: VecDeque::new(),
            assigned: 0,
            retiring: false,
            initialized: self.config.init.is_none(),
        })
    }

    /// Undoes a `build` that failed with `error`: stops and reaps the
    /// workers started so far and closes the report queue; returns the
    /// error to give the caller.
    fn abandon(&self, workers: Vec<Worker>, error: io::Error) -> io::Error {
        for w in &workers {
            w.tasks.close();
            let _ = w.process.kill();
        }
        for mut w in workers {
            let _ = w.process.join();
        }
        self.reports.close();
        StartError::wrap(error)
    }

    /// Hands pending tasks to workers with room, each to the least loaded
    /// (so idle workers start before busy ones get a second task). Returns
    /// sinks of tasks the queue refused.
    fn dispatch(&self, state: &mut State) -> Vec<(Sink, TaskError)> {
        let mut failed = Vec::new();
        let max = self.config.max_tasks;
        while !state.pending.is_empty() {
            let Some(worker) = state
                .workers
                .iter_mut()
                .filter(|w| w.has_room(max))
                .min_by_key(|w| w.outstanding.len())
            else {
                break;
            };
            let Some(task) = state.pending.pop_front() else {
                break;
            };
            match worker.tasks.put_bytes(&task.message) {
                Ok(()) => {
                    worker.outstanding.push_back(task);
                    worker.assigned += 1;
                }
                Err(e) => {
                    if let Some(sink) = state.sinks.remove(task.id) {
                        failed.push((
                            sink,
                            TaskError::Transport(TransportError::caused(
                                "handing the task to a worker",
                                e.map(drop),
                            )),
                        ));
                    }
                }
            }
        }
        failed
    }

    /// Whether a worker that could run a task has none, and nothing is
    /// pending, while another worker has tasks it has not started (all but
    /// the oldest of its list, perhaps). Cheap: the result thread asks
    /// after every batch of reports.
    fn idle_beside_backlog(&self, state: &State) -> bool {
        let max = self.config.max_tasks;
        state.pending.is_empty()
            && state
                .workers
                .iter()
                .any(|w| w.outstanding.is_empty() && w.has_room(max))
            && state.workers.iter().any(|w| w.outstanding.len() >= 2)
    }

    /// One round of taking tasks back for idle workers: for each idle one,
    /// half the list of the worker with the longest, taken out of its
    /// queue (only tasks it has not started come out) and put back in
    /// front of the pending ones; `dispatch` then hands them to the least
    /// loaded workers, the idle ones first. The worker keeps at least as
    /// many as any idle one gets, so tasks do not go back and forth.
    /// Returns whether any task came back.
    fn take_back_for_idle(&self, state: &mut State) -> bool {
        let max = self.config.max_tasks;
        let idle = state
            .workers
            .iter()
            .filter(|w| w.outstanding.is_empty() && w.has_room(max))
            .count();
        let mut back = Vec::new();
        for _ in 0..idle {
            let Some(busy) = state
                .workers
                .iter_mut()
                .filter(|w| w.outstanding.len() >= 2)
                .max_by_key(|w| w.outstanding.len())
            else {
                break;
            };
            let half = busy.outstanding.len() / 2;
            let taken = busy.take_back(half, TakeBack::Live);
            if taken.is_empty() {
                // Busy with its queue (or stopped there): next round.
                break;
            }
            back.extend(taken);
        }
        let any = !back.is_empty();
        for task in back.into_iter().rev() {
            state.pending.push_front(task);
        }
        any
    }

    /// The result thread.
    fn run(self: Arc<Self>) {
        mark_result_thread(self.id);
        let mut last_check = Instant::now();
        let mut next_steal = last_check;
        loop {
            let report = self.reports.get_timeout(CHECK_INTERVAL);
            let mut ready: Vec<(Sink, Result<Vec<u8>, TaskError>)> = Vec::new();
            let mut state = self.lock();
            match report {
                Ok(report) => {
                    self.handle(&mut state, report, &mut ready);
                    // Reports that are already there are handled under the
                    // same lock, with one dispatch for all of them.
                    for _ in 1..REPORT_BATCH {
                        let Some(report) = self.reports.try_get() else {
                            break;
                        };
                        self.handle(&mut state, report, &mut ready);
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(_) => {
                    // Closed by `terminate` (or broken): stop.
                    state.finished = true;
                    self.finished.notify_all();
                    return;
                }
            }
            if state.terminated {
                drop(state);
                run_ready(ready);
                continue;
            }
            if last_check.elapsed() >= CHECK_INTERVAL {
                last_check = Instant::now();
                self.check_workers(&mut state, &mut ready);
            }
            let mut failed = self.dispatch(&mut state);
            if self.idle_beside_backlog(&state) {
                let now = Instant::now();
                if now >= next_steal {
                    next_steal = now + STEAL_INTERVAL;
                    if self.take_back_for_idle(&mut state) {
                        failed.extend(self.dispatch(&mut state));
                    }
                }
            }
            let done = self.wind_down(&mut state);
            drop(state);
            // Results are delivered before `join` may return.
            run_ready(ready);
            run_sinks(failed);
            if done {
                self.lock().finished = true;
                self.finished.notify_all();
                return;
            }
        }
    }

    fn handle(
        &self,
        state: &mut State,
        report: Report,
        ready: &mut Vec<(Sink, Result<Vec<u8>, TaskError>)>,
    ) {
        match report {
            Report::Done { id, worker, result } => {
                if let Some(w) = state.workers.iter_mut().find(|w| w.process.pid() == worker) {
                    // A worker runs its tasks in the order it got them:
                    // the finished one is the oldest.
                    if w.outstanding.front().is_some_and(|t| t.id == id) {
                        w.outstanding.pop_front();
                    } else {
                        w.outstanding.retain(|t| t.id != id);
                    }
                    if self.config.max_tasks.is_some_and(|k| w.assigned >= k)
                        && w.outstanding.is_empty()
                    {
                        w.retiring = true;
                        w.tasks.close();
                    }
                }
                if let Some(sink) = state.sinks.remove(id) {
                    ready.push((
                        sink,
                        result.map_err(|why| TaskError::Transport(TransportError::message(why))),
                    ));
                }
                self.replace_retiring(state);
            }
            Report::InitFailed { worker: 0, .. } => {} // a wake-up from `close`
            Report::InitFailed { message, .. } => fail_initializer(state, &message, ready),
            Report::Ready { worker } => {
                if let Some(w) = state.workers.iter_mut().find(|w| w.process.pid() == worker) {
                    w.initialized = true;
                }
                state.init_deaths = 0;
                state.respawn_at = None;
            }
        }
    }

    /// Keeps `processes` workers that are not retiring.
    fn replace_retiring(&self, state: &mut State) {
        let active = state.workers.iter().filter(|w| !w.retiring).count();
        if state.broken.is_some() || state.terminated || (state.closed && state.pending.is_empty())
        {
            return;
        }
        if state.respawn_at.is_some_and(|at| Instant::now() < at) {
            return; // backing off; retried at a later check
        }
        for _ in active..self.config.processes {
            match self.spawn_worker() {
                Ok(worker) => state.workers.push(worker),
                Err(_) => break, // retried at the next check
            }
        }
    }

    /// Reaps workers that exited; fails the task a dead worker was running,
    /// hands the tasks it had not started to the rest, and replaces it.
    fn check_workers(
        &self,
        state: &mut State,
        ready: &mut Vec<(Sink, Result<Vec<u8>, TaskError>)>,
    ) {
        if state.workers.iter().all(|w| w.process.is_alive()) {
            self.replace_retiring(state);
            return;
        }
        // Reports a worker sent just before dying are taken first.
        while let Some(report) = self.reports.try_get() {
            self.handle(state, report, ready);
        }
        let mut index = 0;
        while index < state.workers.len() {
            if state.workers[index].process.is_alive() {
                index += 1;
                continue;
            }
            let mut dead = state.workers.swap_remove(index);
            let exitcode = dead.process.exitcode().unwrap_or(0);
            // Whatever is still in its queue it never got: those tasks go
            // back as they are. It runs its tasks one at a time, taking the
            // next only after reporting the last, and its reports are in:
            // what is left on its list is the task it was running, if any.
            let unstarted = dead.take_back(usize::MAX, TakeBack::Dead);
            if dead.initialized
                && let Some(running) = dead.outstanding.pop_front()
                && let Some(sink) = state.sinks.remove(running.id)
            {
                let signal = (exitcode < 0).then(|| signal_name(-exitcode));
                ready.push((sink, Err(TaskError::WorkerDied { exitcode, signal })));
            }
            // Should its queue not have given everything back, the rest of
            // the list had not started either (one task at a time). A
            // worker that died in its initializer started none.
            let stranded = dead.outstanding.drain(..).chain(unstarted);
            for task in stranded.collect::<Vec<_>>().into_iter().rev() {
                state.pending.push_front(task);
            }
            if !dead.initialized {
                self.initializer_died(state, exitcode, ready);
            }
        }
        self.replace_retiring(state);
    }

    /// A fresh worker died in its initializer (killed, aborted, exited):
    /// its replacement waits a little longer each time, and after a few in
    /// a row the initializer counts as failed, as when it panics.
    fn initializer_died(
        &self,
        state: &mut State,
        exitcode: i32,
        ready: &mut Vec<(Sink, Result<Vec<u8>, TaskError>)>,
    ) {
        if state.broken.is_some() {
            return; // reported by the worker already
        }
        state.init_deaths += 1;
        let workers = u32::try_from(self.config.processes).unwrap_or(u32::MAX);
        if state.init_deaths >= workers.saturating_add(INIT_DEATHS_BEYOND_WORKERS) {
            let how = if exitcode < 0 {
                format!("killed by {}", signal_name(-exitcode))
            } else {
                format!("exited with code {exitcode}")
            };
            let message = format!(
                "{} workers in a row died in the initializer, the last {how}",
                state.init_deaths
            );
            fail_initializer(state, &message, ready);
            return;
        }
        let backoff = CHECK_INTERVAL
            .saturating_mul(1 << state.init_deaths.min(10))
            .min(MAX_RESPAWN_BACKOFF);
        state.respawn_at = Some(Instant::now() + backoff);
    }

    /// After `close`: once every task is done, lets the workers go; true
    /// when they all have.
    fn wind_down(&self, state: &mut State) -> bool {
        if !(state.closed || state.broken.is_some())
            || !state.sinks.is_empty()
            || !state.pending.is_empty()
        {
            return false;
        }
        state.let_workers_go();
        // Every task is done: the workers leave as soon as they see their
        // queue closed. Wait for them here rather than polling.
        for mut w in std::mem::take(&mut state.workers) {
            if w.process.join_timeout(WIND_DOWN_WAIT).is_err() && w.process.is_alive() {
                let _ = w.process.kill();
                let _ = w.process.join();
            }
        }
        true
    }
}

/// The initializer failed (`message`): every task fails with
/// [`TaskError::InitializerFailed`], later ones are refused, and the
/// workers are let go.
fn fail_initializer(
    state: &mut State,
    message: &str,
    ready: &mut Vec<(Sink, Result<Vec<u8>, TaskError>)>,
) {
    state.broken = Some(message.to_owned());
    let mut stranded = std::mem::take(&mut state.pending);
    for w in &mut state.workers {
        stranded.extend(w.outstanding.drain(..));
    }
    for task in stranded {
        if let Some(sink) = state.sinks.remove(task.id) {
            ready.push((sink, Err(TaskError::InitializerFailed(message.to_owned()))));
        }
    }
    state.let_workers_go();
}

/// Why a pool could not be built: the OS error behind it, as the source.
#[derive(Debug)]
struct StartError {
    source: io::Error,
}

impl StartError {
    /// The error of a failed `build`, with the innermost OS error found in
    /// `error`'s sources as its cause (out of descriptors shows up as a
    /// descriptor that could not be encoded otherwise), or `error` itself.
    fn wrap(error: io::Error) -> io::Error {
        let mut os = error.raw_os_error();
        let mut next = std::error::Error::source(&error);
        while let Some(e) = next {
            if let Some(code) = e
                .downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error)
            {
                os = Some(code);
            }
            next = e.source();
        }
        let source = os.map_or(error, io::Error::from_raw_os_error);
        io::Error::new(source.kind(), Self { source })
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = self.source.to_string();
        // "Too many open files (os error 24)" reads "too many open files".
        let cause = match cause.rfind(" (os error ") {
            Some(at) if self.source.raw_os_error().is_some() => &cause[..at],
            _ => &cause,
        };
        let mut chars = cause.chars();
        let first = chars.next().map(|c| c.to_lowercase().to_string());
        write!(
            f,
            "could not start the pool: {}{}",
            first.unwrap_or_default(),
            chars.as_str()
        )
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn run_ready(ready: Vec<(Sink, Result<Vec<u8>, TaskError>)>) {
    for (sink, outcome) in ready {
        run_sink(sink, outcome);
    }
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`].
pub struct IMap<'p, A, R, I> {
    pool: &'p Pool,
    call: Call,
    input: I,
    chunksize: usize,
    ordered: bool,
    exhausted: bool,
    /// Iterated on the pool's result thread with nothing to hand out: it
    /// yielded [`TaskError::WouldDeadlock`] and ends.
    stuck: bool,
    submitted: usize,
    received: usize,
    /// Chunks handed to the consumer; `submitted - taken` bounds memory.
    taken: usize,
    next_index: usize,
    window: usize,
    results: mpsc::Receiver<(usize, Vec<Result<R, TaskError>>)>,
    sender: mpsc::Sender<(usize, Vec<Result<R, TaskError>>)>,
    parked: BTreeMap<usize, Vec<Result<R, TaskError>>>,
    current: std::vec::IntoIter<Result<R, TaskError>>,
    _args: std::marker::PhantomData<fn(A)>,
}

impl<'p, A, R, I> IMap<'p, A, R, I>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    /// `chunksize` `None` is 1.
    fn new(pool: &'p Pool, call: Call, input: I, chunksize: Option<usize>, ordered: bool) -> Self {
        let (sender, results) = mpsc::channel();
        Self {
            pool,
            call,
            input,
            chunksize: chunksize.unwrap_or(1).max(1),
            ordered,
            exhausted: false,
            stuck: false,
            submitted: 0,
            received: 0,
            taken: 0,
            next_index: 0,
            // Enough chunks to keep every worker's prefetch full, and a few
            // finished ones waiting for the consumer.
            window: pool.processes() * (PREFETCH + 2),
            results,
            sender,
            parked: BTreeMap::new(),
            current: Vec::new().into_iter(),
            _args: std::marker::PhantomData,
        }
    }

    fn top_up(&mut self) {
        while !self.exhausted && self.submitted - self.taken < self.window {
            let chunk: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.exhausted = true;
                break;
            }
            let index = self.submitted;
            let len = chunk.len();
            let sender = self.sender.clone();
            let sink: Sink = Box::new(move |outcome| {
                let items = chunk_items::<R>(outcome, len)
                    .unwrap_or_else(|e| (0..len).map(|_| Err(e.clone())).collect());
                let _ = sender.send((index, items));
            });
            self.pool.submit(self.call, &chunk, sink);
            self.submitted += 1;
        }
    }
}

impl<A, R, I> Iterator for IMap<'_, A, R, I>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        // On the result thread nothing more can arrive while we wait, so
        // nothing more is submitted either.
        let on_result_thread = self.pool.on_result_thread();
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if self.stuck {
                return None;
            }
            if !on_result_thread {
                self.top_up();
            }
            if self.ordered
                && let Some(items) = self.parked.remove(&self.next_index)
            {
                self.next_index += 1;
                self.taken += 1;
                self.current = items.into_iter();
                continue;
            }
            if self.received == self.submitted && (self.exhausted || !on_result_thread) {
                return None;
            }
            let next = if on_result_thread {
                self.results.try_recv().ok()
            } else {
                self.results.recv().ok()
            };
            let Some((index, items)) = next else {
                if on_result_thread {
                    self.stuck = true;
                    return Some(Err(TaskError::WouldDeadlock));
                }
                return None;
            };
            self.received += 1;
            if self.ordered {
                self.parked.insert(index, items);
            } else {
                self.taken += 1;
                self.current = items.into_iter();
            }
        }
    }
}

impl<A, R, I> fmt::Debug for IMap<'_, A, R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap")
            .field("ordered", &self.ordered)
            .field("in_flight", &(self.submitted - self.taken))
            .finish()
    }
}

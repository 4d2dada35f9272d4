//! [`Pool`]: Python's `multiprocessing.Pool`, minus its worst failure — a
//! worker that dies fails the task it was running and is replaced; nothing
//! hangs.
//!
//! # Design
//!
//! Every worker has its own task [`Queue`](multiproc_queue::Queue) (shared
//! memory) and all report into one. The pool hands each worker at most
//! [`PREFETCH`] tasks, so it always knows which tasks a worker holds, in
//! order. A background thread, the result thread (`supervisor.rs`), reads
//! the reports, runs callbacks and checks the workers' pidfds every
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
//!   a later round. Rounds come at most every
//!   [`STEAL_INTERVAL`](supervisor::STEAL_INTERVAL), which bounds their
//!   cost where a worker runs dry all the time (tasks
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
//! thread that submits it (`task.rs`, `submit.rs`), and handing it to a
//! worker is a copy; a report is the worker's encoded results with a fixed
//! trailer (`report.rs`), read without decoding; `map` decodes each chunk
//! outside the pool's lock and puts its values straight into place
//! (`gather.rs`).
//!
//! One job per file:
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the API: [`Pool`], [`PoolBuilder`] |
//! | `submit.rs` | encoding tasks on the submitting thread, queuing them in batches |
//! | `supervisor.rs` | the workers' lists and the result thread: reports, dispatch, take-back, deaths, respawn and back-off, wind-down |
//! | `imap.rs` | [`IMap`]: lazy submission, results in order or as they come |
//! | `sinks.rs` | the sinks of the tasks in flight, and delivering outcomes to them |
//! | `gather.rs` | decoding chunk results; putting `map`'s into place |
//! | `result.rs` | [`AsyncResult`], [`TaskError`] and the other errors |
//! | `task.rs`, `report.rs` | the messages to the workers and back |
//! | `worker.rs` | the worker process |

mod gather;
mod imap;
mod report;
mod result;
mod sinks;
mod submit;
mod supervisor;
mod task;
mod worker;

pub use imap::IMap;
pub use result::{AsyncResult, GetTimeoutError, TaskError, TransportError};
pub use supervisor::{CHECK_INTERVAL, PREFETCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::method::{StartMethod, get_start_method};
use gather::{MapParts, chunk_items};
use report::Report;
use result::Slot;
use sinks::{Parts, Sink, run_sink};
use supervisor::{Config, Shared};
use task::Call;

/// How long `terminate` waits after `SIGTERM` before `SIGKILL`.
const TERMINATE_GRACE: Duration = Duration::from_millis(200);

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
            processes: self.processes.unwrap_or_else(crate::info::cpu_count),
            init: self.init.transpose()?,
            max_tasks: self.max_tasks,
            method: self.method.unwrap_or_else(get_start_method),
        };
        let shared = Arc::new(Shared::new(config)?);
        let mut workers = Vec::with_capacity(shared.config.processes);
        for _ in 0..shared.config.processes {
            match shared.spawn_worker() {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    shared.abandon(workers);
                    return Err(StartError::wrap(e));
                }
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
                shared.abandon(workers);
                return Err(StartError::wrap(e));
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
        self.shared.on_result_thread()
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
        let sink = Sink::Once(Box::new(move |outcome| {
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
        }));
        self.shared
            .submit(Call::new(f), std::slice::from_ref(&args), sink);
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
        let parts: Arc<dyn Parts> =
            Arc::new(MapParts::new(items.len(), chunksize, Arc::clone(&slot)));
        let sinks = chunks
            .iter()
            .enumerate()
            .map(|(n, chunk)| (*chunk, Sink::Part(Arc::clone(&parts), n)));
        self.shared.submit_all(call, sinks);
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
        IMap::new(
            &self.shared,
            Call::new(f),
            items.into_iter(),
            chunksize,
            true,
        )
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
        IMap::new(
            &self.shared,
            Call::new(f),
            items.into_iter(),
            chunksize,
            false,
        )
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
            message: "".into(),
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
        let os = crate::os_cause::os_cause(&error);
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

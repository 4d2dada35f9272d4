//! [`AsyncResult`], [`TaskError`] and the errors of its timed forms.

use multiproc_core::time::Timeout;
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Why a pool task has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// The function panicked; the message.
    Panicked(String),
    /// The worker running the task died (killed, crashed, out of memory).
    /// The pool replaced it and went on.
    WorkerDied {
        /// Python's exit code of the worker: minus the signal that killed it.
        exitcode: i32,
        /// The signal's name when a signal killed it.
        signal: Option<&'static str>,
    },
    /// The pool's initializer failed in a worker; the pool runs no tasks.
    InitializerFailed(String),
    /// The pool was terminated before the task finished.
    Terminated,
    /// The pool is closed: no new tasks.
    Closed,
    /// The value was already taken from this result.
    Taken,
    /// Sending the task or decoding its result failed.
    Transport(TransportError),
    /// A call that waits for a result was made on the pool's result thread
    /// (from a callback), where it could never return: that thread is the
    /// one that delivers results. Nothing was submitted, or the task goes
    /// on and its result stays available to other threads.
    WouldDeadlock,
}

impl TaskError {
    /// Whether this is [`TaskError::WorkerDied`].
    #[must_use]
    pub fn is_worker_died(&self) -> bool {
        matches!(self, Self::WorkerDied { .. })
    }

    /// Whether this is [`TaskError::WouldDeadlock`].
    #[must_use]
    pub fn is_would_deadlock(&self) -> bool {
        matches!(self, Self::WouldDeadlock)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(message) => write!(f, "task panicked: {message}"),
            Self::WorkerDied {
                signal: Some(name), ..
            } => write!(f, "worker died running the task: killed by {name}"),
            Self::WorkerDied { exitcode, .. } => {
                write!(f, "worker died running the task: exit code {exitcode}")
            }
            Self::InitializerFailed(message) => write!(f, "pool initializer failed: {message}"),
            Self::Terminated => f.write_str("pool terminated before the task finished"),
            Self::Closed => f.write_str("pool is closed"),
            Self::Taken => f.write_str("task result already taken"),
            Self::Transport(err) => write!(f, "task transport failed: {}", err.what),
            Self::WouldDeadlock => f.write_str(
                "waiting for a result on the pool's result thread (in a callback) would deadlock",
            ),
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transport(err) => err.source.as_deref().map(|e| e as _),
            _ => None,
        }
    }
}

/// What failed on the way of a task or its result ([`TaskError::Transport`]):
/// a step of this process, with the error that caused it as
/// [`source`](std::error::Error::source) of the `TaskError`, or a worker's
/// own report (a message from another process).
#[derive(Clone)]
pub struct TransportError {
    what: Cow<'static, str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    /// `step` failed because of `source`.
    pub(crate) fn caused(
        step: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            what: Cow::Borrowed(step),
            source: Some(Arc::new(source)),
        }
    }

    /// A failure described by a message alone (a worker's report, or a
    /// broken invariant of the result's shape).
    pub(crate) fn message(what: impl Into<Cow<'static, str>>) -> Self {
        Self {
            what: what.into(),
            source: None,
        }
    }

    /// What failed.
    #[must_use]
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TransportError");
        d.field("what", &self.what);
        if let Some(source) = &self.source {
            d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

/// Equal when they say the same: the same step, and causes that read the
/// same.
impl PartialEq for TransportError {
    fn eq(&self, other: &Self) -> bool {
        self.what == other.what
            && self.source.as_ref().map(ToString::to_string)
                == other.source.as_ref().map(ToString::to_string)
    }
}

impl Eq for TransportError {}

/// Why [`AsyncResult::get_timeout`] has no value for you: the time ran out
/// (the task goes on; ask again), or the task failed.
///
/// # Examples
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
/// let pool = Pool::new(1)?;
/// let pending = pool.apply_async(nap, 300);
/// let err = pending.get_timeout(Duration::from_millis(1)).unwrap_err();
/// assert!(err.is_timeout());
/// assert_eq!(pending.get_timeout(Duration::from_secs(30))?, 300);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GetTimeoutError {
    /// The deadline passed first; the task goes on.
    Timeout,
    /// The task has no value: why.
    Failed(TaskError),
}

impl GetTimeoutError {
    /// Whether the deadline passed first.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// The task's error, unless the deadline passed first.
    #[must_use]
    pub fn into_task_error(self) -> Option<TaskError> {
        match self {
            Self::Timeout => None,
            Self::Failed(err) => Some(err),
        }
    }
}

impl From<TaskError> for GetTimeoutError {
    fn from(err: TaskError) -> Self {
        Self::Failed(err)
    }
}

impl fmt::Display for GetTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => Timeout.fmt(f),
            Self::Failed(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for GetTimeoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Timeout => None,
            Self::Failed(err) => err.source(),
        }
    }
}

thread_local! {
    /// Id of the pool whose result thread this is; 0 on any other thread.
    static RESULT_THREAD_OF: Cell<u64> = const { Cell::new(0) };
}

/// Marks the calling thread as the result thread of pool `pool` (not 0).
pub(crate) fn mark_result_thread(pool: u64) {
    RESULT_THREAD_OF.with(|t| t.set(pool));
}

/// Whether the calling thread is the result thread of pool `pool`.
pub(crate) fn on_result_thread(pool: u64) -> bool {
    pool != 0 && RESULT_THREAD_OF.with(Cell::get) == pool
}

/// Where a task's outcome lands, shared by the pool's result thread and the
/// [`AsyncResult`] handle.
pub(crate) struct Slot<R> {
    value: Mutex<State<R>>,
    ready: Condvar,
    /// Tasks awaiting the result (see `impl Future for AsyncResult`).
    /// Locked only while `value` is held, so a waker registered under it
    /// cannot miss the `set` that follows.
    wakers: Mutex<Vec<Waker>>,
    /// Id of the pool whose result thread sets this slot (0: none).
    pool: u64,
}

enum State<R> {
    Pending,
    Ready(Result<R, TaskError>),
    Taken { ok: bool },
}

impl<R> Slot<R> {
    /// A slot that pool `pool`'s result thread will set.
    pub(crate) fn new(pool: u64) -> Arc<Self> {
        Arc::new(Self {
            value: Mutex::new(State::Pending),
            ready: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            pool,
        })
    }

    pub(crate) fn set(&self, value: Result<R, TaskError>) {
        let mut state = self.value.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, State::Pending) {
            *state = State::Ready(value);
            self.ready.notify_all();
            let wakers = std::mem::take(&mut *lock(&self.wakers));
            drop(state);
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

/// The outcome of a task submitted with `apply_async` or `map_async`
/// (Python's `AsyncResult`).
///
/// On the pool's result thread — in a callback — nothing here waits: the
/// result could only arrive through that very thread. [`get`](Self::get)
/// and [`get_timeout`](Self::get_timeout) return
/// [`TaskError::WouldDeadlock`] for a result that is not there yet,
/// [`wait`](Self::wait) and [`wait_timeout`](Self::wait_timeout) return at
/// once.
///
/// ```
/// use multiproc_process::{Pool, TaskError};
/// use std::sync::mpsc;
///
/// fn sleep_ms(ms: u64) -> u64 {
///     std::thread::sleep(std::time::Duration::from_millis(ms));
///     ms
/// }
///
/// let pool = Pool::new(2)?;
/// let slow = pool.apply_async(sleep_ms, 500);
/// let (tx, rx) = mpsc::channel();
/// let quick = pool.apply_async_with(sleep_ms, 1, move |_| {
///     tx.send(slow.get()).unwrap();
/// }, |_| {});
/// assert_eq!(quick.get()?, 1);
/// assert_eq!(rx.recv()?, Err(TaskError::WouldDeadlock));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AsyncResult<R> {
    slot: Arc<Slot<R>>,
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(slot: Arc<Slot<R>>) -> Self {
        Self { slot }
    }

    /// Waits for the task and returns its value.
    ///
    /// # Errors
    ///
    /// The task's [`TaskError`]; [`TaskError::WouldDeadlock`] on the pool's
    /// result thread (in a callback) if the task has not finished.
    pub fn get(self) -> Result<R, TaskError> {
        self.take(None).map_err(|err| match err {
            GetTimeoutError::Failed(err) => err,
            GetTimeoutError::Timeout => unreachable!("no deadline"),
        })
    }

    /// Waits at most `timeout`; after [`GetTimeoutError::Timeout`] the
    /// result can be asked for again.
    ///
    /// # Errors
    ///
    /// [`GetTimeoutError::Timeout`]; [`GetTimeoutError::Failed`] with the
    /// task's [`TaskError`], or [`TaskError::Taken`] if the value was already
    /// returned. On the pool's result thread (in a callback) a task that has
    /// not finished fails with [`TaskError::WouldDeadlock`] at once, unless
    /// `timeout` is zero (then `Timeout`, as anywhere).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, GetTimeoutError> {
        self.take(multiproc_core::time::deadline_after(timeout))
    }

    fn take(&self, deadline: Option<Instant>) -> Result<R, GetTimeoutError> {
        let mut state = self.wait_until(deadline);
        match std::mem::replace(&mut *state, State::Taken { ok: false }) {
            State::Pending => {
                *state = State::Pending;
                if on_result_thread(self.slot.pool) && deadline.is_none_or(|d| d > Instant::now()) {
                    Err(TaskError::WouldDeadlock.into())
                } else {
                    Err(GetTimeoutError::Timeout)
                }
            }
            State::Ready(value) => {
                *state = State::Taken { ok: value.is_ok() };
                Ok(value?)
            }
            State::Taken { ok } => {
                *state = State::Taken { ok };
                Err(TaskError::Taken.into())
            }
        }
    }

    fn wait_until(&self, deadline: Option<Instant>) -> std::sync::MutexGuard<'_, State<R>> {
        let mut state = self.slot.value.lock().unwrap_or_else(|e| e.into_inner());
        // On the result thread a pending result can only stay pending.
        let never = on_result_thread(self.slot.pool);
        while !never && matches!(*state, State::Pending) {
            match deadline {
                None => {
                    state = self
                        .slot
                        .ready
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner())
                }
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    state = self
                        .slot
                        .ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        state
    }

    /// Waits until the task has finished; returns at once on the pool's
    /// result thread (in a callback), finished or not.
    pub fn wait(&self) {
        drop(self.wait_until(None));
    }

    /// Waits at most `timeout` for the task to finish. Does not wait on the
    /// pool's result thread (in a callback).
    ///
    /// # Errors
    ///
    /// [`Timeout`] when the task has not finished.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), Timeout> {
        let state = self.wait_until(multiproc_core::time::deadline_after(timeout));
        match *state {
            State::Pending => Err(Timeout),
            _ => Ok(()),
        }
    }

    /// Whether the task has finished.
    #[must_use]
    pub fn ready(&self) -> bool {
        !matches!(
            *self.slot.value.lock().unwrap_or_else(|e| e.into_inner()),
            State::Pending
        )
    }

    /// Whether the task finished with a value: `None` while it runs
    /// (Python raises there).
    #[must_use]
    pub fn successful(&self) -> Option<bool> {
        match &*self.slot.value.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Pending => None,
            State::Ready(value) => Some(value.is_ok()),
            State::Taken { ok } => Some(*ok),
        }
    }
}

/// Awaiting an `AsyncResult` gives what [`get`](AsyncResult::get) would,
/// on any runtime (the pool's result thread wakes the task; no descriptor,
/// no thread of its own).
///
/// ```
/// use multiproc_process::Pool;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let pool = Pool::new(2)?;
/// let pending = pool.apply_async(square, 7);
/// // Any executor will do; this one polls on the calling thread.
/// let value = block_on(pending)?;
/// assert_eq!(value, 49);
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     struct Unpark(std::thread::Thread);
/// #     impl std::task::Wake for Unpark {
/// #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
/// #     }
/// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop {
/// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
/// #         std::thread::park();
/// #     }
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<R> Future for AsyncResult<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = &self.slot;
        let mut state = lock(&slot.value);
        match std::mem::replace(&mut *state, State::Taken { ok: false }) {
            State::Pending => {
                *state = State::Pending;
                if on_result_thread(slot.pool) {
                    // Only this thread could deliver it.
                    return Poll::Ready(Err(TaskError::WouldDeadlock));
                }
                let mut wakers = lock(&slot.wakers);
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Ready(value) => {
                *state = State::Taken { ok: value.is_ok() };
                Poll::Ready(value)
            }
            State::Taken { ok } => {
                *state = State::Taken { ok };
                Poll::Ready(Err(TaskError::Taken))
            }
        }
    }
}

/// Locks `mutex`, through a poisoning (its data stays consistent: every
/// critical section here is a plain assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

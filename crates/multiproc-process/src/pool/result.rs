//! [`AsyncResult`] and [`TaskError`].

use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
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
    /// [`AsyncResult::get_timeout`] ran out; the task goes on.
    Timeout,
    /// The value was already taken from this result.
    Taken,
    /// Sending the task or decoding its result failed.
    Transport(String),
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

    /// Whether this is [`TaskError::Timeout`].
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
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
            Self::Timeout => f.write_str("timed out waiting for the task"),
            Self::Taken => f.write_str("task result already taken"),
            Self::Transport(why) => write!(f, "task transport failed: {why}"),
            Self::WouldDeadlock => f.write_str(
                "waiting for a result on the pool's result thread (in a callback) would deadlock",
            ),
        }
    }
}

impl std::error::Error for TaskError {}

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
            pool,
        })
    }

    pub(crate) fn set(&self, value: Result<R, TaskError>) {
        let mut state = self.value.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, State::Pending) {
            *state = State::Ready(value);
            self.ready.notify_all();
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
        self.take(None)
    }

    /// Waits at most `timeout`; on [`TaskError::Timeout`] the result can be
    /// asked for again.
    ///
    /// # Errors
    ///
    /// The task's [`TaskError`], [`TaskError::Timeout`], or
    /// [`TaskError::Taken`] if the value was already returned. On the
    /// pool's result thread (in a callback) a task that has not finished is
    /// [`TaskError::WouldDeadlock`] at once, unless `timeout` is zero (then
    /// [`TaskError::Timeout`], as anywhere).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, TaskError> {
        self.take(multiproc_core::time::deadline_after(timeout))
    }

    fn take(&self, deadline: Option<Instant>) -> Result<R, TaskError> {
        let mut state = self.wait_until(deadline);
        match std::mem::replace(&mut *state, State::Taken { ok: false }) {
            State::Pending => {
                *state = State::Pending;
                if on_result_thread(self.slot.pool) && deadline.is_none_or(|d| d > Instant::now()) {
                    Err(TaskError::WouldDeadlock)
                } else {
                    Err(TaskError::Timeout)
                }
            }
            State::Ready(value) => {
                *state = State::Taken { ok: value.is_ok() };
                value
            }
            State::Taken { ok } => {
                *state = State::Taken { ok };
                Err(TaskError::Taken)
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

    /// Waits at most `timeout`; returns whether the task has finished. Does
    /// not wait on the pool's result thread (in a callback).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let state = self.wait_until(multiproc_core::time::deadline_after(timeout));
        !matches!(*state, State::Pending)
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

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

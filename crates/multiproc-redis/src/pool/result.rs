//! [`RemoteAsyncResult`] and why a remote task has no value.

use crate::RemoteError;
use multiproc_core::fnref::BuildId;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Why a remote pool task has no value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RemoteTaskError {
    /// The function panicked in the worker; the message.
    Panicked(String),
    /// The worker that took the task runs another build than the caller:
    /// it ran nothing, and stopped serving the pool.
    OtherBuild {
        /// The caller's build.
        caller: BuildId,
        /// The worker's.
        worker: BuildId,
    },
    /// The task was delivered `deliveries` times and its worker died (or
    /// stalled past the pool's `min_idle` without a heartbeat) every time:
    /// it is in the task queue's dead-letter stream and will not run again.
    Poisoned {
        /// How many times it was delivered.
        deliveries: u64,
    },
    /// The server lost the task (it restarted without the data, or the
    /// keys were deleted): it may or may not have run, and its result will
    /// not come.
    Lost,
    /// The arguments or the result did not encode or decode.
    Codec(String),
    /// The pool was closed ([`RemotePool::close`](crate::RemotePool::close)):
    /// no new tasks.
    Closed,
    /// The pool handle was dropped, and the result had not come within
    /// the pool's `retry_for` after.
    Abandoned,
    /// The value was already taken from this result (by a `get_timeout`
    /// that returned it).
    Taken,
    /// The server could not be reached to submit the task, or stayed out
    /// of reach longer than the pool's `retry_for` while the task was
    /// outstanding; or the pool was dropped.
    Failed(Arc<RemoteError>),
}

impl RemoteTaskError {
    /// Whether the server was out of reach ([`RemoteTaskError::Failed`]
    /// with [`RemoteError::Unavailable`]).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Failed(e) if e.is_unavailable())
    }
}

impl fmt::Display for RemoteTaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(m) => write!(f, "the task panicked: {m}"),
            Self::OtherBuild { caller, worker } => write!(
                f,
                "a worker of build {worker} refused a task of build {caller}"
            ),
            Self::Poisoned { deliveries } => write!(
                f,
                "the task's worker died on each of its {deliveries} deliveries"
            ),
            Self::Lost => f.write_str("the server lost the task"),
            Self::Codec(m) => write!(f, "a task's data did not encode or decode: {m}"),
            Self::Taken => f.write_str("the result's value was already taken"),
            Self::Closed => f.write_str("the pool is closed"),
            Self::Abandoned => f.write_str("the pool was dropped before the result came"),
            Self::Failed(e) => write!(f, "the pool's server failed: {e}"),
        }
    }
}

impl std::error::Error for RemoteTaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed(e) => Some(&**e),
            _ => None,
        }
    }
}

/// [`RemoteAsyncResult::get_timeout`]'s error.
#[derive(Debug, Clone)]
pub enum TaskTimeoutError {
    /// No value within the time; the task goes on and the result can be
    /// asked again.
    Timeout,
    /// The task failed.
    Failed(RemoteTaskError),
}

impl TaskTimeoutError {
    /// Whether this is [`TaskTimeoutError::Timeout`].
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }
}

impl fmt::Display for TaskTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("the task's result did not come in time"),
            Self::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TaskTimeoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed(e) => Some(e),
            Self::Timeout => None,
        }
    }
}

impl From<RemoteTaskError> for TaskTimeoutError {
    fn from(e: RemoteTaskError) -> Self {
        Self::Failed(e)
    }
}

/// Where one value lands, set once.
pub(crate) struct Slot<R> {
    state: Mutex<State<R>>,
    ready: Condvar,
    /// The task awaiting the value, if one does.
    waker: Mutex<Option<Waker>>,
}

enum State<R> {
    Pending,
    Ready(Result<R, RemoteTaskError>),
    Taken,
}

impl<R> Slot<R> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::Pending),
            ready: Condvar::new(),
            waker: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the value unless it is set already.
    pub(crate) fn set(&self, value: Result<R, RemoteTaskError>) {
        let mut state = self.lock();
        if matches!(*state, State::Pending) {
            *state = State::Ready(value);
            self.ready.notify_all();
            drop(state);
            let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Waits until `deadline` (`None`: for ever) for the value and takes
    /// it; `None` when the deadline passed first.
    fn take_until(&self, deadline: Option<Instant>) -> Option<Result<R, RemoteTaskError>> {
        let mut state = self.lock();
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Ready(value) => return Some(value),
                State::Taken => return Some(Err(RemoteTaskError::Taken)),
                State::Pending => *state = State::Pending,
            }
            state = match deadline {
                None => self.ready.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// The value of a task submitted with [`RemotePool::apply_async`](crate::RemotePool::apply_async):
/// Python's `AsyncResult`.
pub struct RemoteAsyncResult<R> {
    slot: Arc<Slot<R>>,
}

impl<R> fmt::Debug for RemoteAsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteAsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> RemoteAsyncResult<R> {
    pub(crate) fn new(slot: Arc<Slot<R>>) -> Self {
        Self { slot }
    }

    /// Whether the value (or the error) is there, or was taken.
    #[must_use]
    pub fn ready(&self) -> bool {
        !matches!(*self.slot.lock(), State::Pending)
    }

    /// Waits for the value.
    ///
    /// # Errors
    ///
    /// The task's [`RemoteTaskError`].
    pub fn get(self) -> Result<R, RemoteTaskError> {
        self.slot
            .take_until(None)
            .expect("a wait without a deadline ends with the value")
    }

    /// Waits at most `timeout` for the value, and takes it.
    ///
    /// # Errors
    ///
    /// [`TaskTimeoutError::Timeout`] when it did not come (the result can
    /// be asked again); the task's error in `Failed`
    /// ([`RemoteTaskError::Taken`] once a call has returned the value).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, TaskTimeoutError> {
        self.slot
            .take_until(Instant::now().checked_add(timeout))
            .ok_or(TaskTimeoutError::Timeout)?
            .map_err(TaskTimeoutError::Failed)
    }
}

/// Awaiting the result on any executor (the pool's result thread wakes
/// the task; no runtime is needed), as [`get`](RemoteAsyncResult::get)
/// without blocking a thread:
///
/// ```no_run
/// use multiproc_redis::RemotePool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = RemotePool::open("redis://127.0.0.1:6379/0", "squares")?;
/// assert_eq!(pool.apply_async(square, 7).await?, 49);
/// # Ok(())
/// # }
/// ```
impl<R> Future for RemoteAsyncResult<R> {
    type Output = Result<R, RemoteTaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = &self.slot;
        // The waker first: a value set after the look below wakes it.
        *slot.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        let mut state = slot.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Pending => {
                *state = State::Pending;
                Poll::Pending
            }
            State::Ready(value) => Poll::Ready(value),
            State::Taken => Poll::Ready(Err(RemoteTaskError::Taken)),
        }
    }
}

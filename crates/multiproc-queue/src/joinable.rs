//! [`JoinableQueue`]: a [`Queue`] that also counts unfinished tasks, with
//! `task_done` and `join`.

use multiproc_core::Segment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use crate::builder::QueueBuilder;
use crate::error::{QueueError, TaskDoneError, Timeout};
use crate::queue::{FOREVER, Queue, deserialize_kind, until};
use crate::ring::{Kind, Ring};

/// Python's `JoinableQueue`: a [`Queue`] (all its methods, through `Deref`)
/// that also counts unfinished tasks. Every successful put adds one;
/// [`task_done`](Self::task_done) removes one; [`join`](Self::join) waits
/// for zero.
///
/// A consumer that dies between `get` and `task_done` leaves its task
/// unfinished (nobody can tell whether it did the work): use
/// [`join_timeout`](Self::join_timeout) where consumers may be killed.
/// Messages that die with a consumer before being delivered (the rest of a
/// fragmented message) are counted done automatically.
///
/// # Examples
///
/// ```
/// use multiproc_queue::JoinableQueue;
///
/// let q = JoinableQueue::new()?;
/// q.put("job".to_string())?;
/// assert_eq!(q.unfinished_tasks(), 1);
/// assert_eq!(q.get()?, "job");
/// q.task_done()?;
/// q.join();
/// assert!(q.task_done().is_err()); // more task_done than puts
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinableQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.inner
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A new joinable queue with no item bound.
    ///
    /// # Errors
    ///
    /// [`QueueError::Segment`].
    pub fn new() -> Result<Self, QueueError> {
        QueueBuilder::new().build_joinable()
    }

    /// A new joinable queue holding at most `maxsize` messages.
    ///
    /// # Errors
    ///
    /// As for [`Queue::with_capacity`].
    pub fn with_capacity(maxsize: usize) -> Result<Self, QueueError> {
        QueueBuilder::new().capacity(maxsize).build_joinable()
    }
}

impl<T> JoinableQueue<T> {
    /// Attaches to a `JoinableQueue` segment; see [`Queue::attach`].
    ///
    /// # Errors
    ///
    /// As for [`Queue::attach`].
    pub fn attach(segment: Segment) -> Result<Self, QueueError> {
        Ok(Self {
            inner: Queue::attach_kind(segment, Kind::Joinable)?,
        })
    }

    /// Marks one task (a message taken with `get`) as done.
    ///
    /// # Errors
    ///
    /// [`TaskDoneError`] when every put message is already done (Python's
    /// `ValueError`).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        if self.inner.ring.task_done() {
            Ok(())
        } else {
            Err(TaskDoneError)
        }
    }

    /// Tasks put and not yet marked done.
    #[must_use]
    pub fn unfinished_tasks(&self) -> usize {
        self.inner.ring.unfinished() as usize
    }

    /// Blocks until every message put has been marked done (returns at once
    /// when none is unfinished). Sleeps in the kernel; uses no CPU.
    pub fn join(&self) {
        let _ = self.inner.ring.join(FOREVER);
    }

    /// [`join`](Self::join) waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Timeout`] when tasks are still unfinished at the timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::JoinableQueue;
    /// use std::time::Duration;
    ///
    /// let q = JoinableQueue::new()?;
    /// q.put(1u8)?;
    /// assert!(q.join_timeout(Duration::from_millis(5)).is_err());
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.join_timeout(Duration::from_millis(5)).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), Timeout> {
        self.inner.ring.join(until(timeout)).map_err(|_| Timeout)
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self {
            inner: deserialize_kind(deserializer, Kind::Joinable)?,
        })
    }
}

impl QueueBuilder {
    /// Creates a [`JoinableQueue`].
    ///
    /// # Errors
    ///
    /// As for [`build`](Self::build).
    pub fn build_joinable<T>(self) -> Result<JoinableQueue<T>, QueueError> {
        Ok(JoinableQueue {
            inner: Queue::from_ring(Ring::create(self.options(Kind::Joinable)?)?),
        })
    }
}

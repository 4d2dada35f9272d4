//! [`SimpleQueue`]: Python's unbounded queue with `put`, `get`, `is_empty`
//! and `close`, a [`Queue`] with no item bound underneath.

use multiproc_core::Segment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};

use crate::builder::QueueBuilder;
use crate::error::{GetError, PutError, QueueError};
use crate::queue::{Queue, deserialize_kind};
use crate::ring::{Kind, Ring};

/// Python's `SimpleQueue`: an unbounded queue with `put`, `get`,
/// `is_empty` and `close`.
///
/// # Examples
///
/// ```
/// use multiproc_queue::SimpleQueue;
///
/// let q = SimpleQueue::new()?;
/// assert!(q.is_empty());
/// q.put([1u8, 2])?;
/// assert_eq!(q.get()?, [1, 2]);
/// q.close();
/// assert!(q.get().unwrap_err().is_closed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SimpleQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl<T> AsFd for SimpleQueue<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new, empty queue over a
    /// [`DEFAULT_RING_BYTES`](crate::DEFAULT_RING_BYTES) ring.
    ///
    /// # Errors
    ///
    /// [`QueueError::Segment`].
    pub fn new() -> Result<Self, QueueError> {
        QueueBuilder::new().build_simple()
    }

    /// Attaches to a `SimpleQueue` segment; see [`Queue::attach`].
    ///
    /// # Errors
    ///
    /// As for [`Queue::attach`].
    pub fn attach(segment: Segment) -> Result<Self, QueueError> {
        Ok(Self {
            inner: Queue::attach_kind(segment, Kind::Simple)?,
        })
    }

    /// Puts `item` (waits only while the ring's bytes are all in use).
    ///
    /// # Errors
    ///
    /// As for [`Queue::put`].
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.inner.put(item)
    }

    /// Takes the next message, waiting while there is none.
    ///
    /// # Errors
    ///
    /// As for [`Queue::get`].
    pub fn get(&self) -> Result<T, GetError> {
        self.inner.get()
    }

    /// Whether no message is in the queue; a snapshot.
    #[doc(alias = "empty")]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Closes the queue; see [`Queue::close`].
    pub fn close(&self) {
        self.inner.close();
    }

    /// The shared-memory segment.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        self.inner.segment()
    }

    /// The [`Queue`] underneath, for what Python's `SimpleQueue` does not
    /// offer: timed and non-blocking operations, and async waiting through
    /// [`Queue::readiness`] (which the `multiproc-async` adapters take).
    ///
    /// ```
    /// use multiproc_queue::SimpleQueue;
    ///
    /// let q = SimpleQueue::new()?;
    /// assert!(q.as_queue().try_get().unwrap_err().is_empty());
    /// q.put(5u8)?;
    /// assert_eq!(q.as_queue().try_get()?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn as_queue(&self) -> &Queue<T> {
        &self.inner
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self {
            inner: deserialize_kind(deserializer, Kind::Simple)?,
        })
    }
}

impl QueueBuilder {
    /// Creates a [`SimpleQueue`] (the item bound is ignored).
    ///
    /// # Errors
    ///
    /// As for [`build`](Self::build).
    pub fn build_simple<T>(self) -> Result<SimpleQueue<T>, QueueError> {
        Ok(SimpleQueue {
            inner: Queue::from_ring(Ring::create(self.options(Kind::Simple)?)?),
        })
    }
}

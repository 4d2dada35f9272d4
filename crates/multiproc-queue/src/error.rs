//! One small error type per operation, crossbeam style: failed puts hand
//! the value back, `Display` is short and lowercase, `Debug` never needs
//! `T: Debug`. Failures that are not "full", "empty", "timed out" or
//! "closed" (codec, oversized message, corrupt segment) are a
//! [`QueueError`] inside a `Failed` variant, exposed as `source()`.

use multiproc_core::{CodecError, SegmentError};
use std::error::Error;
use std::fmt;

/// A queue failure that is not about fullness, emptiness, time or closing.
#[derive(Debug)]
#[non_exhaustive]
pub enum QueueError {
    /// Creating or attaching to the segment failed.
    Segment(SegmentError),
    /// Encoding or decoding the value failed.
    Codec(CodecError),
    /// The message is larger than the queue's message limit.
    TooLarge {
        /// Bytes of the message.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The shared state is inconsistent (a corrupt or foreign segment).
    Corrupt(&'static str),
    /// A builder parameter is out of range.
    InvalidConfig(&'static str),
    /// The segment holds another kind of queue.
    WrongKind {
        /// The kind asked for.
        expected: &'static str,
        /// The kind found.
        found: &'static str,
    },
    /// Making a doorbell for async waiters failed (out of descriptors, say).
    Doorbell(std::io::Error),
    /// Every doorbell slot of the queue is taken by live processes (see
    /// [`Queue::readiness`](crate::Queue::readiness)).
    NoDoorbellSlot,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Segment(_) => f.write_str("queue segment unusable"),
            Self::Codec(_) => f.write_str("message codec failed"),
            Self::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max}")
            }
            Self::Corrupt(what) => write!(f, "queue segment is corrupt: {what}"),
            Self::InvalidConfig(what) => write!(f, "invalid queue configuration: {what}"),
            Self::WrongKind { expected, found } => {
                write!(f, "segment holds a {found}, not a {expected}")
            }
            Self::Doorbell(_) => f.write_str("could not make a doorbell for async waiters"),
            Self::NoDoorbellSlot => f.write_str(
                "every doorbell slot of the queue is taken (too many async handles at once)",
            ),
        }
    }
}

impl Error for QueueError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Segment(e) => Some(e),
            Self::Codec(e) => Some(e),
            Self::Doorbell(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SegmentError> for QueueError {
    fn from(e: SegmentError) -> Self {
        Self::Segment(e)
    }
}

impl From<CodecError> for QueueError {
    fn from(e: CodecError) -> Self {
        Self::Codec(e)
    }
}

impl From<QueueError> for std::io::Error {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Segment(s) => s.into(),
            QueueError::Doorbell(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

multiproc_core::value_error! {
    failure = QueueError, failed = "putting into a queue failed";
    /// Error of [`Queue::put`](crate::Queue::put): the queue is closed, or
    /// the value could not be put.
    PutError {
        /// The queue was closed.
        Closed => "putting into a closed queue", is_closed;
    }
}

multiproc_core::value_error! {
    failure = QueueError, failed = "putting into a queue failed";
    /// Error of [`Queue::try_put`](crate::Queue::try_put).
    TryPutError {
        /// The queue is full (items or bytes), or another producer holds it
        /// in the middle of a put that must wait.
        Full => "putting into a full queue", is_full;
        /// The queue was closed.
        Closed => "putting into a closed queue", is_closed;
    }
}

multiproc_core::value_error! {
    failure = QueueError, failed = "putting into a queue failed";
    /// Error of [`Queue::put_timeout`](crate::Queue::put_timeout).
    PutTimeoutError {
        /// No room appeared before the timeout.
        Timeout => "timed out putting into a full queue", is_timeout;
        /// The queue was closed.
        Closed => "putting into a closed queue", is_closed;
    }
}

impl<T> From<PutError<T>> for TryPutError<T> {
    fn from(e: PutError<T>) -> Self {
        match e {
            PutError::Closed(v) => Self::Closed(v),
            PutError::Failed(v, f) => Self::Failed(v, f),
        }
    }
}

/// A `try_put` outcome as a blocking put's: `Full` has no counterpart and
/// is handed back with its value.
impl<T> TryFrom<TryPutError<T>> for PutError<T> {
    type Error = TryPutError<T>;

    fn try_from(e: TryPutError<T>) -> Result<Self, TryPutError<T>> {
        match e {
            TryPutError::Closed(v) => Ok(Self::Closed(v)),
            TryPutError::Failed(v, f) => Ok(Self::Failed(v, f)),
            full @ TryPutError::Full(_) => Err(full),
        }
    }
}

impl<T> From<PutError<T>> for PutTimeoutError<T> {
    fn from(e: PutError<T>) -> Self {
        match e {
            PutError::Closed(v) => Self::Closed(v),
            PutError::Failed(v, f) => Self::Failed(v, f),
        }
    }
}

multiproc_core::reason_error! {
    failure =
        /// The message could not be taken or decoded. A message that
        /// fails to decode is consumed; the queue stays usable.
        QueueError, failed = "getting from a queue failed";
    /// Error of [`Queue::get`](crate::Queue::get).
    GetError {
        /// The queue is closed and drained.
        Closed => "getting from a closed and empty queue", is_closed;
    }
}

multiproc_core::reason_error! {
    failure =
        /// The message could not be taken or decoded. A message that
        /// fails to decode is consumed; the queue stays usable.
        QueueError, failed = "getting from a queue failed";
    /// Error of [`Queue::try_get`](crate::Queue::try_get).
    TryGetError {
        /// No message now (or another consumer holds the queue).
        Empty => "getting from an empty queue", is_empty;
        /// The queue is closed and drained.
        Closed => "getting from a closed and empty queue", is_closed;
    }
}

multiproc_core::reason_error! {
    failure =
        /// The message could not be taken or decoded. A message that
        /// fails to decode is consumed; the queue stays usable.
        QueueError, failed = "getting from a queue failed";
    /// Error of [`Queue::get_timeout`](crate::Queue::get_timeout).
    GetTimeoutError {
        /// No message arrived before the timeout.
        Timeout => "timed out getting from an empty queue", is_timeout;
        /// The queue is closed and drained.
        Closed => "getting from a closed and empty queue", is_closed;
    }
}

impl From<GetError> for TryGetError {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Closed => Self::Closed,
            GetError::Failed(f) => Self::Failed(f),
        }
    }
}

/// A `try_get` outcome as a blocking get's: `Empty` has no counterpart and
/// is handed back (what an async get that must wait on sees).
impl TryFrom<TryGetError> for GetError {
    type Error = TryGetError;

    fn try_from(e: TryGetError) -> Result<Self, TryGetError> {
        match e {
            TryGetError::Closed => Ok(Self::Closed),
            TryGetError::Failed(f) => Ok(Self::Failed(f)),
            TryGetError::Empty => Err(TryGetError::Empty),
        }
    }
}

impl From<GetError> for GetTimeoutError {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Closed => Self::Closed,
            GetError::Failed(f) => Self::Failed(f),
        }
    }
}

/// Error of [`JoinableQueue::task_done`](crate::JoinableQueue::task_done):
/// called more times than items were put (Python's `ValueError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done called more times than items were put")
    }
}

impl Error for TaskDoneError {}

/// Error of [`set_membarrier`](crate::set_membarrier): this process has
/// decided already (a queue was used, or the call came before with the
/// other answer), and the decision stands for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetMembarrierError {
    pub(crate) in_use: bool,
}

impl SetMembarrierError {
    /// Whether this process uses `membarrier(2)` (the decision that
    /// stands).
    #[must_use]
    pub fn in_use(&self) -> bool {
        self.in_use
    }
}

impl fmt::Display for SetMembarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.in_use {
            f.write_str("membarrier is already in use by this process's queues")
        } else {
            f.write_str("membarrier is already turned off in this process")
        }
    }
}

impl Error for SetMembarrierError {}

/// Error of [`JoinableQueue::join_timeout`](crate::JoinableQueue::join_timeout)
/// (and of every timed wait in multiproc that gives nothing back): tasks
/// were still unfinished at the deadline.
pub use multiproc_core::time::Timeout;

//! One small error type per operation, as in `multiproc-queue`: failed puts
//! hand the value back, `Display` is short and lowercase, `Debug` never
//! needs `T: Debug`. Failures that are not "full", "empty", "timed out" or
//! "closed" are a [`RemoteError`] inside a `Failed` variant, exposed as
//! `source()`, with the Redis client's error kept as its own `source()`.

use multiproc_core::CodecError;
use std::error::Error;
use std::fmt;

/// A remote queue failure that is not about fullness, emptiness, time or
/// closing.
#[derive(Debug)]
#[non_exhaustive]
pub enum RemoteError {
    /// The server could not be reached, the connection broke, or it did
    /// not answer within the I/O timeout (also: it is still loading its
    /// data after a restart). The operation may be tried again; the queue
    /// reconnects by itself.
    Unavailable {
        /// What the client saw.
        source: redis::RedisError,
    },
    /// The server answered with an error (a key of another type, a denied
    /// command, a failed authentication, …).
    Server {
        /// The server's error.
        source: redis::RedisError,
    },
    /// The server's reply, or an entry in the stream, is not what this
    /// crate writes and expects.
    Protocol {
        /// What was wrong.
        what: &'static str,
        /// The client's parse error, when it made one.
        source: Option<redis::RedisError>,
    },
    /// Encoding or decoding the value failed. A message that does not
    /// decode is moved to the dead-letter stream.
    Codec(CodecError),
    /// The message is larger than the queue's message limit.
    TooLarge {
        /// Bytes of the message.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A batch holds more messages than the queue's `maxsize`: it could
    /// never be put whole (nothing of it was put).
    OverMaxsize {
        /// Messages in the batch.
        len: u64,
        /// The queue's bound.
        maxsize: u64,
    },
    /// The connection URL is not valid.
    Url {
        /// The client's complaint.
        source: redis::RedisError,
    },
    /// A builder parameter is out of range.
    InvalidConfig(&'static str),
}

impl RemoteError {
    /// Whether this is [`RemoteError::Unavailable`].
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Whether this is [`RemoteError::Server`].
    #[must_use]
    pub fn is_server(&self) -> bool {
        matches!(self, Self::Server { .. })
    }

    /// Whether this is [`RemoteError::Protocol`].
    #[must_use]
    pub fn is_protocol(&self) -> bool {
        matches!(self, Self::Protocol { .. })
    }

    /// Whether this is [`RemoteError::Codec`].
    #[must_use]
    pub fn is_codec(&self) -> bool {
        matches!(self, Self::Codec(_))
    }

    /// Whether this is [`RemoteError::TooLarge`].
    #[must_use]
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }

    /// Whether this is [`RemoteError::OverMaxsize`].
    #[must_use]
    pub fn is_over_maxsize(&self) -> bool {
        matches!(self, Self::OverMaxsize { .. })
    }

    /// Whether this is [`RemoteError::InvalidConfig`] or [`RemoteError::Url`].
    #[must_use]
    pub fn is_invalid_config(&self) -> bool {
        matches!(self, Self::InvalidConfig(_) | Self::Url { .. })
    }

    pub(crate) fn protocol(what: &'static str) -> Self {
        Self::Protocol { what, source: None }
    }

    /// Sorts a client error: I/O, timeouts and a server still loading are
    /// `Unavailable`; error replies are `Server`; parse and type errors
    /// are `Protocol`.
    pub(crate) fn from_redis(source: redis::RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        match source.kind() {
            ErrorKind::Io | ErrorKind::Server(ServerErrorKind::BusyLoading) => {
                Self::Unavailable { source }
            }
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Self::Protocol {
                what: "reply not understood",
                source: Some(source),
            },
            ErrorKind::InvalidClientConfig => Self::Url { source },
            _ if source.is_io_error()
                || source.is_timeout()
                || source.is_connection_dropped()
                || source.is_connection_refusal() =>
            {
                Self::Unavailable { source }
            }
            _ => Self::Server { source },
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable { .. } => f.write_str("redis server unavailable"),
            Self::Server { .. } => f.write_str("redis server refused the command"),
            Self::Protocol { what, .. } => write!(f, "unexpected data from redis: {what}"),
            Self::Codec(_) => f.write_str("message codec failed"),
            Self::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max}")
            }
            Self::OverMaxsize { len, maxsize } => {
                write!(
                    f,
                    "a batch of {len} messages exceeds the queue's maxsize of {maxsize}"
                )
            }
            Self::Url { .. } => f.write_str("invalid redis url"),
            Self::InvalidConfig(what) => write!(f, "invalid remote queue configuration: {what}"),
        }
    }
}

impl Error for RemoteError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Unavailable { source } | Self::Server { source } | Self::Url { source } => {
                Some(source)
            }
            Self::Protocol {
                source: Some(source),
                ..
            } => Some(source),
            Self::Codec(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for RemoteError {
    fn from(e: redis::RedisError) -> Self {
        Self::from_redis(e)
    }
}

impl From<CodecError> for RemoteError {
    fn from(e: CodecError) -> Self {
        Self::Codec(e)
    }
}

multiproc_core::value_error! {
    failure = RemoteError, failed = "putting into a remote queue failed";
    /// Error of [`RemoteQueue::put`](crate::RemoteQueue::put): the queue is
    /// closed, or the value could not be put.
    PutError {
        /// The queue was closed.
        Closed => "putting into a closed queue", is_closed;
    }
}

multiproc_core::value_error! {
    failure = RemoteError, failed = "putting into a remote queue failed";
    /// Error of [`RemoteQueue::try_put`](crate::RemoteQueue::try_put).
    TryPutError {
        /// The queue holds `maxsize` unacknowledged messages.
        Full => "putting into a full queue", is_full;
        /// The queue was closed.
        Closed => "putting into a closed queue", is_closed;
    }
}

multiproc_core::value_error! {
    failure = RemoteError, failed = "putting into a remote queue failed";
    /// Error of [`RemoteQueue::put_timeout`](crate::RemoteQueue::put_timeout).
    PutTimeoutError {
        /// No room appeared before the timeout.
        Timeout => "timed out putting into a full queue", is_timeout;
        /// The queue was closed.
        Closed => "putting into a closed queue", is_closed;
    }
}

/// `is_unavailable` for the put errors.
macro_rules! unavailable_predicate {
    ($($name:ident),*) => {$(
        impl<T> $name<T> {
            /// Whether this is `Failed` with [`RemoteError::Unavailable`]. The
            /// message may or may not have been added then (the connection
            /// broke with the command on its way): putting it again can make
            /// a duplicate, which at-least-once delivery allows.
            #[must_use]
            pub fn is_unavailable(&self) -> bool {
                matches!(self, Self::Failed(_, e) if e.is_unavailable())
            }
        }
    )*};
}

unavailable_predicate!(PutError, TryPutError, PutTimeoutError);

/// `is_unavailable` for the get errors.
macro_rules! unavailable_get_predicate {
    ($($name:ident),*) => {$(
        impl $name {
            /// Whether this is `Failed` with [`RemoteError::Unavailable`].
            #[must_use]
            pub fn is_unavailable(&self) -> bool {
                matches!(self, Self::Failed(e) if e.is_unavailable())
            }
        }
    )*};
}

unavailable_get_predicate!(GetError, TryGetError, GetTimeoutError);

impl<T> PutError<T> {
    pub(crate) fn with<U>(self, value: U) -> PutError<U> {
        match self {
            Self::Closed(_) => PutError::Closed(value),
            Self::Failed(_, e) => PutError::Failed(value, e),
        }
    }
}

impl<T> TryPutError<T> {
    pub(crate) fn with<U>(self, value: U) -> TryPutError<U> {
        match self {
            Self::Full(_) => TryPutError::Full(value),
            Self::Closed(_) => TryPutError::Closed(value),
            Self::Failed(_, e) => TryPutError::Failed(value, e),
        }
    }
}

impl<T> PutTimeoutError<T> {
    pub(crate) fn with<U>(self, value: U) -> PutTimeoutError<U> {
        match self {
            Self::Timeout(_) => PutTimeoutError::Timeout(value),
            Self::Closed(_) => PutTimeoutError::Closed(value),
            Self::Failed(_, e) => PutTimeoutError::Failed(value, e),
        }
    }
}

multiproc_core::reason_error! {
    failure =
        /// The message could not be taken or decoded. A message that does
        /// not decode, has no payload field or is over the message limit is
        /// moved to the dead-letter stream. (A get's acknowledgement is sent
        /// without waiting for its reply: one the server never applied
        /// leaves the message pending, to be delivered again after the
        /// minimum idle time; it is not reported as a failure of the get.)
        RemoteError, failed = "getting from a remote queue failed";
    /// Error of [`RemoteQueue::get`](crate::RemoteQueue::get).
    GetError {
        /// The queue is closed and every message in it was acknowledged.
        Closed => "getting from a closed and empty queue", is_closed;
    }
}

multiproc_core::reason_error! {
    failure =
        /// The message could not be taken or decoded. A message that does
        /// not decode, has no payload field or is over the message limit is
        /// moved to the dead-letter stream. (A get's acknowledgement is sent
        /// without waiting for its reply: one the server never applied
        /// leaves the message pending, to be delivered again after the
        /// minimum idle time; it is not reported as a failure of the get.)
        RemoteError, failed = "getting from a remote queue failed";
    /// Error of [`RemoteQueue::try_get`](crate::RemoteQueue::try_get).
    TryGetError {
        /// No message for this consumer now.
        Empty => "getting from an empty queue", is_empty;
        /// The queue is closed and every message in it was acknowledged.
        Closed => "getting from a closed and empty queue", is_closed;
    }
}

multiproc_core::reason_error! {
    failure =
        /// The message could not be taken or decoded. A message that does
        /// not decode, has no payload field or is over the message limit is
        /// moved to the dead-letter stream. (A get's acknowledgement is sent
        /// without waiting for its reply: one the server never applied
        /// leaves the message pending, to be delivered again after the
        /// minimum idle time; it is not reported as a failure of the get.)
        RemoteError, failed = "getting from a remote queue failed";
    /// Error of [`RemoteQueue::get_timeout`](crate::RemoteQueue::get_timeout).
    GetTimeoutError {
        /// No message arrived before the timeout.
        Timeout => "timed out getting from an empty queue", is_timeout;
        /// The queue is closed and every message in it was acknowledged.
        Closed => "getting from a closed and empty queue", is_closed;
    }
}

/// Error of
/// [`RemoteJoinableQueue::task_done`](crate::RemoteJoinableQueue::task_done).
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskDoneError {
    /// This handle has no message it got and has not finished (Python's
    /// `ValueError`: called more times than items were taken).
    Unmatched,
    /// The acknowledgement did not reach the server; the task stays
    /// unfinished (call `task_done` again) and, if this process dies, its
    /// message is re-delivered after the minimum idle time.
    Failed(RemoteError),
}

impl TaskDoneError {
    /// Whether this is [`TaskDoneError::Unmatched`].
    #[must_use]
    pub fn is_unmatched(&self) -> bool {
        matches!(self, Self::Unmatched)
    }

    /// Whether this is [`TaskDoneError::Failed`].
    #[must_use]
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }
}

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unmatched => f.write_str("task_done called more times than items were taken"),
            Self::Failed(e) => write!(f, "acknowledging a task failed: {e}"),
        }
    }
}

impl Error for TaskDoneError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Failed(e) => Some(e),
            Self::Unmatched => None,
        }
    }
}

/// Error of
/// [`RemoteJoinableQueue::join_timeout`](crate::RemoteJoinableQueue::join_timeout).
#[derive(Debug)]
#[non_exhaustive]
pub enum JoinTimeoutError {
    /// Tasks were still unfinished at the deadline.
    Timeout,
    /// The server could not be asked.
    Failed(RemoteError),
}

impl JoinTimeoutError {
    /// Whether this is [`JoinTimeoutError::Timeout`].
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Whether this is [`JoinTimeoutError::Failed`].
    #[must_use]
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }
}

impl fmt::Display for JoinTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out waiting for unfinished tasks"),
            Self::Failed(e) => write!(f, "waiting for unfinished tasks failed: {e}"),
        }
    }
}

impl Error for JoinTimeoutError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Failed(e) => Some(e),
            Self::Timeout => None,
        }
    }
}

impl From<RemoteError> for JoinTimeoutError {
    fn from(e: RemoteError) -> Self {
        Self::Failed(e)
    }
}

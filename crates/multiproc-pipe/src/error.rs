//! Error types: one per kind of operation.
//!
//! | operation | error |
//! |---|---|
//! | `send`, `send_bytes`, `send_pickle` | [`SendError`] |
//! | `recv`, `recv_bytes*`, `recv_pickle` | [`RecvError`] |
//! | `Listener::accept`, `Client::connect` | [`ConnectError`] (wraps [`AuthenticationError`]) |
//!
//! `Display` strings are lowercase without a final period; the wrapped
//! `io::Error` or codec error is the [`source`](std::error::Error::source).

use multiproc_core::CodecError;
use std::fmt;
use std::io;

/// `source` and the conversions shared by the error types that wrap a
/// codec error, a pickle error and an I/O error; further variants that
/// hold a codec error as their source follow the type.
macro_rules! codec_io_error {
    ($ty:ident $(, $codec:ident)*) => {
        impl std::error::Error for $ty {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    Self::Codec(err) $(| Self::$codec(err))* => Some(err),
                    #[cfg(feature = "pickle")]
                    Self::Pickle(err) => Some(err),
                    Self::Io(err) => Some(err),
                    _ => None,
                }
            }
        }

        impl From<io::Error> for $ty {
            fn from(err: io::Error) -> Self {
                Self::Io(err)
            }
        }

        impl From<CodecError> for $ty {
            fn from(err: CodecError) -> Self {
                Self::Codec(err)
            }
        }
    };
}

/// Why a message could not be received.
///
/// Which errors leave the connection usable:
///
/// | variant | connection afterwards |
/// |---|---|
/// | [`Codec`](Self::Codec), [`DescriptorsDropped`](Self::DescriptorsDropped), [`BufferTooShort`](Self::BufferTooShort), [`BadLaneToken`](Self::BadLaneToken) | usable: the frame was consumed whole, the next `recv` reads the next frame |
/// | [`BadMessageLength`](Self::BadMessageLength) | the header stays unread: a call with a larger limit can still take the frame |
/// | [`Eof`](Self::Eof) | the peer is gone; every later `recv` is `Eof` again |
/// | [`WouldBlock`](Self::WouldBlock) | usable: the bytes of the unfinished frame are kept, the next `recv` continues it |
/// | [`Truncated`](Self::Truncated), [`Io`](Self::Io) | broken: close it |
///
/// # Examples
///
/// ```
/// use multiproc_pipe::{Pipe, RecvError};
///
/// let (mut rx, tx) = Pipe::new()?;
/// tx.send_bytes(b"12345")?;
/// drop(tx);
/// let err = rx.recv_bytes_max(2).unwrap_err();
/// assert!(matches!(err, RecvError::BadMessageLength { claimed: 5, max: 2 }));
/// assert_eq!(err.to_string(), "bad message length 5 (limit 2)");
/// assert_eq!(rx.recv_bytes()?, b"12345");
/// let eof = rx.recv_bytes().unwrap_err();
/// assert!(eof.is_eof());
/// assert_eq!(std::io::Error::from(eof).kind(), std::io::ErrorKind::UnexpectedEof);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RecvError {
    /// The peer closed its end and every message before that was read
    /// (Python's `EOFError`).
    Eof,
    /// The peer closed its end in the middle of a frame (Python's
    /// `OSError("got end of file during message")`).
    Truncated {
        /// Bytes of the frame (header included) that were expected.
        expected: u64,
        /// Bytes of it that arrived.
        received: u64,
    },
    /// The frame header announces a negative length or more bytes than the
    /// limit (Python's `OSError("bad message length")`). Nothing was
    /// allocated for it.
    BadMessageLength {
        /// The length in the header (negative for a malformed short header).
        claimed: i128,
        /// The limit in force.
        max: usize,
    },
    /// The peer sent a shared-memory token (see [`Pipe::new`](crate::Pipe::new))
    /// that does not describe a place in its ring. The token was consumed.
    BadLaneToken {
        /// The stream position the token says the message ends at.
        end: u64,
        /// The message length the token announces.
        len: u64,
    },
    /// The message does not fit the buffer given to
    /// [`recv_bytes_into`](crate::Connection::recv_bytes_into); the whole
    /// message is here (Python's `BufferTooShort`).
    BufferTooShort(Vec<u8>),
    /// The connection is the sending end of a simplex pipe.
    NotReadable,
    /// The payload is not a valid encoding of the requested type, or its
    /// descriptors do not match; the frame was consumed.
    Codec(CodecError),
    /// The message came with descriptors that the kernel could not install
    /// in this process, so the value could not be rebuilt (the codec error
    /// that followed is the source). The kernel drops descriptors
    /// (`MSG_CTRUNC`) when the process is at its limit of open descriptors
    /// (`EMFILE`, see `RLIMIT_NOFILE`); close some, or raise the limit. The
    /// frame was consumed and the descriptors that did arrive were closed.
    DescriptorsDropped(CodecError),
    /// The payload is not a pickle of the requested type; the frame was
    /// consumed.
    #[cfg(feature = "pickle")]
    Pickle(serde_pickle::Error),
    /// The descriptor is non-blocking (`O_NONBLOCK`) and no complete
    /// message has arrived yet. The part of a frame that did arrive is kept:
    /// wait for readability (e.g. [`poll`](crate::Connection::poll)) and
    /// call again to continue the same message.
    WouldBlock,
    /// The operating system refused the read.
    Io(io::Error),
}

impl RecvError {
    /// Whether this is [`RecvError::WouldBlock`]: a non-blocking descriptor
    /// has no complete message yet; try again when it is readable.
    #[must_use]
    pub fn is_would_block(&self) -> bool {
        matches!(self, Self::WouldBlock)
    }

    /// Whether this is [`RecvError::Eof`]: the peer closed the connection.
    #[must_use]
    pub fn is_eof(&self) -> bool {
        matches!(self, Self::Eof)
    }

    /// Whether this is [`RecvError::BufferTooShort`].
    #[must_use]
    pub fn is_buffer_too_short(&self) -> bool {
        matches!(self, Self::BufferTooShort(_))
    }

    /// Whether this is [`RecvError::DescriptorsDropped`]: the kernel
    /// dropped descriptors that came with the message, as this process
    /// could not take them.
    #[must_use]
    pub fn is_descriptors_dropped(&self) -> bool {
        matches!(self, Self::DescriptorsDropped(_))
    }

    /// Whether this is [`RecvError::BadMessageLength`].
    #[must_use]
    pub fn is_bad_message_length(&self) -> bool {
        matches!(self, Self::BadMessageLength { .. })
    }

    /// The message carried by [`RecvError::BufferTooShort`].
    #[must_use]
    pub fn into_message(self) -> Option<Vec<u8>> {
        match self {
            Self::BufferTooShort(message) => Some(message),
            _ => None,
        }
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eof => f.write_str("connection closed by peer"),
            Self::Truncated { expected, received } => write!(
                f,
                "got end of file during message ({received} of {expected} bytes)"
            ),
            Self::BadMessageLength { claimed, max } => {
                write!(f, "bad message length {claimed} (limit {max})")
            }
            Self::BadLaneToken { end, len } => write!(
                f,
                "shared-memory token for {len} bytes ending at {end} is not in the ring"
            ),
            Self::BufferTooShort(message) => write!(
                f,
                "buffer too short for a message of {} bytes",
                message.len()
            ),
            Self::NotReadable => f.write_str("connection is write-only"),
            Self::Codec(_) => f.write_str("received message could not be decoded"),
            Self::DescriptorsDropped(_) => f.write_str(
                "descriptors sent with the message were dropped: this process could not take them (out of descriptors?)",
            ),
            #[cfg(feature = "pickle")]
            Self::Pickle(_) => f.write_str("received pickle could not be decoded"),
            Self::WouldBlock => {
                f.write_str("no complete message available yet (non-blocking descriptor)")
            }
            Self::Io(_) => f.write_str("reading from the connection failed"),
        }
    }
}

codec_io_error!(RecvError, DescriptorsDropped);

impl From<RecvError> for io::Error {
    fn from(err: RecvError) -> Self {
        let kind = match &err {
            RecvError::Eof | RecvError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            RecvError::Io(inner) => inner.kind(),
            RecvError::NotReadable => io::ErrorKind::Unsupported,
            RecvError::WouldBlock => io::ErrorKind::WouldBlock,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}

/// Why a message could not be sent.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::{Pipe, SendError};
///
/// let (rx, tx) = Pipe::simplex()?;
/// assert!(matches!(rx.send_bytes(b"x"), Err(SendError::NotWritable)));
/// drop(rx);
/// let err = tx.send_bytes(b"x").unwrap_err();
/// assert!(err.is_broken_pipe());
/// assert_eq!(err.to_string(), "writing to the connection failed");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is the receiving end of a simplex pipe.
    NotWritable,
    /// `offset`/`size` do not lie within the buffer given to
    /// [`send_bytes_range`](crate::Connection::send_bytes_range).
    OutOfRange {
        /// Length of the buffer.
        len: usize,
        /// Requested start.
        offset: usize,
        /// Requested length.
        size: usize,
    },
    /// The value holds more descriptors than one message can carry
    /// ([`multiproc_core::scm::MAX_FDS`]).
    TooManyDescriptors(usize),
    /// The value could not be encoded; this includes values holding handles
    /// on a connection that cannot carry descriptors
    /// ([`CodecError::DescriptorsUnsupported`]).
    Codec(CodecError),
    /// The value could not be pickled.
    #[cfg(feature = "pickle")]
    Pickle(serde_pickle::Error),
    /// A non-blocking send ([`try_send_bytes`](crate::Connection::try_send_bytes),
    /// [`try_send`](crate::Connection::try_send),
    /// [`try_flush`](crate::Connection::try_flush)) found the descriptor
    /// full: a new message was not taken; a flush has bytes left. Call again
    /// once it is writable.
    WouldBlock,
    /// The operating system refused the write; a closed peer is
    /// `ErrorKind::BrokenPipe` (see [`is_broken_pipe`](Self::is_broken_pipe)).
    Io(io::Error),
}

impl SendError {
    /// Whether the peer has closed its end (`EPIPE`/`ECONNRESET`).
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Io(err) if matches!(
            err.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ))
    }

    /// Whether this is [`SendError::WouldBlock`].
    #[must_use]
    pub fn is_would_block(&self) -> bool {
        matches!(self, Self::WouldBlock)
    }

    /// Whether the value holds handles and this connection cannot carry
    /// descriptors (a simplex pipe or a TCP connection).
    #[must_use]
    pub fn is_descriptors_unsupported(&self) -> bool {
        matches!(self, Self::Codec(err) if err.is_descriptors_unsupported())
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotWritable => f.write_str("connection is read-only"),
            Self::OutOfRange { len, offset, size } => write!(
                f,
                "range of {size} bytes at offset {offset} exceeds a buffer of {len} bytes"
            ),
            Self::TooManyDescriptors(n) => write!(
                f,
                "{n} descriptors exceed the {} one message can carry",
                multiproc_core::scm::MAX_FDS
            ),
            Self::Codec(err) if err.is_descriptors_unsupported() => f.write_str(
                "value holds file descriptors but this connection cannot carry them (only a unix socket can)",
            ),
            Self::Codec(_) => f.write_str("message could not be encoded"),
            #[cfg(feature = "pickle")]
            Self::Pickle(_) => f.write_str("message could not be pickled"),
            Self::WouldBlock => f.write_str("the connection cannot take more without blocking"),
            Self::Io(_) => f.write_str("writing to the connection failed"),
        }
    }
}

codec_io_error!(SendError);

impl From<SendError> for io::Error {
    fn from(err: SendError) -> Self {
        let kind = match &err {
            SendError::Io(inner) => inner.kind(),
            SendError::NotWritable => io::ErrorKind::Unsupported,
            SendError::WouldBlock => io::ErrorKind::WouldBlock,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, err)
    }
}

/// The authkey handshake failed: the peer used another key, spoke out of
/// protocol, or asked for a digest this crate does not offer (Python's
/// `multiprocessing.AuthenticationError`).
///
/// # Examples
///
/// ```
/// use multiproc_pipe::{auth, AuthFailure};
///
/// let err = auth::response(b"key", b"too short").unwrap_err();
/// assert!(matches!(err.reason(), AuthFailure::Protocol(_)));
/// assert_eq!(err.to_string(), "authentication protocol error: challenge too short: 9 bytes");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticationError {
    reason: AuthFailure,
}

/// What exactly went wrong in a handshake (see [`AuthenticationError::reason`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// Our peer answered our challenge with the wrong digest: it does not
    /// know the key.
    DigestWrong,
    /// Our peer rejected our answer (`#FAILURE#`): we do not share its key.
    DigestRejected,
    /// A handshake message was not of the expected form (no `#CHALLENGE#`,
    /// challenge too short, unknown `{digest}` prefix, reply of the wrong
    /// length, a message over 256 bytes).
    Protocol(String),
    /// The peer asked for a digest that this crate cannot compute.
    UnsupportedDigest(String),
}

impl AuthenticationError {
    pub(crate) fn new(reason: AuthFailure) -> Self {
        Self { reason }
    }

    pub(crate) fn protocol(text: impl Into<String>) -> Self {
        Self::new(AuthFailure::Protocol(text.into()))
    }

    /// What went wrong.
    #[must_use]
    pub fn reason(&self) -> &AuthFailure {
        &self.reason
    }
}

impl fmt::Display for AuthenticationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            AuthFailure::DigestWrong => f.write_str("digest received was wrong"),
            AuthFailure::DigestRejected => f.write_str("digest sent was rejected"),
            AuthFailure::Protocol(text) => write!(f, "authentication protocol error: {text}"),
            AuthFailure::UnsupportedDigest(name) => {
                write!(f, "unsupported authentication digest {name:?}")
            }
        }
    }
}

impl std::error::Error for AuthenticationError {}

/// Why [`Client::connect`](crate::Client::connect) or
/// [`Listener::accept`](crate::Listener::accept) failed.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::{Address, Client, ConnectError};
///
/// let nobody = Address::Abstract(b"multiproc-doc-nobody-listens".to_vec());
/// let err = Client::connect(nobody, None).unwrap_err();
/// assert!(matches!(&err, ConnectError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused));
/// assert!(!err.is_authentication());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The authkey handshake failed; the connection was dropped.
    Authentication(AuthenticationError),
    /// The peer closed the connection during the handshake.
    Eof,
    /// The peer sent or read nothing for the listener's handshake timeout
    /// (see [`Listener::with_handshake_timeout`](crate::Listener::with_handshake_timeout));
    /// the connection was dropped. Holds the timeout in force.
    HandshakeTimeout(std::time::Duration),
    /// A socket call failed (`ECONNREFUSED`, `EADDRINUSE`, …).
    Io(io::Error),
}

impl ConnectError {
    /// Whether the handshake failed on the key ([`ConnectError::Authentication`]).
    #[must_use]
    pub fn is_authentication(&self) -> bool {
        matches!(self, Self::Authentication(_))
    }

    /// Whether the handshake ran out of time
    /// ([`ConnectError::HandshakeTimeout`]).
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::HandshakeTimeout(_))
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authentication(_) => f.write_str("authentication failed"),
            Self::Eof => f.write_str("peer closed the connection during the handshake"),
            Self::HandshakeTimeout(timeout) => {
                write!(f, "handshake timed out after {timeout:?}")
            }
            Self::Io(_) => f.write_str("connecting failed"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Authentication(err) => Some(err),
            Self::Io(err) => Some(err),
            Self::Eof | Self::HandshakeTimeout(_) => None,
        }
    }
}

impl From<io::Error> for ConnectError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

impl From<AuthenticationError> for ConnectError {
    fn from(err: AuthenticationError) -> Self {
        Self::Authentication(err)
    }
}

impl From<SendError> for ConnectError {
    fn from(err: SendError) -> Self {
        match err {
            SendError::Io(err) => Self::Io(err),
            other => Self::Io(other.into()),
        }
    }
}

impl From<RecvError> for ConnectError {
    /// Handshake messages are read with a 256-byte limit; a longer one is a
    /// protocol violation, not an I/O problem.
    fn from(err: RecvError) -> Self {
        match err {
            RecvError::Eof | RecvError::Truncated { .. } => Self::Eof,
            RecvError::BadMessageLength { claimed, max } => {
                Self::Authentication(AuthenticationError::protocol(format!(
                    "handshake message of length {claimed} (limit {max})"
                )))
            }
            RecvError::Io(err) => Self::Io(err),
            other => Self::Io(other.into()),
        }
    }
}

impl From<ConnectError> for io::Error {
    fn from(err: ConnectError) -> Self {
        match err {
            ConnectError::Io(err) => err,
            ConnectError::Eof => io::Error::new(io::ErrorKind::UnexpectedEof, err),
            ConnectError::HandshakeTimeout(_) => io::Error::new(io::ErrorKind::TimedOut, err),
            ConnectError::Authentication(_) => io::Error::new(io::ErrorKind::PermissionDenied, err),
        }
    }
}

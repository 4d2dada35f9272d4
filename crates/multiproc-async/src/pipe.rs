//! [`AsyncConnection`]: a [`Connection`]'s sends and receives as futures,
//! over its non-blocking calls and the reactor's readiness.

use multiproc_pipe::{Connection, RecvError, SendError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use std::os::fd::AsFd;

use crate::Reactor;

/// A [`Connection`] whose sends and receives are futures on reactor `R`
/// (aliases: `tokio::Connection`,
/// `smol::Connection`). The peer may be a
/// blocking or an async user, in this process or another, or Python.
///
/// A receive first looks for a message already in the connection's
/// read-ahead buffer ([`Connection::has_buffered_message`]): one that came
/// in the same read as the previous one is never signalled by the
/// descriptor. Only then does it wait for readability, and it reads with
/// [`Connection::try_recv_bytes`]. A send writes with
/// [`Connection::try_send_bytes`] and waits for writability while the
/// descriptor is full.
///
/// # Cancellation
///
/// - A dropped `recv`/`recv_bytes` future has taken nothing: a message is
///   taken in the poll that returns it. The part of a frame that arrived
///   stays in the connection's buffer, and the next receive (async or
///   blocking) continues it — no message is lost or torn.
/// - A dropped `send`/`send_bytes` future that had not yet completed
///   either sent nothing (the descriptor took no byte of the frame: the
///   message was not taken), or the message was taken and partly written:
///   its rest (and never its descriptors again: they left with the first
///   byte) stays in the connection, and the next `send`, [`flush`](Self::flush)
///   or blocking send writes it first, so the stream stays in step.
///   Dropping the connection with such a rest leaves the peer a truncated
///   frame ([`RecvError::Truncated`]). [`pending_send`](Connection::pending_send)
///   on [`get_ref`](Self::get_ref) tells which.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multiproc_pipe::Pipe;
///
/// let rt = ::tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// rt.block_on(async {
///     let (ours, theirs) = Pipe::new()?;
///     let mut conn = multiproc_async::tokio::Connection::new(ours)?;
///     // A blocking peer (a thread here; another process just the same).
///     let peer = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///         let mut theirs = theirs;
///         let question: String = theirs.recv()?;
///         theirs.send(&format!("{question}? 42"))?;
///         Ok(())
///     });
///     conn.send("answer").await?;
///     assert_eq!(conn.recv::<String>().await?, "answer? 42");
///     assert!(conn.recv_bytes().await.unwrap_err().is_eof());
///     peer.join().unwrap().unwrap();
///     Ok(())
/// })
/// # }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
pub struct AsyncConnection<R: Reactor> {
    conn: Connection,
    io: R::Io,
}

impl<R: Reactor> fmt::Debug for AsyncConnection<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncConnection")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl<R: Reactor> AsyncConnection<R> {
    /// Wraps `conn`; must be called inside the runtime (a duplicate of its
    /// descriptor is registered with the reactor). The descriptor is made
    /// non-blocking by the first non-blocking call, as
    /// [`Connection::try_recv_bytes`] describes.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "smol")]
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multiproc_pipe::Pipe;
    ///
    /// smol::block_on(async {
    ///     let (rx, tx) = Pipe::simplex()?;
    ///     let mut rx = multiproc_async::smol::Connection::new(rx)?;
    ///     tx.send_bytes(b"one")?;
    ///     tx.send_bytes(b"two")?;
    ///     assert_eq!(rx.recv_bytes().await?, b"one");
    ///     // Read ahead with "one": waiting for the descriptor would hang.
    ///     assert!(rx.get_ref().has_buffered_message());
    ///     assert_eq!(rx.recv_bytes().await?, b"two");
    ///     Ok(())
    /// })
    /// # }
    /// # #[cfg(not(feature = "smol"))]
    /// # fn main() {}
    /// ```
    ///
    /// # Errors
    ///
    /// The duplicate could not be made (out of descriptors), or the reactor
    /// refused it (no runtime here).
    pub fn new(conn: Connection) -> io::Result<Self> {
        let io = R::register_io(conn.as_fd().try_clone_to_owned()?)?;
        Ok(Self { conn, io })
    }

    /// The connection, for what the futures do not cover
    /// ([`pending_send`](Connection::pending_send),
    /// [`has_buffered_message`](Connection::has_buffered_message), …).
    pub fn get_ref(&self) -> &Connection {
        &self.conn
    }

    /// The connection, for its blocking or non-blocking calls.
    pub fn get_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The connection, unregistered. What it read ahead and what a send
    /// left unwritten stay in it.
    pub fn into_inner(self) -> Connection {
        self.conn
    }

    /// Receives one message as bytes, waiting for it.
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_bytes`]: [`RecvError::Eof`] once the peer has
    /// closed (or died) and everything it sent was read; a reactor failure
    /// is [`RecvError::Io`].
    pub async fn recv_bytes(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_with(Connection::try_recv_bytes).await
    }

    /// Receives a value sent with [`Connection::send`] (or
    /// [`send`](Self::send)), waiting for it.
    ///
    /// # Errors
    ///
    /// As [`Connection::recv`], and as [`recv_bytes`](Self::recv_bytes).
    pub async fn recv<T: DeserializeOwned + Send>(&mut self) -> Result<T, RecvError> {
        self.recv_with(Connection::try_recv::<T>).await
    }

    /// The receive loop: a message already buffered first, then waits for
    /// readability between non-blocking attempts.
    async fn recv_with<T: Send>(
        &mut self,
        mut attempt: impl FnMut(&mut Connection) -> Result<T, RecvError> + Send,
    ) -> Result<T, RecvError> {
        // The descriptor does not signal what was read ahead.
        if self.conn.has_buffered_message() {
            return attempt(&mut self.conn);
        }
        let conn = &mut self.conn;
        R::readable_with(&self.io, move || match attempt(conn) {
            Err(RecvError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            other => Ok(other),
        })
        .await
        .map_err(RecvError::Io)?
    }

    /// Sends `bytes` as one message, waiting while the descriptor is full.
    ///
    /// # Errors
    ///
    /// As [`Connection::send_bytes`]; a reactor failure is
    /// [`SendError::Io`].
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send_with(|conn| conn.try_send_bytes(bytes)).await
    }

    /// Sends `value` (as [`Connection::send`], descriptors included),
    /// waiting while the descriptor is full.
    ///
    /// # Errors
    ///
    /// As [`Connection::send`], and as [`send_bytes`](Self::send_bytes).
    pub async fn send<T: Serialize + Sync + ?Sized>(&mut self, value: &T) -> Result<(), SendError> {
        self.send_with(|conn| conn.try_send(value)).await
    }

    /// Writes what an earlier send (a dropped send future, or
    /// [`Connection::try_send_bytes`]) left unwritten, waiting while the
    /// descriptor is full. Completes at once when nothing is left.
    ///
    /// # Errors
    ///
    /// As [`Connection::try_flush`], without `WouldBlock`.
    pub async fn flush(&mut self) -> Result<(), SendError> {
        if self.conn.pending_send() == 0 {
            return Ok(());
        }
        self.wait_writable(Connection::try_flush).await
    }

    /// The send loop: the message is taken (tried at once, then whenever
    /// the descriptor is writable), then its rest is flushed.
    async fn send_with(
        &mut self,
        mut attempt: impl FnMut(&Connection) -> Result<(), SendError> + Send,
    ) -> Result<(), SendError> {
        match attempt(&self.conn) {
            Ok(()) => {}
            Err(SendError::WouldBlock) => self.wait_writable(attempt).await?,
            Err(err) => return Err(err),
        }
        self.flush().await
    }

    /// Calls `attempt` whenever the descriptor is writable until it does not
    /// say [`SendError::WouldBlock`].
    async fn wait_writable(
        &mut self,
        mut attempt: impl FnMut(&Connection) -> Result<(), SendError> + Send,
    ) -> Result<(), SendError> {
        // `&mut`: a `&Connection` is not `Send` (it is not `Sync`).
        let conn = &mut self.conn;
        R::writable_with(&self.io, move || match attempt(conn) {
            Err(SendError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            other => Ok(other),
        })
        .await
        .map_err(SendError::Io)?
    }
}

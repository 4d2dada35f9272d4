//! Pipes and connections between processes, wire-compatible with Python's
//! `multiprocessing.connection`.
//!
//! | item | Python |
//! |---|---|
//! | [`Pipe::new`], [`Pipe::simplex`] | `Pipe()`, `Pipe(False)` |
//! | [`Connection`]: `send`/`recv`, `send_bytes`/`recv_bytes`, `recv_bytes_into`, `poll`, `close` | `Connection` |
//! | [`Connection::send_pickle`]/[`Connection::recv_pickle`] | `send(obj)`/`recv()` |
//! | [`wait`] | `connection.wait` |
//! | [`Listener`], [`Client`], [`Address`] | `Listener`, `Client`, addresses |
//! | [`RecvError::Eof`], [`RecvError::BufferTooShort`], [`AuthenticationError`] | `EOFError`, `BufferTooShort`, `AuthenticationError` |
//!
//! # Hello, pipe
//!
//! ```
//! use multiproc_pipe::Pipe;
//!
//! let (mut parent, child) = Pipe::new()?;
//! child.send_bytes(b"hello")?;
//! assert_eq!(parent.recv_bytes()?, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each end is usually handed to another process — inherited, or sent
//! through another connection (see "Handles" below).
//!
//! # Typed messages
//!
//! [`Connection::send`] and [`Connection::recv`] carry any serde value with
//! the bincode codec of `multiproc-core`. A payload that does not decode is
//! an error and the connection stays usable:
//!
//! ```
//! use multiproc_pipe::Pipe;
//!
//! let (mut rx, tx) = Pipe::new()?;
//! tx.send(&vec![1u16, 2, 3])?;
//! assert_eq!(rx.recv::<Vec<u16>>()?, [1, 2, 3]);
//!
//! tx.send_bytes(b"\xff\xff")?;
//! tx.send(&7u64)?;
//! assert!(rx.recv::<String>().is_err());
//! assert_eq!(rx.recv::<u64>()?, 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # End of file, limits and short buffers
//!
//! A closed peer is [`RecvError::Eof`] once everything it sent was read.
//! Writing to a closed peer is [`SendError`] with
//! [`is_broken_pipe`](SendError::is_broken_pipe) — never a `SIGPIPE` death.
//! A frame longer than the limit is refused before anything is allocated.
//!
//! ```
//! use multiproc_pipe::Pipe;
//!
//! let (mut rx, tx) = Pipe::new()?;
//! tx.send_bytes(b"last words")?;
//! drop(tx);
//! let mut small = [0u8; 4];
//! let err = rx.recv_bytes_into(&mut small).unwrap_err();
//! assert_eq!(err.into_message().unwrap(), b"last words"); // BufferTooShort
//! assert!(rx.recv_bytes().unwrap_err().is_eof());
//!
//! let (rx, tx) = Pipe::simplex()?;
//! drop(rx);
//! assert!(tx.send_bytes(b"x").unwrap_err().is_broken_pipe());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Sockets are written with `MSG_NOSIGNAL`. A pipe has no such flag, so
//! creating a connection that writes to a pipe sets `SIGPIPE` to "ignore"
//! if it is still at its default action (which would end the process); a
//! handler or disposition the program chose is left alone. The Rust runtime
//! (and CPython) ignore `SIGPIPE` anyway, so this only matters in hosts that
//! restored the default. Blocking the signal around every write instead
//! would cost three system calls per message.
//! [`set_ignore_sigpipe(false)`](set_ignore_sigpipe) leaves the
//! disposition alone, for hosts that manage their signals themselves.
//!
//! # Waiting
//!
//! [`Connection::poll`] waits for one connection; [`wait`] for the first of
//! many connections or other descriptors.
//!
//! ```
//! use multiproc_pipe::{wait, Pipe};
//! use std::time::Duration;
//!
//! let (a, a_tx) = Pipe::new()?;
//! let (b, b_tx) = Pipe::new()?;
//! assert!(!a.poll(Some(Duration::ZERO))?);
//! b_tx.send_bytes(b"b first")?;
//! assert_eq!(wait(&[&a, &b], Some(Duration::from_secs(5)))?, vec![1]);
//! # drop(a_tx);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Handles
//!
//! A [`Connection`] is `Serialize`/`Deserialize` through the descriptor table
//! of `multiproc-core`: sent through a duplex (Unix socket) connection, its
//! descriptor travels with `SCM_RIGHTS` and arrives working — the same goes
//! for a `Segment` or any other handle. Simplex pipes and TCP connections
//! refuse such values.
//!
//! ```
//! use multiproc_pipe::{Connection, Pipe};
//!
//! let (mut courier_rx, courier_tx) = Pipe::new()?;
//! let (mut here, there) = Pipe::new()?;
//! courier_tx.send(&there)?;
//! drop(there);
//! let arrived: Connection = courier_rx.recv()?;
//! arrived.send_bytes(b"through a passed connection")?;
//! assert_eq!(here.recv_bytes()?, b"through a passed connection");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Talking to Python
//!
//! Frames are byte-compatible with CPython: a 4-byte big-endian length (or
//! -1 and an 8-byte length above 2 GiB), then the payload. An end of a
//! [`Pipe::new`] pair handed to Python as a descriptor gets such frames
//! too: its shared-memory lane is used only between connections of this
//! crate that receive through it. Python's
//! `send_bytes`/`recv_bytes` match ours; its `send(obj)` is a pickle, which
//! [`Connection::recv_pickle`] decodes (feature `pickle`, on by default) and
//! [`Connection::send_pickle`] produces. [`Listener`] and [`Client`] speak
//! Python's authkey handshake in both its legacy HMAC-MD5 form (Python ≤
//! 3.11) and its `{sha256}` form (Python ≥ 3.12); see [`auth`].
//!
//! ```
//! use multiproc_pipe::{Address, Client, Listener};
//!
//! // In Python: Client(("127.0.0.1", port), authkey=b"secret").send_bytes(b"hi")
//! let listener = Listener::bind("127.0.0.1:0".parse::<Address>()?, Some(b"secret"))?;
//! let address = listener.address().clone();
//! let peer = std::thread::spawn(move || {
//!     Client::connect(address, Some(b"secret")).map(|c| c.send_bytes(b"hi"))
//! });
//! assert_eq!(listener.accept()?.recv_bytes()?, b"hi");
//! peer.join().unwrap()??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What a peer cannot do to you
//!
//! A peer is another process, perhaps a broken or hostile one. What it can
//! send, and the test (in `tests/cross_process.rs`, between real processes)
//! that shows the answer:
//!
//! | the peer | what happens | test |
//! |---|---|---|
//! | announces a huge length and sends little | memory grows with the bytes that arrive, never by the announced length alone; a failed allocation is [`RecvError::Io`] (`OutOfMemory`) | `announced_length_is_not_reserved_before_data_arrives` |
//! | sends a malformed or oversized frame | a typed [`RecvError`], and the connection stays usable where the stream is still in step | `malformed_frames_are_typed_errors`, `garbage_to_recv_leaves_the_connection_usable` |
//! | dies mid-frame, or closes | [`RecvError::Truncated`] / [`RecvError::Eof`] | `eof_after_the_peer_exits`, `close_is_seen_as_eof` |
//! | closes while we write | an error, never `SIGPIPE` | `writing_to_a_closed_peer_is_an_error_not_sigpipe` |
//! | connects to a [`Listener`] and says nothing | with [`Listener::with_handshake_timeout`], `accept` drops it after the timeout (CPython waits for ever, which stays the default) | `handshake_timeout_drops_a_silent_client` |
//! | sends descriptors with the wrong message | they go to the message they rode with, or are closed; never delivered to another | `received_descriptors_go_to_their_own_message`, `stray_descriptors_are_closed_not_misdelivered` |
//! | sends a lane token that names bytes outside the ring (a [`Pipe::new`] pair) | [`RecvError::BadLaneToken`]; nothing is allocated for it | `malformed_frames_are_typed_errors` |
//! | sends pieces of a message that add up to more than the limit, or stops after a piece | [`RecvError::BadMessageLength`], or [`RecvError::Truncated`] at the end of the stream; memory grows only with pieces received, at most 2 MiB | `malformed_frames_are_typed_errors` |
//! | is killed (`SIGKILL`) while large messages flow through the lane, as sender or receiver (mid-message in pieces too; or holding a payload it decodes in place) | only whole messages arrive, in order; a sender to a dead receiver gets a broken pipe, never hangs on the ring | `a_sender_killed_mid_stream_leaves_only_whole_messages`, `a_receiver_killed_mid_stream_fails_the_sender`, `a_receiver_killed_while_it_decodes_in_place_fails_the_sender` |
//! | stops (`SIGSTOP`) as the receiver | what fits in the ring is sent at once; then a send waits for room at most briefly and goes through the socket | `large_messages_cross_the_lane_whole_and_a_stopped_receiver_does_not_block_them` |
//! | is killed while it sends small messages to a receiver that spins for them (its mailbox), or posts one as the receiver falls asleep | only whole messages arrive, in order, once; a receiver asleep on the socket is woken (a doorbell) | `a_sender_killed_mid_stream_leaves_only_whole_messages`, `small_messages_wake_a_receiver_that_falls_asleep`, `small_large_and_descriptor_messages_keep_their_order` (and the model in `tests/loom_mailbox.rs`) |
//! | writes nonsense into the mailbox's words or records | [`RecvError::Io`] (`InvalidData`) once, and what the mailbox held is dropped; every copy stays inside it | the `mailbox` unit tests |
//!
//! A connection on a non-blocking descriptor (`O_NONBLOCK`, as an event
//! loop sets) keeps a partial frame and returns [`RecvError::WouldBlock`];
//! calling again continues the same message
//! (`nonblocking_descriptor_keeps_partial_frames`).
//!
//! For event loops, the `try_*` calls ([`Connection::try_recv_bytes`],
//! [`Connection::try_recv`], [`Connection::try_send_bytes`],
//! [`Connection::try_send`], [`Connection::try_flush`]) never block on any
//! descriptor: a partial frame received is kept for the next receive, a
//! frame partly written is kept (its descriptors already sent with its
//! first byte) for the next send or flush. A waiter asks
//! [`Connection::has_buffered_message`] before it waits for readability:
//! a message read ahead with the previous one is not signalled by the
//! descriptor. `multiproc-async` builds its futures on these.
//!
//! # Performance
//!
//! Between the two ends of a [`Pipe::new`] pair, payloads of 4 KiB to 2 MiB
//! go through a ring in shared memory and only a small token through the
//! socket (the pair's *lane*; see [`Pipe::new`] for what it costs and when
//! it is used). Typed values are encoded straight into the ring and
//! decoded where they lie, so they cost the copies a byte string does.
//! Smaller messages are left in the receiver's *mailbox*, also in shared
//! memory, while a blocking receive spins for them (see [`Pipe::new`]).
//! Everything else below is about what goes through the socket.
//!
//! A small message leaves in one `send`/`write` (header and payload
//! assembled on the stack; larger ones gathered with `sendmsg`/`writev`)
//! and arrives, usually, with one `recvmsg` — often one for a whole burst,
//! thanks to a 64 KiB read-ahead buffer. After a large message the receiver
//! reads the next header and the payload in one call, the payload straight
//! into its destination, so large payloads are neither copied nor zeroed.
//! A socket connection that sends a message of 64 KiB or more raises its
//! socket's send buffer to 1 MiB (or what `net.core.wmem_max` allows) and
//! puts it back after 16 smaller messages in a row: with both processes on
//! one CPU, large messages then move 5 % faster, and small ones are not
//! slowed by a deep buffer. `benches/pipe.rs` compares all this with raw
//! `write`/`read` on a socketpair and a pipe in the same run.
//!
//! # Using this crate alone
//!
//! A program that depends on `multiproc-pipe` only (no `multiproc-core`, no
//! `libc`, no `unsafe`) hands one end of a pipe to a child it starts with
//! [`std::process::Command`] through [`inherit`] (re-exported from
//! `multiproc-core`): [`inherit::pass`] puts the handle and its descriptors
//! into the command, [`inherit::take`] in the child gets the same object
//! back. A child made by `fork` (no `exec`) needs nothing: the
//! handles it inherited with the parent's memory work as they are.
//!
//! ```
//! use multiproc_pipe::{inherit, Pipe};
//! use std::process::Command;
//!
//! // Parent: make the object, give it to the child under a key, spawn.
//! let (mut ours, theirs) = Pipe::new()?;
//! ours.send_bytes(b"ping")?;
//! let mut cmd = Command::new("true"); // the worker program
//! inherit::pass(&mut cmd, "shared", &theirs)?;
//! let mut child = cmd.spawn()?;
//! drop(cmd); // the parent's spare copies of the descriptors close here
//! assert!(child.wait()?.success());
//!
//! // The worker's `main`:
//! fn worker() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut theirs: multiproc_pipe::Connection = inherit::take("shared")?;
//!     assert_eq!(theirs.recv_bytes()?, b"ping");
//!     Ok(())
//! }
//! # let _ = worker;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `tests/cross_process.rs` runs this recipe with a real child
//! (`pipe_shared_with_a_command_child_through_inherit`).
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_code)]

pub mod auth;
mod connection;
mod error;
mod frame;
mod lane;
mod listener;
mod recv;
mod spin;
mod wait;

pub use auth::{Challenge, Digest};
pub use connection::{Connection, DEFAULT_MAX_MESSAGE_LEN, Pipe, set_ignore_sigpipe};
pub use error::{AuthFailure, AuthenticationError, ConnectError, RecvError, SendError};
pub use frame::SHORT_MAX;
pub use listener::{Address, AddressParseError, Client, ClientBuilder, Listener};
/// Handing objects to children started with `std::process::Command`:
/// see [Using this crate alone](crate#using-this-crate-alone).
pub use multiproc_core::inherit;
pub use wait::{Waitable, wait};

/// The pickle values [`Connection::recv_pickle_value`] produces when the shape
/// is not known in advance (re-exported from `serde-pickle`).
///
/// ```
/// use multiproc_pipe::pickle::{HashableValue, Value};
/// use multiproc_pipe::Pipe;
/// use std::collections::BTreeMap;
///
/// let (mut rx, tx) = Pipe::new()?;
/// let dict = Value::Dict(BTreeMap::from([(
///     HashableValue::String("bytes".into()),
///     Value::Bytes(vec![0, 1, 2]),
/// )]));
/// tx.send_pickle_value(&dict)?;
/// assert_eq!(rx.recv_pickle_value()?, dict);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "pickle")]
pub mod pickle {
    pub use serde_pickle::{HashableValue, Value};
}

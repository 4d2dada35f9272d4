//! [`Connection`]: one end of a pipe or socket that moves framed messages.

use crate::error::{RecvError, SendError};
use crate::frame::{DOORBELL, MAX_HEADER, TOKEN_FRAME, encode_header};
use crate::lane::{self, Lane, LaneWire, Posted, Refused, Span};
use crate::recv::{BetweenFrames, KEEP_BUFFER, ReadResult, RecvBuf, Source};
use crate::spin::{self, SpinBudget};
use multiproc_core::codec::Encoded;
use multiproc_core::{Codec, SharedFd, scm};
use rustix::io::Errno;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::IoSliceMut;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Default limit on a received payload: 1 GiB, the same as the codec's.
///
/// A header over the limit is refused before anything is allocated, and
/// payloads above 64 MiB are allocated as their bytes arrive, so a peer that
/// announces a large message and then stalls costs only what it really sent.
/// Change it per connection with [`Connection::set_max_message_len`], or per
/// call with [`Connection::recv_bytes_max`].
pub const DEFAULT_MAX_MESSAGE_LEN: usize = multiproc_core::codec::DEFAULT_MAX_SIZE;

/// Frames up to this size (header included) are copied into one stack
/// buffer and written with a single-buffer call.
const SMALL_FRAME: usize = 512;

/// A socket connection that sends a frame of this many bytes or more
/// raises its socket's send buffer to [`LARGE_SEND_BUFFER`].
const LARGE_FRAME: usize = 64 * 1024;

/// The send buffer a socket connection keeps while it sends large frames,
/// as `SO_SNDBUF` reads it: 1 MiB, or what `net.core.wmem_max` allows
/// (416 KiB with the kernel's defaults, against 208 KiB unraised). With
/// the two processes on one CPU, the writer then runs longer before it
/// blocks and the switches between the two are fewer. In the compare
/// demo (`cargo run --release --example compare`) on a 2-vCPU AMD EPYC,
/// the one-CPU cells of Pipe ÷ socketpair at 64 KiB and 1 MiB went from
/// 0.97-0.99x to 1.04-1.05x; left to the kernel the difference was within
/// the noise. Small messages behind such a deep buffer lose on one CPU
/// (more of them wait per switch), so the buffer goes back to what it was
/// after [`SMALL_FRAMES_TO_LOWER`] small frames in a row.
const LARGE_SEND_BUFFER: usize = 1024 * 1024;

/// Frames below [`LARGE_FRAME`] in a row after which a raised send buffer
/// goes back to its size before: few enough that a connection that moved
/// on to small messages soon sends them at their best, enough that one
/// alternating between sizes does not pay two system calls per pair.
const SMALL_FRAMES_TO_LOWER: u32 = 16;

/// The send buffer of a socket connection, as far as large frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendBuffer {
    /// As it was made (or as the owner set it).
    AsMade,
    /// Large enough as it was, or the kernel refused to change it: left
    /// alone from now on.
    LeftAlone,
    /// Raised for large frames from `before` (what `SO_SNDBUF` read then);
    /// `small` frames since the last large one.
    Raised { before: usize, small: u32 },
}

/// What kind of descriptor a connection wraps; decides how it is read and
/// written and whether descriptors can travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Flavor {
    /// `AF_UNIX` stream socket: duplex, carries descriptors.
    Unix,
    /// Another stream socket (TCP): duplex, bytes only.
    Socket,
    /// Read end of a pipe.
    PipeReader,
    /// Write end of a pipe.
    PipeWriter,
}

impl Flavor {
    fn readable(self) -> bool {
        self != Self::PipeWriter
    }

    fn writable(self) -> bool {
        self != Self::PipeReader
    }

    fn is_socket(self) -> bool {
        matches!(self, Self::Unix | Self::Socket)
    }
}

/// Whether a connection that writes to a pipe sets `SIGPIPE` to "ignore"
/// when it is at its default action: see [`set_ignore_sigpipe`].
static IGNORE_SIGPIPE: AtomicBool = AtomicBool::new(true);

/// Chooses whether creating a connection that writes to a pipe
/// ([`Pipe::simplex`], or [`Connection::from_fd`] on a pipe's write end)
/// sets the process's `SIGPIPE` disposition to "ignore" when it is still at
/// its default action (which ends the process). `true` is the default.
///
/// Turn it off, before the first such connection, in a host that wants its
/// signal dispositions left alone. Writes to a pipe whose reader is gone
/// then raise `SIGPIPE` unless the host ignores or handles it itself (the
/// Rust runtime ignores it before `main`, so only hosts that restored the
/// default are concerned); with the signal ignored or handled, such a write
/// is a [`SendError`](crate::SendError) with
/// [`is_broken_pipe`](crate::SendError::is_broken_pipe). Sockets
/// ([`Pipe::new`], [`Listener`](crate::Listener),
/// [`Client`](crate::Client)) never raise `SIGPIPE`: they are written with
/// `MSG_NOSIGNAL`, whatever this setting. A disposition changed earlier
/// stays changed.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::{Pipe, set_ignore_sigpipe};
///
/// // First thing, in a host that manages its own signals:
/// set_ignore_sigpipe(false);
/// let (rx, tx) = Pipe::simplex()?;
/// drop(rx);
/// // This test binary ignores SIGPIPE (as every Rust program does), so the
/// // write fails instead of raising it.
/// assert!(tx.send_bytes(b"x").unwrap_err().is_broken_pipe());
/// set_ignore_sigpipe(true);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "SIGPIPE")]
pub fn set_ignore_sigpipe(ignore: bool) {
    IGNORE_SIGPIPE.store(ignore, Ordering::Relaxed);
}

/// One end of a [`Pipe`](crate::Pipe) or of a [`Listener`](crate::Listener)
/// / [`Client`](crate::Client) connection: sends and receives whole messages.
///
/// Every message is a frame in the format of Python's
/// `multiprocessing.connection` (a big-endian length, then the payload;
/// between the two ends of a [`Pipe::new`] pair, large payloads take a
/// shared-memory lane, see there), so
/// the `*_bytes` methods talk to Python's `send_bytes`/`recv_bytes`
/// directly, and [`send_pickle`](Self::send_pickle)/[`recv_pickle`](Self::recv_pickle)
/// to Python's `send`/`recv`. [`send`](Self::send)/[`recv`](Self::recv)
/// carry any serde value with the [`multiproc_core::codec`] (bincode); on a
/// Unix socket the descriptors of handles inside it travel along
/// (`SCM_RIGHTS`), so a `Connection` or a `Segment` can be sent and arrives
/// usable.
///
/// A connection is [`Send`] but not [`Sync`]: one thread uses it at a time
/// (wrap it in a `Mutex` to share it). Receiving needs `&mut self` because it
/// keeps state between calls: bytes read ahead into a buffer, and the part
/// of a frame that arrived before a non-blocking read would block. The
/// blocking sends write their whole frame before they return, so they need
/// only `&self`, and a connection can send while it is borrowed elsewhere
/// (for instance by [`wait`](crate::wait)).
///
/// # Non-blocking use
///
/// [`try_recv_bytes`](Self::try_recv_bytes), [`try_recv`](Self::try_recv),
/// [`try_send_bytes`](Self::try_send_bytes), [`try_send`](Self::try_send)
/// and [`try_flush`](Self::try_flush) never block: they are what an event
/// loop calls when the descriptor is ready (see `multiproc-async`). They
/// return [`RecvError::WouldBlock`] / [`SendError::WouldBlock`] only after
/// the descriptor itself said `EAGAIN`, so an edge-triggered reactor's
/// readiness may be cleared then. Before waiting for readability, ask
/// [`has_buffered_message`](Self::has_buffered_message): a message read
/// ahead with the previous one is in the buffer, and the descriptor will
/// not signal it.
///
/// ```
/// use multiproc_pipe::Pipe;
///
/// let (mut rx, tx) = Pipe::new()?;
/// assert!(rx.try_recv_bytes().unwrap_err().is_would_block());
/// tx.try_send_bytes(b"one")?;
/// tx.try_send_bytes(b"two")?;
/// assert_eq!(rx.try_recv_bytes()?, b"one"); // one read brought both
/// assert!(rx.has_buffered_message());
/// assert_eq!(rx.try_recv_bytes()?, b"two");
/// assert!(!rx.has_buffered_message());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Examples
///
/// ```
/// use multiproc_pipe::Pipe;
///
/// let (mut left, right) = Pipe::new()?;
/// right.send(&("answer", 42u32))?;
/// let (word, n): (String, u32) = left.recv()?;
/// assert_eq!((word.as_str(), n), ("answer", 42));
///
/// drop(right);
/// assert!(left.recv_bytes().unwrap_err().is_eof());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Connection {
    fd: OwnedFd,
    flavor: Flavor,
    rx: RecvBuf,
    max_message_len: usize,
    codec: Codec,
    /// The rest of a frame a non-blocking send could not finish; every
    /// later send writes it first.
    pending: RefCell<Option<Pending>>,
    /// What this connection knows of the descriptor's `O_NONBLOCK`.
    blocking: Cell<FdMode>,
    /// How long a blocking receive on a Unix socket retries before it
    /// sleeps (see `spin.rs`).
    read_spin: Cell<SpinBudget>,
    /// How long a blocking send waits for room in the lane before it
    /// sends through the socket (see `through_lane`).
    room_spin: Cell<SpinBudget>,
    /// The length of the last value `send` encoded: the next goes straight
    /// into the lane when this one was long enough to go there.
    last_encoded: Cell<usize>,
    /// A value is being encoded into the lane (see `encode_into_lane`).
    placing: Cell<bool>,
    /// Whether blocking receives use `read_spin`, and blocking sends
    /// `room_spin`, at all.
    adaptive_wait: bool,
    /// The buffer typed sends encode into, kept between sends (up to
    /// `KEEP_BUFFER`).
    send_buf: RefCell<Vec<u8>>,
    /// Whether the socket's send buffer is raised for large frames.
    send_buffer: Cell<SendBuffer>,
    /// The shared memory large payloads go through, between the two ends
    /// of a [`Pipe::new`] pair (the receive side has its own handle in
    /// `rx`).
    lane: Option<Lane>,
    /// Messages posted to the lane's mailbox without a doorbell since the
    /// sender last made sure the receiver is there (see
    /// [`PEER_CHECK_EVERY`]).
    posts: Cell<u32>,
    /// Not `Sync`: two threads sending through `&Connection` at once could
    /// interleave the pieces of large frames.
    _not_sync: PhantomData<Cell<()>>,
}

/// The unwritten rest of a frame that a non-blocking send started.
struct Pending {
    bytes: Vec<u8>,
    /// How many of `bytes` are written.
    written: usize,
}

/// What a connection knows of its descriptor's `O_NONBLOCK` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FdMode {
    /// Not looked at yet: the non-blocking calls look (once).
    Unknown,
    /// Non-blocking, but not by this connection's doing: the blocking
    /// receives report [`RecvError::WouldBlock`], as they always did.
    AlreadyNonBlocking,
    /// Made non-blocking by a non-blocking call: the blocking receives wait
    /// for readability when the descriptor says `EAGAIN`, so they keep
    /// blocking.
    MadeNonBlocking,
}

/// After this many messages posted to the mailbox without a doorbell (a
/// write to the socket), a sender writes
/// nothing to the socket (no buffer, no wake-up; about 0.1 µs) to learn
/// whether the receiver is still there: a receiver killed while it spun
/// for mail leaves the mailbox open, and messages posted to it are lost
/// as those in a dead receiver's socket are. So a sender learns of the
/// death (`BrokenPipe`) at most this many messages later than through the
/// socket alone.
const PEER_CHECK_EVERY: u32 = 64;

/// The [`Os`] source a blocking receive of `$conn` reads from: its
/// descriptor, spinning as its adaptive wait says (a macro, so that the
/// fields are borrowed one by one and `$conn.rx` stays free).
macro_rules! blocking_source {
    ($conn:ident, $wait:expr) => {
        Os::new(
            $conn.fd.as_fd(),
            $conn.flavor,
            $wait,
            read_spin(
                &$conn.read_spin,
                $conn.adaptive_wait,
                $conn.blocking.get(),
                $conn.flavor,
            ),
        )
        .with_mailbox($conn.lane.as_ref())
    };
}

impl Connection {
    pub(crate) fn new(fd: OwnedFd, flavor: Flavor) -> io::Result<Self> {
        if flavor == Flavor::PipeWriter && IGNORE_SIGPIPE.load(Ordering::Relaxed) {
            // A write to a pipe whose reader is gone must be `EPIPE`, not a
            // `SIGPIPE` death; sockets use `MSG_NOSIGNAL` instead.
            multiproc_core::process::ignore_sigpipe_if_default()?;
        }
        Ok(Self {
            fd,
            flavor,
            rx: RecvBuf::default(),
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            codec: Codec::new(),
            pending: RefCell::new(None),
            blocking: Cell::new(FdMode::Unknown),
            read_spin: Cell::new(SpinBudget::default()),
            room_spin: Cell::new(SpinBudget::default()),
            last_encoded: Cell::new(0),
            placing: Cell::new(false),
            adaptive_wait: true,
            send_buf: RefCell::new(Vec::new()),
            send_buffer: Cell::new(SendBuffer::AsMade),
            lane: None,
            posts: Cell::new(0),
            _not_sync: PhantomData,
        })
    }

    /// This connection with `lane` for what it sends and receives.
    fn with_lane(mut self, lane: Option<Lane>) -> Self {
        self.rx = RecvBuf::with_lane(lane.clone());
        self.lane = lane;
        self
    }

    /// Wraps a connected stream socket or one end of a pipe, found out with
    /// `fstat`/`getsockopt(SO_DOMAIN)`/`fcntl(F_GETFL)`: a Unix socket
    /// carries descriptors, another socket (TCP) does not, a pipe end reads
    /// or writes according to its access mode.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Connection;
    ///
    /// let (read_end, write_end) = rustix::pipe::pipe()?;
    /// let mut rx = Connection::from_fd(read_end)?;
    /// let tx = Connection::from_fd(write_end)?;
    /// tx.send_bytes(b"hi")?;
    /// assert_eq!(rx.recv_bytes()?, b"hi");
    /// assert!(rx.send_bytes(b"no").is_err()); // the read end of a pipe
    ///
    /// let file = std::fs::File::open("/dev/null")?;
    /// assert!(Connection::from_fd(file.into()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a descriptor that is neither a stream socket nor a
    /// pipe; the kernel's error from the queries.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let stat = rustix::fs::fstat(&fd)?;
        let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        let flavor = match file_type {
            rustix::fs::FileType::Socket => {
                if rustix::net::sockopt::socket_type(&fd)? != rustix::net::SocketType::STREAM {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a connection needs a stream socket",
                    ));
                }
                if rustix::net::sockopt::socket_domain(&fd)? == rustix::net::AddressFamily::UNIX {
                    Flavor::Unix
                } else {
                    Flavor::Socket
                }
            }
            rustix::fs::FileType::Fifo => {
                let mode = rustix::fs::fcntl_getfl(&fd)? & rustix::fs::OFlags::RWMODE;
                if mode == rustix::fs::OFlags::WRONLY {
                    Flavor::PipeWriter
                } else {
                    Flavor::PipeReader
                }
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a connection needs a stream socket or a pipe",
                ));
            }
        };
        Self::new(fd, flavor)
    }

    /// The descriptor, giving up the connection. Bytes this connection had
    /// already read ahead are lost, and so are small messages waiting in
    /// the end's mailbox (see [`Pipe::new`]), and the rest of a frame a
    /// non-blocking send left unwritten ([`pending_send`](Self::pending_send)).
    /// The descriptor stays non-blocking if a non-blocking call made it so.
    ///
    /// An end of a [`Pipe::new`] pair leaves its shared-memory lane: the
    /// other end sends it ordinary frames from now on, so whoever reads
    /// the descriptor needs no lane. A large message the other end sent
    /// through the lane before this call and that was not received yet
    /// arrives as a token, which a connection without the lane refuses
    /// ([`RecvError::BadMessageLength`](crate::RecvError::BadMessageLength)):
    /// receive what is on its way first.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::{Connection, Pipe};
    ///
    /// let (a, b) = Pipe::new()?;
    /// let mut again = Connection::from_fd(a.into_fd())?;
    /// b.send_bytes(b"same socket")?;
    /// assert_eq!(again.recv_bytes()?, b"same socket");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn into_fd(self) -> OwnedFd {
        if let Some(lane) = &self.lane {
            // Whoever gets the descriptor may not read tokens.
            lane.leave();
        }
        self.fd
    }

    /// Whether [`recv`](Self::recv) and friends work here (not the sending
    /// end of a simplex pipe).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (rx, tx) = Pipe::simplex()?;
    /// assert!(rx.is_readable() && !rx.is_writable());
    /// assert!(tx.is_writable() && !tx.is_readable());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn is_readable(&self) -> bool {
        self.flavor.readable()
    }

    /// Whether [`send`](Self::send) and friends work here (not the receiving
    /// end of a simplex pipe).
    #[must_use]
    pub fn is_writable(&self) -> bool {
        self.flavor.writable()
    }

    /// Whether handles (descriptors) can travel through this connection: only
    /// a Unix socket carries them.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// assert!(Pipe::new()?.0.carries_descriptors());
    /// assert!(!Pipe::simplex()?.1.carries_descriptors());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn carries_descriptors(&self) -> bool {
        self.flavor == Flavor::Unix
    }

    /// The limit on received payloads ([`DEFAULT_MAX_MESSAGE_LEN`] unless
    /// set).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::{DEFAULT_MAX_MESSAGE_LEN, Pipe};
    ///
    /// let (mut rx, _tx) = Pipe::new()?;
    /// assert_eq!(rx.max_message_len(), DEFAULT_MAX_MESSAGE_LEN);
    /// rx.set_max_message_len(1 << 20);
    /// assert_eq!(rx.max_message_len(), 1 << 20);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// Sets the limit on received payloads; a frame announcing more is
    /// refused with [`RecvError::BadMessageLength`] before anything is
    /// allocated. It is also the codec's size limit for this connection:
    /// what [`recv`](Self::recv) decodes and what [`send`](Self::send)
    /// encodes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// rx.set_max_message_len(4);
    /// tx.send_bytes(b"too long")?;
    /// assert!(rx.recv_bytes().unwrap_err().is_bad_message_length());
    /// // The frame is still there for a call with a higher limit.
    /// assert_eq!(rx.recv_bytes_max(8)?, b"too long");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_max_message_len(&mut self, max: usize) {
        self.max_message_len = max;
        self.codec = self.codec.with_max_size(max);
    }

    /// Turns the adaptive wait of blocking receives on a Unix socket on
    /// (the default) or off. On, a receive that finds nothing retries
    /// non-blocking reads (yielding now and then) for a budget learned
    /// from the receives before it, before it sleeps in the kernel: when
    /// the sender runs on another, idle CPU that removes the cross-CPU
    /// wake-up (20–80 µs on a virtual machine), and when they share a CPU
    /// the budget falls to nothing after a few receives (then one receive
    /// in 256 spins up to 50 µs, to notice a change). Without a budget, a
    /// receive yields once before it sleeps, so that a sender on the same
    /// CPU fills the socket instead of waking the receiver message by
    /// message; it stops doing so when the yield ran some other task. The
    /// same switch covers a blocking send that finds the lane of a
    /// [`Pipe::new`] pair full: on, it waits for room by the same rules
    /// (with a budget of its own); off, the payload goes through the socket
    /// at once.
    ///
    /// Measured in one run of `cargo run --release --example compare` on a
    /// 2-vCPU virtual machine (2026-12-04 17:57, its placement table, before
    /// the lane: the 64 KiB and 1 MiB cells went through the socket),
    /// Pipe ÷ socketpair with it on, for the kernel's placement / two
    /// CPUs / one CPU: round trip 8 B 7.7× / 10.2× / 0.87×; 1→1 8 B
    /// 1.06× / 0.84× / 1.12×; 64 KiB 1.15× / 1.06× / 0.93×; 1 MiB 0.86× /
    /// 1.20× / 0.86×. In a run before it existed (every receive sleeping
    /// at once): one CPU 0.98× (round trip), 1.29× (8 B), 1.00× (1 MiB);
    /// round trips of 58–68 µs elsewhere, 0.92–0.98× the socketpair. So
    /// off costs the idle regime its round trip and gives the one-CPU
    /// large messages back about a tenth.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// rx.set_adaptive_wait(false); // both sides pinned to one CPU, say
    /// tx.send_bytes(b"hi")?;
    /// assert_eq!(rx.recv_bytes()?, b"hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_adaptive_wait(&mut self, on: bool) {
        self.adaptive_wait = on;
    }

    /// Whether received bytes are waiting in the read-ahead buffer, or a
    /// message in the end's mailbox (see [`Pipe::new`]): a `recv` may then
    /// finish without a system call.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// tx.send_bytes(b"1")?;
    /// tx.send_bytes(b"2")?;
    /// assert!(!rx.has_buffered());
    /// assert_eq!(rx.recv_bytes()?, b"1"); // one read brought both
    /// assert!(rx.has_buffered());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn has_buffered(&self) -> bool {
        self.rx.buffered() > 0 || self.has_mail()
    }

    /// Whether a message waits in this end's mailbox (see the lane's
    /// `mailbox`) to be received next. Stops listening first: the caller
    /// may be about to wait for the descriptor, and senders must ring.
    fn has_mail(&self) -> bool {
        self.rx.between_frames() && self.lane.as_ref().is_some_and(Lane::stop_listening)
    }

    // ---- sending ------------------------------------------------------

    /// Sends `value` encoded with the [`multiproc_core::codec`] (bincode).
    ///
    /// On a Unix-socket connection the descriptors of handles inside `value`
    /// (a [`Connection`], a `multiproc_core::Segment`, any type built on
    /// [`SharedFd`]) go along with `SCM_RIGHTS` and the receiver gets working
    /// duplicates; the sender keeps its own. Other connections refuse such a
    /// value. The message is not a pickle: Python reads it as bytes only (use
    /// [`send_pickle`](Self::send_pickle) for Python).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// let segment = Segment::anonymous(4096)?;
    /// segment.write_at(0, b"shared")?;
    /// tx.send(&segment)?;
    /// let copy: Segment = rx.recv()?;
    /// let mut buf = [0u8; 6];
    /// copy.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"shared");
    ///
    /// // A simplex pipe cannot carry the descriptor.
    /// let (_rx, tx) = Pipe::simplex()?;
    /// assert!(tx.send(&segment).unwrap_err().is_descriptors_unsupported());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SendError::Codec`] when encoding fails (including
    /// `DescriptorsUnsupported`), [`SendError::TooManyDescriptors`],
    /// [`SendError::NotWritable`], [`SendError::Io`] (a closed peer is
    /// `BrokenPipe`, never a `SIGPIPE`).
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        self.ready_to_send()?;
        // The connection's buffer, or a fresh one when a `Serialize` impl
        // sends on this connection while its own value is being encoded.
        let mut kept = self.send_buf.try_borrow_mut();
        let mut fresh = Vec::new();
        let frame = match kept.as_deref_mut() {
            Ok(buf) => buf,
            Err(_) => &mut fresh,
        };
        frame.clear();
        frame.resize(MAX_HEADER, 0);
        let sent = self.encode_and_send(value, frame);
        if frame.capacity() > KEEP_BUFFER {
            *frame = Vec::new();
        }
        sent
    }

    /// Encodes `value` after the `MAX_HEADER` bytes reserved at the start
    /// of `frame`, writes its header into the end of that space, and sends
    /// header and payload in one write (with the value's descriptors on a
    /// Unix socket).
    fn encode_and_send<T: Serialize + ?Sized>(
        &self,
        value: &T,
        frame: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        let in_lane = self.encode_into_lane(value, frame);
        // A span that found no room after its wait: the payload need not
        // wait for room again.
        let may_wait = !matches!(in_lane, InLane::NoRoom);
        let (len, fds) = match in_lane {
            InLane::Done(sent) => return sent,
            InLane::Spilled(len, fds) => (len, fds),
            InLane::NotTried | InLane::NoRoom if self.flavor == Flavor::Unix => {
                self.codec.encode_with_fds_into(value, frame)?
            }
            InLane::NotTried | InLane::NoRoom => {
                (self.codec.encode_into(value, frame)?, Vec::new())
            }
        };
        self.last_encoded.set(len);
        if fds.len() > scm::MAX_FDS {
            return Err(SendError::TooManyDescriptors(fds.len()));
        }
        if fds.is_empty() && self.post(&frame[MAX_HEADER..])? {
            return Ok(());
        }
        if fds.is_empty()
            && let Some(token) = self.through_lane(&frame[MAX_HEADER..], may_wait)
        {
            return self.write_all(&mut [IoSlice::new(&token)]);
        }
        self.before_frame(len);
        let mut header = [0u8; MAX_HEADER];
        let header_len = encode_header(len, &mut header);
        let start = MAX_HEADER - header_len;
        frame[start..MAX_HEADER].copy_from_slice(&header[..header_len]);
        self.send_frame_with(&frame[start..], &fds)
    }

    /// Sends `bytes` as one message (Python's `send_bytes`).
    ///
    /// The header and the payload leave in one `sendmsg`/`writev`, so a small
    /// message costs one system call and Python's `recv_bytes` reads it.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// tx.send_bytes(b"")?;
    /// tx.send_bytes(b"hello")?;
    /// assert_eq!(rx.recv_bytes()?, b"");
    /// assert_eq!(rx.recv_bytes()?, b"hello");
    ///
    /// drop(rx);
    /// assert!(tx.send_bytes(b"nobody there").unwrap_err().is_broken_pipe());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SendError::NotWritable`], [`SendError::Io`] (a closed peer is
    /// `BrokenPipe`).
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
        self.ready_to_send()?;
        self.write_frame(bytes)
    }

    /// Sends `size` bytes of `buf` starting at `offset` (all the rest for
    /// `None`), like Python's `send_bytes(buf, offset, size)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// tx.send_bytes_range(b"0123456789", 2, Some(3))?;
    /// tx.send_bytes_range(b"0123456789", 7, None)?;
    /// assert_eq!(rx.recv_bytes()?, b"234");
    /// assert_eq!(rx.recv_bytes()?, b"789");
    /// assert!(tx.send_bytes_range(b"0123", 3, Some(2)).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SendError::OutOfRange`] when the range does not lie in `buf`, and as
    /// for [`send_bytes`](Self::send_bytes).
    pub fn send_bytes_range(
        &self,
        buf: &[u8],
        offset: usize,
        size: Option<usize>,
    ) -> Result<(), SendError> {
        let size = size.unwrap_or_else(|| buf.len().saturating_sub(offset));
        let range = offset
            .checked_add(size)
            .filter(|&end| end <= buf.len())
            .map(|end| offset..end)
            .ok_or(SendError::OutOfRange {
                len: buf.len(),
                offset,
                size,
            })?;
        self.send_bytes(&buf[range])
    }

    /// Sends `value` as a pickle (protocol 3) that Python's `conn.recv()`
    /// returns as the matching object: integers, floats, `str`, lists,
    /// tuples, dicts, `None`, `bool`; bytes through
    /// [`serde_pickle::Value::Bytes`](crate::pickle::Value).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    /// use std::collections::BTreeMap;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// let value = (1i64, 2.5f64, "three".to_string(), vec![4i64, 5]);
    /// tx.send_pickle(&value)?;
    /// assert_eq!(rx.recv_pickle::<(i64, f64, String, Vec<i64>)>()?, value);
    ///
    /// tx.send_pickle(&BTreeMap::from([("k".to_string(), 1i64)]))?;
    /// assert!(rx.recv_pickle::<Vec<String>>().is_err()); // a dict is no list
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SendError::Pickle`] for a value pickle cannot express, and as for
    /// [`send_bytes`](Self::send_bytes).
    #[cfg(feature = "pickle")]
    pub fn send_pickle<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        self.ready_to_send()?;
        let bytes = serde_pickle::to_vec(&value, serde_pickle::SerOptions::new())
            .map_err(SendError::Pickle)?;
        self.write_frame(&bytes)
    }

    /// Sends a [`pickle::Value`](crate::pickle::Value) as a pickle, for
    /// objects a Rust type cannot describe exactly (bytes, tuples next to
    /// lists, sets).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::{Pipe, pickle::Value};
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// let value = Value::Tuple(vec![Value::Bytes(vec![0, 255]), Value::None]);
    /// tx.send_pickle_value(&value)?;
    /// assert_eq!(rx.recv_pickle_value()?, value);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`send_pickle`](Self::send_pickle).
    #[cfg(feature = "pickle")]
    pub fn send_pickle_value(&self, value: &serde_pickle::Value) -> Result<(), SendError> {
        self.ready_to_send()?;
        let bytes = serde_pickle::value_to_vec(value, serde_pickle::SerOptions::new())
            .map_err(SendError::Pickle)?;
        self.write_frame(&bytes)
    }

    fn check_writable(&self) -> Result<(), SendError> {
        if self.flavor.writable() {
            Ok(())
        } else {
            Err(SendError::NotWritable)
        }
    }

    /// For the blocking sends: checks the connection writes, and finishes
    /// (blocking) a frame a non-blocking send left unfinished, so frames
    /// never interleave.
    fn ready_to_send(&self) -> Result<(), SendError> {
        self.check_writable()?;
        let Some(pending) = self.pending.borrow_mut().take() else {
            return Ok(());
        };
        self.write_all(&mut [IoSlice::new(&pending.bytes[pending.written..])])
    }

    /// Makes the descriptor non-blocking unless it is already, remembering
    /// which (see [`FdMode`]).
    fn ensure_nonblocking(&self) -> io::Result<()> {
        if self.blocking.get() != FdMode::Unknown {
            return Ok(());
        }
        let flags = rustix::fs::fcntl_getfl(&self.fd)?;
        if flags.contains(rustix::fs::OFlags::NONBLOCK) {
            self.blocking.set(FdMode::AlreadyNonBlocking);
        } else {
            rustix::fs::fcntl_setfl(&self.fd, flags | rustix::fs::OFlags::NONBLOCK)?;
            self.blocking.set(FdMode::MadeNonBlocking);
        }
        Ok(())
    }

    /// Whether the blocking receives wait out an `EAGAIN` (this connection
    /// made the descriptor non-blocking itself).
    fn waits_out_eagain(&self) -> bool {
        self.blocking.get() == FdMode::MadeNonBlocking
    }

    /// One write of `parts` (with `fds`, on a Unix socket), whatever the
    /// descriptor's mode; `EINTR` is retried.
    fn write_once(&self, parts: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        if self.flavor.is_socket() {
            scm::send_vectored(&self.fd, parts, fds)
        } else {
            self.write_pipe(parts)
        }
    }

    /// Writes as much of the frame `parts` as the descriptor takes without
    /// blocking, `fds` with its first byte, and keeps the rest as the
    /// pending frame. Nothing written (`EAGAIN` at once) is
    /// [`SendError::WouldBlock`], with nothing kept.
    fn try_write(
        &self,
        mut parts: &mut [IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), SendError> {
        self.ensure_nonblocking()?;
        match self.write_once(parts, fds) {
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                return Err(SendError::WouldBlock);
            }
            Err(err) => return Err(SendError::Io(err)),
        }
        while !parts.is_empty() {
            match self.write_once(parts, &[]) {
                Ok(n) => IoSlice::advance_slices(&mut parts, n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let mut bytes = Vec::new();
                    bytes
                        .try_reserve_exact(parts.iter().map(|p| p.len()).sum())
                        .map_err(|_| SendError::Io(io::ErrorKind::OutOfMemory.into()))?;
                    for part in parts.iter() {
                        bytes.extend_from_slice(part);
                    }
                    *self.pending.borrow_mut() = Some(Pending { bytes, written: 0 });
                    return Ok(());
                }
                Err(err) => return Err(SendError::Io(err)),
            }
        }
        Ok(())
    }

    /// Writes what is left of a frame an earlier non-blocking send started,
    /// without blocking. `Ok` once nothing is left (at once when nothing
    /// was); [`SendError::WouldBlock`] when the descriptor took only part
    /// of it (or none): call again when it is writable. The blocking sends
    /// finish such a frame themselves before theirs.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// let big = vec![5u8; 8 << 20]; // more than the socket buffer holds
    /// tx.try_send_bytes(&big)?; // taken: part written, the rest kept
    /// assert!(tx.pending_send() > 0);
    /// assert!(tx.try_flush().unwrap_err().is_would_block());
    /// let reader = std::thread::spawn(move || rx.recv_bytes());
    /// while tx.pending_send() > 0 {
    ///     let _ = tx.try_flush();
    ///     std::thread::yield_now(); // an event loop would wait for writability
    /// }
    /// assert!(reader.join().unwrap()? == big);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SendError::WouldBlock`], [`SendError::NotWritable`],
    /// [`SendError::Io`] (a closed peer is `BrokenPipe`; the rest of the
    /// frame is then dropped).
    pub fn try_flush(&self) -> Result<(), SendError> {
        self.check_writable()?;
        let mut slot = self.pending.borrow_mut();
        let Some(pending) = slot.as_mut() else {
            return Ok(());
        };
        self.ensure_nonblocking()?;
        while pending.written < pending.bytes.len() {
            match self.write_once(&[IoSlice::new(&pending.bytes[pending.written..])], &[]) {
                Ok(n) => pending.written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return Err(SendError::WouldBlock);
                }
                Err(err) => {
                    *slot = None;
                    return Err(SendError::Io(err));
                }
            }
        }
        *slot = None;
        Ok(())
    }

    /// How many bytes of a frame a non-blocking send accepted are still
    /// unwritten (0 when none): [`try_flush`](Self::try_flush) or the next
    /// send writes them.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (_rx, tx) = Pipe::new()?;
    /// tx.try_send_bytes(b"small")?;
    /// assert_eq!(tx.pending_send(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn pending_send(&self) -> usize {
        self.pending
            .borrow()
            .as_ref()
            .map_or(0, |p| p.bytes.len() - p.written)
    }

    /// Sends `bytes` as one message without blocking.
    ///
    /// First finishes a frame an earlier non-blocking send left unwritten;
    /// if that cannot finish, or the descriptor takes no byte of this frame,
    /// the result is [`SendError::WouldBlock`] and the message was **not**
    /// taken: call again with it when the descriptor is writable. `Ok`
    /// means the message was taken: written whole, or in part with the rest
    /// kept in the connection ([`pending_send`](Self::pending_send)) for
    /// [`try_flush`](Self::try_flush) or the next send (blocking or not) to
    /// write first. The descriptor is made non-blocking (`O_NONBLOCK`, a
    /// flag of the open file, shared with its duplicates) the first time a
    /// non-blocking call meets it blocking; this connection's blocking
    /// calls keep blocking all the same.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::simplex()?;
    /// let mut sent = 0;
    /// // Fill the pipe: the last frame taken is partly written (writes
    /// // above `PIPE_BUF` may be split).
    /// while tx.try_send_bytes(&[1u8; 10_000]).is_ok() {
    ///     sent += 1;
    /// }
    /// assert!(tx.pending_send() > 0);
    /// // The blocking send finishes the pending frame before its own.
    /// let writer = std::thread::spawn(move || tx.send_bytes(b"last").map(|()| tx));
    /// for _ in 0..sent {
    ///     assert_eq!(rx.recv_bytes()?, [1u8; 10_000]);
    /// }
    /// assert_eq!(rx.recv_bytes()?, b"last");
    /// writer.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SendError::WouldBlock`] (nothing taken), and as for
    /// [`send_bytes`](Self::send_bytes).
    pub fn try_send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
        self.try_flush()?;
        if self.post(bytes)? {
            return Ok(());
        }
        if let Some(token) = self.through_lane(bytes, false) {
            // A token the socket refuses leaves its payload in the ring
            // unnamed: its space comes back with the next token taken.
            return self.try_write(&mut [IoSlice::new(&token)], &[]);
        }
        self.before_frame(bytes.len());
        let mut header = [0u8; MAX_HEADER];
        let header_len = encode_header(bytes.len(), &mut header);
        self.try_write(
            &mut [IoSlice::new(&header[..header_len]), IoSlice::new(bytes)],
            &[],
        )
    }

    /// Sends `value` (as [`send`](Self::send) does, descriptors included)
    /// without blocking, on the terms of
    /// [`try_send_bytes`](Self::try_send_bytes): [`SendError::WouldBlock`]
    /// means nothing was taken; `Ok` means the message was taken, perhaps
    /// with a rest to flush. Descriptors leave with the frame's first byte,
    /// so they are sent exactly once, however the frame is split.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// tx.try_send(&(7u32, "seven"))?;
    /// assert_eq!(rx.recv::<(u32, String)>()?, (7, "seven".to_owned()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`SendError::WouldBlock`] (nothing taken), and as for
    /// [`send`](Self::send).
    pub fn try_send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        self.try_flush()?;
        let (bytes, fds) = if self.flavor == Flavor::Unix {
            self.codec.encode_with_fds(value)?
        } else {
            (self.codec.encode(value)?, Vec::new())
        };
        if fds.len() > scm::MAX_FDS {
            return Err(SendError::TooManyDescriptors(fds.len()));
        }
        if fds.is_empty() && self.post(&bytes)? {
            return Ok(());
        }
        if fds.is_empty()
            && let Some(token) = self.through_lane(&bytes, false)
        {
            return self.try_write(&mut [IoSlice::new(&token)], &[]);
        }
        self.before_frame(bytes.len());
        let mut header = [0u8; MAX_HEADER];
        let header_len = encode_header(bytes.len(), &mut header);
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        self.try_write(
            &mut [IoSlice::new(&header[..header_len]), IoSlice::new(&bytes)],
            &borrowed,
        )
    }

    /// Places `payload` in this end's shared-memory lane when it goes
    /// there (see [`Pipe::new`]) and returns the token frame to write in
    /// its stead; `None`: it goes through the socket.
    fn through_lane(&self, payload: &[u8], may_wait: bool) -> Option<[u8; TOKEN_FRAME]> {
        let (lane, span) = self.reserve_in_lane(payload.len(), may_wait).ok()?;
        let token = lane.fill(span, payload).encode();
        self.before_frame(TOKEN_FRAME);
        Some(token)
    }

    /// Encodes `value` (a typed send) straight into the lane, when the
    /// value before it went there: into a span as long as that one and an
    /// eighth, or, when it turns out longer, on into `frame` (after its
    /// `MAX_HEADER` bytes), so that the value is serialized once either
    /// way.
    fn encode_into_lane<T: Serialize + ?Sized>(&self, value: &T, frame: &mut Vec<u8>) -> InLane {
        let last = self.last_encoded.get();
        if self.flavor != Flavor::Unix || last < lane::MIN_PAYLOAD {
            return InLane::NotTried;
        }
        let span_len = (last + last / 8).min(lane::MAX_PAYLOAD);
        let (lane, mut span) = match self.reserve_in_lane(span_len, true) {
            Ok(reserved) => reserved,
            Err(Refused::NoRoom) => return InLane::NoRoom,
            Err(Refused::NotHere) => return InLane::NotTried,
        };
        // A `Serialize` impl that sends on this connection meanwhile sends
        // through the socket: a token of its own would be taken first,
        // and handing its space back would free this span. (Left set if
        // the impl panics: the lane then goes unused, nothing worse.)
        self.placing.set(true);
        let encoded = self
            .codec
            .encode_with_fds_spilling(value, lane.span_bytes(&mut span), frame);
        self.placing.set(false);
        match encoded {
            Ok((Encoded::InPlace(len), fds)) if fds.len() <= scm::MAX_FDS => {
                self.last_encoded.set(len);
                let token = lane.seal(span, len).encode();
                self.before_frame(TOKEN_FRAME);
                InLane::Done(self.send_frame_with(&token, &fds))
            }
            Ok((Encoded::InPlace(_), fds)) => {
                lane.abandon(span);
                InLane::Done(Err(SendError::TooManyDescriptors(fds.len())))
            }
            Ok((Encoded::Spilled(len), fds)) => {
                lane.abandon(span);
                InLane::Spilled(len, fds)
            }
            Err(err) => {
                lane.abandon(span);
                InLane::Done(Err(err.into()))
            }
        }
    }

    /// Reserves `len` bytes of this end's lane, when there is one and it
    /// takes them: a blocking send (`may_wait`) that finds the ring full
    /// waits for room a while first. [`Refused::NoRoom`]: still full after
    /// that wait.
    fn reserve_in_lane(&self, len: usize, may_wait: bool) -> Result<(&Lane, Span), Refused> {
        let lane = self.lane.as_ref().ok_or(Refused::NotHere)?;
        if self.placing.get() {
            // Sent from inside the `Serialize` impl of a value being
            // encoded into the lane (see `encode_into_lane`).
            return Err(Refused::NotHere);
        }
        // While the receiver shares this CPU, a blocking send keeps a few
        // pieces in flight, so that what the receiver copies out is still
        // in the cache (see the lane's "Pieces"). The window only ever
        // makes a send yield a few times: room that the ring has is taken
        // after that whatever the window says.
        let waits = may_wait && self.adaptive_wait;
        let windowed = waits && self.room_spin.get().cpu_shared();
        let reserve = |window: usize| {
            move || {
                lane.reserve(len, window).map_err(|refused| match refused {
                    Refused::NoRoom => io::Error::from(io::ErrorKind::WouldBlock),
                    Refused::NotHere => io::ErrorKind::Other.into(),
                })
            }
        };
        if windowed {
            // The receiver runs only when this side yields: a few yields
            // let it take what is in flight. When they do not, it is not
            // on this CPU after all, and the window is off until the
            // next room wait finds it here again.
            match lane.reserve(len, lane::SHARED_WINDOW) {
                Err(Refused::NoRoom) => {
                    match spin::yield_for(&self.room_spin, reserve(lane::SHARED_WINDOW)) {
                        Some(Ok(span)) => return Ok((lane, span)),
                        Some(Err(_)) => return Err(Refused::NotHere),
                        None => {}
                    }
                }
                reserved => return reserved.map(|span| (lane, span)),
            }
        }
        let span = match lane.reserve(len, lane::RING) {
            // A full ring empties as the receiver takes from it: a
            // blocking send waits for that a while (yielding, so that a
            // receiver on this CPU runs) rather than copy the payload
            // through the socket, which would then block it as well.
            Err(Refused::NoRoom) if waits => match spin::spin(&self.room_spin, reserve(lane::RING))
            {
                Some(Ok(span)) => span,
                Some(Err(_)) => return Err(Refused::NotHere),
                None => return Err(Refused::NoRoom),
            },
            reserved => reserved?,
        };
        Ok((lane, span))
    }

    /// Writes the whole of `frame`, with `fds` riding on its first byte
    /// (its header, or a token): the receiver relies on that to give them
    /// to the right message (see the `recv` module).
    fn send_frame_with(&self, frame: &[u8], fds: &[OwnedFd]) -> Result<(), SendError> {
        let mut parts = [IoSlice::new(frame)];
        if fds.is_empty() {
            return self.write_all(&mut parts);
        }
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        // (On a non-blocking descriptor it waits for writability.)
        scm::send_all_vectored(&self.fd, &mut parts, &borrowed)?;
        Ok(())
    }

    /// Before a frame with a payload of `len` bytes: a large frame raises
    /// the socket's send buffer, a run of small ones puts it back (see
    /// [`LARGE_SEND_BUFFER`]). Best effort: the kernel's buffer works too,
    /// so a refused call changes nothing but speed.
    #[inline]
    fn before_frame(&self, len: usize) {
        if !self.flavor.is_socket() {
            return;
        }
        match (self.send_buffer.get(), len >= LARGE_FRAME) {
            (SendBuffer::AsMade, false) | (SendBuffer::LeftAlone, _) => {}
            (SendBuffer::Raised { before, .. }, true) => {
                self.send_buffer
                    .set(SendBuffer::Raised { before, small: 0 });
            }
            (SendBuffer::AsMade, true) => self.raise_send_buffer(),
            (SendBuffer::Raised { before, small }, false) => {
                if small + 1 < SMALL_FRAMES_TO_LOWER {
                    let small = small + 1;
                    self.send_buffer.set(SendBuffer::Raised { before, small });
                } else {
                    self.lower_send_buffer(before);
                }
            }
        }
    }

    #[cold]
    fn raise_send_buffer(&self) {
        self.send_buffer
            .set(match scm::raise_send_buffer(&self.fd, LARGE_SEND_BUFFER) {
                Ok(Some(before)) => SendBuffer::Raised { before, small: 0 },
                Ok(None) | Err(_) => SendBuffer::LeftAlone,
            });
    }

    #[cold]
    fn lower_send_buffer(&self, before: usize) {
        let _ = scm::set_send_buffer(&self.fd, before);
        self.send_buffer.set(SendBuffer::AsMade);
    }

    /// Leaves `payload` in the receiver's mailbox when the lane's protocol
    /// allows it now (see the lane's `mailbox`), ringing its doorbell if it
    /// may sleep; `false`: send it through the socket.
    fn post(&self, payload: &[u8]) -> Result<bool, SendError> {
        let Some(lane) = &self.lane else {
            return Ok(false);
        };
        if payload.len() > lane::MAIL_MAX || self.pending.borrow().is_some() {
            return Ok(false);
        }
        // A receiver that died spinning leaves the mailbox open: after
        // that many quiet posts, make sure it is there, as a write to the
        // socket would. (Sends through the socket learn it themselves.)
        if self.posts.get() >= PEER_CHECK_EVERY {
            self.posts.set(0);
            scm::send(&self.fd, &[], &[])?;
        }
        let drained = || scm::unread_by_peer(&self.fd).is_ok_and(|n| n == 0);
        match lane.post(payload, drained) {
            Posted::No => Ok(false),
            Posted::Quiet => {
                self.posts.set(self.posts.get() + 1);
                Ok(true)
            }
            Posted::RingBell => self
                .write_all(&mut [IoSlice::new(&DOORBELL)])
                .map(|()| true),
        }
    }

    /// Writes the header of `payload` and `payload` in one call: a small
    /// frame is assembled on the stack and written with `send`/`write` (the
    /// cheapest calls), a larger one gathered with `sendmsg`/`writev`.
    fn write_frame(&self, payload: &[u8]) -> Result<(), SendError> {
        if self.post(payload)? {
            return Ok(());
        }
        if (lane::PIECES_FROM..=lane::MAX_PAYLOAD).contains(&payload.len()) {
            match self.send_in_pieces(payload)? {
                Pieced::All => return Ok(()),
                Pieced::NotStarted => {}
                // The ring had no room for the rest: the message's last
                // part goes as an ordinary frame.
                Pieced::Rest(rest) => return self.write_inline(rest),
            }
        }
        if let Some(token) = self.through_lane(payload, true) {
            return self.write_all(&mut [IoSlice::new(&token)]);
        }
        self.write_inline(payload)
    }

    /// Sends `payload` through the lane in pieces of at most
    /// [`lane::PIECE`] bytes (see the lane's "Pieces"): piece frames, then a
    /// token for the last. A piece that finds no room (after the usual
    /// wait) ends the run: the rest is returned, to go through the socket
    /// as the message's last part, or the whole payload when no piece went.
    fn send_in_pieces<'p>(&self, payload: &'p [u8]) -> Result<Pieced<'p>, SendError> {
        let count = payload.len().div_ceil(lane::PIECE);
        let piece_len = payload.len().div_ceil(count);
        let mut rest = payload;
        while !rest.is_empty() {
            let (piece, after) = rest.split_at(piece_len.min(rest.len()));
            let Ok((lane, span)) = self.reserve_in_lane(piece.len(), true) else {
                return Ok(if rest.len() == payload.len() {
                    Pieced::NotStarted
                } else {
                    Pieced::Rest(rest)
                });
            };
            let token = lane.fill(span, piece);
            let frame = if after.is_empty() {
                token.encode()
            } else {
                token.encode_piece()
            };
            self.before_frame(TOKEN_FRAME);
            self.write_all(&mut [IoSlice::new(&frame)])?;
            rest = after;
        }
        Ok(Pieced::All)
    }

    /// Writes `payload` as an ordinary frame: header and payload.
    fn write_inline(&self, payload: &[u8]) -> Result<(), SendError> {
        self.before_frame(payload.len());
        if payload.len() <= SMALL_FRAME - 4 {
            let mut frame = [0u8; SMALL_FRAME];
            frame[..4].copy_from_slice(&(payload.len() as u32).to_be_bytes());
            frame[4..4 + payload.len()].copy_from_slice(payload);
            return self.write_all(&mut [IoSlice::new(&frame[..4 + payload.len()])]);
        }
        let mut header = [0u8; MAX_HEADER];
        let header_len = encode_header(payload.len(), &mut header);
        self.write_all(&mut [IoSlice::new(&header[..header_len]), IoSlice::new(payload)])
    }

    /// Writes all of `parts`, retrying after short writes and `EINTR`.
    /// Sockets use `send`/`sendmsg(MSG_NOSIGNAL)` ([`scm::send_vectored`]);
    /// pipes `write`/`writev`, which cannot raise `SIGPIPE` either: a
    /// connection that writes to a pipe made sure the signal is not at its
    /// default action (`multiproc_core::process::ignore_sigpipe_if_default`).
    ///
    /// On a non-blocking descriptor (`EAGAIN`), it waits for writability
    /// and goes on: a frame is never left half-written, so sending blocks
    /// even there.
    fn write_all(&self, mut parts: &mut [IoSlice<'_>]) -> Result<(), SendError> {
        IoSlice::advance_slices(&mut parts, 0);
        while !parts.is_empty() {
            let result = if self.flavor.is_socket() {
                scm::send_vectored(&self.fd, parts, &[])
            } else {
                self.write_pipe(parts)
            };
            match result {
                Ok(n) => IoSlice::advance_slices(&mut parts, n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    scm::wait_writable(&self.fd)?;
                }
                Err(err) => return Err(SendError::Io(err)),
            }
        }
        Ok(())
    }

    /// One `write`/`writev` of `parts` to a pipe; `EINTR` is retried.
    fn write_pipe(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            let result = if let [one] = parts {
                rustix::io::write(&self.fd, one)
            } else {
                rustix::io::writev(&self.fd, parts)
            };
            match result {
                Err(Errno::INTR) => {}
                other => return Ok(other?),
            }
        }
    }

    // ---- receiving ----------------------------------------------------

    /// Receives a value sent with [`send`](Self::send); handles inside it
    /// come back with their descriptors.
    ///
    /// A payload that is not a valid encoding is a [`RecvError::Codec`]
    /// error, and the connection stays usable: the bad frame was consumed.
    /// When the value did not decode because the kernel dropped descriptors
    /// that came with it (this process was out of descriptors), the error
    /// is [`RecvError::DescriptorsDropped`] instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// tx.send_bytes(&[0xff, 0xff, 0xff])?; // not a (u8, String)
    /// tx.send(&(1u8, "one"))?;
    /// assert!(rx.recv::<(u8, String)>().is_err());
    /// assert_eq!(rx.recv::<(u8, String)>()?, (1, "one".to_string()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`recv_bytes`](Self::recv_bytes), and [`RecvError::Codec`],
    /// [`RecvError::DescriptorsDropped`].
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, RecvError> {
        let wait = self.waits_out_eagain();
        self.recv_with(wait)
    }

    /// [`recv`](Self::recv); `wait`: wait out `EAGAIN`.
    fn recv_with<T: DeserializeOwned>(&mut self, wait: bool) -> Result<T, RecvError> {
        self.check_readable()?;
        let max = self.max_message_len;
        let codec = self.codec;
        let carries_fds = self.flavor == Flavor::Unix;
        let (payload, fds) = {
            self.rx
                .frame_in_place(max, &mut blocking_source!(self, wait))?
        };
        let value = if carries_fds {
            codec.decode_with_fds(payload.as_slice(), fds)
        } else {
            codec.decode(payload.as_slice())
        };
        // A payload in the lane goes back to its sender here.
        if let Some(buf) = payload.into_owned() {
            self.rx.recycle(buf);
        }
        value.map_err(|err| {
            if self.rx.fds_dropped() {
                RecvError::DescriptorsDropped(err)
            } else {
                RecvError::Codec(err)
            }
        })
    }

    /// Receives a pickle sent by Python's `conn.send(obj)` (or by
    /// [`send_pickle`](Self::send_pickle)) as a `T`: Python ints as integer
    /// types, floats as `f64`, `str` as `String`, lists and tuples as
    /// sequences or tuples, dicts as maps. Use
    /// [`recv_pickle_value`](Self::recv_pickle_value) for any object.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    /// use std::collections::HashMap;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// // What Python 3.11's conn.send((1, 2.5, "three", {"four": 4})) writes.
    /// tx.send_bytes(b"\x80\x04\x95#\x00\x00\x00\x00\x00\x00\x00(K\x01G@\x04\x00\x00\x00\x00\x00\x00\x8c\x05three\x94}\x94\x8c\x04four\x94K\x04st\x94.")?;
    /// let got: (i64, f64, String, HashMap<String, i64>) = rx.recv_pickle()?;
    /// assert_eq!(got, (1, 2.5, "three".into(), HashMap::from([("four".into(), 4)])));
    ///
    /// tx.send_bytes(b"not a pickle")?;
    /// assert!(rx.recv_pickle::<i64>().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`recv_bytes`](Self::recv_bytes), and [`RecvError::Pickle`]
    /// (the frame was consumed; the connection stays usable).
    #[cfg(feature = "pickle")]
    pub fn recv_pickle<T: DeserializeOwned>(&mut self) -> Result<T, RecvError> {
        let max = self.max_message_len;
        let wait = self.waits_out_eagain();
        self.check_readable()?;
        let (payload, _fds) = self
            .rx
            .frame_in_place(max, &mut blocking_source!(self, wait))?;
        serde_pickle::from_slice(payload.as_slice(), serde_pickle::DeOptions::new())
            .map_err(RecvError::Pickle)
    }

    /// Receives a pickle as a [`pickle::Value`](crate::pickle::Value), which
    /// keeps every distinction Python makes (tuple or list, bytes or str,
    /// big integers, sets).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::{Pipe, pickle::Value};
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// // What Python 3.11's conn.send((1, b"ab")) writes.
    /// tx.send_bytes(b"\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00K\x01C\x02ab\x94\x86\x94.")?;
    /// let value = rx.recv_pickle_value()?;
    /// assert_eq!(value, Value::Tuple(vec![Value::I64(1), Value::Bytes(b"ab".to_vec())]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`recv_pickle`](Self::recv_pickle).
    #[cfg(feature = "pickle")]
    pub fn recv_pickle_value(&mut self) -> Result<serde_pickle::Value, RecvError> {
        let max = self.max_message_len;
        let wait = self.waits_out_eagain();
        self.check_readable()?;
        let (payload, _fds) = self
            .rx
            .frame_in_place(max, &mut blocking_source!(self, wait))?;
        serde_pickle::value_from_slice(payload.as_slice(), serde_pickle::DeOptions::new())
            .map_err(RecvError::Pickle)
    }

    /// Receives one message as bytes (Python's `recv_bytes()`), up to
    /// [`max_message_len`](Self::max_message_len).
    ///
    /// Descriptors that arrived with the message are closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// tx.send_bytes(&[7; 100_000])?;
    /// assert_eq!(rx.recv_bytes()?, vec![7; 100_000]);
    /// drop(tx);
    /// assert!(rx.recv_bytes().unwrap_err().is_eof());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RecvError::Eof`] when the peer closed, [`RecvError::Truncated`]
    /// when it closed mid-message, [`RecvError::BadMessageLength`],
    /// [`RecvError::NotReadable`], [`RecvError::Io`].
    /// [`RecvError::WouldBlock`] when the descriptor was made non-blocking
    /// (`O_NONBLOCK`) and no whole message has arrived: the bytes received
    /// so far are kept and the next call continues the same message.
    /// (Sends on such a descriptor wait for writability instead, so a frame
    /// is never left half-written.)
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_bytes_max(self.max_message_len)
    }

    /// Receives one message of at most `maxlength` bytes (Python's
    /// `recv_bytes(maxlength)`). A longer one is
    /// [`RecvError::BadMessageLength`] and stays unread.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// tx.send_bytes(b"12345")?;
    /// assert!(rx.recv_bytes_max(4).unwrap_err().is_bad_message_length());
    /// assert_eq!(rx.recv_bytes_max(5)?, b"12345");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_max(&mut self, maxlength: usize) -> Result<Vec<u8>, RecvError> {
        self.check_readable()?;
        let wait = self.waits_out_eagain();
        let (payload, _fds) = self
            .rx
            .frame(maxlength, &mut blocking_source!(self, wait))?;
        Ok(payload.into_vec())
    }

    /// Receives one message into `buf` and returns its length (Python's
    /// `recv_bytes_into`). Payloads up to `buf.len()` go straight into `buf`
    /// without an allocation.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// let mut buf = [0u8; 4];
    /// tx.send_bytes(b"abc")?;
    /// assert_eq!(rx.recv_bytes_into(&mut buf)?, 3);
    /// assert_eq!(&buf[..3], b"abc");
    ///
    /// // Too long: the error carries the whole message.
    /// tx.send_bytes(b"abcdef")?;
    /// let err = rx.recv_bytes_into(&mut buf).unwrap_err();
    /// assert_eq!(err.into_message().unwrap(), b"abcdef");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RecvError::BufferTooShort`] with the message when it does not fit,
    /// and as for [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.check_readable()?;
        let max = self.max_message_len;
        let wait = self.waits_out_eagain();
        self.rx
            .frame_into(buf, max, &mut blocking_source!(self, wait))
    }

    /// Whether a message (or part of one, or the peer's end of file) can be
    /// read, waiting up to `timeout` for it; `None` waits forever and
    /// `Some(Duration::ZERO)` just checks (Python's `poll`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    /// use std::time::Duration;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// assert!(!rx.poll(Some(Duration::from_millis(10)))?);
    /// tx.send_bytes(b"x")?;
    /// assert!(rx.poll(None)?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Unsupported` on the sending end of a simplex pipe; the kernel's error
    /// from `poll(2)`.
    pub fn poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
        if !self.flavor.readable() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                RecvError::NotReadable,
            ));
        }
        if self.has_buffered() {
            return Ok(true);
        }
        Ok(crate::wait::poll_readable(&[self.fd.as_fd()], timeout)?[0])
    }

    /// Whether a receive would finish from the read-ahead buffer alone,
    /// with no system call: a whole message is buffered (or the end of file
    /// was seen, or a buffered header the limit refuses — the receive then
    /// returns its error at once).
    ///
    /// Ask this before waiting for readability: the descriptor does not
    /// signal bytes that were read ahead with an earlier message, nor a
    /// small message left in the end's mailbox (see [`Pipe::new`], "The
    /// mailbox") while a blocking receive listened, so a waiter that
    /// registers with a reactor while this is `true` may wait for ever.
    /// Asking also stops the listening: from then on, senders make the
    /// descriptor readable for every message. ([`has_buffered`](Self::has_buffered)
    /// tells whether any byte is buffered, perhaps only part of a message.)
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// tx.send_bytes(b"1")?;
    /// tx.send_bytes(b"2")?;
    /// assert!(!rx.has_buffered_message()); // in the socket, not read yet
    /// assert_eq!(rx.try_recv_bytes()?, b"1");
    /// assert!(rx.has_buffered_message()); // "2" came with "1"
    /// assert_eq!(rx.try_recv_bytes()?, b"2");
    /// assert!(!rx.has_buffered_message());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn has_buffered_message(&self) -> bool {
        self.rx.has_message(self.max_message_len) || self.has_mail()
    }

    /// Receives one message as bytes without blocking: from the read-ahead
    /// buffer when a whole one is there, else reading what the descriptor
    /// has.
    ///
    /// [`RecvError::WouldBlock`] when no whole message has arrived: the
    /// bytes of an unfinished frame are kept and the next receive (blocking
    /// or not) continues it, so a caller that gives up loses nothing. It is
    /// returned only after the descriptor said `EAGAIN`. The descriptor is
    /// made non-blocking the first time (see
    /// [`try_send_bytes`](Self::try_send_bytes)).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::simplex()?;
    /// assert!(rx.try_recv_bytes().unwrap_err().is_would_block());
    /// tx.send_bytes(b"now")?;
    /// assert_eq!(rx.try_recv_bytes()?, b"now");
    /// drop(tx);
    /// assert!(rx.try_recv_bytes().unwrap_err().is_eof());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RecvError::WouldBlock`], and as for
    /// [`recv_bytes`](Self::recv_bytes).
    pub fn try_recv_bytes(&mut self) -> Result<Vec<u8>, RecvError> {
        self.check_readable()?;
        self.ensure_nonblocking()?;
        let max = self.max_message_len;
        let (fd, flavor) = (self.fd.as_fd(), self.flavor);
        let mut os = Os::new(fd, flavor, false, None).with_mailbox(self.lane.as_ref());
        let (payload, _fds) = self.rx.frame(max, &mut os)?;
        Ok(payload.into_vec())
    }

    /// Receives a value sent with [`send`](Self::send) without blocking, on
    /// the terms of [`try_recv_bytes`](Self::try_recv_bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut rx, tx) = Pipe::new()?;
    /// assert!(rx.try_recv::<u64>().unwrap_err().is_would_block());
    /// tx.send(&42u64)?;
    /// assert_eq!(rx.try_recv::<u64>()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RecvError::WouldBlock`], and as for [`recv`](Self::recv).
    pub fn try_recv<T: DeserializeOwned>(&mut self) -> Result<T, RecvError> {
        self.check_readable()?;
        self.ensure_nonblocking()?;
        self.recv_with(false)
    }

    fn check_readable(&self) -> Result<(), RecvError> {
        if self.flavor.readable() {
            Ok(())
        } else {
            Err(RecvError::NotReadable)
        }
    }

    /// Closes the connection (Python's `close()`); dropping it does the
    /// same. The peer's next `recv` after what was already sent reports
    /// [`RecvError::Eof`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut a, b) = Pipe::new()?;
    /// b.send_bytes(b"bye")?;
    /// b.close();
    /// assert_eq!(a.recv_bytes()?, b"bye");
    /// assert!(a.recv_bytes().unwrap_err().is_eof());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) {
        drop(self);
    }
}

/// A connection's descriptor as a [`Source`] of bytes.
struct Os<'a> {
    fd: BorrowedFd<'a>,
    flavor: Flavor,
    /// The kernel dropped descriptors sent with the last read's bytes.
    fds_dropped: bool,
    /// Wait for readability when the descriptor says `EAGAIN` (a blocking
    /// receive on a descriptor a non-blocking call made non-blocking).
    wait: bool,
    /// A blocking receive on a blocking Unix socket: retry non-blocking
    /// reads for the connection's budget before sleeping in the kernel.
    spin: Option<&'a Cell<SpinBudget>>,
    /// The lane whose mailbox this end receives from, between frames.
    mailbox: Option<&'a Lane>,
}

/// The spin budget a receive uses: on a Unix socket whose mode this
/// connection never changed only (a non-blocking receive must not wait;
/// one on a descriptor the user made non-blocking returns `WouldBlock`
/// all the same, after the spin).
fn read_spin(
    spin: &Cell<SpinBudget>,
    on: bool,
    mode: FdMode,
    flavor: Flavor,
) -> Option<&Cell<SpinBudget>> {
    (on && flavor == Flavor::Unix && mode == FdMode::Unknown).then_some(spin)
}

impl<'a> Os<'a> {
    fn new(
        fd: BorrowedFd<'a>,
        flavor: Flavor,
        wait: bool,
        spin: Option<&'a Cell<SpinBudget>>,
    ) -> Self {
        Self {
            fd,
            flavor,
            fds_dropped: false,
            wait,
            spin,
            mailbox: None,
        }
    }

    /// This source with `lane`'s mailbox, read between frames (a Unix
    /// socket's only).
    fn with_mailbox(mut self, lane: Option<&'a Lane>) -> Self {
        self.mailbox = lane.filter(|_| self.flavor == Flavor::Unix);
        self
    }

    /// [`spin::spin`] with `read_nowait` when this receive spins.
    fn spin<T>(
        &mut self,
        mut read_nowait: impl FnMut(&mut Self) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        let budget = self.spin?;
        spin::spin(budget, || read_nowait(self))
    }

    /// Runs `read` again after waiting for readability while it says
    /// `EAGAIN` and this source waits.
    fn waiting<T>(&mut self, mut read: impl FnMut(&mut Self) -> io::Result<T>) -> io::Result<T> {
        loop {
            match read(self) {
                Err(err) if self.wait && err.kind() == io::ErrorKind::WouldBlock => {
                    crate::wait::poll_readable(&[self.fd], None)?;
                }
                other => return other,
            }
        }
    }
}

impl Source for Os<'_> {
    /// One read from the OS: `recvmsg` with room for descriptors on a Unix
    /// socket (a plain `read` there would make the kernel close descriptors
    /// that came along), `read` otherwise. `EINTR` is retried.
    ///
    /// [`scm::recv_vectored`] keeps its control buffer (room for
    /// [`scm::MAX_FDS`] descriptors, about 1 KiB) on the stack: no
    /// allocation per read, which matters for small messages.
    fn read(&mut self, bufs: &mut [IoSliceMut<'_>]) -> ReadResult {
        self.waiting(|os| os.read_once(bufs))
    }

    fn fds_dropped(&self) -> bool {
        self.fds_dropped
    }

    fn read_split(&mut self, head: &mut [u8], tail: &mut [MaybeUninit<u8>]) -> ReadResult {
        if self.flavor != Flavor::Unix {
            return self.read(&mut [IoSliceMut::new(head)]);
        }
        self.waiting(|os| {
            let got = match os.spin(|os| scm::recv_split_nowait(os.fd, head, tail, scm::MAX_FDS)) {
                Some(got) => got?,
                None => scm::recv_split(os.fd, head, tail, scm::MAX_FDS)?,
            };
            os.fds_dropped = got.fds_truncated;
            Ok((got.len, got.fds))
        })
    }

    fn read_uninit(&mut self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        self.waiting(|os| os.read_uninit_once(dst))
    }

    /// The mailbox's protocol on the receiving side (see the lane's
    /// `mailbox`): mail first; a blocking receive that spins listens, and
    /// looks at the mailbox and (with `poll`, which reads nothing) at the
    /// socket; then it stops listening, reads the socket, and puts the mail
    /// found after that read in front of its bytes.
    fn read_between_frames(&mut self, dst: &mut [u8]) -> BetweenFrames {
        let Some(lane) = self.mailbox.filter(|_| dst.len() > lane::MAILBOX) else {
            return Ok((0, Some(self.read(&mut [IoSliceMut::new(dst)])?)));
        };
        let take = |dst: &mut [u8]| lane.take_mail(dst).map_err(mailbox_error);
        let mail = take(dst)?;
        if mail > 0 {
            return Ok((mail, None));
        }
        let spins = self.spin.is_some();
        if let Some(budget) = self.spin {
            lane.listen();
            let fd = self.fd;
            let found = spin::spin(budget, || match take(dst)? {
                0 if crate::wait::readable_now(fd)? => Ok(0),
                0 => Err(io::ErrorKind::WouldBlock.into()),
                mail => Ok(mail),
            });
            match found {
                // Still listening: the next receive is likely to follow
                // soon, and takes mail first.
                Some(Ok(mail)) if mail > 0 => return Ok((mail, None)),
                // The socket has bytes: read them, and listen on after.
                Some(Ok(_)) => {
                    lane.pause_listening();
                    return self.read_before_mail(lane, dst, true);
                }
                Some(Err(err)) => return Err(err),
                None => {}
            }
        }
        if lane.stop_listening() {
            let mail = take(dst)?;
            if mail > 0 {
                return Ok((mail, None));
            }
        }
        self.read_before_mail(lane, dst, spins)
    }
}

impl Os<'_> {
    /// Reads the socket between frames (without spinning again), leaving
    /// room in `dst` for the mailbox, and puts the mail found after the
    /// read in front of its bytes (see the lane's `mailbox`, "Order");
    /// with `listen`, listens again.
    fn read_before_mail(&mut self, lane: &Lane, dst: &mut [u8], listen: bool) -> BetweenFrames {
        let spin = self.spin.take();
        let room = dst.len() - lane::MAILBOX;
        let got = self.read(&mut [IoSliceMut::new(&mut dst[..room])]);
        self.spin = spin;
        let (n, fds) = got?;
        let mail = lane.take_mail_before(dst, n).map_err(mailbox_error)?;
        if listen {
            lane.listen();
        }
        Ok((mail, Some((n, fds))))
    }
}

/// A mailbox that made no sense, as the read's error.
fn mailbox_error(err: RecvError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

impl Os<'_> {
    /// One read (see [`Source::read`]).
    fn read_once(&mut self, bufs: &mut [IoSliceMut<'_>]) -> ReadResult {
        if self.flavor == Flavor::Unix {
            let got = match self.spin(|os| scm::recv_vectored_nowait(os.fd, bufs, scm::MAX_FDS)) {
                Some(got) => got?,
                None => scm::recv_vectored(self.fd, bufs, scm::MAX_FDS)?,
            };
            self.fds_dropped = got.fds_truncated;
            return Ok((got.len, got.fds));
        }
        loop {
            match rustix::io::readv(self.fd, bufs) {
                Ok(n) => return Ok((n, Vec::new())),
                Err(Errno::INTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// One read into uninitialised memory (see [`Source::read_uninit`]).
    fn read_uninit_once(&mut self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        if self.flavor == Flavor::Unix
            && let Some(got) = self.spin(|os| recv_nowait(os.fd, dst))
        {
            return got;
        }
        loop {
            match rustix::io::read(self.fd, &mut *dst) {
                Ok((init, _)) => return Ok(init.len()),
                Err(Errno::INTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// One `recv(MSG_DONTWAIT)` into uninitialised memory; `EINTR` is retried.
fn recv_nowait(fd: BorrowedFd<'_>, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    loop {
        match rustix::net::recv(fd, &mut *dst, rustix::net::RecvFlags::DONTWAIT) {
            Ok(((init, _), _)) => return Ok(init.len()),
            Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd.as_raw_fd())
            .field("flavor", &self.flavor)
            .field("buffered", &self.rx.buffered())
            .finish_non_exhaustive()
    }
}

/// A connection inside a message: its descriptor (out of band) and flavor.
#[derive(Serialize, Deserialize)]
struct ConnectionWire {
    fd: SharedFd,
    flavor: Flavor,
    lane: Option<LaneWire>,
}

/// Sends a duplicate of the descriptor (and of its shared-memory lane's,
/// for an end of a [`Pipe::new`] pair: two descriptors); the original
/// stays open here. Bytes this end has already read ahead stay here too,
/// so send a connection before reading from it.
impl Serialize for Connection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fd = SharedFd::duplicate(&self.fd).map_err(serde::ser::Error::custom)?;
        let lane = self
            .lane
            .as_ref()
            .map(Lane::to_wire)
            .transpose()
            .map_err(serde::ser::Error::custom)?;
        ConnectionWire {
            fd,
            flavor: self.flavor,
            lane,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = ConnectionWire::deserialize(deserializer)?;
        let lane = wire
            .lane
            .map(Lane::from_wire)
            .transpose()
            .map_err(serde::de::Error::custom)?;
        Self::new(wire.fd.into_inner(), wire.flavor)
            .map(|conn| conn.with_lane(lane))
            .map_err(serde::de::Error::custom)
    }
}

/// Python's `multiprocessing.Pipe`: a connected pair of [`Connection`]s.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::Pipe;
///
/// // Duplex: both ends send and receive.
/// let (mut a, mut b) = Pipe::new()?;
/// a.send_bytes(b"ping")?;
/// assert_eq!(b.recv_bytes()?, b"ping");
/// b.send_bytes(b"pong")?;
/// assert_eq!(a.recv_bytes()?, b"pong");
///
/// // Simplex: receiver first, like Python's Pipe(False).
/// let (mut rx, tx) = Pipe::simplex()?;
/// tx.send_bytes(b"one way")?;
/// assert_eq!(rx.recv_bytes()?, b"one way");
/// assert!(rx.send_bytes(b"back").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Pipe(());

/// How far [`Connection::send_in_pieces`] got.
enum Pieced<'p> {
    /// Every piece went through the lane.
    All,
    /// None did: the ring had no room for the first.
    NotStarted,
    /// These last bytes found no room: they go through the socket.
    Rest(&'p [u8]),
}

/// How a typed send went into the lane (`Connection::encode_into_lane`).
enum InLane {
    /// Not tried: the value goes through the send buffer.
    NotTried,
    /// The ring had no room for a span, even after waiting: the value
    /// goes through the send buffer, and on without waiting again.
    NoRoom,
    /// Sent, or failed.
    Done(Result<(), SendError>),
    /// Longer than the space reserved for it: encoded into the send buffer
    /// instead (its length and descriptors), to be sent from there.
    Spilled(usize, Vec<OwnedFd>),
}

impl Pipe {
    /// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`: two ends that both
    /// send and receive, and carry descriptors (Python's `Pipe()`), with a
    /// shared-memory lane for large payloads.
    ///
    /// # The lane
    ///
    /// Payloads of 4 KiB to 2 MiB that one end sends to the other are
    /// copied into a ring in shared memory, and only a 20-byte token goes
    /// through the socket in their place (with the descriptors of a typed
    /// value's handles riding on it). The
    /// socket still carries their turn and their wake-up, so
    /// order, blocking, [`poll`](Connection::poll), [`wait`](crate::wait)
    /// and event loops behave as without it. What it buys: the kernel no
    /// longer allocates pages for each message and copies into them. In
    /// the compare demo's Pipe table (`cargo run --release --example
    /// compare -- --pipe`, see the README for the latest run) the Pipe
    /// moved 64 KiB and 1 MiB messages at 2.3-3.0× the plain socketpair's
    /// rate with the two processes on two CPUs or placed by the kernel, on
    /// a 2-vCPU Intel Xeon guest. With both on one CPU the two copies per
    /// message are all there is to it either way, and what decides is
    /// whether the bytes copied out are still in the cache: a byte string
    /// of 512 KiB or more goes in pieces of at most 256 KiB, each with a
    /// token of its own, and while the receiver shares the sender's CPU a
    /// blocking send keeps at most 512 KiB in flight, waiting (yielding)
    /// for the receiver to take them. There the Pipe made 1.44-1.47× the
    /// socketpair at 1 MiB and 1.64-1.87× at 64 KiB in two runs
    /// (0.85-1.13× before). A blocking send that finds the ring full waits
    /// a moment for room the same way, rather than send the payload
    /// through the socket.
    ///
    /// # The mailbox
    ///
    /// A message of less than 4 KiB without descriptors skips the socket
    /// altogether while the receiver is spinning for its next message (a
    /// blocking receive, for the first microseconds of its wait): it is
    /// left in the receiving end's mailbox, 64 KiB of shared memory, and
    /// the receiver takes every message there in one go. A socket spends
    /// about a microsecond of kernel time per message, however small
    /// (buffers allocated and freed, two locks, the peer's lines), and a raw
    /// socketpair is no faster; the mailbox costs a copy and a
    /// `SIOCOUTQ` query. In the compare demo's Pipe table on a 2-vCPU
    /// Intel guest (three runs), 8-byte messages moved at 1.9-2.2 M/s
    /// against the socketpair's 0.8-0.9 M/s with the two processes on two
    /// CPUs or placed by the kernel (2.2-2.6×; 0.93-1.05× before), and at
    /// 1.14-1.19 against 0.69-0.70 M/s on one CPU; an 8-byte round trip
    /// took 3.0-4.1 µs against 15-19 µs across two CPUs.
    ///
    /// The order is kept: a message is posted only when the receiver has
    /// read everything sent before it through the socket (through this end,
    /// by any process), and a receiver puts the mail it finds after a read
    /// of the socket before the bytes read. When the receiver stops
    /// spinning (it sleeps, or returns [`RecvError::WouldBlock`] to an
    /// event loop, or answers [`poll`](Connection::poll),
    /// [`wait`](crate::wait) or
    /// [`has_buffered_message`](Connection::has_buffered_message)), it says
    /// so first, and senders go through the socket again; a post that
    /// crosses that moment writes a 4-byte doorbell to the socket, which
    /// wakes the receiver. So blocking, `poll`, `wait` and event loops
    /// behave as without it. The model in `tests/loom_mailbox.rs` checks
    /// order, wake-ups and a sender killed at any step.
    ///
    /// A typed [`send`](Connection::send) encodes its value straight into
    /// the ring, into space as long as the previous value and an eighth
    /// (one that outgrows it goes on in the send buffer: a `Serialize` impl
    /// runs once), and a typed [`recv`](Connection::recv) decodes it where
    /// it lies: a typed value costs the copies of a byte string (0.57-0.99×
    /// `send_bytes` at 64 KiB and 1 MiB in the compare demo's typed table,
    /// 2-vCPU Intel guest).
    ///
    /// What it costs and how it behaves:
    ///
    /// - Making a pair takes a memfd and its mapping: about 26 µs against
    ///   8 µs for the bare socket pair (2-vCPU virtual machine), one more
    ///   descriptor in each process that holds an end, and about 8 MiB of
    ///   address space (a 4 MiB ring and a 64 KiB mailbox per direction)
    ///   whose pages are committed as they are first written. A ring that
    ///   the receiver has emptied is reused from its start, so a receiver
    ///   that keeps up keeps the memory in use near what is in flight at
    ///   once. A receiving end's read-ahead buffer is 128 KiB (64 KiB
    ///   without a lane), room for the whole mailbox in front of a read.
    ///   Frames over 2 MiB, which go through the socket, are read without
    ///   the speculative read of header and payload in one call.
    /// - An end passed in a message, or with [`inherit`](crate::inherit),
    ///   takes its lane along (a second descriptor); a child made by `fork`
    ///   shares it. A payload that does not fit in the ring now (the
    ///   receiver is behind, or stopped) goes through the socket after
    ///   that moment's wait (none for `try_send`), so the sender never
    ///   waits on the ring for longer.
    /// - The descriptor alone does not carry the lane: tokens go to an end
    ///   only after a [`Connection`] with the lane started receiving on it,
    ///   and never after [`into_fd`](Connection::into_fd) took its
    ///   descriptor out. So an end handed to Python, or to a child that
    ///   wraps the inherited descriptor with
    ///   [`Connection::from_fd`], gets ordinary frames. Once a connection
    ///   has received, its descriptor is its own (as with any read-ahead
    ///   buffer): hand it on with `into_fd` or as a handle, not by
    ///   duplicating the descriptor.
    /// - A peer killed at any moment leaves whole messages only: a payload
    ///   is in the ring before its token is written, and its space goes
    ///   back only after the receiver copied it out (see the loom model in
    ///   `tests/loom_lane.rs` and the `lane` tests in
    ///   `tests/cross_process.rs`); a message is in the mailbox whole
    ///   before the word that publishes it is stored.
    /// - A receiver killed while it spun leaves its mailbox open: messages
    ///   posted to it are lost, as those in a dead receiver's socket are,
    ///   and a sender learns of the death (a broken pipe) within 64
    ///   messages, when it checks the socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Pipe;
    ///
    /// let (mut a, b) = Pipe::new()?;
    /// let big = vec![7u8; 1 << 20];
    /// b.send_bytes(b"first")?;
    /// assert_eq!(a.recv_bytes()?, b"first"); // `a` receives: tokens may come
    /// b.send_bytes(&big)?; // through the lane
    /// assert_eq!(a.recv_bytes()?, big);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's error (e.g. `EMFILE`, or `ENOMEM` for the lane).
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> io::Result<(Connection, Connection)> {
        let (a, b) = scm::stream_pair()?;
        let (lane_a, lane_b) = Lane::pair()?;
        Ok((
            Connection::new(a, Flavor::Unix)?.with_lane(Some(lane_a)),
            Connection::new(b, Flavor::Unix)?.with_lane(Some(lane_b)),
        ))
    }

    /// `pipe2(O_CLOEXEC)`: `(receiver, sender)` (Python's `Pipe(False)`).
    /// Cannot carry descriptors.
    ///
    /// Makes sure `SIGPIPE` cannot kill the process when the receiver is
    /// gone: if it is at its default action it is set to ignore (the Rust
    /// runtime normally did that already), so the write returns
    /// `BrokenPipe`.
    ///
    /// # Errors
    ///
    /// The kernel's error (e.g. `EMFILE`).
    #[doc(alias = "pipe2")]
    pub fn simplex() -> io::Result<(Connection, Connection)> {
        let (rx, tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok((
            Connection::new(rx, Flavor::PipeReader)?,
            Connection::new(tx, Flavor::PipeWriter)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_left_after_a_blocking_receive_is_seen_before_waiting() {
        let (mut rx, tx) = Pipe::new().unwrap();
        // Through the socket: nobody listens yet. The blocking receive
        // finds it readable, reads it, and listens on after.
        tx.send_bytes(b"a").unwrap();
        assert_eq!(rx.recv_bytes().unwrap(), b"a");
        tx.send_bytes(b"b").unwrap();
        assert!(tx.lane.as_ref().unwrap().mail_posted() > 0, "not posted");
        let readable = || crate::wait::readable_now(rx.as_fd()).unwrap();
        assert!(!readable(), "the socket carried it");
        // What a waiter asks first: yes, and the listening stops.
        assert!(rx.has_buffered_message());
        tx.send_bytes(b"c").unwrap();
        assert!(
            readable(),
            "a message after the question makes the socket readable"
        );
        assert_eq!(rx.try_recv_bytes().unwrap(), b"b");
        assert_eq!(rx.try_recv_bytes().unwrap(), b"c");
        assert!(rx.try_recv_bytes().unwrap_err().is_would_block());
    }

    #[test]
    fn a_sender_learns_within_a_few_posts_that_a_listening_receiver_died() {
        let (rx, tx) = Pipe::new().unwrap();
        let mailbox = rx.lane.clone().unwrap();
        // A receiver killed while it listened: its socket closed, its
        // mailbox left open.
        drop(rx);
        mailbox.listen();
        let mut sent = 0;
        while tx.send_bytes(b"into the void").is_ok() {
            sent += 1;
            assert!(
                sent <= PEER_CHECK_EVERY,
                "{sent} sends to a dead receiver succeeded"
            );
        }
        assert!(sent > 0, "no message was posted: the test tests nothing");
    }

    #[test]
    fn small_messages_skip_the_socket_while_the_receiver_spins() {
        const COUNT: u32 = 20_000;
        let (mut rx, tx) = Pipe::new().unwrap();
        tx.send_bytes(b"start").unwrap();
        assert_eq!(rx.recv_bytes().unwrap(), b"start");
        let receiver = std::thread::spawn(move || {
            for n in 0..COUNT {
                assert_eq!(rx.recv_bytes().unwrap(), n.to_le_bytes(), "message {n}");
            }
            let value: (u32, String) = rx.recv().unwrap();
            assert_eq!(value, (COUNT, "typed".to_string()));
            rx
        });
        for n in 0..COUNT {
            tx.send_bytes(&n.to_le_bytes()).unwrap();
        }
        tx.send(&(COUNT, "typed")).unwrap();
        let rx = receiver.join().unwrap();
        let posted = tx.lane.as_ref().unwrap().mail_posted();
        assert!(posted > 0, "no message went through the mailbox");
        drop(rx);
        // Nobody receives any more: the mailbox is closed to posts.
        tx.send_bytes(b"after").unwrap_err();
    }
}

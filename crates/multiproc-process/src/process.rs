//! [`Process`]: a target function running in another OS process.
#![allow(unsafe_code)]

use multiproc_core::process::{self, Forked};
use multiproc_core::{ProcessIdentity, codec};
use multiproc_pipe::{Connection, Pipe, RecvError};
use rustix::event::{PollFd, PollFlags};
use rustix::process::Signal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bootstrap::{Marker, SPAWN_ENV, forked_child_main, reexec};
use crate::child::{
    ChildState, STATUS_DISCARDED, exit_code, killed_by, readable, ready_soon, signal_name,
};
use crate::exe::ExeId;
use crate::method::{Context, StartMethod, get_start_method};
use crate::same_cpu::{self, PinnedHere};
use crate::target::{self, Trampoline};
use crate::wire::{Header, Outcome, Payload};
use crate::{forkserver, info, registry};

/// Why [`Process::join`] has no value for you.
///
/// A second `join` (Python allows it, and returns `None` again) gives
/// [`JoinError::AlreadyJoined`] at once, whatever the first one gave; the
/// exit status stays available from [`Process::exitcode`].
#[derive(Debug)]
#[non_exhaustive]
#[doc(alias = "ProcessError")]
pub enum JoinError {
    /// The target panicked; the panic message.
    Panicked(String),
    /// The process was killed by a signal before returning a value.
    Killed {
        /// Signal number.
        signal: i32,
        /// Its name (`SIGKILL`, `SIGSEGV`, …).
        name: &'static str,
    },
    /// The process exited without returning a value (e.g. it called
    /// `std::process::exit`).
    Exited(i32),
    /// The child could not run the target: another executable, arguments
    /// that did not decode, a parent that vanished.
    Bootstrap(String),
    /// The returned value did not decode.
    Result(codec::CodecError),
    /// An earlier join already ended (with the value, or with an error).
    AlreadyJoined,
    /// The process exited without returning a value, and its exit status
    /// is unknown: the kernel discarded it, because this process ignores
    /// `SIGCHLD` (or set `SA_NOCLDWAIT`), or because another part of the
    /// program reaped the child first; or the fork server that started it
    /// died before reporting it (a daemon started there dies with that
    /// server). A child that returned a value is joined as usual all the
    /// same.
    StatusDiscarded,
    /// Talking to the child or waiting for it failed.
    Io(io::Error),
}

impl JoinError {
    /// Whether this is [`JoinError::AlreadyJoined`].
    #[must_use]
    pub fn is_already_joined(&self) -> bool {
        matches!(self, Self::AlreadyJoined)
    }

    /// Whether this is [`JoinError::StatusDiscarded`].
    #[must_use]
    pub fn is_status_discarded(&self) -> bool {
        matches!(self, Self::StatusDiscarded)
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(message) => write!(f, "process panicked: {message}"),
            Self::Killed { name, signal } => write!(f, "process killed by {name} ({signal})"),
            Self::Exited(code) => write!(f, "process exited with code {code} without a result"),
            Self::Bootstrap(why) => write!(f, "process could not start its target: {why}"),
            Self::Result(_) => f.write_str("process result did not decode"),
            Self::AlreadyJoined => f.write_str("process already joined"),
            Self::StatusDiscarded => f.write_str(
                "process exited without a result, and its exit status is lost: \
                 SIGCHLD is ignored here, another part of the program reaped it, \
                 or the fork server that started it died",
            ),
            Self::Io(_) => f.write_str("i/o error with the process"),
        }
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Result(err) => Some(err),
            Self::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for JoinError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

/// Why [`Process::join_timeout`] has no value for you: the time ran out (the
/// process runs on and can be joined again), or the join failed.
///
/// # Examples
///
/// ```
/// use multiproc_process::Process;
/// use std::time::Duration;
///
/// fn nap(ms: u64) -> u64 {
///     std::thread::sleep(Duration::from_millis(ms));
///     ms
/// }
///
/// let mut p = Process::new(nap, 300).start()?;
/// let err = p.join_timeout(Duration::from_millis(10)).unwrap_err();
/// assert!(err.is_timeout());
/// assert_eq!(err.to_string(), "timed out");
/// assert_eq!(p.join()?, 300); // still there to be joined
/// assert!(p.join().unwrap_err().is_already_joined());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum JoinTimeoutError {
    /// The deadline passed first.
    Timeout,
    /// The join ended without a value.
    Failed(JoinError),
}

impl JoinTimeoutError {
    /// Whether the deadline passed first.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// The join's error, unless the deadline passed first.
    #[must_use]
    pub fn into_join_error(self) -> Option<JoinError> {
        match self {
            Self::Timeout => None,
            Self::Failed(err) => Some(err),
        }
    }
}

impl fmt::Display for JoinTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => multiproc_core::time::Timeout.fmt(f),
            Self::Failed(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for JoinTimeoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Timeout => None,
            Self::Failed(err) => err.source(),
        }
    }
}

impl From<JoinError> for JoinTimeoutError {
    fn from(err: JoinError) -> Self {
        Self::Failed(err)
    }
}

impl From<io::Error> for JoinTimeoutError {
    fn from(err: io::Error) -> Self {
        Self::Failed(JoinError::Io(err))
    }
}

// Here rather than beside `Context`: the start methods know nothing of
// processes.
impl Context {
    /// [`Process::new`] with this context's method.
    pub fn process<A, R>(&self, target: fn(A) -> R, args: A) -> ProcessBuilder<A, R>
    where
        A: serde::Serialize + serde::de::DeserializeOwned,
        R: serde::Serialize + serde::de::DeserializeOwned,
    {
        Process::new(target, args).start_method(self.start_method())
    }
}

/// Configures a process before [`start`](ProcessBuilder::start); made by
/// [`Process::new`].
#[must_use = "a builder does nothing until `start`"]
pub struct ProcessBuilder<A, R> {
    target: fn(A) -> R,
    args: A,
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
}

impl<A, R> ProcessBuilder<A, R>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    /// The process's name (default `Process-N`, numbered as Python does).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon process dies when its parent process exits, however that
    /// happens (even `SIGKILL`), and is terminated at the parent's normal
    /// exit; a non-daemon one is waited for then.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// The start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Starts the process.
    ///
    /// The arguments are encoded first: if that fails, the error comes back
    /// and no process is started. Descriptors inside the arguments (queues,
    /// locks, connections, segments) travel with them.
    ///
    /// A [`Fork`](StartMethod::Fork) child of a thread that joined its last
    /// Fork child right after starting it (and started nothing in between)
    /// first runs on this thread's CPU, as with [`run`](Self::run).
    ///
    /// # Errors
    ///
    /// Encoding errors (`InvalidData`), and the OS's when the child cannot
    /// be created or given its arguments.
    pub fn start(self) -> io::Result<Process<R>> {
        // A thread that joins its children at once gets them started on its
        // CPU too (see `same_cpu`).
        let placement = if same_cpu::habit(|h| h.expects_join()) {
            Placement::Here
        } else {
            Placement::Anywhere
        };
        self.start_placed(placement)
    }

    /// Starts the process and waits for its value: [`start`](Self::start)
    /// then [`Process::join`], for a caller with nothing else to do
    /// meanwhile.
    ///
    /// Knowing that the caller is about to sleep lets a
    /// [`Fork`](StartMethod::Fork) child start on the caller's CPU instead
    /// of on an idle one, which would first have to be woken; for a short
    /// child that is most of the cost of a start. ([`start`](Self::start)
    /// does the same only for a thread whose last Fork child it saw joined
    /// at once: a caller that keeps working would share its CPU with the
    /// child until the scheduler moves one of them, up to a scheduler tick
    /// later.)
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_process::{Process, StartMethod};
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let value = Process::new(square, 12).start_method(StartMethod::Fork).run();
    /// assert_eq!(value.unwrap(), 144);
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`start`](Self::start) (as [`JoinError::Io`]) and for
    /// [`Process::join`].
    pub fn run(self) -> Result<R, JoinError> {
        self.start_placed(Placement::Here)?.join()
    }

    fn start_placed(self, placement: Placement) -> io::Result<Process<R>> {
        let (bytes, fds) = codec::encode_with_fds(&self.args)?;
        let payload = Payload::new(bytes, fds);
        // Every process takes a number, named or not, as in Python.
        let default_name = info::next_child_name();
        let name = self.name.unwrap_or(default_name);
        let method = self.method.unwrap_or_else(get_start_method);
        let me = info::current_process();
        let header = Header {
            exe: ExeId::current_cached()?,
            trampoline: target::offset_of(target::trampoline::<A, R> as Trampoline as usize),
            target: target::offset_of(self.target as usize),
            name: name.clone(),
            daemon: self.daemon,
            // Only a daemon needs it (two system calls).
            from_main_thread: self.daemon && rustix::thread::gettid() == rustix::process::getpid(),
            parent: ProcessIdentity::current().to_u64(),
            parent_name: me.name,
        };
        let (mut conn, theirs) = Pipe::new()?;
        conn.set_max_message_len(usize::MAX);
        let (child, late) = match method {
            // The forked child finds header and arguments in its copy of
            // our memory: nothing to send.
            StartMethod::Fork => (
                fork(theirs, &conn, header, payload, name, self.daemon, placement)?,
                None,
            ),
            StartMethod::Spawn | StartMethod::ForkServer => {
                // A spawned child proves it was started by us with a token
                // that must come first in its socket (see `bootstrap`).
                let marker = match method {
                    StartMethod::Spawn => {
                        let marker = Marker::new()?;
                        marker.announce(&conn)?;
                        Some(marker)
                    }
                    _ => None,
                };
                // Small arguments go into the socket before the child
                // exists, so it finds them waiting instead of sleeping until
                // they arrive (a cross-CPU wake-up costs tens of
                // microseconds). Larger ones could fill the socket buffer
                // with nobody reading yet: they follow the start.
                let late = if payload.len() <= SEND_AHEAD {
                    conn.send(&header).map_err(io::Error::from)?;
                    conn.send(&payload).map_err(io::Error::from)?;
                    None
                } else {
                    Some((header, payload))
                };
                let theirs = theirs.into_fd();
                let child = match &marker {
                    Some(marker) => spawn(theirs, marker, name, self.daemon)?,
                    None => forkserver::start_child(theirs, name, self.daemon)?,
                };
                (child, late)
            }
        };
        let child = Arc::new(child);
        registry::add(Arc::clone(&child));
        let sent = match late {
            None => Ok(()),
            Some((header, payload)) => conn
                .send(&header)
                .and_then(|()| conn.send(&payload))
                .map_err(io::Error::from),
        };
        let process = Process {
            child,
            conn: Some(conn),
            outcome: None,
            taken: false,
            fork: method == StartMethod::Fork,
            _result: PhantomData,
        };
        if let Err(err) = sent {
            // The child is gone already; collect it so nothing is left behind.
            let _ = process.child.wait_status(None);
            registry::remove(process.child.pid);
            return Err(err);
        }
        if process.fork {
            same_cpu::habit(|h| h.started(process.child.pid, Instant::now()));
        }
        Ok(process)
    }
}

/// Where a Fork child first runs.
#[derive(Clone, Copy)]
enum Placement {
    /// Wherever the kernel puts it (often an idle CPU).
    Anywhere,
    /// On the caller's CPU, as the caller is about to wait for it (see
    /// `same_cpu`).
    Here,
}

/// How long `join` keeps checking for the exit of a child that has already
/// reported its outcome before it sleeps.
const EXIT_SPIN: Duration = Duration::from_micros(200);

/// Largest argument payload written before the child starts: well below
/// the default `AF_UNIX` socket buffer (about 200 KiB), so the write cannot
/// block.
const SEND_AHEAD: usize = 64 * 1024;

fn fork(
    theirs: Connection,
    ours: &Connection,
    header: Header,
    payload: Payload,
    name: String,
    daemon: bool,
    placement: Placement,
) -> io::Result<ChildState> {
    // Standard output is flushed first (as Python does before `fork`), so
    // the child does not write our buffered output a second time; and its
    // lock is held across `fork`: no other thread can hold it at that
    // instant, so in the child it is free, and the child's final flush
    // cannot wait forever for a thread that does not exist there.
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::flush(&mut stdout);
    // The same for the registry of children, which the child clears before
    // its target runs, and for the record of fork servers, which the child
    // drops should it start one of its own. (The record of this process
    // needs no lock: see `info.rs`.)
    let registry = registry::hold_across_fork();
    let servers = forkserver::hold_across_fork();
    let pinned = match placement {
        Placement::Here => PinnedHere::now(),
        Placement::Anywhere => None,
    };
    // SAFETY: the contract of `multiproc_core::process::fork`: the state
    // this crate's child code needs (standard output, the registry, the
    // server record) is held across the fork, and the child never returns
    // from `forked_child_main`, which ends with `_exit`. That the target
    // runs in a child of a parent that may have other threads is this
    // start method's documented risk (`StartMethod::Fork`), which the
    // caller opted into; the default method avoids it.
    let forked = unsafe { process::fork() };
    // In both processes.
    if let Some(pinned) = &pinned {
        pinned.restore();
    }
    drop(servers);
    drop(registry);
    drop(stdout);
    let pid = match forked? {
        Forked::Parent(pid) => pid,
        Forked::Child => {
            // The child must not hold the parent's end, or it would never
            // see EOF should the parent die before talking to it.
            // SAFETY: `ours` is open in this fresh copy of the process and
            // nothing here will use it again; its owner in the parent's
            // image never runs its destructor in the child
            // (forked_child_main never returns).
            unsafe { rustix::io::close(ours.as_raw_fd()) };
            forked_child_main(theirs, header, payload);
        }
    };
    drop(theirs);
    ChildState::own(pid, name, daemon)
}

fn spawn(theirs: OwnedFd, marker: &Marker, name: String, daemon: bool) -> io::Result<ChildState> {
    let pid = reexec(SPAWN_ENV, marker, theirs)?;
    ChildState::own(pid, name, daemon)
}

/// A running (or finished) child process whose target returns an `R`.
///
/// # Examples
///
/// ```
/// use multiproc_process::Process;
///
/// fn add((a, b): (i32, i32)) -> i32 { a + b }
///
/// let mut p = Process::new(add, (2, 3)).name("adder").start()?;
/// assert_eq!(p.name(), "adder");
/// assert_eq!(p.join()?, 5);
/// assert_eq!(p.exitcode(), Some(0));
/// assert!(!p.is_alive());
///
/// fn boom(_: ()) -> () { panic!("no luck") }
/// let mut p = Process::new(boom, ()).start()?;
/// let err = p.join().unwrap_err();
/// assert!(err.to_string().contains("no luck"));
/// assert_eq!(p.exitcode(), Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Process<R> {
    child: Arc<ChildState>,
    conn: Option<Connection>,
    outcome: Option<Outcome>,
    taken: bool,
    /// Started with [`StartMethod::Fork`]: its join teaches `same_cpu`.
    fork: bool,
    _result: PhantomData<fn() -> R>,
}

impl Process<()> {
    /// A builder for a process running `target(args)` (Python's
    /// `Process(target=…, args=…)`). Non-capturing closures coerce to `fn`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<A, R>(target: fn(A) -> R, args: A) -> ProcessBuilder<A, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        ProcessBuilder {
            target,
            args,
            name: None,
            daemon: false,
            method: None,
        }
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// Waits for the process and returns the target's value.
    ///
    /// # Errors
    ///
    /// [`JoinError::Panicked`] with the panic message,
    /// [`JoinError::Killed`] naming the signal, [`JoinError::Exited`],
    /// [`JoinError::Bootstrap`], [`JoinError::AlreadyJoined`] on a
    /// second call.
    pub fn join(&mut self) -> Result<R, JoinError> {
        self.join_until(None).map_err(|err| match err {
            JoinTimeoutError::Failed(err) => err,
            JoinTimeoutError::Timeout => unreachable!("no deadline"),
        })
    }

    /// [`join`](Self::join), giving up after `timeout` (the process is left
    /// running and can be joined again).
    ///
    /// # Errors
    ///
    /// [`JoinTimeoutError::Timeout`], or [`JoinTimeoutError::Failed`] with
    /// what [`join`](Self::join) would give.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R, JoinTimeoutError> {
        self.join_until(multiproc_core::time::deadline_after(timeout))
    }

    fn join_until(&mut self, deadline: Option<Instant>) -> Result<R, JoinTimeoutError> {
        if self.taken {
            return Err(JoinError::AlreadyJoined.into());
        }
        if self.fork {
            same_cpu::habit(|h| h.joining(self.child.pid, Instant::now()));
        }
        let status = loop {
            if let Some(status) = self.child.try_status()? {
                // Whatever the child sent before it exited is buffered now.
                self.read_outcome(Some(Instant::now()))?;
                break status;
            }
            if self.conn.is_some() && self.outcome.is_none() {
                if self.wait_either(deadline)? {
                    self.read_outcome(deadline)?;
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(JoinTimeoutError::Timeout);
                }
            } else if self.exits_soon()?.is_none() && self.child.wait_status(deadline)?.is_none() {
                return Err(JoinTimeoutError::Timeout);
            }
        };
        Ok(self.conclude(status)?)
    }

    /// The join's result once the child exited with raw wait `status`
    /// and its report (if any) was read.
    fn conclude(&mut self, status: i32) -> Result<R, JoinError> {
        self.taken = true;
        registry::remove(self.child.pid);
        self.conn = None;
        match self.outcome.take() {
            Some(Outcome::Returned(payload)) => {
                let (bytes, fds) = payload.into_parts();
                codec::decode_with_fds(&bytes, fds).map_err(JoinError::Result)
            }
            Some(Outcome::Panicked(message)) => Err(JoinError::Panicked(message)),
            Some(Outcome::Bootstrap(why)) => Err(JoinError::Bootstrap(why)),
            None if status == STATUS_DISCARDED => Err(JoinError::StatusDiscarded),
            None => match killed_by(status) {
                Some(signal) => Err(JoinError::Killed {
                    signal,
                    name: signal_name(signal),
                }),
                None => Err(JoinError::Exited(exit_code(status))),
            },
        }
    }

    /// [`join`](Self::join) without blocking: `Ok(None)` while the process
    /// runs, else what `join` gives (and the process is joined: its
    /// [`exitcode`](Self::exitcode) is known). Each call reads what part of
    /// the child's report has arrived, so a child whose report is larger
    /// than a socket buffer can finish sending it and exit.
    ///
    /// For an event loop: wait until [`exit_fd`](Self::exit_fd) or
    /// [`result_fd`](Self::result_fd) is readable, call this, and repeat
    /// (asking both again: they can change). Works for every start method;
    /// `multiproc-async` does this on tokio and smol.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_process::Process;
    /// use std::time::Duration;
    ///
    /// fn late(n: u32) -> u32 {
    ///     std::thread::sleep(Duration::from_millis(50));
    ///     n
    /// }
    ///
    /// let mut p = Process::new(late, 7).start()?;
    /// assert!(p.try_join()?.is_none()); // still running
    /// let value = loop {
    ///     if let Some(value) = p.try_join()? {
    ///         break value;
    ///     }
    ///     // An event loop would wait for `exit_fd`/`result_fd` here.
    ///     multiproc_pipe::wait(&[p.exit_fd()], None)?;
    /// };
    /// assert_eq!(value, 7);
    /// assert_eq!(p.exitcode(), Some(0));
    /// assert!(p.try_join().unwrap_err().is_already_joined());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`join`](Self::join).
    pub fn try_join(&mut self) -> Result<Option<R>, JoinError> {
        if self.taken {
            return Err(JoinError::AlreadyJoined);
        }
        self.try_read_outcome()?;
        let Some(status) = self.child.try_status()? else {
            return Ok(None);
        };
        // It has exited: whatever it sent is in the socket now.
        self.try_read_outcome()?;
        self.conclude(status).map(Some)
    }

    /// Reads the child's report if it has arrived whole, without blocking;
    /// the part that has arrived stays in the connection's buffer.
    fn try_read_outcome(&mut self) -> Result<(), JoinError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if self.outcome.is_some() {
            return Ok(());
        }
        match conn.try_recv::<Outcome>() {
            Err(RecvError::WouldBlock) => Ok(()),
            received => self.take_outcome(received),
        }
    }

    /// Records what reading the child's report gave.
    fn take_outcome(&mut self, received: Result<Outcome, RecvError>) -> Result<(), JoinError> {
        match received {
            Ok(outcome) => self.outcome = Some(outcome),
            // The child is gone without a report: EOF, or a reset (a socket
            // closed with unread data resets), or half a frame (killed while
            // sending). Its exit status tells the rest.
            Err(RecvError::Eof | RecvError::Truncated { .. } | RecvError::Io(_)) => {
                self.conn = None
            }
            Err(err) => {
                return Err(JoinError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    err,
                )));
            }
        }
        Ok(())
    }

    /// A child that has sent its outcome is about to exit: checking for a
    /// while (yielding the CPU) is cheaper than sleeping, as waking a sleeper
    /// from another CPU costs tens of microseconds.
    fn exits_soon(&self) -> io::Result<Option<i32>> {
        let exit_fd = self.child.exit_fd();
        if ready_soon(&mut [PollFd::new(&exit_fd, PollFlags::IN)], EXIT_SPIN)? {
            self.child.try_status()
        } else {
            Ok(None)
        }
    }

    /// Waits until the connection has data or the child has exited; `false`
    /// when the deadline passed first.
    fn wait_either(&self, deadline: Option<Instant>) -> io::Result<bool> {
        let Some(conn) = &self.conn else {
            return Ok(true);
        };
        if conn.has_buffered() {
            return Ok(true);
        }
        loop {
            let timeout = multiproc_core::time::timespec_until(deadline);
            let exit_fd = self.child.exit_fd();
            let mut fds = [
                PollFd::new(conn, PollFlags::IN),
                PollFd::new(&exit_fd, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(n) => return Ok(n > 0),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads the child's report if one is there (or arrives by `deadline`);
    /// EOF means the child sent none.
    fn read_outcome(&mut self, deadline: Option<Instant>) -> Result<(), JoinError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if self.outcome.is_some() || !(conn.has_buffered() || readable(conn.as_fd(), deadline)?) {
            return Ok(());
        }
        let received = conn.recv::<Outcome>();
        self.take_outcome(received)
    }
}

impl<R> Process<R> {
    /// Process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.pid.as_raw_nonzero().get() as u32
    }

    /// The process's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.child.name
    }

    /// Whether the process was started as a daemon.
    #[must_use]
    pub fn daemon(&self) -> bool {
        self.child.daemon
    }

    /// Whether the process is still running.
    #[must_use]
    pub fn is_alive(&self) -> bool {
        matches!(self.child.try_status(), Ok(None))
    }

    /// Python's `exitcode`: `None` while running, the exit status, or minus
    /// the signal that killed it. Also `None` once it has exited if the
    /// kernel discarded its status (see [`JoinError::StatusDiscarded`]);
    /// [`is_alive`](Self::is_alive) tells the two apart.
    #[must_use]
    pub fn exitcode(&self) -> Option<i32> {
        self.child
            .try_status()
            .ok()
            .flatten()
            .filter(|&status| status != STATUS_DISCARDED)
            .map(exit_code)
    }

    /// Sends `SIGTERM` (Python's `terminate()`); a finished process is left
    /// alone.
    ///
    /// # Errors
    ///
    /// The OS's error from `pidfd_send_signal`.
    pub fn terminate(&self) -> io::Result<()> {
        self.child.signal(Signal::TERM)
    }

    /// Sends `SIGKILL` (Python's `kill()`).
    ///
    /// # Errors
    ///
    /// The OS's error from `pidfd_send_signal`.
    pub fn kill(&self) -> io::Result<()> {
        self.child.signal(Signal::KILL)
    }

    /// A pidfd that becomes readable when the process exits (Python's
    /// `sentinel`), for `poll` or `multiproc_pipe::wait`.
    #[must_use]
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        self.child.sentinel()
    }

    /// The descriptor that becomes readable once the exit status can be
    /// collected ([`try_join`](Self::try_join) then finishes): the pidfd
    /// of a child started with `fork` or `spawn`; for a fork-server child,
    /// the socket the server reports its exit status on (and its pidfd once
    /// that server is gone). Ask again after each wake-up: it can change.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_process::Process;
    ///
    /// fn quit(code: i32) { std::process::exit(code) }
    ///
    /// let mut p = Process::new(quit, 3).start()?;
    /// multiproc_pipe::wait(&[p.exit_fd()], None)?;
    /// assert!(p.try_join().unwrap_err().to_string().contains("code 3"));
    /// assert_eq!(p.exitcode(), Some(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.child.exit_fd()
    }

    /// The connection the child's report (its value, or its panic) arrives
    /// on, while one is expected: readable when [`try_join`](Self::try_join)
    /// can read more of it. A waiter waits for it as well as for
    /// [`exit_fd`](Self::exit_fd): a child whose value is larger than a
    /// socket buffer exits only once that value is read.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_process::Process;
    ///
    /// fn big(n: usize) -> Vec<u8> { vec![1; n] }
    ///
    /// let mut p = Process::new(big, 1 << 20).start()?;
    /// let value = loop {
    ///     if let Some(value) = p.try_join()? {
    ///         break value;
    ///     }
    ///     match p.result_fd() {
    ///         Some(result) => multiproc_pipe::wait(&[result, p.exit_fd()], None)?,
    ///         None => multiproc_pipe::wait(&[p.exit_fd()], None)?,
    ///     };
    /// };
    /// assert_eq!(value.len(), 1 << 20);
    /// assert!(p.result_fd().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn result_fd(&self) -> Option<BorrowedFd<'_>> {
        match (&self.conn, &self.outcome) {
            (Some(conn), None) if !self.taken => Some(conn.as_fd()),
            _ => None,
        }
    }

    /// Releases the handle (Python's `close()`); refused, giving the handle
    /// back, while the process runs.
    ///
    /// # Errors
    ///
    /// `Err(self)` when the process is still running.
    // Handing the handle back by value is the point of the error.
    #[allow(clippy::result_large_err)]
    pub fn close(self) -> Result<(), Self> {
        if self.is_alive() { Err(self) } else { Ok(()) }
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        // Reap a finished child now so it does not linger as a zombie; a
        // running one stays in the registry (reaped by `active_children` or
        // at exit).
        if matches!(self.child.try_status(), Ok(Some(_))) {
            registry::remove(self.child.pid);
        }
    }
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name())
            .field("pid", &self.pid())
            .field("daemon", &self.daemon())
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

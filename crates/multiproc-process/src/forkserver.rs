//! The fork server: a single-threaded process, started once by re-executing
//! the executable (so it is clean however many threads the parent has),
//! that forks children on request.
//!
//! Protocol, over one Unix-socket [`Connection`] per parent process: the
//! parent sends a [`Request`] carrying the child's bootstrap socket and a
//! status socket; the server forks, answers with the child's pid and a
//! pidfd, and when the child exits writes its raw wait status (4 bytes) to
//! the status socket.
//!
//! # When things fail
//!
//! - **A start that fails fails alone.** A step that fails on either side
//!   (out of descriptors, `fork` refused, a reply that cannot be decoded)
//!   is reported for that start, and the server goes on. Only a connection
//!   that can no longer be trusted to be in step (an I/O error part-way
//!   through a request or a reply) makes the parent *retire* its server: it
//!   closes the connection and starts a new server for the next start.
//! - **A retired server finishes its work.** After its connection closes a
//!   server takes no new request, goes on relaying the exit statuses of the
//!   children it started, and leaves when the last of them has exited — or
//!   at once when its parent process exits (it watches the parent's pidfd),
//!   taking with it the daemon children whose parent-death signal is tied to
//!   it.
//! - **A dead server is replaced.** Whoever killed it, the parent sees it
//!   (`waitpid`, or a broken connection) and starts a new one; a request
//!   that certainly did not reach the dead server is sent again. The parent
//!   reaps the servers it retires, so none is left a zombie.
//! - **The children of a dead server still report.** Their results travel
//!   over their own connection to the parent, not through the server. Their
//!   exit is then seen through their pidfd; the exit status went to whoever
//!   adopted them, so [`Process::exitcode`](crate::Process::exitcode) stays
//!   `None` and a child that sent no result joins as
//!   [`JoinError::StatusDiscarded`](crate::JoinError::StatusDiscarded).
#![allow(unsafe_code)]

use multiproc_core::process::{self, Forked};
use multiproc_core::{SharedFd, scm};
use multiproc_pipe::{Connection, RecvError, SendError};
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bootstrap::{Birth, Marker, SERVER_ENV, child_main, reexec};
use crate::child::{ChildState, ready_soon, reap};

#[derive(Serialize, Deserialize)]
struct Request {
    boot: SharedFd,
    status: SharedFd,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    /// The child's pid and a pidfd the server opened while the child was
    /// certainly its own and unreaped (the child may be gone by the time
    /// the parent reads this, so the parent could not open one itself).
    Started(i32, SharedFd),
    /// The step that failed and the OS error number (0 when there is none).
    Failed { step: String, errno: i32 },
}

/// A fork server this process started.
struct Server {
    pid: Pid,
    conn: Connection,
}

/// This process's servers.
struct Servers {
    /// The process they belong to: a child made by `fork` outside this
    /// crate inherits its parent's record, and must not talk to the
    /// parent's server.
    owner: u32,
    /// The one that takes requests.
    current: Option<Server>,
    /// Retired servers (or dead ones) not reaped yet.
    retired: Vec<Pid>,
}

static SERVERS: Mutex<Servers> = Mutex::new(Servers {
    owner: 0,
    current: None,
    retired: Vec::new(),
});

/// This process's servers, locked; a record inherited from the process
/// this one was forked from is dropped first.
fn servers() -> MutexGuard<'static, Servers> {
    let mut servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id();
    if servers.owner != me {
        // Not ours: closing our copy of the connection leaves the
        // parent's server alone, and its pids are not our children.
        servers.current = None;
        servers.retired.clear();
        servers.owner = me;
    }
    servers
}

/// Holds the servers' lock across a `fork` (drop the guard right after, in
/// both processes), so that no other thread of the parent holds it at that
/// instant and the child finds it free.
pub(crate) fn hold_across_fork() -> MutexGuard<'static, impl Sized> {
    SERVERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reaps the servers this process retired that have exited since.
pub(crate) fn reap_retired() {
    servers().reap_retired();
}

impl Servers {
    fn reap_retired(&mut self) {
        self.retired
            .retain(|&pid| matches!(crate::child::try_reap(pid), Ok(None)));
    }

    /// Closes the connection to the current server, which then leaves once
    /// its children have exited; it is reaped later.
    fn retire(&mut self) {
        if let Some(server) = self.current.take() {
            self.retired.push(server.pid);
        }
        self.reap_retired();
    }

    /// The server to ask: the current one, or a new one. (A current one
    /// that has died is found by the broken pipe of the request sent to it,
    /// retired, reaped and replaced: no system call per start to look.)
    fn running(&mut self) -> io::Result<&mut Server> {
        let server = match self.current.take() {
            Some(server) => server,
            None => launch()?,
        };
        Ok(self.current.insert(server))
    }
}

/// How a start through the server failed, which decides what becomes of
/// the server.
enum Failure {
    /// Nothing reached the server, or it answered in step: it stays.
    Alone(io::Error),
    /// The server was gone before the request reached it: it is replaced,
    /// and the request can be sent again.
    Gone(io::Error),
    /// The connection broke part-way: whether the server forked is unknown,
    /// and the connection cannot be used again.
    Broken(io::Error),
}

/// Asks the server (starting it if needed) to fork a child that will
/// bootstrap over `boot`.
pub(crate) fn start_child(boot: OwnedFd, name: String, daemon: bool) -> io::Result<ChildState> {
    let mut servers = servers();
    servers.reap_retired();
    // One retry: a server that died before our request reached it (killed
    // by someone) is replaced.
    for attempt in 0..2 {
        let server = servers.running()?;
        match server.start(&boot) {
            Ok((pid, pidfd, status)) => {
                return Ok(ChildState::relayed(pid, pidfd, name, daemon, status));
            }
            Err(Failure::Alone(err)) => return Err(err),
            Err(Failure::Gone(err)) => {
                servers.retire();
                if attempt == 1 {
                    return Err(err);
                }
            }
            Err(Failure::Broken(err)) => {
                servers.retire();
                return Err(err);
            }
        }
    }
    unreachable!("the loop returns on its second pass")
}

impl Server {
    /// One request and its reply: the child's pid, pidfd and status socket.
    fn start(&mut self, boot: &OwnedFd) -> Result<(Pid, OwnedFd, OwnedFd), Failure> {
        let (status_ours, status_theirs) = scm::stream_pair().map_err(Failure::Alone)?;
        let request = Request {
            boot: SharedFd::duplicate(boot).map_err(Failure::Alone)?,
            status: SharedFd::from(status_theirs),
        };
        match self.conn.send(&request) {
            Ok(()) => {}
            // The server closed its end before reading the whole request,
            // so it cannot have acted on it.
            Err(err) if err.is_broken_pipe() => return Err(Failure::Gone(gone(err))),
            // Failed while encoding: nothing was written.
            Err(err @ (SendError::Codec(_) | SendError::TooManyDescriptors(_))) => {
                return Err(Failure::Alone(io::Error::other(err)));
            }
            Err(err) => return Err(Failure::Broken(io::Error::other(err))),
        }
        drop(request);
        // The reply follows the server's fork within microseconds.
        let reply = ready_soon(&mut [PollFd::new(&self.conn, PollFlags::IN)], REPLY_SPIN)
            .map_err(Failure::Broken)
            .and_then(|_| match self.conn.recv::<Reply>() {
                Ok(reply) => Ok(reply),
                // A whole frame was read, so the connection is still in
                // step. (The server did start the child; with its reply
                // lost, the child finds its bootstrap socket closed when
                // our caller drops it, and exits.)
                Err(RecvError::DescriptorsDropped(_)) => Err(Failure::Alone(out_of_fds())),
                Err(err @ RecvError::Codec(_)) => Err(Failure::Alone(io::Error::new(
                    io::ErrorKind::InvalidData,
                    err,
                ))),
                Err(RecvError::Eof) => Err(Failure::Broken(gone("no reply"))),
                // Reset, not closed: the server went away with bytes of our
                // request still unread, so it never decoded the request and
                // cannot have acted on it.
                Err(RecvError::Io(err)) if err.kind() == io::ErrorKind::ConnectionReset => {
                    Err(Failure::Gone(gone(err)))
                }
                Err(err) => Err(Failure::Broken(io::Error::other(err))),
            })?;
        match reply {
            Reply::Started(pid, pidfd) => match Pid::from_raw(pid) {
                Some(pid) => Ok((pid, pidfd.into_inner(), status_ours)),
                None => Err(Failure::Alone(io::Error::other(
                    "the fork server sent pid 0",
                ))),
            },
            Reply::Failed { step, errno } => Err(Failure::Alone(Refused::error(step, errno))),
        }
    }
}

/// The error for a server that went away while we talked to it.
fn gone(cause: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        format!("the fork server went away ({cause})"),
    )
}

/// Why the kernel dropped descriptors a message carried
/// ([`RecvError::DescriptorsDropped`]): the control buffer has room for the
/// most a message may carry, so only a process out of descriptors
/// (`EMFILE`) sees that.
fn out_of_fds() -> io::Error {
    rustix::io::Errno::MFILE.into()
}

/// The server could not start a child: the step that failed, with the OS
/// error as [`source`](std::error::Error::source).
#[derive(Debug)]
struct Refused {
    step: String,
    source: Option<io::Error>,
}

impl Refused {
    fn error(step: String, errno: i32) -> io::Error {
        let source = (errno != 0).then(|| io::Error::from_raw_os_error(errno));
        let kind = source
            .as_ref()
            .map_or(io::ErrorKind::Other, io::Error::kind);
        io::Error::new(kind, Self { step, source })
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the fork server could not start the child ({})",
            self.step
        )
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Starts a server by re-executing this executable with the server marker.
fn launch() -> io::Result<Server> {
    let (ours, theirs) = scm::stream_pair()?;
    let marker = Marker::new()?;
    marker.announce(&ours)?;
    let pid = reexec(SERVER_ENV, &marker, theirs)?;
    let mut conn = Connection::from_fd(ours)?;
    conn.set_max_message_len(4096);
    Ok(Server { pid, conn })
}

/// How long a parent polls for the server's reply before sleeping.
const REPLY_SPIN: Duration = Duration::from_micros(200);

/// How long the server keeps polling without sleeping after a request or a
/// child's exit (an idle server sleeps).
const SPIN_AFTER_EVENT: Duration = Duration::from_micros(200);

/// A child the server started and has not reaped.
struct Running {
    pid: Pid,
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// The server's loop; never returns. See the module docs for when it
/// leaves.
pub(crate) fn serve(fd: OwnedFd) -> ! {
    let Ok(mut conn) = Connection::from_fd(fd) else {
        std::process::exit(0)
    };
    conn.set_max_message_len(4096);
    let Some(parent) = watch_parent() else {
        std::process::exit(0)
    };
    let me = std::process::id();
    // Looked up once here, inherited by every child (which checks it
    // against its parent's).
    let _ = crate::exe::ExeId::current_cached();
    let mut requests = Some(conn);
    let mut running: Vec<Running> = Vec::new();
    let mut last_event = Instant::now();
    loop {
        if requests.is_none() && running.is_empty() {
            std::process::exit(0);
        }
        let (request_ready, exited) = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(running.len() + 2);
            fds.push(PollFd::new(&parent, PollFlags::IN));
            if let Some(conn) = &requests {
                fds.push(PollFd::new(conn, PollFlags::IN));
            }
            let first_child = fds.len();
            fds.extend(running.iter().map(|r| PollFd::new(&r.pidfd, PollFlags::IN)));
            // Busy for a while after each event: the next request, or the
            // exit of the child just started, usually follows within
            // microseconds, and a sleeping server costs each of them a
            // cross-CPU wake-up.
            let spin = SPIN_AFTER_EVENT.saturating_sub(last_event.elapsed());
            let found = if spin.is_zero() {
                Ok(false)
            } else {
                ready_soon(&mut fds, spin)
            };
            match found {
                Ok(true) => {}
                Ok(false) => match rustix::event::poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => std::process::exit(1),
                },
                Err(_) => std::process::exit(1),
            }
            last_event = Instant::now();
            if !fds[0].revents().is_empty() {
                // The parent has exited; so do we (daemon children started
                // here die with us: their parent-death signal).
                std::process::exit(0);
            }
            let ready = first_child == 2 && !fds[1].revents().is_empty();
            let exited: Vec<usize> = fds[first_child..]
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.revents().is_empty())
                .map(|(i, _)| i)
                .collect();
            (ready, exited)
        };
        for index in exited.into_iter().rev() {
            let child = running.swap_remove(index);
            // Our own child (we forked it); its pidfd said it has exited.
            let raw = reap(child.pid).unwrap_or(0);
            // Never `SIGPIPE` (this process may have its default action): a
            // parent that dropped the child's handle closed its end.
            let _ = rustix::net::send(
                &child.status,
                &raw.to_ne_bytes(),
                rustix::net::SendFlags::NOSIGNAL,
            );
        }
        if request_ready && let Some(conn) = requests.as_mut() {
            let reply = match conn.recv::<Request>() {
                Ok(request) => match fork_child(request, me, conn, &mut running) {
                    Ok(child) => match send_started(conn, child, &mut running) {
                        Ok(()) => continue,
                        Err(Some(reply)) => reply,
                        Err(None) => {
                            requests = None;
                            continue;
                        }
                    },
                    Err(reply) => reply,
                },
                // A whole frame that did not decode, typically because its
                // descriptors could not be received: the connection is
                // still in step, so only this start fails.
                Err(RecvError::DescriptorsDropped(_)) => {
                    failed("receiving the request", &out_of_fds())
                }
                Err(err @ RecvError::Codec(_)) => Reply::Failed {
                    step: format!("receiving the request: {err}"),
                    errno: 0,
                },
                // Closed (the parent retired us, or is exiting), or out of
                // step: no more requests; report on the children running.
                Err(_) => {
                    requests = None;
                    continue;
                }
            };
            if conn.send(&reply).is_err() {
                requests = None;
            }
        }
    }
}

/// A pidfd on the process that started this server, `None` when it has
/// exited already.
fn watch_parent() -> Option<OwnedFd> {
    let parent = rustix::process::getppid()?;
    let pidfd = rustix::process::pidfd_open(parent, PidfdFlags::empty()).ok()?;
    // Had the parent exited before the pidfd was opened, we would have been
    // adopted by then, and the pidfd might name another process.
    (rustix::process::getppid() == Some(parent)).then_some(pidfd)
}

/// `Reply::Failed` for `step`, with the OS error of `err`.
fn failed(step: &str, err: &io::Error) -> Reply {
    Reply::Failed {
        step: step.into(),
        errno: err.raw_os_error().unwrap_or(0),
    }
}

/// Forks the child asked for by `request`: the child, or the reply that
/// says why not.
fn fork_child(
    request: Request,
    me: u32,
    conn: &Connection,
    running: &mut Vec<Running>,
) -> Result<Running, Reply> {
    let boot = request.boot.into_inner();
    // SAFETY: the contract of `multiproc_core::process::fork`: the server
    // is single-threaded (started by exec, no threads spawned), so the
    // child may do anything after fork; it never returns from
    // `child_main`, which ends with `_exit`.
    let pid = match unsafe { process::fork() } {
        Ok(Forked::Parent(pid)) => pid,
        Ok(Forked::Child) => {
            // The child keeps only its bootstrap socket. (Dropping the
            // records is fine: this is a fresh copy of a single-threaded
            // process.)
            running.clear();
            drop(request.status);
            // SAFETY: closes this copy's descriptor of the connection,
            // whose owner in the server's image never runs its destructor
            // here (`child_main` never returns).
            unsafe { rustix::io::close(std::os::fd::AsRawFd::as_raw_fd(conn)) };
            child_main(boot, Birth::Forked, Some(me));
        }
        Err(err) => return Err(failed("fork", &err)),
    };
    drop(boot);
    match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(pidfd) => Ok(Running {
            pid,
            pidfd,
            status: request.status.into_inner(),
        }),
        Err(err) => {
            stop(pid);
            Err(failed("pidfd_open", &err.into()))
        }
    }
}

/// Tells the parent that `child` started, and from then on watches it.
/// When the reply could not be encoded (out of descriptors for the copy of
/// the pidfd), the child is stopped and the reply to send instead is
/// returned; `Err(None)` when the connection failed.
fn send_started(
    conn: &Connection,
    child: Running,
    running: &mut Vec<Running>,
) -> Result<(), Option<Reply>> {
    let Running { pid, pidfd, status } = child;
    let reply = Reply::Started(pid.as_raw_nonzero().get(), SharedFd::from(pidfd));
    let sent = conn.send(&reply);
    let Reply::Started(_, pidfd) = reply else {
        unreachable!("built above")
    };
    let child = Running {
        pid,
        pidfd: pidfd.into_inner(),
        status,
    };
    match sent {
        Ok(()) => {
            running.push(child);
            Ok(())
        }
        Err(SendError::Codec(err)) => {
            stop(child.pid);
            // Encoding duplicates the pidfd: out of descriptors is an OS
            // error a few sources down.
            Err(Some(Reply::Failed {
                step: format!("sending the reply: {err}"),
                errno: crate::os_cause::os_cause(&err).unwrap_or(0),
            }))
        }
        Err(_) => {
            // Still ours to reap.
            running.push(child);
            Err(None)
        }
    }
}

/// Kills and reaps a child the parent will never hear of: it has not read
/// a byte yet (its parent sends nothing before our reply).
fn stop(pid: Pid) {
    let _ = rustix::process::kill_process(pid, Signal::KILL);
    let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
}

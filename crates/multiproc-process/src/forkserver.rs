//! The fork server: a single-threaded process, started once by re-executing
//! the executable (so it is clean however many threads the parent has),
//! that forks children on request.
//!
//! Protocol, over one Unix-socket [`Connection`] per parent process: the
//! parent sends a [`Request`] carrying the child's bootstrap socket and a
//! status socket; the server forks, answers with the child's pid, and when
//! the child exits writes its raw wait status (4 bytes) to the status socket.
//! The server leaves when the parent's end closes (the parent exited).
#![allow(unsafe_code)]

use multiproc_core::{SharedFd, scm};
use multiproc_pipe::Connection;
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bootstrap::{Birth, SERVER_ENV, child_main, reexec};
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
    Failed(String),
}

/// This process's connection to its server, with the pid that started it (a
/// forked child must start its own).
static SERVER: Mutex<Option<(u32, Connection)>> = Mutex::new(None);

/// Asks the server (starting it if needed) to fork a child that will
/// bootstrap over `boot`.
pub(crate) fn start_child(boot: OwnedFd, name: String, daemon: bool) -> io::Result<ChildState> {
    let mut server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id();
    // One retry: a server that died (killed by someone) is replaced.
    let mut boot = Some(boot);
    for attempt in 0..2 {
        if !matches!(&*server, Some((owner, _)) if *owner == me) {
            *server = Some((me, launch()?));
        }
        let Some((_, conn)) = server.as_mut() else {
            unreachable!("set above")
        };
        let (status_ours, status_theirs) = scm::stream_pair()?;
        let request = Request {
            boot: SharedFd::duplicate(boot.as_ref().expect("kept until sent"))?,
            status: SharedFd::from(status_theirs),
        };
        let reply = conn.send(&request).map_err(io::Error::from).and_then(|()| {
            // The reply follows the server's fork within microseconds.
            ready_soon(&mut [PollFd::new(&*conn, PollFlags::IN)], REPLY_SPIN)?;
            conn.recv::<Reply>().map_err(io::Error::from)
        });
        match reply {
            Ok(Reply::Started(pid, pidfd)) => {
                drop(boot.take());
                let pid =
                    Pid::from_raw(pid).ok_or_else(|| io::Error::other("fork server sent pid 0"))?;
                return Ok(ChildState::relayed(
                    pid,
                    pidfd.into_inner(),
                    name,
                    daemon,
                    status_ours,
                ));
            }
            Ok(Reply::Failed(why)) => return Err(io::Error::other(why)),
            Err(err) if attempt == 0 => {
                let _ = err;
                *server = None;
            }
            Err(err) => return Err(err),
        }
    }
    unreachable!("the loop returns on its second pass")
}

/// Starts a server by re-executing this executable with the server marker.
fn launch() -> io::Result<Connection> {
    let (ours, theirs) = scm::stream_pair()?;
    // The server is never joined: it exits when our end closes.
    reexec(SERVER_ENV, theirs)?;
    let mut conn = Connection::from_fd(ours)?;
    conn.set_max_message_len(4096);
    Ok(conn)
}

struct Running {
    pid: Pid,
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// How long a parent polls for the server's reply before sleeping.
const REPLY_SPIN: Duration = Duration::from_micros(200);

/// How long the server keeps polling without sleeping after a request or a
/// child's exit (an idle server sleeps).
const SPIN_AFTER_EVENT: Duration = Duration::from_micros(200);

/// The server's loop; never returns.
pub(crate) fn serve(fd: OwnedFd) -> ! {
    let Ok(mut conn) = Connection::from_fd(fd) else {
        std::process::exit(0)
    };
    conn.set_max_message_len(4096);
    let me = std::process::id();
    // Looked up once here, inherited by every child (which checks it
    // against its parent's).
    let _ = crate::target::ExeId::current_cached();
    let mut running: Vec<Running> = Vec::new();
    let mut last_event = Instant::now();
    loop {
        let (request_ready, exited) = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(running.len() + 1);
            fds.push(PollFd::new(&conn, PollFlags::IN));
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
            let ready = !fds[0].revents().is_empty();
            let exited: Vec<usize> = fds[1..]
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
            let _ = rustix::io::write(&child.status, &raw.to_ne_bytes());
        }
        if request_ready {
            let Ok(request) = conn.recv::<Request>() else {
                // The parent is gone (or spoke nonsense): so are we.
                std::process::exit(0)
            };
            let boot = request.boot.into_inner();
            // SAFETY: the server is single-threaded (started by exec, no
            // threads spawned), so the child may do anything after fork.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // The child keeps only its bootstrap socket.
                drop(running);
                drop(conn);
                drop(request.status);
                child_main(boot, Birth::Forked, Some(me));
            }
            drop(boot);
            let reply = match Pid::from_raw(pid) {
                Some(pid) if pid.as_raw_nonzero().get() > 0 => {
                    match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
                        Ok(pidfd) => match SharedFd::duplicate(&pidfd) {
                            Ok(copy) => {
                                running.push(Running {
                                    pid,
                                    pidfd,
                                    status: request.status.into_inner(),
                                });
                                Reply::Started(pid.as_raw_nonzero().get(), copy)
                            }
                            Err(e) => Reply::Failed(format!("dup failed: {e}")),
                        },
                        Err(e) => Reply::Failed(format!("pidfd_open failed: {e}")),
                    }
                }
                _ => Reply::Failed(format!("fork failed: {}", io::Error::last_os_error())),
            };
            if conn.send(&reply).is_err() {
                std::process::exit(0);
            }
        }
    }
}

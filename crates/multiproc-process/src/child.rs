//! A started child as the parent sees it: its pid, a pidfd, and how its
//! exit status reaches us.

use multiproc_core::time::timespec_until;
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, Signal};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How the exit status is collected.
enum Reaper {
    /// Our own child (fork, spawn): `waitpid`.
    Own,
    /// A fork-server child: the server reaps it and writes the raw wait
    /// status (4 bytes, native order) to this socket.
    Relayed(OwnedFd),
}

/// The parent's record of one child; shared by its `Process` handle and the
/// registry of live children.
pub(crate) struct ChildState {
    pub(crate) pid: Pid,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pidfd: OwnedFd,
    reaper: Reaper,
    /// Raw wait status once collected (a pid can be reaped only once).
    status: Mutex<Option<i32>>,
    /// Exited and reaped by the kernel before a pidfd could be opened (this
    /// process ignores SIGCHLD): `pidfd` only stands in for one.
    gone_at_start: bool,
    /// A fork-server child whose server went away before reporting its
    /// exit: the pidfd tells when it exits, and its status is lost.
    orphaned: AtomicBool,
}

impl ChildState {
    pub(crate) fn own(pid: Pid, name: String, daemon: bool) -> io::Result<Self> {
        Self::new(pid, name, daemon, Reaper::Own)
    }

    /// A fork-server child, with the pidfd the server opened for it.
    pub(crate) fn relayed(
        pid: Pid,
        pidfd: OwnedFd,
        name: String,
        daemon: bool,
        status: OwnedFd,
    ) -> Self {
        Self::with_pidfd(pid, pidfd, name, daemon, Reaper::Relayed(status))
    }

    fn new(pid: Pid, name: String, daemon: bool, reaper: Reaper) -> io::Result<Self> {
        // The pid stays ours until we reap it, so this cannot race with pid
        // reuse — unless this process ignores SIGCHLD: then the kernel reaps
        // the child itself, and one that has exited already is gone (ESRCH).
        match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(pidfd) => Ok(Self::with_pidfd(pid, pidfd, name, daemon, reaper)),
            Err(rustix::io::Errno::SRCH) => {
                let mut child = Self::with_pidfd(pid, gone()?, name, daemon, reaper);
                child.gone_at_start = true;
                *child.status.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(STATUS_DISCARDED);
                Ok(child)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn with_pidfd(pid: Pid, pidfd: OwnedFd, name: String, daemon: bool, reaper: Reaper) -> Self {
        Self {
            pid,
            name,
            daemon,
            pidfd,
            reaper,
            status: Mutex::new(None),
            gone_at_start: false,
            orphaned: AtomicBool::new(false),
        }
    }

    /// The pidfd: readable once the child has exited.
    pub(crate) fn sentinel(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The descriptor that becomes readable when the status can be collected.
    pub(crate) fn exit_fd(&self) -> BorrowedFd<'_> {
        match &self.reaper {
            Reaper::Relayed(fd) if !self.orphaned.load(Ordering::Relaxed) => fd.as_fd(),
            _ => self.pidfd.as_fd(),
        }
    }

    /// The raw wait status, if the child has exited; never blocks.
    pub(crate) fn try_status(&self) -> io::Result<Option<i32>> {
        self.wait_status(Some(Instant::now()))
    }

    /// Waits for the exit status until `deadline` (`None`: forever).
    pub(crate) fn wait_status(&self, deadline: Option<Instant>) -> io::Result<Option<i32>> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_some() {
            return Ok(*status);
        }
        let raw = match &self.reaper {
            Reaper::Own => match discarded(try_reap(self.pid))? {
                Some(raw) => raw,
                None if deadline.is_some_and(|d| d <= Instant::now()) => return Ok(None),
                None if !readable(self.exit_fd(), deadline)? => return Ok(None),
                None => discarded(reap(self.pid).map(Some))?.unwrap_or(STATUS_DISCARDED),
            },
            Reaper::Relayed(fd) => match self.relayed_status(fd.as_fd(), deadline)? {
                Some(raw) => raw,
                None => return Ok(None),
            },
        };
        *status = Some(raw);
        Ok(Some(raw))
    }

    /// The status the fork server relays over `fd`, once it is there (by
    /// `deadline`). When the server went away first, the child's exit is
    /// seen through its pidfd and its status is lost: [`STATUS_DISCARDED`].
    fn relayed_status(
        &self,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> io::Result<Option<i32>> {
        if !self.orphaned.load(Ordering::Relaxed) {
            if !readable(fd, deadline)? {
                return Ok(None);
            }
            let mut bytes = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                match rustix::io::read(fd, &mut bytes[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if got == 4 {
                return Ok(Some(i32::from_ne_bytes(bytes)));
            }
            // End of file: the server died (it writes all 4 bytes at once,
            // or nothing).
            self.orphaned.store(true, Ordering::Relaxed);
        }
        Ok(readable(self.pidfd.as_fd(), deadline)?.then_some(STATUS_DISCARDED))
    }

    /// Sends `signal` through the pidfd (cannot hit a reused pid); a child
    /// that already exited is not an error.
    pub(crate) fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.gone_at_start {
            // Its pid is perhaps someone else's by now.
            return Ok(());
        }
        match rustix::process::pidfd_send_signal(&self.pidfd, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The raw status of a child whose exit status the kernel discarded: it
/// reaped the child itself because this process ignores `SIGCHLD` (or sets
/// `SA_NOCLDWAIT`), or another part of the program reaped it first. Never a
/// real wait status (bit 31 is never set in one).
pub(crate) const STATUS_DISCARDED: i32 = i32::MIN;

/// Stands in for the pidfd of a child that was gone before we could open
/// one: the read end of a pipe whose write end is closed, readable (end of
/// file) for ever, as a pidfd of an exited process is.
fn gone() -> io::Result<OwnedFd> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    drop(write);
    Ok(read)
}

/// `waitpid`'s `ECHILD` for our own child means its status is gone (see
/// [`STATUS_DISCARDED`]); it exited, as our pidfd would show.
fn discarded(result: io::Result<Option<i32>>) -> io::Result<Option<i32>> {
    match result {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::CHILD.raw_os_error()) => {
            Ok(Some(STATUS_DISCARDED))
        }
        other => other,
    }
}

/// `waitpid(pid, 0)`: reaps our child `pid` and returns its raw wait status
/// (the form the fork server relays).
pub(crate) fn reap(pid: Pid) -> io::Result<i32> {
    loop {
        if let Some(raw) = waitpid(pid, rustix::process::WaitOptions::empty())? {
            return Ok(raw);
        }
    }
}

/// `waitpid(pid, WNOHANG)`: our child's raw wait status if it has exited.
pub(crate) fn try_reap(pid: Pid) -> io::Result<Option<i32>> {
    waitpid(pid, rustix::process::WaitOptions::NOHANG)
}

/// One `waitpid` for our child `pid`, `EINTR` retried: its raw wait status,
/// if it has exited.
fn waitpid(pid: Pid, options: rustix::process::WaitOptions) -> io::Result<Option<i32>> {
    loop {
        match rustix::process::waitpid(Some(pid), options) {
            Ok(found) => return Ok(found.map(|(_, status)| status.as_raw())),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Polls `fds` without sleeping for up to `spin` (yielding the CPU between
/// looks); whether any became ready. Worth it where an answer usually
/// comes within microseconds: sleeping and being woken from another CPU
/// costs tens of them.
pub(crate) fn ready_soon(fds: &mut [PollFd<'_>], spin: Duration) -> io::Result<bool> {
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let start = Instant::now();
    loop {
        match rustix::event::poll(fds, Some(&zero)) {
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        if start.elapsed() >= spin {
            return Ok(false);
        }
        std::thread::yield_now();
    }
}

/// Whether `fd` becomes readable by `deadline`.
pub(crate) fn readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let timeout = timespec_until(deadline);
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A raw wait status, decoded. Statuses stay raw `i32`s here because the
/// fork server relays them that way; rustix's `WaitStatus` cannot be made
/// from a raw value, std's `ExitStatus` can (and decodes it with the C
/// library's `W*` macros).
fn wait_status(raw: i32) -> std::process::ExitStatus {
    std::os::unix::process::ExitStatusExt::from_raw(raw)
}

/// The signal that killed the process whose raw wait status is `raw`, if
/// one did.
pub(crate) fn killed_by(raw: i32) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&wait_status(raw))
}

/// Python's exit code for a raw wait status: the exit status, or minus the
/// signal that killed the process. (`waitpid` without `WUNTRACED` reports
/// nothing else; any other status counts as 0.)
pub(crate) fn exit_code(raw: i32) -> i32 {
    match killed_by(raw) {
        Some(signal) => -signal,
        None => wait_status(raw).code().unwrap_or(0),
    }
}

/// `SIGKILL`, `SIGSEGV`, … for a signal number.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    const NAMES: [&str; 32] = [
        "signal 0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(signal)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or("a real-time signal")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_wait_statuses_decode_as_python_exit_codes() {
        // exit(0), exit(7), exit(255)
        assert_eq!((exit_code(0), killed_by(0)), (0, None));
        assert_eq!((exit_code(7 << 8), killed_by(7 << 8)), (7, None));
        assert_eq!((exit_code(255 << 8), killed_by(255 << 8)), (255, None));
        // SIGKILL; SIGSEGV with a core dump (bit 7)
        assert_eq!((exit_code(9), killed_by(9)), (-9, Some(9)));
        assert_eq!(
            (exit_code(0x80 | 11), killed_by(0x80 | 11)),
            (-11, Some(11))
        );
        assert_eq!(killed_by(STATUS_DISCARDED), None);
    }
}

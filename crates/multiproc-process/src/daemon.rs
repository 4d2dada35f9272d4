//! Daemon children die with their parent, even when the parent is killed
//! with `SIGKILL`.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! not the process. Where that thread lives exactly as long as the parent
//! process, the kernel's death signal is all a daemon needs
//! ([`die_with_forker`]): a parent's main thread (its exit is the process's
//! exit), and the fork server (which exits when its parent process does; a
//! fork server killed by someone else takes its daemon children with it).
//! A daemon started from any other thread (every test of a test harness
//! runs on one) would die far too early that way. Such a child opens a pidfd
//! on its parent *process* instead — checking afterwards that the parent is
//! still the one it was started by (pid + start time, so a reused pid is
//! caught) — and a small thread waits for it to become readable, which the
//! kernel makes it when the parent exits, by any means ([`die_with`]). The
//! thread costs every such daemon a thread start and, at exit, a thread to
//! tear down, so it is only the fallback.

use multiproc_core::ProcessIdentity;
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, Signal};
use std::io;

/// Asks for `SIGKILL` when the thread that forked this process exits;
/// `forker` is that thread's process, whose life must end with `parent`'s.
/// Falls back to [`die_with`] when the forker is gone but the parent is not.
/// Fails when the parent is already gone.
pub(crate) fn die_with_forker(forker: u32, parent: ProcessIdentity) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    // Set after the forker died, the signal would never come: we have a new
    // parent by then, which this check sees.
    if rustix::process::getppid().is_some_and(|p| p.as_raw_nonzero().get() as u32 == forker) {
        return Ok(());
    }
    rustix::process::set_parent_process_death_signal(None)?;
    die_with(parent)
}

/// Starts the watcher. Fails when the parent is already gone.
pub(crate) fn die_with(parent: ProcessIdentity) -> io::Result<()> {
    let pid = Pid::from_raw(parent.pid() as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())?;
    // The pidfd names whatever process has the pid now; the parent's start
    // time tells whether that is still our parent.
    if !parent.is_alive() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "parent exited"));
    }
    std::thread::Builder::new()
        .name("multiproc-daemon-watch".into())
        .spawn(move || {
            let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
            while rustix::event::poll(&mut fds, None).is_err() {}
            let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
        })?;
    Ok(())
}

//! Daemon children die with their parent, even when the parent is killed
//! with `SIGKILL`.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! not the process: a daemon started from a short-lived thread (every test
//! of a test harness runs on one) would die far too early. Instead the child
//! opens a pidfd on its parent *process* — checking afterwards that the
//! parent is still the one it was started by (pid + start time, so a reused
//! pid is caught) — and a small thread waits for it to become readable,
//! which the kernel makes it when the parent exits, by any means.
#![allow(unsafe_code)]

use multiproc_core::ProcessIdentity;
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, Signal};
use std::io;

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

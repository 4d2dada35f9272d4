//! Reclaims named segments whose creator died without unlinking them.
//!
//! On the first [`SharedMemory::create`](crate::SharedMemory::create) a
//! process starts one tracker: a small process, detached by a double fork
//! and a new session (so neither the creator's `waitpid` nor a terminal's
//! Ctrl-C reaches it), that holds one end of a `SOCK_SEQPACKET` socket pair.
//! The creator sends `+name` when it creates a segment and `-name` when the
//! name is gone (unlinked by the owner, or handed over for good). When every
//! other end is closed — the creator exited, normally or by `SIGKILL` — the
//! tracker unlinks the names still registered and exits.
//!
//! A tracker that dies (killed from outside) is replaced on the creator's
//! next record: the send fails with `EPIPE` or `ECONNRESET` (never `SIGPIPE`: it is
//! sent with `MSG_NOSIGNAL`), and the creator starts a new tracker and tells it every
//! name it still owns, which it keeps for that purpose.
//!
//! Unlike Python's resource tracker it only ever unlinks names *this*
//! process created (attachers never register), it ignores names already gone
//! (no double unlink), and it prints nothing.
//!
//! A child forked from the creator (no exec) inherits the creator's end, so the
//! creator's segments are reclaimed once the creator *and* such children are
//! gone; children that exec do not inherit it (it is close-on-exec).
#![allow(unsafe_code)]

use multiproc_core::Segment;
use multiproc_core::process::{self, Forked};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;

/// This process's tracker: its socket, the pid that started it (a forked
/// child starts its own rather than sharing a parent's record), and the
/// names registered with it (each with the inode it must still have to be
/// reclaimed, if any), so that a replacement tracker can be told them again.
struct Tracker {
    pid: u32,
    socket: OwnedFd,
    names: HashMap<String, Option<u64>>,
}

static TRACKER: Mutex<Option<Tracker>> = Mutex::new(None);

/// Records that this process created `name` (or is about to, under a name
/// nobody else can have: see `SharedMemory::create`).
pub(crate) fn register(name: &str) -> io::Result<()> {
    send(b'+', name, None)
}

/// Records that `name` is about to be given to the object with inode
/// `inode`: reclaim it only if it still names that object (the name was
/// asked for by the caller, and may belong to another process should the
/// renaming fail).
pub(crate) fn register_published(name: &str, inode: u64) -> io::Result<()> {
    send(b'+', name, Some(inode))
}

/// Records that `name` no longer needs reclaiming.
pub(crate) fn unregister(name: &str) -> io::Result<()> {
    send(b'-', name, None)
}

fn send(op: u8, name: &str, inode: Option<u64>) -> io::Result<()> {
    let mut guard = TRACKER.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    let tracker = match &mut *guard {
        Some(t) if t.pid == pid => t,
        other => other.insert(Tracker {
            pid,
            socket: start()?,
            names: HashMap::new(),
        }),
    };
    if op == b'+' {
        tracker.names.insert(name.to_owned(), inode);
    } else {
        tracker.names.remove(name);
    }
    match write_record(&tracker.socket, op, name, inode) {
        // EPIPE, or ECONNRESET when it died with records unread.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            // The tracker died (killed from outside): start another and
            // tell it every name still ours, this one included.
            tracker.socket = start()?;
            for (name, inode) in &tracker.names {
                write_record(&tracker.socket, b'+', name, *inode)?;
            }
            Ok(())
        }
        other => other,
    }
}

/// One record, one packet: `op`, the name, and for a name that must
/// still be a given object, a NUL and its inode in decimal (names never
/// hold a NUL). `MSG_NOSIGNAL`: a dead tracker is an `EPIPE` to handle,
/// never a `SIGPIPE` that would kill a process whose `SIGPIPE` is at its
/// default action.
fn write_record(socket: &OwnedFd, op: u8, name: &str, inode: Option<u64>) -> io::Result<()> {
    let mut record = Vec::with_capacity(name.len() + 22);
    record.push(op);
    record.extend_from_slice(name.as_bytes());
    if let Some(inode) = inode {
        record.push(0);
        record.extend_from_slice(inode.to_string().as_bytes());
    }
    let sent = rustix::io::retry_on_intr(|| {
        rustix::net::send(socket, &record, rustix::net::SendFlags::NOSIGNAL)
    })?;
    debug_assert_eq!(sent, record.len());
    Ok(())
}

/// A record as [`write_record`] makes it; `None` for anything else.
fn parse_record(record: &[u8]) -> Option<(u8, &str, Option<u64>)> {
    let (&op, rest) = record.split_first()?;
    let (name, inode) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (
            &rest[..at],
            Some(std::str::from_utf8(&rest[at + 1..]).ok()?.parse().ok()?),
        ),
        None => (rest, None),
    };
    Some((op, std::str::from_utf8(name).ok()?, inode))
}

/// Starts a tracker and returns this side of its socket: a
/// `SOCK_SEQPACKET` pair, so that each record arrives whole even when
/// forked children write on the same socket.
fn start() -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let (read_end, write_end) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: the contract of `multiproc_core::process::fork`. The creator
    // may run other threads; the children below touch no lock another
    // thread could hold except the allocator's, which glibc's `fork` holds
    // across the fork (the exception the contract names), and they never
    // return: they end in `exit_now`, so no destructor of the parent's
    // objects runs twice.
    let first = match unsafe { process::fork() }? {
        Forked::Parent(pid) => pid,
        Forked::Child => {
            drop(write_end);
            // SAFETY: as above; the grandchild is the tracker, the middle
            // child leaves at once so the tracker is re-parented away from
            // the creator.
            if let Ok(Forked::Child) = unsafe { process::fork() } {
                run(read_end);
            }
            process::exit_now(0);
        }
    };
    drop(read_end);
    // Reap the middle child, which exits at once.
    let _ = rustix::process::waitpid(Some(first), rustix::process::WaitOptions::empty());
    Ok(write_end)
}

/// The tracker's body: never returns.
fn run(socket: OwnedFd) -> ! {
    let _ = rustix::process::setsid();
    close_all_but(socket.as_raw_fd());
    let mut names: HashMap<String, Option<u64>> = HashMap::new();
    // A packet of one record: at most 1 + 255 + 1 + 20 bytes.
    let mut buf = [0u8; 512];
    loop {
        let n = match rustix::io::read(&socket, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        };
        match parse_record(&buf[..n]) {
            Some((b'+', name, inode)) => {
                names.insert(name.to_owned(), inode);
            }
            Some((b'-', name, _)) => {
                names.remove(name);
            }
            _ => {}
        }
    }
    for (name, inode) in names {
        // Already gone (ENOENT) is fine: nothing to report, nobody to warn.
        let _ = match inode {
            None => Segment::unlink_name(&name).map(|()| true),
            Some(inode) => Segment::unlink_name_if_inode(&name, inode),
        };
    }
    // Without running inherited destructors.
    process::exit_now(0)
}

/// Closes every descriptor but `keep`, pointing 0–2 at `/dev/null`: the
/// tracker must not hold the creator's sockets and pipes open (a peer would
/// never see EOF) nor its standard output (a parent reading it to EOF would
/// wait for the tracker).
fn close_all_but(keep: i32) {
    let open: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR,
        rustix::fs::Mode::empty(),
    )
    .ok();
    for fd in open {
        if fd == keep || null.as_ref().is_some_and(|n| n.as_raw_fd() == fd) {
            continue;
        }
        if fd <= 2 {
            if let Some(null) = &null {
                // SAFETY: `fd` is 0, 1 or 2, open in this single-threaded
                // process; dup2 replaces it atomically and the `OwnedFd` is
                // forgotten so it is not closed again.
                let mut target = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                let _ = rustix::io::dup2(null.as_fd(), &mut target);
                std::mem::forget(target);
            }
            continue;
        }
        // SAFETY: the tracker is single-threaded and about to own nothing
        // but `keep`; the listing's own descriptor is already closed, and a
        // number that is not open any more just fails with EBADF.
        unsafe { rustix::io::close(fd) };
    }
}

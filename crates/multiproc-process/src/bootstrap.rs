//! The child side, shared by every start method: one Unix-socket
//! [`Connection`] carries a [`Header`] and the encoded arguments (with their
//! descriptors) to the child, and the [`Outcome`] back.
//!
//! Fork runs [`child_main`] right after `fork`. Spawn and the fork server
//! re-execute the executable with a marker in the environment; a constructor
//! that runs before `main` ([`before_main`]) finds the marker and becomes the
//! child (or the server) without `main` ever running. That is why no set-up
//! line is needed in `main`, in tests, benches or examples.
#![allow(unsafe_code)]

use multiproc_core::{ProcessIdentity, SharedFd};
use multiproc_pipe::Connection;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::info;
use crate::target::{self, ExeId};

/// Environment marker of a spawned child: the number of its bootstrap socket.
pub(crate) const SPAWN_ENV: &str = "MULTIPROC_SPAWN_FD";
/// Environment marker of the fork server: the number of its request socket.
pub(crate) const SERVER_ENV: &str = "MULTIPROC_FORKSERVER_FD";

/// Exit code of a child that could not start its target (wrong executable,
/// undecodable arguments, parent gone).
pub(crate) const EXIT_BOOTSTRAP: i32 = 121;

/// What the parent tells the child before the arguments.
#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) exe: ExeId,
    pub(crate) trampoline: i64,
    pub(crate) target: i64,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) parent: u64,
    pub(crate) parent_name: String,
}

/// Encoded bytes plus the descriptors that belong to them.
#[derive(Serialize, Deserialize)]
pub(crate) struct Payload {
    bytes: ByteBuf,
    fds: Vec<SharedFd>,
}

impl Payload {
    pub(crate) fn new(bytes: Vec<u8>, fds: Vec<OwnedFd>) -> Self {
        Self {
            bytes: ByteBuf(bytes),
            fds: fds.into_iter().map(SharedFd::from).collect(),
        }
    }

    /// Encoded length of the value (descriptors aside).
    pub(crate) fn len(&self) -> usize {
        self.bytes.0.len()
    }

    pub(crate) fn into_parts(self) -> (Vec<u8>, Vec<OwnedFd>) {
        (
            self.bytes.0,
            self.fds.into_iter().map(SharedFd::into_inner).collect(),
        )
    }
}

/// How the target ended, as the child reports it.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome {
    Returned(Payload),
    Panicked(String),
    Bootstrap(String),
}

impl Outcome {
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Self::Returned(_) => 0,
            Self::Panicked(_) => 1,
            Self::Bootstrap(_) => EXIT_BOOTSTRAP,
        }
    }
}

/// `Vec<u8>` as one serde byte string (a plain `Vec<u8>` is a sequence of
/// single bytes: much slower for large values).
pub(crate) struct ByteBuf(pub(crate) Vec<u8>);

impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        deserializer.deserialize_byte_buf(Bytes)
    }
}

/// Runs before `main` in every executable that links this crate: turns a
/// re-executed process into the spawned child or the fork server when the
/// environment says so; otherwise does nothing.
///
/// # Safety
///
/// Called once by the C runtime before `main`; it only reads the
/// environment, and acts only when a marker is present.
#[ctor::ctor]
unsafe fn before_main() {
    crate::init();
}

/// See [`crate::init`].
pub(crate) fn take_over_if_marked() {
    if let Some(fd) = take_marker(SPAWN_ENV) {
        child_main(fd);
    }
    if let Some(fd) = take_marker(SERVER_ENV) {
        crate::forkserver::serve(fd);
    }
}

/// Re-executes this executable (`/proc/self/exe`: the very file, even if
/// its path was replaced meanwhile) with `marker=<fd number>` in the
/// environment and `fd` inherited under that number; standard input is
/// `/dev/null`. The new process becomes the child or the server before its
/// `main` runs ([`before_main`]).
pub(crate) fn reexec(marker: &str, fd: OwnedFd) -> std::io::Result<rustix::process::Pid> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    cmd.env(marker, raw.to_string())
        .stdin(std::process::Stdio::null());
    // SAFETY: runs in the forked child before exec and only calls fcntl,
    // which is async-signal-safe; it makes the one descriptor inheritable.
    unsafe {
        cmd.pre_exec(move || {
            let fd = std::os::fd::BorrowedFd::borrow_raw(raw);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(fd);
    // Dropping `std::process::Child` neither kills nor reaps: the caller
    // owns the pid.
    rustix::process::Pid::from_raw(child.id() as i32)
        .ok_or_else(|| std::io::Error::other("spawned pid 0"))
}

/// Removes `name` from the environment (so this process's own children do
/// not see it) and returns the descriptor it names.
fn take_marker(name: &str) -> Option<OwnedFd> {
    let value = std::env::var(name).ok()?;
    // SAFETY: this runs before `main` (or at its start, in `init`), before
    // the program has started threads that could read the environment.
    unsafe { std::env::remove_var(name) };
    let raw: RawFd = value.parse().ok()?;
    // Refuse anything that is not an open descriptor: a stray variable must
    // not make us adopt a random number.
    rustix::io::fcntl_getfd(
        // SAFETY: only borrowed for the duration of the check.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) },
    )
    .ok()?;
    // SAFETY: the parent put this descriptor at this number for us (the
    // marker says so) and nothing else in this fresh process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
    Some(fd)
}

/// The child: reads the header, checks the executable, runs the target and
/// exits with its code. Never returns.
pub(crate) fn child_main(fd: OwnedFd) -> ! {
    crate::registry::forget_inherited();
    // While the child is still single-threaded, set up what queues need
    // (cheap now, a kernel grace period once a thread exists).
    multiproc_queue::prepare_process();
    let code = match Connection::from_fd(fd) {
        Ok(mut conn) => {
            conn.set_max_message_len(usize::MAX);
            run_target(&mut conn)
        }
        Err(_) => EXIT_BOOTSTRAP,
    };
    std::process::exit(code)
}

fn run_target(conn: &mut Connection) -> i32 {
    let Ok(header) = conn.recv::<Header>() else {
        return EXIT_BOOTSTRAP;
    };
    let refuse = |conn: &mut Connection, why: String| {
        let _ = conn.send(&Outcome::Bootstrap(why));
        EXIT_BOOTSTRAP
    };
    match ExeId::current() {
        Ok(exe) if exe == header.exe => {}
        Ok(_) => {
            return refuse(
                conn,
                "the child runs a different executable than its parent".into(),
            );
        }
        Err(err) => return refuse(conn, format!("cannot identify the executable: {err}")),
    }
    let parent = ProcessIdentity::from_u64(header.parent);
    info::become_child(header.name, header.daemon, parent, header.parent_name);
    if header.daemon
        && let Some(parent) = parent
        && crate::daemon::die_with(parent).is_err()
    {
        // The parent is already gone: a daemon has nothing to do.
        return refuse(conn, "parent exited before the daemon started".into());
    }
    // SAFETY: the offset came from the parent's `offset_of` of a
    // `Trampoline`, and the executable is the parent's (checked above).
    let trampoline = unsafe { target::trampoline_at(header.trampoline) };
    trampoline(target::addr_at(header.target), conn)
}

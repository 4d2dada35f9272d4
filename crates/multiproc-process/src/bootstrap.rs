//! The child side, shared by every start method: one Unix-socket
//! [`Connection`] carries a [`Header`] and the encoded arguments (with their
//! descriptors) to the child, and the [`Outcome`] back (these types, and
//! how they are encoded, are in [`crate::wire`]).
//!
//! Fork runs [`child_main`] right after `fork`. Spawn and the fork server
//! re-execute the executable with a marker in the environment; a constructor
//! that runs before `main` ([`crate::entry`]) finds the marker and becomes the
//! child (or the server) without `main` ever running. That is why no set-up
//! line is needed in `main`, in tests, benches or examples.
//!
//! A marker is authenticated, so that a stray variable (left in an
//! environment, copied from a dump) never turns a program into a child: it
//! reads `<descriptor>:<token>`, a fresh random token per start, and the
//! parent has written [`MARKER_MAGIC`] and that token into the socket before
//! the child existed. The child adopts the descriptor only when exactly
//! those bytes are waiting in it ([`Marker::claim`]); anything else — no
//! such descriptor, not a socket, other bytes, nothing yet — leaves the
//! descriptor and its data untouched and lets `main` run.
#![allow(unsafe_code)]

use multiproc_core::ProcessIdentity;
use multiproc_pipe::Connection;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::exe::ExeId;
use crate::info;
use crate::target;
use crate::wire::{EXIT_BOOTSTRAP, Header, Outcome, Payload};

/// Environment marker of a spawned child: the number of its bootstrap socket.
pub(crate) const SPAWN_ENV: &str = "MULTIPROC_SPAWN_FD";
/// Environment marker of the fork server: the number of its request socket.
pub(crate) const SERVER_ENV: &str = "MULTIPROC_FORKSERVER_FD";

/// What a parent writes first into the socket of a child it re-executes,
/// before the token.
const MARKER_MAGIC: [u8; 8] = *b"MPMARK01";

/// Bytes of a marker's token.
const TOKEN_LEN: usize = 16;

/// The authenticated marker of one re-executed child: see the module docs.
pub(crate) struct Marker {
    token: [u8; TOKEN_LEN],
}

impl Marker {
    /// A marker with a fresh random token.
    pub(crate) fn new() -> std::io::Result<Self> {
        let mut token = [0u8; TOKEN_LEN];
        getrandom::fill(&mut token).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { token })
    }

    /// Writes the magic and the token into `ours`, the parent's end of the
    /// child's socket: they must be the first bytes of the stream (before
    /// any message), and are, as this is the socket's first write.
    pub(crate) fn announce(&self, ours: impl std::os::fd::AsFd) -> std::io::Result<()> {
        let mut bytes = [0u8; MARKER_MAGIC.len() + TOKEN_LEN];
        bytes[..MARKER_MAGIC.len()].copy_from_slice(&MARKER_MAGIC);
        bytes[MARKER_MAGIC.len()..].copy_from_slice(&self.token);
        // A fresh socket's buffer holds far more: the write is whole.
        let sent = rustix::net::send(ours, &bytes, rustix::net::SendFlags::NOSIGNAL)?;
        if sent != bytes.len() {
            return Err(std::io::Error::other("short write of the start marker"));
        }
        Ok(())
    }

    /// The variable's value for the child whose socket is descriptor `fd`.
    fn value(&self, fd: RawFd) -> String {
        let hex: String = self.token.iter().map(|b| format!("{b:02x}")).collect();
        format!("{fd}:{hex}")
    }

    /// The descriptor a marker variable's `value` names, if the parent
    /// announced exactly that token in it; it is then consumed from the
    /// stream and owned by the caller. `None` otherwise, with nothing
    /// touched.
    fn claim(value: &str) -> Option<OwnedFd> {
        let (fd, hex) = value.split_once(':')?;
        let raw: RawFd = fd.parse().ok()?;
        if hex.len() != 2 * TOKEN_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut expected = [0u8; MARKER_MAGIC.len() + TOKEN_LEN];
        expected[..MARKER_MAGIC.len()].copy_from_slice(&MARKER_MAGIC);
        for (i, byte) in expected[MARKER_MAGIC.len()..].iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        // SAFETY: only borrowed for the checks below, which neither close
        // it nor keep it; whether it is open at all is the first question.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
        rustix::io::fcntl_getfd(fd).ok()?;
        // Look without taking: a descriptor that is not ours keeps its data.
        let mut seen = [0u8; MARKER_MAGIC.len() + TOKEN_LEN];
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        match rustix::net::recv(fd, &mut seen, flags) {
            Ok((n, _)) if n == seen.len() && seen == expected => {}
            _ => return None,
        }
        let mut taken = [0u8; MARKER_MAGIC.len() + TOKEN_LEN];
        match rustix::net::recv(fd, &mut taken, rustix::net::RecvFlags::DONTWAIT) {
            Ok((n, _)) if n == taken.len() => {}
            _ => return None,
        }
        // SAFETY: the parent put this descriptor at this number for us (the
        // token proves it) and nothing else in this fresh process owns it.
        Some(unsafe { OwnedFd::from_raw_fd(raw) })
    }
}

/// Re-executes this executable (`/proc/self/exe`: the very file, even if
/// its path was replaced meanwhile) with `variable=<fd number>:<token>` in
/// the environment and `fd` inherited under that number; standard input is
/// `/dev/null`. The new process becomes the child or the server before its
/// `main` runs ([`crate::entry`]), if `marker` was
/// [announced](Marker::announce) on the other end of `fd`.
pub(crate) fn reexec(
    variable: &str,
    marker: &Marker,
    fd: OwnedFd,
) -> std::io::Result<rustix::process::Pid> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    cmd.env_remove(SPAWN_ENV)
        .env_remove(SERVER_ENV)
        .env(variable, marker.value(raw))
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

/// The descriptor the marker variable `name` names, if its parent
/// announced it ([`Marker::claim`]). The variable stays in the environment:
/// changing the environment races with any other thread reading it (a C
/// host's, say), and a marker left behind is harmless — its token is spent,
/// so it names nothing in this process's own children (and [`reexec`]
/// removes both markers from the environment of the children it starts).
pub(crate) fn take_marker(name: &str) -> Option<OwnedFd> {
    let value = std::env::var(name).ok()?;
    let fd = Marker::claim(&value)?;
    let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
    Some(fd)
}

/// The child of Spawn and of the fork server: receives the header and the
/// arguments, checks the executable, runs the target and exits with its
/// code. Never returns.
///
/// `server` is the fork server's pid in a child of the fork server.
pub(crate) fn child_main(fd: OwnedFd, birth: Birth, server: Option<u32>) -> ! {
    crate::registry::forget_inherited();
    let code = match Connection::from_fd(fd) {
        Ok(mut conn) => {
            conn.set_max_message_len(usize::MAX);
            receive_and_run(&mut conn, server)
        }
        Err(_) => EXIT_BOOTSTRAP,
    };
    exit(code, birth)
}

/// The child of [`StartMethod::Fork`](crate::StartMethod::Fork): header
/// and arguments are already in its memory (a copy of the parent's), so
/// nothing is received and nothing needs checking; only the outcome goes
/// back over `conn`. Never returns.
pub(crate) fn forked_child_main(mut conn: Connection, header: Header, payload: Payload) -> ! {
    crate::registry::forget_inherited();
    let code = run(&mut conn, header, payload, None);
    exit(code, Birth::Forked)
}

/// How a child came to be, which decides how it ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Birth {
    /// A copy of its parent (fork, fork server): ends with `_exit`, as
    /// Python's forked children do, so that exit handlers and library
    /// destructors inherited from the parent do not run a second time in
    /// the copy. Rust's standard output is flushed and the child's own
    /// children are seen to first. (Flushing takes the standard output
    /// lock, which nothing else can hold in the child: the fork server has
    /// no other thread, and a Fork parent holds the lock across `fork`; see
    /// `process::fork`.)
    Forked,
    /// A fresh run of the executable: ends as a program does.
    Spawned,
}

fn exit(code: i32, birth: Birth) -> ! {
    match birth {
        Birth::Spawned => std::process::exit(code),
        Birth::Forked => {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            crate::registry::finish_children();
            multiproc_core::process::exit_now(code)
        }
    }
}

/// Reports why the target cannot run; returns the exit code for that.
fn refuse(conn: &mut Connection, why: String) -> i32 {
    let _ = conn.send(&Outcome::Bootstrap(why));
    EXIT_BOOTSTRAP
}

fn receive_and_run(conn: &mut Connection, server: Option<u32>) -> i32 {
    let Ok(header) = conn.recv::<Header>() else {
        return EXIT_BOOTSTRAP;
    };
    // Cached: a fork-server child inherits the server's answer.
    match ExeId::current_cached() {
        Ok(exe) if exe == header.exe => {}
        Ok(_) => {
            return refuse(
                conn,
                "the child runs a different executable than its parent".into(),
            );
        }
        Err(err) => return refuse(conn, format!("cannot identify the executable: {err}")),
    }
    match conn.recv::<Payload>() {
        Ok(payload) => run(conn, header, payload, server),
        Err(err) => refuse(conn, format!("receiving the arguments failed: {err}")),
    }
}

/// Runs the target of a child whose executable is the parent's; `server`
/// as for [`child_main`].
fn run(conn: &mut Connection, header: Header, payload: Payload, server: Option<u32>) -> i32 {
    if payload.has_fds() {
        // Descriptors may be queues: set up what they need while the child
        // is still single-threaded (one system call now, a kernel grace
        // period once a thread exists).
        multiproc_queue::prepare_process();
    }
    let parent = ProcessIdentity::from_u64(header.parent);
    info::become_child(header.name, header.daemon, parent, header.parent_name);
    if header.daemon
        && let Some(parent) = parent
    {
        // The fork server exits when the parent does; so does the parent's
        // main thread.
        let forker = server.or(header.from_main_thread.then(|| parent.pid()));
        let watching = match forker {
            Some(forker) => crate::daemon::die_with_forker(forker, parent),
            None => crate::daemon::die_with(parent),
        };
        if watching.is_err() {
            // The parent is already gone: a daemon has nothing to do.
            return refuse(conn, "parent exited before the daemon started".into());
        }
    }
    // SAFETY: both offsets came from the parent's `offset_of`, of a
    // `Trampoline` and of the `fn(A) -> R` that instance calls, and the
    // executable is the parent's (checked by the caller, or a forked copy):
    // the addresses are those functions here.
    unsafe {
        let trampoline = target::trampoline_at(header.trampoline);
        trampoline(target::addr_at(header.target), payload, conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_claimed_only_with_its_own_token() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let (ours, theirs) = multiproc_core::scm::stream_pair().unwrap();
        let marker = Marker::new().unwrap();
        let other = Marker::new().unwrap();
        marker.announce(&ours).unwrap();
        let raw = theirs.as_raw_fd();
        // Another token, malformed values, a number that is not ours: the
        // socket keeps its bytes.
        for value in [
            other.value(raw),
            format!("{raw}"),
            format!("{raw}:zz"),
            format!("{raw}:{}", "0".repeat(2 * TOKEN_LEN)),
            marker.value(999_999),
        ] {
            assert!(Marker::claim(&value).is_none(), "{value}");
        }
        // The right one takes the descriptor and consumes the marker only.
        let theirs = theirs.into_raw_fd();
        rustix::net::send(&ours, b"next", rustix::net::SendFlags::empty()).unwrap();
        let claimed = Marker::claim(&marker.value(theirs)).expect("our own marker");
        let mut rest = [0u8; 16];
        let (n, _) =
            rustix::net::recv(&claimed, &mut rest, rustix::net::RecvFlags::DONTWAIT).unwrap();
        assert_eq!(&rest[..n], b"next");
        // Spent: the same value claims nothing a second time.
        let leaked = claimed.into_raw_fd();
        assert!(Marker::claim(&marker.value(leaked)).is_none());
        // SAFETY: `leaked` is the descriptor `claimed` owned; nothing else
        // closes it.
        drop(unsafe { OwnedFd::from_raw_fd(leaked) });
    }
}

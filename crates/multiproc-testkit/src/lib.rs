//! Test support for multiproc's cross-process tests (not published).
//!
//! Cross-process tests re-execute their own test binary as the child: a test
//! file with `harness = false` hands its `main` to [`run`], which either
//! plays the child *role* named in the environment or runs the tests through
//! `libtest-mimic` (same command line and output as the built-in harness).
//!
//! ```no_run
//! use multiproc_testkit::{run, spawn, tests, Trial};
//!
//! fn child_says_hi(_args: &[String]) {
//!     println!("hi");
//! }
//!
//! fn parent_sees_hi() {
//!     let out = spawn("says_hi", &[], &[]).unwrap().wait_with_output().unwrap();
//!     assert!(out.status.success());
//! }
//!
//! fn main() {
//!     run(&[("says_hi", child_says_hi)], tests![parent_sees_hi]);
//! }
//! ```
#![allow(unsafe_code)]
#![allow(missing_docs)]

pub use libtest_mimic::{Failed, Trial};

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "MULTIPROC_TEST_ROLE";
const FDS_ENV: &str = "MULTIPROC_TEST_FDS";

/// A child role: what a re-executed test binary does, given its arguments.
pub type Role = (&'static str, fn(&[String]));

/// Turns test functions into trials named after them.
#[macro_export]
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        vec![$($crate::Trial::test(stringify!($name), || {
            $name();
            Ok(())
        })),*]
    };
}

/// The `main` of a `harness = false` test file: plays the role named in the
/// environment (and exits), or runs `tests` and exits with their verdict.
pub fn run(roles: &[Role], tests: Vec<Trial>) -> ! {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let Some((_, body)) = roles.iter().find(|(name, _)| *name == role) else {
            eprintln!("unknown test role {role:?}");
            std::process::exit(2);
        };
        body(&args);
        std::process::exit(0);
    }
    let args = libtest_mimic::Arguments::from_args();
    let ours = || [shm_names(SHM_PREFIX), shm_names(PYTHON_SHM_PREFIX)].concat();
    let before = ours();
    let conclusion = libtest_mimic::run(&args, tests);
    let leaked: Vec<String> = ours().into_iter().filter(|n| !before.contains(n)).collect();
    if !leaked.is_empty() {
        eprintln!("error: the tests left shared memory behind in /dev/shm: {leaked:?}");
        std::process::exit(1);
    }
    conclusion.exit()
}

/// Prefix of the names multiproc generates in `/dev/shm`.
pub const SHM_PREFIX: &str = "mp_";

/// Prefix of the names Python's `shared_memory` generates.
pub const PYTHON_SHM_PREFIX: &str = "psm_";

/// Starts this test binary again as `role` with `args`. The descriptors in
/// `fds` are inherited under the same numbers; the child collects them with
/// [`inherited_fds`]. Standard input is closed, output is inherited.
pub fn spawn(role: &str, args: &[&str], fds: &[BorrowedFd<'_>]) -> io::Result<Child> {
    command(role, args, fds).stdin(Stdio::null()).spawn()
}

/// The command [`spawn`] would run, for callers that want other stdio.
pub fn command(role: &str, args: &[&str], fds: &[BorrowedFd<'_>]) -> Command {
    let mut cmd = Command::new(current_test_binary());
    play(&mut cmd, role, args, fds);
    cmd
}

/// The command [`spawn`] would run, started instead in a new pid namespace
/// (through util-linux's `unshare --pid --fork`), where the parent's
/// process and thread ids name nothing; `None`, after saying so on
/// standard error, when this machine does not allow that (no `unshare`, or
/// no permission to create the namespace).
pub fn command_in_new_pid_namespace(
    role: &str,
    args: &[&str],
    fds: &[BorrowedFd<'_>],
) -> Option<Command> {
    let usable = Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        eprintln!("    cannot create a pid namespace here (unshare --pid): scenario skipped");
        return None;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork"]).arg(current_test_binary());
    play(&mut cmd, role, args, fds);
    Some(cmd)
}

fn current_test_binary() -> std::path::PathBuf {
    std::env::current_exe().expect("test binary path")
}

/// Makes `cmd` (which runs this test binary) play `role` with `args`,
/// inheriting `fds` under the same numbers.
fn play(cmd: &mut Command, role: &str, args: &[&str], fds: &[BorrowedFd<'_>]) {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let list = raw
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    cmd.args(args).env(ROLE_ENV, role).env(FDS_ENV, list);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls fcntl(F_SETFD), which is async-signal-safe; it touches no locks
    // or allocations. Clearing FD_CLOEXEC there changes the child's
    // descriptor table only.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &raw {
                let fd = BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            Ok(())
        });
    }
}

/// In a child started by [`spawn`]: takes ownership of the inherited
/// descriptors, in the order they were given, and marks them close-on-exec.
pub fn inherited_fds() -> Vec<OwnedFd> {
    let list = std::env::var(FDS_ENV).unwrap_or_default();
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let raw: RawFd = s.parse().expect("descriptor number");
            // SAFETY: the parent listed this number because it passed the
            // descriptor to us open; nothing else in this process owns it
            // and this function is called once per child.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).expect("fcntl");
            fd
        })
        .collect()
}

/// Descriptors open in this process (entries of `/proc/self/fd`, minus the
/// one used to list them).
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
        .saturating_sub(1)
}

/// Names in `/dev/shm` that start with `prefix`.
pub fn shm_names(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits for `child` at most `limit`; kills it and panics when it overruns,
/// so a broken test fails instead of hanging.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `check` until it returns true or `limit` passes; returns whether it
/// came true.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Forks a benchmark partner running `body`; the child never returns from
/// here (it `_exit`s: 0, or 101 when `body` panicked) and dies with the
/// calling thread (`PR_SET_PDEATHSIG`), so an interrupted bench leaves no
/// spinning orphan.
///
/// # Panics
///
/// When the process runs more than one thread (a forked child would find
/// their locks held for ever), or `fork` fails.
pub fn fork_child(body: impl FnOnce()) -> libc::pid_t {
    let threads = std::fs::read_dir("/proc/self/task").map(Iterator::count);
    assert!(
        matches!(threads, Ok(1)),
        "fork_child needs a single-threaded process"
    );
    // SAFETY: the process has one thread (checked above), so the child
    // finds no lock held by a thread that is not there; it runs `body` on
    // its copies and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        // SAFETY: ends the child without running the parent's destructors
        // (which would unlink the parent's named segments) or exit handlers.
        unsafe { libc::_exit(if outcome.is_ok() { 0 } else { 101 }) };
    }
    pid
}

/// `SIGKILL`s and reaps children made by [`fork_child`].
pub fn kill_children(pids: &[libc::pid_t]) {
    for pid in pids
        .iter()
        .filter_map(|&p| rustix::process::Pid::from_raw(p))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

/// Environment marker of a test re-run alone by [`alone_in_child_process`].
const ALONE_ENV: &str = "MULTIPROC_TEST_ALONE";

/// For a test of the built-in harness that changes process-wide state
/// (resource limits, signal dispositions, the start method): `true` when this
/// process is the child that should do it; otherwise re-runs the test named
/// `name` alone in a child process (with `env` added to its environment),
/// asserts that it passed there, and returns `false`.
///
/// ```no_run
/// #[test]
/// fn changes_the_fd_limit() {
///     if !multiproc_testkit::alone_in_child_process("changes_the_fd_limit", &[]) {
///         return;
///     }
///     // … runs in a process of its own …
/// }
/// ```
pub fn alone_in_child_process(name: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var(ALONE_ENV).as_deref() == Ok(name) {
        return true;
    }
    let out = Command::new(current_test_binary())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ALONE_ENV, name)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("re-running the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in a child process: {}\n{stdout}\n{stderr}",
        out.status
    );
    false
}

/// Direct children of this process, from every thread's list.
pub fn child_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids
}

/// The state letter of process `pid` (`R`, `S`, `Z`, …), `None` once it is
/// gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

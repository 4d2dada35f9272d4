//! Test support for multiproc's cross-process tests (not published).
//!
//! Cross-process tests re-execute their own test binary as the child: a test
//! file with `harness = false` hands its `main` to [`run`], which either
//! plays the child *role* named in the environment or runs the tests through
//! `libtest-mimic` (same command line and output as the built-in harness).
//!
//! A role is a function taking the child's arguments, declared once with
//! [`role!`]: the same macro names it in the list given to [`run`] and where
//! a test starts it ([`spawn`], [`command`]), so the two cannot disagree. A
//! test that starts a role missing from that list panics at once.
//!
//! ```no_run
//! use multiproc_testkit::{role, run, spawn, tests, Trial};
//!
//! fn child_says_hi(_args: &[String]) {
//!     println!("hi");
//! }
//!
//! fn parent_sees_hi() {
//!     let out = spawn(role!(child_says_hi), &[], &[])
//!         .unwrap()
//!         .wait_with_output()
//!         .unwrap();
//!     assert!(out.status.success());
//! }
//!
//! fn main() {
//!     run(&[role!(child_says_hi)], tests![parent_sees_hi]);
//! }
//! ```
//!
//! # The `/dev/shm` leak check
//!
//! After the tests, [`run`] fails the binary if a name it made in
//! `/dev/shm` is still there. It checks only the names of *this run*, so
//! that other programs on the machine (another test run, a Python job,
//! anything making `mp_*` or `psm_*` names) cannot fail it: before the
//! tests it sets `MULTIPROC_SHM_PREFIX` ([`SHM_PREFIX_ENV`]) to a prefix of
//! its own, `mp_t<pid>_<random>_` (see [`run_prefix`]), which every name
//! multiproc generates in this process and in the children it starts then
//! carries. Names a test gives itself, or has Python create, must carry it
//! too: build them with [`unique_name`]. A prefix already in the
//! environment (a CI job's, say) is extended, not replaced, so the job can
//! still check every name of its own run.
#![allow(unsafe_code)]
#![allow(missing_docs)]

mod order;

pub use libtest_mimic::{Failed, Trial};
pub use order::balanced_order;
pub use rustix::process::Pid;

use multiproc_core::process::{self, Forked};

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "MULTIPROC_TEST_ROLE";
const FDS_ENV: &str = "MULTIPROC_TEST_FDS";

/// A child role: what a re-executed test binary does, given its arguments.
/// Build it with [`role!`], which names it after its function.
#[derive(Clone, Copy, Debug)]
pub struct Role {
    /// The name the child finds its role by: its function's.
    pub name: &'static str,
    /// What the child does, given its arguments.
    pub body: fn(&[String]),
}

/// The [`Role`] played by the function `f` (`fn(&[String])`), named `"f"`;
/// `role!(path::to::f)` is named `"f"` too.
///
/// ```
/// fn child_echo(_args: &[String]) {}
///
/// assert_eq!(multiproc_testkit::role!(child_echo).name, "child_echo");
/// ```
#[macro_export]
macro_rules! role {
    ($($segment:ident)::+) => {
        $crate::Role {
            name: $crate::__last_ident!($($segment)::+),
            body: $($segment)::+,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __last_ident {
    ($last:ident) => {
        stringify!($last)
    };
    ($first:ident :: $($rest:ident)::+) => {
        $crate::__last_ident!($($rest)::+)
    };
}

/// The roles given to [`run`] in this process.
static ROLES: OnceLock<Vec<Role>> = OnceLock::new();

/// Panics unless `role` is in the list given to [`run`].
fn check_registered(role: Role) {
    let (registered, note) = match ROLES.get() {
        Some(roles) => (roles.iter().any(|r| r.name == role.name), ""),
        None => (false, " (run() has not been called in this process)"),
    };
    assert!(
        registered,
        "role {:?} is not in the list given to run(){note}",
        role.name
    );
}

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
/// environment (and exits), or runs `tests` and exits with their verdict,
/// failing them when they left a name of this run in `/dev/shm` (see the
/// [crate docs](crate#the-devshm-leak-check)). `roles` lists every role
/// the tests (or the roles themselves) start, each made with [`role!`];
/// starting one not listed panics in the parent, and two with the same
/// name fail the binary.
pub fn run(roles: &[Role], tests: Vec<Trial>) -> ! {
    for (i, role) in roles.iter().enumerate() {
        if roles[..i].iter().any(|r| r.name == role.name) {
            eprintln!("error: role {:?} is given to run() twice", role.name);
            std::process::exit(2);
        }
    }
    if ROLES.set(roles.to_vec()).is_err() {
        eprintln!("error: multiproc_testkit::run is called twice");
        std::process::exit(2);
    }
    if let Ok(role) = std::env::var(ROLE_ENV) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let Some(found) = roles.iter().find(|r| r.name == role) else {
            eprintln!("unknown test role {role:?}");
            std::process::exit(2);
        };
        (found.body)(&args);
        std::process::exit(0);
    }
    let prefix = claim_run_prefix();
    let args = libtest_mimic::Arguments::from_args();
    let before = shm_names("");
    let conclusion = libtest_mimic::run(&args, tests);
    let leaked = leaked_names(&prefix, &before, &shm_names(""));
    if !leaked.is_empty() {
        eprintln!("error: the tests left shared memory behind in /dev/shm: {leaked:?}");
        std::process::exit(1);
    }
    conclusion.exit()
}

/// The environment variable multiproc reads the prefix of the names it
/// generates from.
pub use multiproc_core::segment::NAME_PREFIX_ENV as SHM_PREFIX_ENV;

/// Longest prefix multiproc accepts in [`SHM_PREFIX_ENV`].
pub use multiproc_core::segment::MAX_NAME_PREFIX_LEN as MAX_SHM_PREFIX_LEN;

/// The names that make a leak: those in the `after` snapshot of `/dev/shm`
/// that carry the run's `prefix` and were not in the `before` one. Names
/// of other programs, whatever they look like, are not ours to judge.
///
/// ```
/// use multiproc_testkit::leaked_names;
///
/// let before = vec!["mp_t1_x_old".to_owned()];
/// let after = vec![
///     "mp_t1_x_old".to_owned(),    // there before the tests
///     "mp_t1_x_made".to_owned(),   // made by the tests and left
///     "mp_0123abcd".to_owned(),    // another program's
///     "psm_0123abcd".to_owned(),   // a Python program's
/// ];
/// assert_eq!(leaked_names("mp_t1_x_", &before, &after), ["mp_t1_x_made"]);
/// ```
#[must_use]
pub fn leaked_names(prefix: &str, before: &[String], after: &[String]) -> Vec<String> {
    after
        .iter()
        .filter(|name| name.starts_with(prefix) && !before.contains(name))
        .cloned()
        .collect()
}

/// The prefix of a test run started with `outer` in [`SHM_PREFIX_ENV`]
/// (`None` or empty: not set) by process `pid`: the outer prefix, or
/// multiproc's default `mp_`, followed by `t<pid>_<nonce in hex>_`. When
/// that would be longer than [`MAX_SHM_PREFIX_LEN`], the outer prefix as it
/// is (the run then shares it with whoever set it).
///
/// ```
/// use multiproc_testkit::run_prefix;
///
/// assert_eq!(run_prefix(None, 42, 0xbeef), "mp_t42_0000beef_");
/// assert_eq!(run_prefix(Some("mp_ci7_"), 42, 0xbeef), "mp_ci7_t42_0000beef_");
/// let long = "p".repeat(120);
/// assert_eq!(run_prefix(Some(&long), 42, 0xbeef), long);
/// ```
#[must_use]
pub fn run_prefix(outer: Option<&str>, pid: u32, nonce: u32) -> String {
    let outer = outer.filter(|o| !o.is_empty());
    let prefix = format!("{}t{pid}_{nonce:08x}_", outer.unwrap_or("mp_"));
    match outer {
        Some(outer) if prefix.len() > MAX_SHM_PREFIX_LEN => outer.to_owned(),
        _ => prefix,
    }
}

/// Sets this run's prefix in the environment, where multiproc (in this
/// process and in every child, which inherits it) takes it from, and
/// returns it.
fn claim_run_prefix() -> String {
    let outer = match std::env::var(SHM_PREFIX_ENV) {
        Ok(outer) => Some(outer),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(value)) => {
            eprintln!("error: {SHM_PREFIX_ENV} is not UTF-8: {value:?}");
            std::process::exit(2);
        }
    };
    // The OS seeds every RandomState: a nonce with no dependency, so that
    // a pid reused by a later run does not make its names ours.
    let nonce = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        std::process::id(),
    ) as u32;
    let prefix = run_prefix(outer.as_deref(), std::process::id(), nonce);
    // set_var races with any other thread reading the environment, so it
    // may only run while this is the one thread; `run` is `main`, before
    // the tests start theirs.
    let threads = std::fs::read_dir("/proc/self/task").map(Iterator::count);
    if !matches!(threads, Ok(1)) {
        eprintln!("error: multiproc_testkit::run must be called first in main, on the only thread");
        std::process::exit(2);
    }
    // SAFETY: this process has one thread (checked just above), so nothing
    // reads or writes the environment concurrently.
    unsafe { std::env::set_var(SHM_PREFIX_ENV, &prefix) };
    prefix
}

/// The prefix multiproc gives the names it generates here: this run's
/// under [`run`] (also in the children it starts), else the one set in
/// [`SHM_PREFIX_ENV`], else `mp_`.
///
/// ```
/// let prefix = multiproc_testkit::shm_prefix();
/// assert!(!prefix.is_empty());
/// ```
#[must_use]
pub fn shm_prefix() -> String {
    std::env::var(SHM_PREFIX_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "mp_".to_owned())
}

/// A name for a test to create in `/dev/shm` itself (or to have Python
/// create) that the run's leak check covers: [`shm_prefix`], then `tag`, the
/// pid and a counter, so no two calls anywhere in the run give the same
/// name. Keep `tag` to letters, digits and `_`; a name that ends up over
/// 255 bytes is refused by multiproc with a typed error when used.
///
/// ```
/// let a = multiproc_testkit::unique_name("block");
/// let b = multiproc_testkit::unique_name("block");
/// assert!(a.starts_with(&multiproc_testkit::shm_prefix()));
/// assert_ne!(a, b);
/// ```
#[must_use]
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}{tag}_{}_{n}", shm_prefix(), std::process::id())
}

/// Starts this test binary again as `role` with `args`. The descriptors in
/// `fds` are inherited under the same numbers; the child collects them with
/// [`inherited_fds`]. Standard input is closed, output is inherited.
///
/// # Panics
///
/// When `role` is not in the list given to [`run`].
pub fn spawn(role: Role, args: &[&str], fds: &[BorrowedFd<'_>]) -> io::Result<Child> {
    command(role, args, fds).stdin(Stdio::null()).spawn()
}

/// The command [`spawn`] would run, for callers that want other stdio.
///
/// # Panics
///
/// When `role` is not in the list given to [`run`].
pub fn command(role: Role, args: &[&str], fds: &[BorrowedFd<'_>]) -> Command {
    check_registered(role);
    let mut cmd = Command::new(current_test_binary());
    play(&mut cmd, role, args, fds);
    cmd
}

/// The command [`spawn`] would run, but running the executable at
/// `binary`: a copy of this test binary, e.g. one altered to stand for
/// another build of it.
///
/// # Panics
///
/// When `role` is not in the list given to [`run`].
pub fn command_from(binary: &std::path::Path, role: Role, args: &[&str]) -> Command {
    check_registered(role);
    let mut cmd = Command::new(binary);
    play(&mut cmd, role, args, &[]);
    cmd
}

/// The command [`spawn`] would run, started instead in a new pid namespace
/// (through util-linux's `unshare --pid --fork`), where the parent's
/// process and thread ids name nothing; `None`, after saying so on
/// standard error, when this machine does not allow that (no `unshare`, or
/// no permission to create the namespace).
///
/// # Panics
///
/// When `role` is not in the list given to [`run`] (also where no
/// namespace can be made).
pub fn command_in_new_pid_namespace(
    role: Role,
    args: &[&str],
    fds: &[BorrowedFd<'_>],
) -> Option<Command> {
    check_registered(role);
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
fn play(cmd: &mut Command, role: Role, args: &[&str], fds: &[BorrowedFd<'_>]) {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let list = raw
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    cmd.args(args).env(ROLE_ENV, role.name).env(FDS_ENV, list);
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

/// Names in `/dev/shm` that start with `prefix` (all of them for `""`),
/// sorted.
#[must_use]
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
/// here (it ends with `exit_now`: 0, or 101 when `body` panicked) and dies
/// with the calling thread (`PR_SET_PDEATHSIG`), so an interrupted bench
/// leaves no spinning orphan.
///
/// # Panics
///
/// When the process runs more than one thread (a forked child would find
/// their locks held for ever), or `fork` fails.
pub fn fork_child(body: impl FnOnce()) -> ForkedChild {
    let threads = std::fs::read_dir("/proc/self/task").map(Iterator::count);
    assert!(
        matches!(threads, Ok(1)),
        "fork_child needs a single-threaded process"
    );
    // SAFETY: the contract of `multiproc_core::process::fork` holds: the
    // process has one thread (checked above), so the child may do anything;
    // it runs `body` on its copies and ends with `exit_now`, which runs
    // none of the parent's destructors (they would unlink the parent's
    // named segments) or exit handlers.
    match unsafe { process::fork() }.expect("fork failed") {
        Forked::Parent(pid) => ForkedChild { pid: Some(pid) },
        Forked::Child => {
            let _ = rustix::process::set_parent_process_death_signal(Some(
                rustix::process::Signal::KILL,
            ));
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            process::exit_now(if outcome.is_ok() { 0 } else { 101 })
        }
    }
}

/// A child made by [`fork_child`]. Dropping it `SIGKILL`s and reaps the
/// child, so a bench or test that panics or returns early leaves no
/// partner spinning.
#[must_use = "dropping it kills the child at once"]
pub struct ForkedChild {
    /// `None` once reaped.
    pid: Option<Pid>,
}

impl ForkedChild {
    /// The child's pid.
    ///
    /// # Panics
    ///
    /// Once the child is reaped: after [`kill`](Self::kill), or after
    /// [`has_exited`](Self::has_exited) returned `true` (its pid may name
    /// another process by then).
    pub fn pid(&self) -> Pid {
        self.pid.expect("not reaped yet")
    }

    /// Waits for the child to end by itself and asserts that `body`
    /// returned (exit code 0; a panic in `body` is 101).
    pub fn join(mut self) {
        let pid = self.pid.take().expect("not reaped yet");
        let (_, status) =
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
                .expect("waitpid")
                .expect("a status");
        assert_eq!(
            status.exit_status(),
            Some(0),
            "forked child failed: {status:?}"
        );
    }

    /// Whether the child has ended (by itself or killed); reaps it if so.
    pub fn has_exited(&mut self) -> bool {
        let Some(pid) = self.pid else { return true };
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG) {
            Ok(Some(_)) | Err(_) => {
                self.pid = None;
                true
            }
            Ok(None) => false,
        }
    }

    /// `SIGKILL`s and reaps the child now (what dropping it does).
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
    }
}

impl Drop for ForkedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `SIGKILL`s and reaps children made by [`fork_child`], in order.
pub fn kill_children(children: &mut [ForkedChild]) {
    for child in children {
        child.kill();
    }
}

/// A payload whose bytes say where they belong — `(i + salt) % 251` at
/// offset `i`, a prime period so no power-of-two stride repeats it — so a
/// torn, shifted or mixed-up copy shows when compared with a fresh one.
///
/// ```
/// let p = multiproc_testkit::pattern(300, 0);
/// assert_eq!((p[0], p[250], p[251], p[299]), (0, 250, 0, 48));
/// assert_ne!(multiproc_testkit::pattern(8, 1), multiproc_testkit::pattern(8, 2));
/// ```
pub fn pattern(len: usize, salt: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_add(salt) % 251) as u8)
        .collect()
}

/// Waits for `child` at most `limit` (see [`wait_timeout`]) and asserts
/// that it succeeded.
pub fn finish(child: &mut Child, limit: Duration) {
    let status = wait_timeout(child, limit);
    assert!(status.success(), "child failed: {status:?}");
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

/// Environment variable that marks a CI run (`.ci/run` exports it): there,
/// a test that needs an external program fails when the program is missing
/// instead of skipping.
pub const CI_ENV: &str = "CI";

/// Whether this is a CI run ([`CI_ENV`] set and not empty).
#[must_use]
pub fn in_ci() -> bool {
    std::env::var_os(CI_ENV).is_some_and(|v| !v.is_empty())
}

/// The three load averages, as `/proc/loadavg` gives them (`"unknown"`
/// when it cannot be read): what benches print beside their ratios, so a
/// reader can tell a quiet run from a busy one.
#[must_use]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The filter a bench binary was given (`cargo bench … -- FILTER`), if
/// any: its first argument that is not an option.
#[must_use]
pub fn bench_filter() -> Option<String> {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .filter(|a| !a.is_empty())
}

/// A Python with `modules` importable: `python3` itself when it has them,
/// else the interpreter of a virtual environment at `venv`, made on first
/// use and given the `(package, module)` pairs' packages with pip. Benches
/// use it for Python peers that are not in the standard library.
///
/// # Errors
///
/// Why no such Python could be had (no `python3`, no `venv` module, pip
/// without a registry, …), for the bench to print.
pub fn python_with(
    venv: &std::path::Path,
    modules: &[(&str, &str)],
) -> Result<std::path::PathBuf, String> {
    let has_all = |python: &std::path::Path| {
        modules.iter().all(|(_, module)| {
            Command::new(python)
                .args(["-c", &format!("import {module}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    };
    let system = std::path::PathBuf::from("python3");
    if has_all(&system) {
        return Ok(system);
    }
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv)
            .status()
            .map_err(|e| format!("python3: {e}"))?;
        if !made.success() {
            return Err(format!("python3 -m venv {} failed", venv.display()));
        }
    }
    if !has_all(&python) {
        let packages: Vec<&str> = modules.iter().map(|(package, _)| *package).collect();
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(&packages)
            .status()
            .map_err(|e| format!("pip: {e}"))?;
        if !installed.success() || !has_all(&python) {
            return Err(format!("pip install {} failed", packages.join(" ")));
        }
    }
    Ok(python)
}

/// A `redis-server` of a test's own on a free loopback port, with no
/// persistence (`--save '' --appendonly no`) and its working directory in a
/// fresh temporary directory. It is `SIGKILL`ed and reaped on drop (also
/// when the test panics), dies with the thread that started it
/// (`PR_SET_PDEATHSIG`), and its directory is removed.
///
/// ```no_run
/// let Some(server) = multiproc_testkit::RedisServer::start_or_skip("my_test") else {
///     return; // not installed, and not in CI: said so loudly
/// };
/// println!("{}", server.url());
/// ```
pub struct RedisServer {
    child: Option<Child>,
    binary: std::path::PathBuf,
    port: u16,
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Where `redis-server` is: `MULTIPROC_REDIS_SERVER` if set (`None`
    /// when that is not a file), else the first one on `PATH`, else in
    /// `/usr/bin`, `/usr/sbin`, `/usr/local/bin`.
    #[must_use]
    pub fn binary() -> Option<std::path::PathBuf> {
        if let Some(path) = std::env::var_os("MULTIPROC_REDIS_SERVER") {
            let path = std::path::PathBuf::from(path);
            return path.is_file().then_some(path);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(Into::into))
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    }

    /// Starts a server for the test `test`, or, when `redis-server` is not
    /// installed, says so loudly on standard error and returns `None` —
    /// except in CI ([`in_ci`]), where it panics: CI must run these tests.
    ///
    /// # Panics
    ///
    /// In CI without `redis-server`, or when the server does not start.
    #[must_use]
    pub fn start_or_skip(test: &str) -> Option<Self> {
        let Some(binary) = Self::binary() else {
            assert!(
                !in_ci(),
                "{test}: redis-server is not installed, and {CI_ENV} is set: \
                 CI must run the Redis tests (install the redis-server package)"
            );
            eprintln!(
                "\n!!! {test}: SKIPPED: redis-server is not installed \
                 (apt-get install redis-server); this test did not run !!!\n"
            );
            return None;
        };
        Some(Self::start_with(binary).expect("starting redis-server"))
    }

    /// Starts `binary` on a free loopback port and waits until it answers
    /// `PING` (a few attempts with other ports if one was taken meanwhile).
    ///
    /// # Errors
    ///
    /// When the server cannot be started or never answers.
    pub fn start_with(binary: std::path::PathBuf) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "multiproc-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut last = io::Error::other("no attempt");
        for _ in 0..5 {
            let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
                .local_addr()?
                .port();
            let mut server = Self {
                child: None,
                binary: binary.clone(),
                port,
                dir: dir.clone(),
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    // Keep the directory for the next attempt.
                    server.dir = std::path::PathBuf::new();
                    last = e;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }

    fn launch(&mut self) -> io::Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(PR_SET_PDEATHSIG), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.answers_ping() {
                self.child = Some(child);
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                )));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other("redis-server did not answer within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// The server's URL, database 0: `redis://127.0.0.1:PORT/0`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The loopback port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `SIGKILL`s the server and reaps it (nothing if it is not running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (no persistence).
    ///
    /// # Panics
    ///
    /// When it is still running, or does not start.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running redis-server");
        self.launch().expect("restarting redis-server on its port");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|&n| n.to_owned()).collect()
    }

    const RUN: &str = "mp_ci7_t42_0000beef_";

    fn some_fn(_args: &[String]) {}

    mod nested {
        pub fn child_in_a_module(_args: &[String]) {}
    }

    #[test]
    fn a_role_is_named_after_its_function() {
        assert_eq!(role!(some_fn).name, "some_fn");
        assert_eq!(role!(nested::child_in_a_module).name, "child_in_a_module");
        assert_eq!(
            role!(self::nested::child_in_a_module).name,
            "child_in_a_module"
        );
        let body = role!(some_fn).body;
        body(&[]);
    }

    #[test]
    #[should_panic(expected = "role \"some_fn\" is not in the list given to run()")]
    fn a_role_not_given_to_run_is_refused_at_once() {
        let _ = command(role!(some_fn), &[], &[]);
    }

    #[test]
    fn names_of_other_programs_are_not_a_leak() {
        let before = names(&["mp_0011", "psm_aa"]);
        let after = names(&[
            "mp_0011",
            "psm_aa",
            "mp_0123456789abcdef01234567", // a multiproc program's generated name
            "psm_5f1e2d3c",                // a Python program's
            "mp_foreign_1",
            "mp_ci7_t43_0000cafe_x", // another run of the same CI job
            "mp_ci7_t42_0000beef",   // the prefix without its last byte
            "unrelated",
        ]);
        assert!(leaked_names(RUN, &before, &after).is_empty());
    }

    #[test]
    fn a_name_of_the_run_made_during_it_is_a_leak() {
        let before = names(&[&format!("{RUN}old"), "mp_0011"]);
        let after = names(&[
            &format!("{RUN}old"),
            "mp_0011",
            &format!("{RUN}0123456789abcdef01234567"),
            &format!("{RUN}block_9_0"),
            "psm_5f1e2d3c",
        ]);
        assert_eq!(
            leaked_names(RUN, &before, &after),
            [
                format!("{RUN}0123456789abcdef01234567"),
                format!("{RUN}block_9_0")
            ]
        );
    }

    #[test]
    fn a_name_removed_or_unchanged_is_not_a_leak() {
        let before = names(&[&format!("{RUN}a"), &format!("{RUN}b")]);
        let after = names(&[&format!("{RUN}b")]);
        assert!(leaked_names(RUN, &before, &after).is_empty());
    }

    #[test]
    fn the_run_prefix_extends_an_outer_one_and_fits() {
        assert_eq!(run_prefix(None, 7, 1), "mp_t7_00000001_");
        assert_eq!(run_prefix(Some(""), 7, 1), "mp_t7_00000001_");
        assert_eq!(run_prefix(Some("mp_ci9_"), 7, 1), "mp_ci9_t7_00000001_");
        let longest_pid = run_prefix(None, u32::MAX, u32::MAX);
        assert!(longest_pid.len() <= MAX_SHM_PREFIX_LEN);
        let outer = "o".repeat(MAX_SHM_PREFIX_LEN - 10);
        assert_eq!(run_prefix(Some(&outer), u32::MAX, 1), outer);
        assert!(run_prefix(Some(&outer[..90]), u32::MAX, 1).len() <= MAX_SHM_PREFIX_LEN);
        // Only the bytes multiproc accepts in a prefix.
        let prefix = run_prefix(Some("mp_x.y-z_"), 12345, 0xdead_beef);
        assert!(
            prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
            "{prefix}"
        );
    }
}

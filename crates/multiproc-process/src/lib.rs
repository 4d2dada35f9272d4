//! Processes for multiproc: Python's `multiprocessing.Process` with Rust
//! types, three start methods, and nothing to add to `main`.
//!
//! # Hello, process
//!
//! ```
//! use multiproc_process::Process;
//!
//! fn greet(name: String) -> String {
//!     format!("hello, {name}, from process {}", std::process::id())
//! }
//!
//! let mut child = Process::new(greet, "world".to_string()).start()?;
//! let reply = child.join()?;
//! assert!(reply.starts_with("hello, world"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Targets and arguments
//!
//! A target is a `fn(A) -> R` (non-capturing closures coerce); `A` and `R`
//! are serde types. Handles in the arguments — queues, locks, connections,
//! segments — arrive usable: their descriptors cross the bootstrap socket
//! with `SCM_RIGHTS`. `join` returns the value; a panic comes back as
//! [`JoinError::Panicked`] with its message, a death by signal as
//! [`JoinError::Killed`] naming it.
//!
//! [`ProcessBuilder::run`] starts and joins in one call, for a caller that
//! waits for the value at once; knowing that, it starts a Fork child on the
//! caller's CPU, which made a short child's start and join 30–40 % cheaper
//! on the 2-vCPU virtual machine it was measured on (a one-off loop; in
//! `cargo bench -p multiproc-process --bench process -- process_start_join`,
//! `fork_run` against `fork` as it was before `start` pinned). `start`
//! does the same for a thread seen joining its Fork children right after
//! starting them.
//!
//! # Pool
//!
//! [`Pool`] is Python's `multiprocessing.Pool`: `apply`, `map`, `imap`,
//! `starmap`, their `_async` forms with callbacks, `close`/`join`/
//! `terminate`, initializers and `maxtasksperchild`.
//!
//! ```
//! use multiproc_process::Pool;
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.map(square, 1..=5, None)?, vec![1, 4, 9, 16, 25]);
//! // Lazily, in order, over an input of any length:
//! let firsts: Vec<u64> = pool.imap(square, 1u64.., Some(4)).take(3).collect::<Result<_, _>>()?;
//! assert_eq!(firsts, vec![1, 4, 9]);
//! // Without waiting:
//! let pending = pool.apply_async(square, 12);
//! assert_eq!(pending.get()?, 144);
//! pool.close();
//! pool.join();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A task that panics fails alone, with its message:
//!
//! ```
//! use multiproc_process::{Pool, TaskError};
//!
//! fn picky(x: u64) -> u64 {
//!     assert!(x != 3, "three is not welcome");
//!     x
//! }
//!
//! let pool = Pool::new(2)?;
//! match pool.apply(picky, 3) {
//!     Err(TaskError::Panicked(message)) => assert!(message.contains("not welcome")),
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(pool.apply(picky, 4)?, 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Start methods
//!
//! See [`StartMethod`]: [`ForkServer`](StartMethod::ForkServer) (default),
//! [`Spawn`](StartMethod::Spawn), [`Fork`](StartMethod::Fork);
//! [`set_start_method`] and [`get_context`] choose.
//!
//! Spawn and the fork server re-execute the current executable. A
//! constructor in this crate runs before `main` in every executable that
//! links it, recognises a child (or the server) by a marker in the
//! environment, runs it and exits — so `main`, `cargo test` integration
//! tests, examples and benches need **no set-up line**. [`init`] exists for
//! code that wants to be explicit (and for builds where constructors are
//! stripped); calling it first thing in `main` is harmless. The marker is
//! authenticated (a random token per start, written into the child's socket
//! before the child exists), so a stray variable never turns a program into
//! a child (test: `a_stray_marker_variable_does_not_hijack_the_binary` in
//! `tests/spawn.rs`). A host that wants no code of ours to run before its
//! `main` turns off the default `auto-init` feature and calls [`init`]
//! itself, first thing (example: `examples/explicit_init.rs`, run by CI).
//!
//! A target is sent as its distance from a fixed function of this crate;
//! the child checks that it runs the parent's very executable (device,
//! inode, size, modification time) before calling anything, and reports a
//! mismatch as [`JoinError::Bootstrap`]. Targets must live in the
//! executable itself (not in a `dlopen`ed library).
//!
//! # At exit
//!
//! When the parent exits normally, daemon children are sent `SIGTERM` and
//! non-daemon children are waited for (Python's behaviour). A daemon child
//! also dies when its parent dies abnormally, even by `SIGKILL`.
//!
//! # Hosts that ignore `SIGCHLD`
//!
//! A process whose `SIGCHLD` is `SIG_IGN` (or that sets `SA_NOCLDWAIT`, or
//! reaps every child itself with `waitpid(-1)`) leaves the kernel to discard
//! its children's exit statuses. Its Fork and Spawn children are joined all
//! the same: a child's value or panic comes over its own channel, and its
//! exit is seen through its pidfd. Only a child that exits without a value
//! cannot say how: its join gives [`JoinError::StatusDiscarded`] and its
//! [`exitcode`](Process::exitcode) stays `None`. In such a host a child that
//! exits before its pidfd is opened cannot be told from a new process that
//! took its pid at once; the library then treats it as gone. ForkServer
//! children are unaffected (the server reaps them).
//!
//! # When the fork server fails or dies
//!
//! The fork server is a helper process that forks ForkServer children.
//! A start that fails — out of descriptors on either side, `fork` refused —
//! fails alone with the OS error as its cause, and the server goes on
//! serving. A server that dies (killed by someone) is replaced at the next
//! start and reaped. Its children deliver their values all the same: they
//! report over their own connection, and their exit is seen through their
//! pidfd; their exit status went with the server, so
//! [`exitcode`](Process::exitcode) stays `None`, and one that exits without
//! a value joins as [`JoinError::StatusDiscarded`].
//!
//! One exception: a *daemon* started through the server dies with the
//! server, since the kernel's parent-death signal that ties a daemon's life
//! to its parent at no cost follows the process that forked it. (Watching
//! the parent from a thread instead, as daemons started from a thread other
//! than the main one do, costs every daemon a thread start and teardown.)
//! A pool treats such a death as any worker's death: the task fails with
//! [`TaskError::WorkerDied`] and the worker is replaced.
//!
//! # When things die or fail
//!
//! What is promised, and the test that shows it between real processes
//! (in `tests/`; the process suite runs once per start method):
//!
//! | when | what happens | test |
//! |---|---|---|
//! | a pool worker is killed | its task fails with [`TaskError::WorkerDied`]; the worker is replaced and the other tasks run | `pool.rs`: `a_killed_worker_fails_its_task_only_and_is_replaced` |
//! | a worker runs a long task, or is stopped (`SIGSTOP`) | the tasks queued behind it that it has not started are taken back and run by an idle worker; every task runs once | `pool.rs`: `an_idle_worker_takes_the_tasks_queued_behind_a_long_one`, `the_tasks_of_a_stopped_worker_are_run_by_the_other_one`, `tasks_taken_back_while_workers_are_stopped_and_killed_run_at_most_once` |
//! | a worker is killed between tasks | the tasks handed to it go to the others; only a task it was running fails | `pool.rs`: `tasks_handed_to_a_worker_killed_while_idle_are_run_by_the_others` |
//! | a task panics | [`TaskError::Panicked`] with the message; the pool goes on | `pool.rs`: `panics_are_task_errors_and_the_pool_goes_on` |
//! | a callback panics | its task's result is still set, the panic printed once and counted ([`Pool::callback_panics`]); the pool goes on | `pool.rs`: `a_panicking_callback_neither_stops_nor_hangs_the_pool` |
//! | a callback waits on its own pool | [`TaskError::WouldDeadlock`] instead of a deadlock; `apply_async`, `close`, `terminate` and drop work from a callback | `pool.rs`: `blocking_pool_calls_from_a_callback_fail_instead_of_deadlocking`, `terminating_or_dropping_a_pool_from_its_callback_returns` |
//! | an initializer panics, aborts or crashes | bounded respawns with back-off, then [`TaskError::InitializerFailed`] | `pool.rs`: `a_failing_initializer_is_reported_not_looped`, `an_aborting_initializer_is_reported_not_looped` |
//! | `Pool::new` fails part-way (e.g. out of descriptors) | the workers started are stopped and reaped, nothing leaks, the error names the cause | `pool.rs`: `a_pool_that_cannot_start_leaks_nothing_and_names_the_cause` |
//! | a parent is killed, even by `SIGKILL` | its daemon children die too | `daemon_dies_with_sigkilled_parent` |
//! | another thread holds one of the library's locks at a `fork` | the Fork child never waits on it | `fork.rs`: `forking_while_another_thread_asks_current_process_never_hangs`, `forking_while_another_thread_uses_the_fork_server_never_hangs` |
//! | the host ignores `SIGCHLD` | children are joined all the same; one without a value gives [`JoinError::StatusDiscarded`] | `spawn.rs`: `children_of_a_process_that_ignores_sigchld_can_be_joined` |
//! | a fork-server start fails (out of descriptors on either side) | that start fails with the OS error as its cause; the server and its children go on | `forkserver.rs`: `a_start_that_runs_out_of_descriptors_fails_alone`, `a_server_out_of_descriptors_fails_only_that_start` |
//! | the fork server is killed | a new one serves the next start, the dead one is reaped, its children deliver their values (daemons die with it) | `forkserver.rs`: `a_killed_server_is_replaced_and_its_children_still_deliver` |
//! | a marker variable is left in an environment | the program runs as usual | `spawn.rs`: `a_stray_marker_variable_does_not_hijack_the_binary` |
#![warn(missing_docs)]

mod bootstrap;
mod child;
mod daemon;
mod entry;
mod exe;
mod forkserver;
mod info;
mod method;
mod os_cause;
mod pool;
mod process;
mod registry;
mod same_cpu;
mod target;
mod wire;

pub use info::{ProcessInfo, cpu_count, current_process, parent_process};
pub use method::{Context, StartMethod, get_context, get_start_method, set_start_method};
pub use pool::{
    AsyncResult, CHECK_INTERVAL, GetTimeoutError, IMap, PREFETCH, Pool, PoolBuilder, TaskError,
    TransportError,
};
pub use process::{JoinError, JoinTimeoutError, Process, ProcessBuilder};

/// Makes this process the spawned child or the fork server if it was
/// started as one (and then never returns); does nothing otherwise.
///
/// With the default `auto-init` feature a constructor calls this before
/// `main` already; calling it again, first thing in `main`, is harmless and
/// makes the dependency explicit. A host that turns the feature off (no
/// code of ours runs before its `main`) must call it first thing in `main`,
/// before starting threads: Spawn children and the fork server re-execute
/// the program, and without this call they would run `main` instead.
///
/// Only a marker the parent authenticated is acted on (a random token
/// written into the child's socket before the child existed), so a stray
/// `MULTIPROC_SPAWN_FD` or `MULTIPROC_FORKSERVER_FD` in the environment
/// never turns a program into a child.
///
/// # Examples
///
/// ```
/// fn main() {
///     multiproc_process::init();
///     // … the program …
/// }
/// # main();
/// ```
pub fn init() {
    entry::take_over_if_marked();
}

/// Chooses whether this process sees to its children when it exits
/// (returning from `main` or `std::process::exit`): `true`, the default and
/// Python's behaviour, sends `SIGTERM` to daemon children still running and
/// waits for the others, from an `atexit(3)` handler registered when the
/// first child starts. `false` registers no handler (if no child started
/// yet) or makes the registered one do nothing: the process then exits at
/// once, its non-daemon children run on (orphans, reaped by whoever
/// inherits them), and daemon children still die with it — by the kernel's
/// death signal (`SIGKILL`) instead of a `SIGTERM`. For hosts (C programs,
/// other runtimes) that decide themselves what happens at exit: join or
/// terminate the children first, then nothing is left for the handler
/// either way.
///
/// Only this process's exit is concerned; a forked child ends with `_exit`
/// and runs no exit handler whatever this says.
///
/// # Examples
///
/// ```
/// // In a host that manages its children's end itself:
/// multiproc_process::set_finish_children_at_exit(false);
/// // ... start, join or terminate children ...
/// multiproc_process::set_finish_children_at_exit(true); // back to the default
/// ```
#[doc(alias = "atexit")]
pub fn set_finish_children_at_exit(enabled: bool) {
    registry::set_finish_at_exit(enabled);
}

/// The children still running (Python's `active_children()`); finished ones
/// are reaped on the way, as in Python.
///
/// # Examples
///
/// ```
/// assert!(multiproc_process::active_children().is_empty());
/// ```
#[must_use]
pub fn active_children() -> Vec<ProcessInfo> {
    // Fork servers this process retired are reaped here too.
    forkserver::reap_retired();
    registry::live_children()
}

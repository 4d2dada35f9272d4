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
//! [`ProcessError::Panicked`] with its message, a death by signal as
//! [`ProcessError::Killed`] naming it.
//!
//! [`ProcessBuilder::run`] starts and joins in one call, for a caller that
//! waits for the value at once; knowing that, it starts a Fork child on the
//! caller's CPU, which made a short child's start and join 30–40 % cheaper
//! on the 2-vCPU virtual machine it was measured on. `start` does the same
//! for a thread seen joining its Fork children right after starting them.
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
//! mismatch as [`ProcessError::Bootstrap`]. Targets must live in the
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
//! cannot say how: its join gives [`ProcessError::StatusDiscarded`] and its
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
//! a value joins as [`ProcessError::StatusDiscarded`].
//!
//! One exception: a *daemon* started through the server dies with the
//! server, since the kernel's parent-death signal that ties a daemon's life
//! to its parent at no cost follows the process that forked it. (Watching
//! the parent from a thread instead was measured at about 2 ms more per
//! daemon start and join on a loaded 2-vCPU machine.) A pool treats such a
//! death as any worker's death: the task fails with
//! [`TaskError::WorkerDied`] and the worker is replaced.
//!
//! Tests, in `tests/forkserver.rs`: `a_start_that_runs_out_of_descriptors_fails_alone`,
//! `a_server_out_of_descriptors_fails_only_that_start`,
//! `a_killed_server_is_replaced_and_its_children_still_deliver`; and in
//! `tests/fork.rs`, `forking_while_another_thread_uses_the_fork_server_never_hangs`
//! (a Fork child never finds the record of fork servers locked).
#![warn(missing_docs)]

mod bootstrap;
mod child;
mod daemon;
mod forkserver;
mod info;
mod method;
mod pool;
mod process;
mod registry;
mod same_cpu;
mod target;

pub use info::{ProcessInfo, cpu_count, current_process, parent_process};
pub use method::{Context, StartMethod, get_context, get_start_method, set_start_method};
pub use pool::{AsyncResult, CHECK_INTERVAL, IMap, PREFETCH, Pool, PoolBuilder, TaskError};
pub use process::{Process, ProcessBuilder, ProcessError};
pub use registry::active_children;

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
    bootstrap::take_over_if_marked();
}

//! Start methods and the process-wide default.

use std::sync::atomic::{AtomicU8, Ordering};

/// How a child process is created.
///
/// | method | how | cost here | safe with threads in the parent |
/// |---|---|---|---|
/// | [`Fork`](Self::Fork) | `fork()`; the child runs the target in a copy of the parent | lowest | **no**: only the forking thread survives, locks others held stay held |
/// | [`Spawn`](Self::Spawn) | re-executes this executable; the child starts fresh | an `exec` | yes |
/// | [`ForkServer`](Self::ForkServer) | a single-threaded server, spawned once, forks children on request | a fork in the server plus a request round trip | yes |
///
/// The default is [`ForkServer`](Self::ForkServer), as in Python 3.14 on
/// Linux: safe in a multithreaded parent and far cheaper than spawn once its
/// server runs. Fork is an explicit opt-in.
///
/// How a child ends, as in Python: a forked child (Fork, ForkServer) ends
/// with `_exit` once Rust's standard output is flushed and its own children
/// are seen to, so exit handlers and library destructors inherited from the
/// parent do not run twice (C `stdio` buffers are not flushed either); a
/// spawned child ends as a program does. Fork flushes the parent's standard
/// output before forking, so a child never repeats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum StartMethod {
    /// `fork()` in the parent.
    Fork,
    /// Re-execute the executable.
    Spawn,
    /// Fork from a clean single-threaded server.
    #[default]
    ForkServer,
}

impl StartMethod {
    /// Python's name for the method (`"fork"`, `"spawn"`, `"forkserver"`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fork => "fork",
            Self::Spawn => "spawn",
            Self::ForkServer => "forkserver",
        }
    }

    const fn to_u8(self) -> u8 {
        match self {
            Self::Fork => 1,
            Self::Spawn => 2,
            Self::ForkServer => 3,
        }
    }

    const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Fork,
            2 => Self::Spawn,
            _ => Self::ForkServer,
        }
    }
}

static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// Sets the start method for processes that do not choose one (Python's
/// `set_start_method`). Unlike Python, calling it again is allowed.
///
/// # Examples
///
/// ```
/// use multiproc_process::{get_start_method, set_start_method, StartMethod};
///
/// set_start_method(StartMethod::Spawn);
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// set_start_method(StartMethod::ForkServer);
/// ```
pub fn set_start_method(method: StartMethod) {
    DEFAULT.store(method.to_u8(), Ordering::Relaxed);
}

/// The start method in effect (Python's `get_start_method`).
#[must_use]
pub fn get_start_method() -> StartMethod {
    StartMethod::from_u8(DEFAULT.load(Ordering::Relaxed))
}

/// A start method bound to a value (Python's `get_context(method)`):
/// processes made through it use that method whatever the default.
///
/// # Examples
///
/// ```
/// use multiproc_process::{get_context, StartMethod};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let ctx = get_context(StartMethod::Spawn);
/// let mut p = ctx.process(square, 7).start()?;
/// assert_eq!(p.join()?, 49);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

/// A [`Context`] for `method`.
#[must_use]
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

impl Context {
    /// The context's start method.
    #[must_use]
    pub fn start_method(&self) -> StartMethod {
        self.method
    }
}

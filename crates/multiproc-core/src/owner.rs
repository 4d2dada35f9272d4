//! Who owns something in shared memory, and whether it still lives: the one
//! identity and liveness rule every multiproc crate uses.
//!
//! A pid or thread id alone names a task only while it lives: after it dies
//! the kernel hands the number to the next one. An identity adds the task's
//! start time (`/proc/ID/stat`, field 22, clock ticks since boot), which no
//! later task with the same id can share, so a lock, a ring or a barrier can
//! record who holds it and survivors can later tell "dead" from "alive"
//! without being fooled by id reuse.
//!
//! - [`ThreadIdentity`] names one thread. Locks record it: a lock is held by
//!   a thread, and only that thread's death leaves it half done. A process
//!   whose main thread has exited (`pthread_exit`, as C hosts do) while
//!   other threads still run is alive, and so are those threads' locks.
//! - [`ProcessIdentity`] names a process (its main thread's id, the pid). It
//!   is alive while any of its threads runs.
//!
//! # The rule for "dead"
//!
//! A task is dead when the kernel says it does not exist, when its id now
//! belongs to a task with another start time, or when it is a zombie (it
//! holds nothing and runs no code). When `/proc` hides the task (mounted
//! with `hidepid`, or the task belongs to another user), `kill(id, 0)`
//! decides: only `ESRCH` means dead.
//!
//! Identities are ids of the caller's pid namespace. Objects in shared
//! memory record the creator's namespace (see [`pid_namespace`]) and refuse
//! to be attached from another one, where the same numbers name other tasks.
//!
//! The calling thread's identity is read from `/proc` once and cached; a
//! `pthread_atfork` child handler (registered on first use) forgets the
//! caches in a forked child, which has new ids.
//!
//! ```
//! use multiproc_core::{ProcessIdentity, ThreadIdentity};
//!
//! let me = ProcessIdentity::current();
//! assert_eq!(me.pid(), std::process::id());
//! assert!(me.is_alive());
//! assert_eq!(ProcessIdentity::from_u64(me.to_u64()), Some(me));
//!
//! let thread = std::thread::spawn(ThreadIdentity::current).join().unwrap();
//! assert_ne!(thread, ThreadIdentity::current());
//! // The thread has exited; the kernel may take a moment to finish that.
//! let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
//! while thread.is_alive() {
//!     assert!(std::time::Instant::now() < deadline);
//!     std::thread::yield_now();
//! }
//! ```
//!
//! # Safety
//!
//! The only `unsafe` is the `pthread_atfork` registration; its handler does
//! atomic stores and sets one `const`-initialised thread-local without a
//! destructor (no allocation, no locks): async-signal-safe, as a handler run
//! in a freshly forked child must be.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of a packed identity that hold the id: Linux ids are below
/// `PID_MAX_LIMIT`, 2²² on 64-bit kernels.
const ID_BITS: u32 = 22;
const ID_MASK: u64 = (1 << ID_BITS) - 1;

/// A thread's kernel id plus start time, packed into one word: unique for
/// the life of the system.
///
/// The packed form (`start_time << 22 | tid`) is what goes into shared
/// memory; it is never 0, so 0 can mean "no owner". For a process's main
/// thread it equals the [`ProcessIdentity`] of the process.
///
/// # Examples
///
/// ```
/// use multiproc_core::ThreadIdentity;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// // A lock word records its holder...
/// let holder = AtomicU64::new(0);
/// holder.store(ThreadIdentity::current().to_u64(), Ordering::Release);
///
/// // ...and whoever finds it taken can ask whether that holder still runs.
/// let recorded = ThreadIdentity::from_u64(holder.load(Ordering::Acquire)).unwrap();
/// assert_eq!(recorded, ThreadIdentity::current());
/// assert!(recorded.is_alive());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThreadIdentity(u64);

/// A process's pid plus start time, packed as [`ThreadIdentity`] is: unique
/// for the life of the system.
///
/// # Examples
///
/// ```
/// use multiproc_core::ProcessIdentity;
///
/// let me = ProcessIdentity::current();
/// let packed = me.to_u64(); // e.g. stored in a segment by a creator
/// let creator = ProcessIdentity::from_u64(packed).unwrap();
/// assert_eq!(creator.pid(), std::process::id());
/// assert!(creator.is_alive());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessIdentity(u64);

thread_local! {
    /// The calling thread's packed identity, 0 until first read.
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

/// The calling process's packed identity, 0 until first read.
static PROCESS: AtomicU64 = AtomicU64::new(0);
/// The pid namespace, 0 until first read (`u64::MAX`: unknown).
static PID_NS: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

/// Run in a forked child: its ids are new, its caches are not.
extern "C" fn forget_after_fork() {
    PROCESS.store(0, Ordering::Relaxed);
    // A const-initialised thread-local without a destructor is plain
    // thread-local memory; `try_with` cannot fail for it.
    let _ = THREAD.try_with(|t| t.set(0));
}

fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: `forget_after_fork` is async-signal-safe (an atomic
        // store and a write to plain thread-local memory) and cannot
        // panic, as `process::at_fork_child` requires.
        let registered = unsafe { crate::process::at_fork_child(forget_after_fork) };
        debug_assert!(registered.is_ok(), "pthread_atfork failed");
    });
}

const fn pack(id: u32, start_time: u64) -> u64 {
    (start_time << ID_BITS) | (id as u64 & ID_MASK)
}

/// What both identities share: they pack the same way, an id and a start
/// time read from `/proc/ID/stat`.
macro_rules! packed_identity {
    ($ty:ident, $id:ident, $what:literal) => {
        impl $ty {
            #[doc = concat!("The ", $what, " `", stringify!($id), "` as it is now (in the caller's pid namespace).")]
            ///
            /// # Errors
            ///
            /// `NotFound` when there is no such task; `InvalidData` when its
            /// stat line cannot be parsed.
            ///
            /// # Examples
            ///
            #[doc = concat!(
                "```\nuse multiproc_core::",
                stringify!($ty),
                ";\n\nlet me = ",
                stringify!($ty),
                "::current();\nassert_eq!(",
                stringify!($ty),
                "::of(me.",
                stringify!($id),
                "())?, me);\nassert!(",
                stringify!($ty),
                "::of(0).is_err()); // no such task\n# Ok::<(), std::io::Error>(())\n```"
            )]
            pub fn of($id: u32) -> io::Result<Self> {
                let stat = read_stat(&format!("/proc/{}/stat", $id))?;
                Ok(Self(pack($id, stat.start_time)))
            }

            #[doc = concat!("The kernel id of the ", $what, ".")]
            ///
            /// # Examples
            ///
            #[doc = concat!(
                "```\nuse multiproc_core::",
                stringify!($ty),
                ";\n\nlet me = ",
                stringify!($ty),
                "::current();\nassert_eq!(",
                stringify!($ty),
                "::of(me.",
                stringify!($id),
                "())?.",
                stringify!($id),
                "(), me.",
                stringify!($id),
                "());\nassert!(me.",
                stringify!($id),
                "() > 0);\n# Ok::<(), std::io::Error>(())\n```"
            )]
            #[must_use]
            pub const fn $id(&self) -> u32 {
                (self.0 & ID_MASK) as u32
            }

            /// Start time in clock ticks after boot.
            ///
            /// # Examples
            ///
            #[doc = concat!(
                "```\nuse multiproc_core::",
                stringify!($ty),
                ";\n\nlet me = ",
                stringify!($ty),
                "::current();\n// Same id, same start time: the same task, not a later one reusing the id.\nassert_eq!(",
                stringify!($ty),
                "::of(me.",
                stringify!($id),
                "())?.start_time(), me.start_time());\n# Ok::<(), std::io::Error>(())\n```"
            )]
            #[must_use]
            pub const fn start_time(&self) -> u64 {
                self.0 >> ID_BITS
            }

            /// Packs into one word for an `AtomicU64` in shared memory;
            /// never 0, so 0 can mean "no owner".
            ///
            /// # Examples
            ///
            #[doc = concat!(
                "```\nuse multiproc_core::",
                stringify!($ty),
                ";\nuse std::sync::atomic::{AtomicU64, Ordering};\n\nlet owner = AtomicU64::new(0); // 0: nobody, e.g. in a shared segment\nowner.store(",
                stringify!($ty),
                "::current().to_u64(), Ordering::Release);\nassert_ne!(owner.load(Ordering::Acquire), 0);\n```"
            )]
            #[must_use]
            pub const fn to_u64(&self) -> u64 {
                self.0
            }

            /// Unpacks [`to_u64`](Self::to_u64); `None` for a word whose id
            /// is 0 (0 itself among them).
            ///
            /// # Examples
            ///
            #[doc = concat!(
                "```\nuse multiproc_core::",
                stringify!($ty),
                ";\n\nlet me = ",
                stringify!($ty),
                "::current();\nassert_eq!(",
                stringify!($ty),
                "::from_u64(me.to_u64()), Some(me));\nassert_eq!(",
                stringify!($ty),
                "::from_u64(0), None); // \"no owner\"\n```"
            )]
            #[must_use]
            pub const fn from_u64(packed: u64) -> Option<Self> {
                if packed & ID_MASK == 0 {
                    None
                } else {
                    Some(Self(packed))
                }
            }
        }
    };
}

packed_identity!(ThreadIdentity, tid, "thread");
packed_identity!(ProcessIdentity, pid, "process");

impl ThreadIdentity {
    /// The calling thread. One thread-local load after the first call.
    ///
    /// # Panics
    ///
    /// If `/proc` is not mounted: multiproc needs it.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::ThreadIdentity;
    ///
    /// let me = ThreadIdentity::current();
    /// assert_eq!(me, ThreadIdentity::current()); // stable, cached
    /// assert!(me.is_alive());
    /// let other = std::thread::spawn(ThreadIdentity::current).join().unwrap();
    /// assert_ne!(other.tid(), me.tid());
    /// ```
    #[inline]
    #[must_use]
    pub fn current() -> Self {
        let cached = THREAD.get();
        if cached != 0 {
            return Self(cached);
        }
        Self::current_slow()
    }

    #[cold]
    fn current_slow() -> Self {
        register_atfork();
        let tid = rustix::thread::gettid()
            .as_raw_nonzero()
            .get()
            .unsigned_abs();
        let start_time = read_stat("/proc/thread-self/stat")
            .or_else(|_| read_stat(&format!("/proc/self/task/{tid}/stat")))
            .expect("/proc/thread-self/stat is readable")
            .start_time;
        let packed = pack(tid, start_time);
        THREAD.set(packed);
        Self(packed)
    }

    /// Whether this thread still runs (see the [module docs](self) for the
    /// rule). Reads `/proc`: microseconds, not for hot paths.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::ThreadIdentity;
    /// use std::time::{Duration, Instant};
    ///
    /// assert!(ThreadIdentity::current().is_alive());
    ///
    /// let gone = std::thread::spawn(ThreadIdentity::current).join().unwrap();
    /// // The kernel may take a moment to reap an exited thread.
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// while gone.is_alive() {
    ///     assert!(Instant::now() < deadline);
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// ```
    #[must_use]
    pub fn is_alive(&self) -> bool {
        task_alive(self.tid(), Some(self.start_time()), Scope::Thread)
    }
}

impl ProcessIdentity {
    /// The calling process. Cached after the first call (and forgotten in a
    /// forked child).
    ///
    /// # Panics
    ///
    /// If `/proc` is not mounted: multiproc needs it.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{ProcessIdentity, ThreadIdentity};
    ///
    /// let me = ProcessIdentity::current();
    /// assert_eq!(me.pid(), std::process::id());
    /// assert_eq!(me, ProcessIdentity::of(me.pid())?);
    /// // The main thread's identity packs the same way.
    /// assert_eq!(ThreadIdentity::of(me.pid())?.to_u64(), me.to_u64());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn current() -> Self {
        let cached = PROCESS.load(Ordering::Relaxed);
        if cached != 0 {
            return Self(cached);
        }
        register_atfork();
        let pid = std::process::id();
        let start_time = read_stat("/proc/self/stat")
            .expect("/proc/self/stat is readable")
            .start_time;
        let packed = pack(pid, start_time);
        PROCESS.store(packed, Ordering::Relaxed);
        Self(packed)
    }

    /// Whether this process still runs: some thread of it does (see the
    /// [module docs](self) for the rule). Reads `/proc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::ProcessIdentity;
    ///
    /// assert!(ProcessIdentity::current().is_alive());
    ///
    /// let mut child = std::process::Command::new("true").spawn()?;
    /// let identity = ProcessIdentity::of(child.id())?;
    /// child.wait()?; // reaped: the pid is free for reuse
    /// assert!(!identity.is_alive());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn is_alive(&self) -> bool {
        task_alive(self.pid(), Some(self.start_time()), Scope::Process)
    }
}

/// Whether some thread with id `tid` runs now, whatever its start time: for
/// an owner that took a lock but died (or has yet to write its record)
/// before recording its full identity. Reads `/proc`.
///
/// # Examples
///
/// ```
/// use multiproc_core::owner::thread_exists;
/// use multiproc_core::ThreadIdentity;
///
/// assert!(thread_exists(ThreadIdentity::current().tid()));
/// assert!(!thread_exists(0)); // no task has id 0
/// ```
#[must_use]
pub fn thread_exists(tid: u32) -> bool {
    task_alive(tid, None, Scope::Thread)
}

/// The inode of the caller's pid namespace (`/proc/self/ns/pid`), which
/// objects in shared memory record so that a process in another namespace,
/// where the ids they hold name other tasks, is refused on attach. `None`
/// when the kernel does not show it (then nothing is checked). Cached.
///
/// # Examples
///
/// ```
/// use multiproc_core::owner::pid_namespace;
///
/// // Stable for the process (and shared by every process in the namespace).
/// assert_eq!(pid_namespace(), pid_namespace());
/// if let Some(ns) = pid_namespace() {
///     assert_ne!(ns, 0);
/// }
/// ```
#[must_use]
pub fn pid_namespace() -> Option<u64> {
    let mut ns = PID_NS.load(Ordering::Relaxed);
    if ns == 0 {
        ns = rustix::fs::stat("/proc/self/ns/pid").map_or(u64::MAX, |st| st.st_ino);
        // A forked child shares the namespace: no reset needed.
        PID_NS.store(ns, Ordering::Relaxed);
    }
    (ns != u64::MAX && ns != 0).then_some(ns)
}

/// What must live for an identity to be alive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The one thread.
    Thread,
    /// Any thread of the process whose main thread has the id.
    Process,
}

/// The one liveness rule; see the module docs.
fn task_alive(id: u32, start_time: Option<u64>, scope: Scope) -> bool {
    match read_stat(&format!("/proc/{id}/stat")) {
        Ok(stat) => {
            if start_time.is_some_and(|t| t != stat.start_time) {
                return false; // the id was reused
            }
            match stat.state {
                'X' => false,
                // A zombie main thread with live threads beside it: the
                // process runs on.
                'Z' => scope == Scope::Process && live_threads_besides_main(id),
                _ => true,
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => hidden_but_present(id),
        // Unreadable for another reason (permissions): ask the kernel.
        Err(_) => hidden_but_present(id),
    }
}

/// Whether `/proc/PID/task` lists a thread other than the main one.
fn live_threads_besides_main(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|dir| {
        dir.filter_map(Result::ok)
            .any(|e| e.file_name().to_str() != Some(&pid.to_string()))
    })
}

/// `/proc` did not show the task; make sure it is not merely hidden from us
/// before declaring it dead: `kill(id, 0)` fails with `ESRCH` only for a
/// task that does not exist (it accepts thread ids too).
///
/// # References
///  - [kill(2)](https://man7.org/linux/man-pages/man2/kill.2.html)
fn hidden_but_present(id: u32) -> bool {
    let Some(pid) = i32::try_from(id)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// The two fields of a `/proc/ID/stat` line that liveness needs.
struct Stat {
    state: char,
    start_time: u64,
}

fn read_stat(path: &str) -> io::Result<Stat> {
    let line = std::fs::read_to_string(path)?;
    parse_stat(&line)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat"))
}

/// State letter and start time from a `/proc/ID/stat` line. The command
/// name (field 2) is in parentheses and may itself hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 lie between state (3) and starttime (22).
    let start_time = fields.nth(22 - 4)?.parse().ok()?;
    Some(Stat { state, start_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "123 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 rest";
        let stat = parse_stat(line).unwrap();
        assert_eq!((stat.state, stat.start_time), ('S', 999));
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) R 1 2").is_none());
    }

    #[test]
    fn a_reused_id_is_not_alive() {
        let me = ProcessIdentity::current();
        let impostor = ProcessIdentity(pack(me.pid(), me.start_time() + 1));
        assert!(!impostor.is_alive());
        let thread = ThreadIdentity::current();
        assert!(thread.is_alive());
        assert!(!ThreadIdentity(pack(thread.tid(), thread.start_time() + 1)).is_alive());
    }

    #[test]
    fn the_main_thread_is_the_process() {
        // The test harness runs tests on other threads: ask the main one.
        let main = ThreadIdentity::of(std::process::id()).unwrap();
        assert_eq!(main.to_u64(), ProcessIdentity::current().to_u64());
    }

    #[test]
    fn identities_round_trip_and_zero_is_none() {
        assert_eq!(ThreadIdentity::from_u64(0), None);
        assert_eq!(ProcessIdentity::from_u64(1 << ID_BITS), None);
        let me = ThreadIdentity::current();
        assert_eq!(ThreadIdentity::from_u64(me.to_u64()), Some(me));
        assert!(thread_exists(me.tid()));
    }

    #[test]
    fn the_pid_namespace_is_known_and_stable() {
        let ns = pid_namespace();
        assert!(ns.is_some());
        assert_eq!(pid_namespace(), ns);
    }
}
